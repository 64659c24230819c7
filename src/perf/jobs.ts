/** The bench's jobs, each run in a process of its own (child.ts) so that its peak RSS is its own. */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { LlavaError } from "../util/errors.js";
import { NODE_FLAGS } from "../util/node-flags.js";
import type { Precision } from "./precisions.js";
import type { InferencePhase, TrainPhase } from "./protocol.js";

export type ChildJob =
  | { kind: "infer"; modelPath: string; precision: Precision; threads: number; phases: InferencePhase[]; runs: number }
  | { kind: "train"; modelPath: string; precision: Precision; threads: number; phase: TrainPhase; runs: number; torchInputs?: string }
  | { kind: "llama.cpp"; gguf: string; ids: number[]; threads: number; runs: number };

/** The exit status of a child that failed with an error the user can act on (its message is stderr's last line). */
export const EXIT_KNOWN_ERROR = 3;

const CHILD = fileURLToPath(new URL("./child.js", import.meta.url));

/** Runs `job` in a child process and returns its result (with peakRssBytes); its errors come back as errors of this process. */
export function runJob<T>(job: ChildJob): T & { peakRssBytes: number } {
  const run = spawnSync(process.execPath, [...NODE_FLAGS, "--expose-gc", CHILD, JSON.stringify(job)], { encoding: "utf8", maxBuffer: 1 << 26, stdio: ["ignore", "pipe", "pipe"] });
  const stderr = (run.stderr ?? "").trim();
  if (run.status === EXIT_KNOWN_ERROR) throw new LlavaError(stderr.split("\n").at(-1)!);
  if (run.status !== 0) throw new Error(`bench job ${job.kind} failed (${run.signal ?? `exit ${run.status}`}): ${stderr.split("\n").slice(-5).join(" | ")}`);
  return JSON.parse(run.stdout.trim().split("\n").at(-1)!) as T & { peakRssBytes: number };
}
