/**
 * Where a conversion (or `llava dump`) writes: a hidden temporary folder (or file) beside the
 * target, renamed into place only when everything is written. A failed or interrupted conversion removes it, so
 * the target either does not exist or is complete; an existing target is only replaced with
 * `force`. Ctrl-C (SIGINT) and SIGTERM stop the conversion between two tensors.
 */
import fs from "node:fs";
import path from "node:path";
import { describeFsError } from "./files.js";
import { LlavaError } from "../util/errors.js";

/** Resolves, or throws once SIGINT or SIGTERM arrived: long writers call it between steps. */
export type Interrupt = () => Promise<void>;

function isNonEmptyTarget(target: string): boolean {
  try {
    const st = fs.statSync(target);
    return st.isDirectory() ? fs.readdirSync(target).length > 0 : true;
  } catch {
    return false;
  }
}

function tempSibling(target: string): string {
  const random = Math.random().toString(36).slice(2, 8);
  return path.join(path.dirname(target), `.${path.basename(target)}.partial-${process.pid}-${random}`);
}

/** Runs `body` with an interrupt check that throws once SIGINT or SIGTERM arrived. */
async function withSignals<T>(body: (interrupt: Interrupt) => Promise<T>): Promise<T> {
  let received: string | null = null;
  const onSignal = (signal: string) => {
    received = signal;
  };
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const s of signals) process.on(s, onSignal);
  const interrupt: Interrupt = async () => {
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (received) throw new LlavaError(`interrupted by ${received}; the partial output was removed`);
  };
  try {
    return await body(interrupt);
  } finally {
    for (const s of signals) process.off(s, onSignal);
  }
}

function checkTarget(target: string, force: boolean, flag: string): void {
  if (!isNonEmptyTarget(target)) return;
  if (!force) throw new LlavaError(`${flag} ${target} already exists and is not empty; pass --force to replace it`);
}

/** Refuses an output folder that `writeOutputFolder` would refuse, before any work is done. */
export function checkOutputFolder(out: string, force: boolean): void {
  const target = path.resolve(out);
  if (fs.existsSync(target) && !fs.statSync(target).isDirectory()) throw new LlavaError(`--out ${target} is a file, not a folder`);
  checkTarget(target, force, "--out");
}

/**
 * `mkdir -p` done level by level: Node's recursive mkdir loops forever where mkdir fails with
 * ENOENT although the parent exists (under /proc).
 */
function makeFolders(dir: string): void {
  const missing: string[] = [];
  for (let d = dir; !fs.existsSync(d) && path.dirname(d) !== d; d = path.dirname(d)) missing.push(d);
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d);
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw new LlavaError(`cannot create the output folder ${d}: ${code === "ENOENT" ? "this file system does not allow it" : describeFsError(err)}`);
    }
  }
}

/** Moves `temp` to `target`, replacing a previous target (only reached with --force). */
function commit(temp: string, target: string): void {
  const old = fs.existsSync(target) ? tempSibling(target).replace(".partial-", ".old-") : null;
  try {
    if (old) fs.renameSync(target, old);
    fs.renameSync(temp, target);
  } catch (err) {
    if (old && !fs.existsSync(target)) fs.renameSync(old, target);
    throw new LlavaError(`cannot move the finished output to ${target}: ${describeFsError(err)}`);
  }
  if (old) fs.rmSync(old, { recursive: true, force: true });
}

/**
 * Fills a fresh temporary folder with `fill` and renames it to `out` at the end; on any
 * failure the temporary folder is removed and `out` is left as it was.
 */
export async function writeOutputFolder<T>(out: string, force: boolean, fill: (dir: string, interrupt: Interrupt) => Promise<T>): Promise<T> {
  checkOutputFolder(out, force);
  const target = path.resolve(out);
  const temp = tempSibling(target);
  makeFolders(path.dirname(target));
  try {
    fs.mkdirSync(temp);
  } catch (err) {
    throw new LlavaError(`cannot create the output folder ${target}: ${describeFsError(err)}`);
  }
  try {
    const result = await withSignals((interrupt) => fill(temp, interrupt));
    commit(temp, target);
    return result;
  } catch (err) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw err;
  }
}

/** The same for a single output file. */
export async function writeOutputFile<T>(out: string, force: boolean, fill: (file: string, interrupt: Interrupt) => Promise<T>): Promise<T> {
  const target = path.resolve(out);
  checkTarget(target, force, "output file");
  if (fs.existsSync(target) && fs.statSync(target).isDirectory()) throw new LlavaError(`output file ${target} is a folder`);
  const temp = tempSibling(target);
  makeFolders(path.dirname(target));
  try {
    const result = await withSignals((interrupt) => fill(temp, interrupt));
    commit(temp, target);
    return result;
  } catch (err) {
    fs.rmSync(temp, { force: true });
    throw err;
  }
}

/** Refuses an output that would overwrite or sit inside one of the inputs. */
export function checkOutsideInputs(out: string, inputs: Array<string | null | undefined>): void {
  const target = path.resolve(out);
  for (const input of inputs) {
    if (!input) continue;
    const dir = path.resolve(input);
    if (target === dir || target.startsWith(dir + path.sep) || dir.startsWith(target + path.sep)) {
      throw new LlavaError(`--out ${target} overlaps the input ${dir}; choose another output location`);
    }
  }
}
