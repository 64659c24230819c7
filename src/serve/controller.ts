/**
 * The controller's state, as the reference's llava/serve/controller.py keeps it: which workers
 * serve which models, how fast and how busy each is, when each last beat. It dispatches requests
 * to workers and drops workers whose heart stopped. No HTTP here (see controller-http.ts).
 */
import type { WorkerStatus } from "./protocol.js";

export const DISPATCH_METHODS = ["lottery", "shortest_queue"] as const;
export type DispatchMethod = (typeof DISPATCH_METHODS)[number];

/** The reference's CONTROLLER_HEART_BEAT_EXPIRATION: a worker silent this long is dropped, checked this often. */
export const HEART_BEAT_EXPIRATION_S = 30;

export interface WorkerInfo {
  modelNames: string[];
  speed: number;
  queueLength: number;
  checkHeartBeat: boolean;
  /** seconds, on the controller's clock */
  lastHeartBeat: number;
}

export interface ControllerOptions {
  dispatchMethod?: DispatchMethod;
  /** asks a worker for its status; undefined when it cannot be reached or answers nonsense */
  fetchStatus: (worker: string) => Promise<WorkerStatus | undefined>;
  /** uniform in [0, 1): the lottery's draw (injectable for tests) */
  random?: () => number;
  /** the clock, in seconds */
  now?: () => number;
  expirationS?: number;
  log?: (line: string) => void;
}

export class Controller {
  /** keyed by worker URL, in registration order (the order ties are broken in, as in a Python dict) */
  readonly workers = new Map<string, WorkerInfo>();
  readonly dispatchMethod: DispatchMethod;
  readonly expirationS: number;
  private readonly fetchStatus: ControllerOptions["fetchStatus"];
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly log: (line: string) => void;

  constructor(opts: ControllerOptions) {
    this.dispatchMethod = opts.dispatchMethod ?? "shortest_queue";
    this.expirationS = opts.expirationS ?? HEART_BEAT_EXPIRATION_S;
    this.fetchStatus = opts.fetchStatus;
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? (() => Date.now() / 1000);
    this.log = opts.log ?? (() => {});
  }

  /** Registers (or re-registers) a worker; without a status, asks the worker for it. False: not registered. */
  async registerWorker(name: string, checkHeartBeat: boolean, status?: WorkerStatus): Promise<boolean> {
    this.log(`${this.workers.has(name) ? "Register an existing worker" : "Register a new worker"}: ${name}`);
    status ??= await this.fetchStatus(name);
    if (!status) {
      this.log(`Get status fails: ${name}`);
      return false;
    }
    this.workers.set(name, this.infoFrom(status, checkHeartBeat));
    this.log(`Register done: ${name}, ${JSON.stringify(status)}`);
    return true;
  }

  /**
   * Re-asks every worker for its status and drops those that do not answer. The questions go out
   * together (the reference asks one by one) and the table is updated in place, so a heart beat
   * arriving meanwhile still finds its worker.
   */
  async refreshAllWorkers(): Promise<void> {
    const names = [...this.workers.keys()];
    const statuses = await Promise.all(names.map((name) => this.fetchStatus(name)));
    names.forEach((name, i) => {
      const old = this.workers.get(name);
      if (!old) return; // dropped meanwhile
      const status = statuses[i];
      if (status) this.workers.set(name, this.infoFrom(status, old.checkHeartBeat));
      else {
        this.workers.delete(name);
        this.log(`Remove stale worker: ${name}`);
      }
    });
  }

  /** Every model some worker serves, each once. */
  listModels(): string[] {
    return [...new Set([...this.workers.values()].flatMap((w) => w.modelNames))];
  }

  /** The worker a request for `model` goes to, or "" when none serves it. */
  getWorkerAddress(model: string): string {
    const candidates = [...this.workers].filter(([, w]) => w.modelNames.includes(model));
    const names = candidates.map(([name]) => name);
    if (this.dispatchMethod === "lottery") {
      const i = lotteryPick(candidates.map(([, w]) => w.speed), this.random);
      return i < 0 ? "" : names[i];
    }
    if (names.length === 0) return "";
    // a worker of speed 0 (an empty lower controller) goes last; the reference divides by zero
    const i = argmin(candidates.map(([, w]) => (w.speed > 0 ? w.queueLength / w.speed : Infinity)));
    this.workers.get(names[i])!.queueLength += 1;
    return names[i];
  }

  /** Notes a worker's heart beat and queue length; false when the worker is unknown (it should re-register). */
  receiveHeartBeat(name: string, queueLength: number): boolean {
    const info = this.workers.get(name);
    if (!info) {
      this.log(`Receive unknown heart beat. ${name}`);
      return false;
    }
    info.queueLength = queueLength;
    info.lastHeartBeat = this.now();
    return true;
  }

  /** Drops the workers that check their heart beat and have been silent longer than the expiry; returns them. */
  removeExpiredWorkers(): string[] {
    const expire = this.now() - this.expirationS;
    const expired = [...this.workers].filter(([, w]) => w.checkHeartBeat && w.lastHeartBeat < expire).map(([name]) => name);
    for (const name of expired) {
      this.workers.delete(name);
      this.log(`Remove expired worker: ${name}`);
    }
    return expired;
  }

  /** Checks for expired workers every `intervalMs` (default: the expiry, as the reference does); returns the stop. */
  startExpiryChecks(intervalMs = this.expirationS * 1000): () => void {
    const timer = setInterval(() => this.removeExpiredWorkers(), intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  /**
   * The controller seen as one worker (for a controller registered with another): every worker's
   * models, with speeds and queue lengths summed over the workers that answer.
   */
  async aggregateStatus(): Promise<WorkerStatus> {
    const statuses = await Promise.all([...this.workers.keys()].map((name) => this.fetchStatus(name)));
    const answered = statuses.filter((s): s is WorkerStatus => s !== undefined);
    return {
      model_names: [...new Set(answered.flatMap((s) => s.model_names))],
      speed: answered.reduce((sum, s) => sum + s.speed, 0),
      queue_length: answered.reduce((sum, s) => sum + s.queue_length, 0),
    };
  }

  private infoFrom(status: WorkerStatus, checkHeartBeat: boolean): WorkerInfo {
    return { modelNames: status.model_names, speed: status.speed, queueLength: status.queue_length, checkHeartBeat, lastHeartBeat: this.now() };
  }
}

/** The index of the first smallest value (numpy's argmin). */
function argmin(values: number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] < values[best]) best = i;
  return best;
}

/**
 * The reference's lottery: speeds as float32, normalised by their float32 sum ("" when that sum is
 * below 1e-4), then numpy's `random.choice(p=...)`: the first index whose cumulative probability
 * exceeds the uniform draw. -1 when no worker can be picked.
 */
export function lotteryPick(speeds: number[], random: () => number): number {
  const f32 = speeds.map(Math.fround);
  const norm = f32.reduce((sum, s) => Math.fround(sum + s), 0);
  if (norm < 1e-4) return -1;
  const p = f32.map((s) => Math.fround(s / norm));
  const cdf: number[] = [];
  p.forEach((x, i) => cdf.push((i > 0 ? cdf[i - 1] : 0) + x));
  const total = cdf[cdf.length - 1];
  const u = random();
  const i = cdf.findIndex((c) => c / total > u);
  return i < 0 ? cdf.length - 1 : i;
}
