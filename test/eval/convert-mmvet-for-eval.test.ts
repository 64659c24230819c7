/** `llava eval convert_mmvet_for_eval` writes the reference's results JSON byte for byte. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertSuccess, expected, runEval, sampleCopy } from "./cases.js";

const SCRIPT = "convert_mmvet_for_eval";

test("keys v1_<str(id)> for int, str, float, None and bool ids; a repeated key keeps its place and the last text", () => {
  const dir = sampleCopy(SCRIPT);
  const r = runEval(SCRIPT, ["--src", "answers.jsonl", "--dst", "results.json"], dir);
  assertSuccess(r, expected(SCRIPT, "expected-stdout.txt"));
  assert.equal(fs.readFileSync(path.join(dir, "results.json"), "utf8"), expected(SCRIPT, "expected-results.json"));
  assert.match(r.stderr, /^llava: warning: eval \w+: answers\.jsonl: answers sharing a key 1 \(v1_7\); only the last answer of each is graded$/m);
});
