/** Running an eval command on a copy of its sample inputs (test/eval/data/<script>) and reading back what it wrote. */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { llava, type CliResult } from "../helpers/cli.js";
import { ROOT } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";

/** Sample inputs and what the reference scripts printed and wrote for them (CPython 3.11, pandas 1.5.3, openpyxl 3.0.9, scikit-learn 1.2.1). */
export const DATA = path.join(ROOT, "test", "eval", "data");

/** A temporary copy of `test/eval/data/<script>` to run in (the committed data stays untouched). */
export function sampleCopy(script: string): string {
  const dir = tempDir(`llava-eval-${script}-`);
  fs.cpSync(path.join(DATA, script), dir, { recursive: true });
  return dir;
}

/** Runs `llava eval <script> ...args` in `cwd`. */
export const runEval = (script: string, args: string[], cwd: string): CliResult => llava(["eval", script, ...args], { cwd });

/** The expected bytes of a file the reference wrote, committed beside the inputs. */
export const expected = (script: string, name: string): string => fs.readFileSync(path.join(DATA, script, name), "utf8");

/** Asserts a run succeeded with the reference's stdout and no error line. */
export function assertSuccess(r: CliResult, stdout: string): void {
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, stdout);
  assert.doesNotMatch(r.stderr, /^llava: (?!warning)/m);
}

/** Asserts a failure as the reference fails (exit 1) with one error line matching `message`; warnings may come first. */
export function assertFails(r: CliResult, message: RegExp): void {
  assert.equal(r.status, 1, r.stderr);
  const errors = r.stderr.split("\n").filter((l) => l.startsWith("llava: ") && !l.startsWith("llava: warning: "));
  assert.equal(errors.length, 1, r.stderr);
  assert.match(errors[0], message);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
}
