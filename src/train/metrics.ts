/**
 * A run's per-step metrics: one JSON object per optimizer step in `metrics.jsonl`, and a
 * progress line with an ETA on a stream (redrawn in place on a terminal, one line per logging
 * step otherwise, so logs stay readable).
 */
import fs from "node:fs";
import path from "node:path";
import { describeFsError, writeFileAtomic, writeFully } from "../io/files.js";
import { LlavaError } from "../util/errors.js";

export const METRICS_FILE = "metrics.jsonl";

export interface StepMetrics {
  step: number;
  /** fractional epoch at the end of the step, as HF logs it */
  epoch: number;
  /** the step's loss: its micro-batches' mean losses over gradient_accumulation_steps */
  loss: number;
  /** the learning rate this step used (the first parameter group's) */
  learning_rate: number;
  /** the gradient norm before clipping */
  grad_norm: number;
  /** supervised (loss-bearing) tokens per second */
  tokens_per_second: number;
  seconds_per_step: number;
}

/** Appends metrics lines to `outputDir/metrics.jsonl`; a resumed run first drops the lines after its checkpoint. */
export class MetricsLog {
  readonly file: string;

  constructor(outputDir: string, resumedStep: number) {
    this.file = path.join(outputDir, METRICS_FILE);
    const kept = readMetrics(this.file).filter((m) => m.step <= resumedStep);
    writeFileAtomic(this.file, (fd) => writeFully(fd, Buffer.from(kept.map((m) => JSON.stringify(m) + "\n").join(""), "utf8")));
  }

  append(m: StepMetrics): void {
    try {
      fs.appendFileSync(this.file, JSON.stringify(m) + "\n");
    } catch (err) {
      throw new LlavaError(`cannot write ${this.file}: ${describeFsError(err)}`);
    }
  }
}

/** The metrics in a metrics.jsonl file (none when it does not exist; a torn last line is dropped). */
export function readMetrics(file: string): StepMetrics[] {
  if (!fs.existsSync(file)) return [];
  const out: StepMetrics[] = [];
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    try {
      if (line.trim()) out.push(JSON.parse(line) as StepMetrics);
    } catch {
      // a kill mid-append leaves a partial line: it belongs to a step the resume repeats
    }
  }
  return out;
}

const formatDuration = (s: number): string => {
  if (!Number.isFinite(s)) return "?";
  const t = Math.round(s);
  const [h, m, sec] = [Math.floor(t / 3600), Math.floor((t % 3600) / 60), t % 60];
  const mm = String(m).padStart(2, "0");
  const ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
};

/** The progress line: a bar, step counts, loss, learning rate, speed and the time left. */
export function progressLine(m: StepMetrics, totalSteps: number, secondsLeft: number, width = 20): string {
  const filled = Math.round((width * m.step) / totalSteps);
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  return `[${bar}] ${m.step}/${totalSteps} loss ${m.loss.toFixed(4)} lr ${m.learning_rate.toExponential(2)} ` +
    `grad ${m.grad_norm.toFixed(3)} ${m.seconds_per_step.toFixed(2)} s/step ${Math.round(m.tokens_per_second)} tok/s ETA ${formatDuration(secondsLeft)}`;
}

export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
}

/** Shows progress on `stream`; the ETA extrapolates this process's mean seconds per step. */
export class Progress {
  private seconds = 0;
  private steps = 0;

  constructor(private readonly stream: ProgressStream, private readonly totalSteps: number, private readonly loggingSteps: number) {}

  step(m: StepMetrics): void {
    this.seconds += m.seconds_per_step;
    this.steps++;
    const line = progressLine(m, this.totalSteps, (this.seconds / this.steps) * (this.totalSteps - m.step));
    if (this.stream.isTTY) this.stream.write(`\r\x1b[2K${line}`);
    else if (m.step % this.loggingSteps === 0 || m.step === this.totalSteps) this.stream.write(line + "\n");
  }

  /** Ends the in-place line on a terminal. */
  done(): void {
    if (this.stream.isTTY && this.steps > 0) this.stream.write("\n");
  }
}
