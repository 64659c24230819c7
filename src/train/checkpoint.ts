/**
 * Training checkpoints: `checkpoint-N/` folders in the run's output folder, each holding the
 * model files the task writes plus everything a resume needs (the trainable parameters exactly,
 * the optimizer's moments, the trainer's position and random state, HF's trainer_state.json).
 * A folder is built under a hidden temporary name and renamed into place only when complete,
 * so a kill or a full disk never leaves a `checkpoint-N` that looks complete but is not; stale
 * temporary folders are removed when the next run starts.
 */
import fs from "node:fs";
import path from "node:path";
import type { NamedParameters } from "../nn/layers.js";
import { describeFsError, isDirectory, readJsonFile, writeFileAtomic, writeFully } from "../io/files.js";
import { writeOutputFolder } from "../io/output.js";
import { WeightStore, writeSafetensors } from "../io/safetensors.js";
import { LlavaError } from "../util/errors.js";
import type { ParamState } from "./optimizer.js";

const PREFIX = "checkpoint-";
const PARAMETERS_FILE = "trainable_parameters.safetensors";
const OPTIMIZER_FILE = "optimizer.safetensors";
const RESUME_FILE = "resume_state.json";
export const TRAINER_STATE_FILE = "trainer_state.json";

/** Where the run stands after a finished optimizer step: enough to continue exactly. */
export interface ResumeState {
  globalStep: number;
  /** the data position: the epoch and the optimizer steps already taken in it */
  epoch: number;
  stepInEpoch: number;
  /** every random stream of the run, by name (Rng.state) */
  rngStates: Record<string, number>;
  /** what the run was made with: a resume with anything else is refused */
  fingerprint: Record<string, unknown>;
  /** the summed step losses and steps since the last logged step (HF averages the loss over them) */
  lossSinceLog: number;
  stepsSinceLog: number;
}

export interface CheckpointContents {
  parameters: NamedParameters;
  optimizerState: Map<string, ParamState>;
  state: ResumeState;
  trainerState: unknown;
  saveModel(dir: string): void | Promise<void>;
  /** called with the temporary folder once everything is written, just before it is renamed into place */
  beforeCommit?(tempDir: string): void | Promise<void>;
}

export const checkpointName = (step: number): string => `${PREFIX}${step}`;

/** Writes `value` as indented JSON, atomically. */
export function writeJson(file: string, value: unknown): void {
  writeFileAtomic(file, (fd) => writeFully(fd, Buffer.from(JSON.stringify(value, null, 2) + "\n", "utf8")));
}

/** Writes `checkpoint-<step>` in `outputDir`, complete or not at all; returns its path. */
export async function writeCheckpoint(outputDir: string, c: CheckpointContents): Promise<string> {
  const target = path.join(outputDir, checkpointName(c.state.globalStep));
  await writeOutputFolder(target, false, async (dir, interrupt) => {
    await c.saveModel(dir);
    writeSafetensors(path.join(dir, PARAMETERS_FILE), c.parameters.map(([name, t]) => ({ name, dtype: "F32", shape: [...t.shape], data: t.data })));
    const moments = [...c.optimizerState].flatMap(([name, s]) => [
      { name: `${name}.exp_avg`, dtype: "F32" as const, shape: [s.expAvg.length], data: s.expAvg },
      { name: `${name}.exp_avg_sq`, dtype: "F32" as const, shape: [s.expAvgSq.length], data: s.expAvgSq },
    ]);
    const steps = Object.fromEntries([...c.optimizerState].map(([name, s]) => [name, s.step]));
    writeSafetensors(path.join(dir, OPTIMIZER_FILE), moments, { steps: JSON.stringify(steps) });
    writeJson(path.join(dir, TRAINER_STATE_FILE), c.trainerState);
    writeJson(path.join(dir, RESUME_FILE), c.state);
    await c.beforeCommit?.(dir);
    // Ctrl-C during the write stops the run here, without the half-written folder
    await interrupt();
  });
  return target;
}

/** Completed checkpoints in `outputDir`, oldest first (by step, as HF sorts them). */
export function listCheckpoints(outputDir: string): Array<{ step: number; dir: string }> {
  if (!isDirectory(outputDir)) return [];
  return fs.readdirSync(outputDir)
    .filter((name) => new RegExp(`^${PREFIX}\\d+$`).test(name) && isDirectory(path.join(outputDir, name)))
    .map((name) => ({ step: Number(name.slice(PREFIX.length)), dir: path.join(outputDir, name) }))
    .sort((a, b) => a.step - b.step);
}

/** Removes what an interrupted run left: half-written checkpoints and half-removed old ones. */
export function removeStaleFolders(outputDir: string): string[] {
  if (!isDirectory(outputDir)) return [];
  const stale = fs.readdirSync(outputDir).filter((name) => new RegExp(`^\\.${PREFIX}\\d+\\.(partial|old|removing)-`).test(name));
  for (const name of stale) fs.rmSync(path.join(outputDir, name), { recursive: true, force: true });
  return stale;
}

/**
 * Keeps the newest `limit` checkpoints (save_total_limit). Each old one is first renamed to a
 * hidden name, so a kill during the removal leaves nothing that looks like a checkpoint.
 */
export function rotateCheckpoints(outputDir: string, limit: number | null | undefined): void {
  if (!limit || limit <= 0) return;
  const all = listCheckpoints(outputDir);
  for (const { step, dir } of all.slice(0, Math.max(0, all.length - limit))) {
    const doomed = path.join(outputDir, `.${checkpointName(step)}.removing-${process.pid}`);
    try {
      fs.renameSync(dir, doomed);
      fs.rmSync(doomed, { recursive: true, force: true });
    } catch (err) {
      throw new LlavaError(`cannot remove the old checkpoint ${dir} (save_total_limit ${limit}): ${describeFsError(err)}`);
    }
  }
}

export interface LoadedCheckpoint {
  dir: string;
  parameters: Map<string, Float32Array>;
  optimizerState: Map<string, ParamState>;
  state: ResumeState;
  trainerState: Record<string, unknown>;
}

function checkedResumeState(json: unknown, file: string): ResumeState {
  const s = json as ResumeState;
  const ok = typeof s === "object" && s !== null &&
    [s.globalStep, s.epoch, s.stepInEpoch, s.stepsSinceLog].every((v) => Number.isInteger(v) && v >= 0) &&
    typeof s.lossSinceLog === "number" && typeof s.rngStates === "object" && s.rngStates !== null &&
    typeof s.fingerprint === "object" && s.fingerprint !== null;
  if (!ok) throw new LlavaError(`resume state ${file} is malformed`);
  return s;
}

/** Reads back what writeCheckpoint wrote. */
export function readCheckpoint(dir: string): LoadedCheckpoint {
  for (const f of [PARAMETERS_FILE, OPTIMIZER_FILE, RESUME_FILE, TRAINER_STATE_FILE]) {
    if (!fs.existsSync(path.join(dir, f))) throw new LlavaError(`checkpoint ${dir} has no ${f}: it was not written by this trainer`);
  }
  const readAll = (file: string) => {
    const store = WeightStore.open(path.join(dir, file));
    try {
      return { tensors: new Map(store.names().map((n) => [n, store.readF32(n)])), metadata: store.metadata() };
    } finally {
      store.close();
    }
  };
  const parameters = readAll(PARAMETERS_FILE).tensors;
  const opt = readAll(OPTIMIZER_FILE);
  const steps = JSON.parse(opt.metadata.steps ?? "{}") as Record<string, number>;
  const optimizerState = new Map<string, ParamState>();
  for (const [name, step] of Object.entries(steps)) {
    const expAvg = opt.tensors.get(`${name}.exp_avg`);
    const expAvgSq = opt.tensors.get(`${name}.exp_avg_sq`);
    if (!expAvg || !expAvgSq) throw new LlavaError(`checkpoint ${dir}: ${OPTIMIZER_FILE} lacks the moments of ${name}`);
    optimizerState.set(name, { step, expAvg, expAvgSq });
  }
  return {
    dir,
    parameters,
    optimizerState,
    state: checkedResumeState(readJsonFile(path.join(dir, RESUME_FILE), "resume state"), path.join(dir, RESUME_FILE)),
    trainerState: readJsonFile(path.join(dir, TRAINER_STATE_FILE), "trainer state") as Record<string, unknown>,
  };
}

/** Fields whose values differ between two fingerprints, as "name: saved → now". */
export function fingerprintDifferences(saved: Record<string, unknown>, now: Record<string, unknown>): string[] {
  const keys = [...new Set([...Object.keys(saved), ...Object.keys(now)])].sort();
  return keys
    .filter((k) => JSON.stringify(saved[k]) !== JSON.stringify(now[k]))
    .map((k) => `${k}: ${JSON.stringify(saved[k]) ?? "unset"} → ${JSON.stringify(now[k]) ?? "unset"}`);
}
