/**
 * Running an eval command on a sample case and comparing with what the reference script did on
 * the same inputs. A case folder test/eval/data/<script>/<case> holds the inputs; each
 * "expected..." folder beside them holds one run's stdout.txt, exit status and the files it wrote
 * (files/, by path relative to the working folder).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { llava, type CliResult } from "../helpers/cli.js";
import { ROOT } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";

export const EVAL_DATA = path.join(ROOT, "test", "eval", "data");

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();
}

/** Copies the case's inputs to a fresh working folder, runs `llava eval script ...args` there and checks stdout, status and files byte for byte. */
export function runReferenceCase(script: string, caseName: string, expected: string, args: string[]): CliResult & { cwd: string } {
  const caseDir = path.join(EVAL_DATA, script, caseName);
  const cwd = tempDir(`llava-${script}-`);
  fs.cpSync(caseDir, cwd, { recursive: true, filter: (src) => !path.basename(src).startsWith("expected") });
  const inputs = new Set(filesUnder(cwd));
  const r = llava(["eval", script, ...args], { cwd });
  const want = path.join(caseDir, expected);
  assert.equal(r.stdout, fs.readFileSync(path.join(want, "stdout.txt"), "utf8"), `stdout; stderr: ${r.stderr}`);
  assert.equal(r.status, Number(fs.readFileSync(path.join(want, "status"), "utf8")), `exit status; stderr: ${r.stderr}`);
  const wantFiles = filesUnder(path.join(want, "files"));
  assert.deepEqual(filesUnder(cwd).filter((f) => !inputs.has(f)), wantFiles, "files written");
  for (const f of wantFiles) {
    assert.ok(fs.readFileSync(path.join(cwd, f)).equals(fs.readFileSync(path.join(want, "files", f))), `${f} differs from the reference's`);
  }
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace");
  return { ...r, cwd };
}

/** The `llava:` error line (there must be exactly one when the command failed). */
export function errorLine(r: CliResult): string {
  const lines = r.stderr.split("\n").filter((l) => l.startsWith("llava:") && !l.startsWith("llava: warning:"));
  assert.equal(lines.length, r.status === 0 ? 0 : 1, r.stderr);
  return lines[0] ?? "";
}

export const warnings = (r: CliResult): string[] => r.stderr.split("\n").filter((l) => l.startsWith("llava: warning:"));
