/** `llava eval summarize_gpt_review`: the reference's printed table, byte for byte, for sample review folders. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT } from "../helpers/paths.js";
import { assertCleanError, llava } from "../helpers/cli.js";

const DATA = path.join(ROOT, "test", "eval", "data", "summarize_gpt_review");

for (const [name, argv] of [
  ["dir", ["-d", "table"]],
  ["version", ["-d", "table", "-v", "0613"]],
  ["select", ["-d", "table", "-s", "model", "a"]],
  ["select-empty", ["-d", "table", "-s"]],
  ["files-ignore", ["-f", "table/review_model-a.jsonl", "table/gpt4_text_model-c.jsonl", "-i", "1", "3"]],
  ["review-dir", ["-d", "llava-bench-reviews"]],
] as const) {
  test(`summarize_gpt_review ${argv.join(" ")}: the reference's table`, () => {
    const r = llava(["eval", "summarize_gpt_review", ...argv], { cwd: DATA });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, fs.readFileSync(path.join(DATA, "expected", `${name}.txt`), "utf8"));
  });
}

test("unscored reviews ([-1, -1]) are averaged in as the reference does, with a warning naming them", () => {
  const r = llava(["eval", "summarize_gpt_review", "-d", "table", "-v", "0314"], { cwd: DATA });
  assert.equal(r.status, 0);
  assert.match(r.stderr, /^llava: warning: reviews without a score .*table\/review_model-a\.jsonl \(questions 3\)$/m);
});

test("where the reference raises, one line and exit 1", () => {
  assertCleanError(llava(["eval", "summarize_gpt_review", "-d", "table", "-i", "x1"], { cwd: DATA }), /-i\/--ignore: invalid literal for int\(\) with base 10: 'x1'/);
  assertCleanError(llava(["eval", "summarize_gpt_review", "-d", "no-such-folder"], { cwd: DATA }), /review folder no-such-folder: file not found/);
});
