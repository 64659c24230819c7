/**
 * A worker's side of the controller protocol, as the reference's model worker does it: register
 * with the controller at start, then beat every 15 s with the queue length, retrying every 5 s
 * while the controller does not answer, and register again when it answers that it does not know
 * the worker (a restarted controller so gets its workers back by itself).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";
import { LlavaError } from "../util/errors.js";
import { postForJson, postJson } from "./http-client.js";
import { REQUEST_TIMEOUT_MS, type WorkerStatus } from "./protocol.js";

/** The reference's WORKER_HEART_BEAT_INTERVAL. */
export const HEART_BEAT_INTERVAL_MS = 15_000;
/** The reference's wait before it tries a failed heart beat again. */
export const HEART_BEAT_RETRY_MS = 5_000;

const heartBeatAnswer = z.object({ exist: z.boolean() });

export interface ControllerLinkOptions {
  controllerUrl: string;
  /** the address the controller reaches this worker at (its name there) */
  workerUrl: string;
  status: () => WorkerStatus;
  heartBeatIntervalMs?: number;
  retryIntervalMs?: number;
  log?: (line: string) => void;
}

export class ControllerLink {
  private readonly stopping = new AbortController();
  private readonly log: (line: string) => void;

  constructor(private readonly opts: ControllerLinkOptions) {
    this.log = opts.log ?? (() => {});
  }

  /** Registers with the controller; a LlavaError says why it could not. */
  async register(): Promise<void> {
    const { controllerUrl, workerUrl } = this.opts;
    const body = { worker_name: workerUrl, check_heart_beat: true, worker_status: this.opts.status() };
    let why: string;
    try {
      const res = await postJson(`${controllerUrl}/register_worker`, body, { idleTimeoutMs: REQUEST_TIMEOUT_MS });
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      if (res.statusCode === 200) {
        this.log(`registered with ${controllerUrl} as ${workerUrl}`);
        return;
      }
      why = `it answered ${res.statusCode} ${Buffer.concat(chunks).toString("utf8").slice(0, 200)}`;
    } catch (err) {
      why = (err as Error).message;
    }
    throw new LlavaError(`cannot register with the controller at ${controllerUrl}: ${why}`);
  }

  /** One heart beat; false when the controller did not answer. Registers again when it does not know this worker. */
  async beat(): Promise<boolean> {
    if (this.stopping.signal.aborted) return false;
    const { controllerUrl, workerUrl } = this.opts;
    const body = { worker_name: workerUrl, queue_length: this.opts.status().queue_length };
    const answer = heartBeatAnswer.safeParse(await postForJson(`${controllerUrl}/receive_heart_beat`, body, { idleTimeoutMs: REQUEST_TIMEOUT_MS }));
    if (!answer.success) {
      this.log(`heart beat to ${controllerUrl} failed`);
      return false;
    }
    if (!answer.data.exist && !this.stopping.signal.aborted) {
      await this.register().catch((err: Error) => this.log(err.message));
    }
    return true;
  }

  /** A heart beat once the current work has moved on (a request's start or end), without waiting for it. */
  beatSoon(): void {
    setImmediate(() => void this.beat());
  }

  /** Beats every interval until stopped; a beat that fails is tried again every retry interval until one is answered. */
  start(): void {
    const { heartBeatIntervalMs = HEART_BEAT_INTERVAL_MS, retryIntervalMs = HEART_BEAT_RETRY_MS } = this.opts;
    const wait = (ms: number) => sleep(ms, undefined, { signal: this.stopping.signal, ref: false });
    const loop = async () => {
      for (;;) {
        await wait(heartBeatIntervalMs);
        while (!(await this.beat())) await wait(retryIntervalMs);
      }
    };
    loop().catch(() => {}); // ends when stopped
  }

  stop(): void {
    this.stopping.abort();
  }
}
