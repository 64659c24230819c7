/** Running the `llava` command as a user does, and checking its errors. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { ROOT } from "./paths.js";

export const CLI = path.join(ROOT, "dist", "src", "cli", "main.js");

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `llava ...args` in a child process, with optional standard input and working folder. */
export function llava(args: string[], opts: { input?: string; cwd?: string } = {}): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { input: opts.input ?? "", cwd: opts.cwd, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Asserts one clear error line naming `mention`, no stack trace, exit status 1. */
export function assertCleanError(r: CliResult, mention: RegExp): void {
  assert.equal(r.status, 1, `exit status; stderr: ${r.stderr}`);
  const errorLines = r.stderr.split("\n").filter((l) => l.startsWith("llava:"));
  assert.equal(errorLines.length, 1, r.stderr);
  assert.match(errorLines[0], mention);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  assert.doesNotMatch(r.stderr, /internal error/, r.stderr);
}
