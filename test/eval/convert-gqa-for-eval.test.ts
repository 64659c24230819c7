/** `llava eval convert_gqa_for_eval` writes the reference's predictions JSON byte for byte. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertCleanError } from "../helpers/cli.js";
import { assertSuccess, expected, runEval, sampleCopy } from "./cases.js";

const SCRIPT = "convert_gqa_for_eval";

test("trailing periods dropped then lower-cased (CJK, İ, final sigma, newlines), ids as given, the reference's bytes", () => {
  const dir = sampleCopy(SCRIPT);
  const r = runEval(SCRIPT, ["--src", "answers.jsonl", "--dst", "predictions.json"], dir);
  assertSuccess(r, expected(SCRIPT, "expected-stdout.txt"));
  assert.equal(fs.readFileSync(path.join(dir, "predictions.json"), "utf8"), expected(SCRIPT, "expected-predictions.json"));
  assert.match(r.stderr, /^llava: warning: eval \w+: answers\.jsonl: duplicate question ids 1 \(8\); GQA's eval\.py keeps only the last answer of each$/m);
});

test("a malformed or incomplete answers file is reported line by line and nothing is written", () => {
  const dir = sampleCopy(SCRIPT);
  fs.writeFileSync(path.join(dir, "bad.jsonl"), '{"question_id": 1, "text": "a"}\n{"question_id": 2,\n\n{"question_id": 3}\n{"question_id": 4, "text": 5}\n[1]\n');
  const r = runEval(SCRIPT, ["--src", "bad.jsonl", "--dst", "out.json"], dir);
  assertCleanError(r, /answers file bad\.jsonl: 5 bad lines, nothing written: line 2: Expecting property name enclosed in double quotes; line 3: Expecting value; line 4: no "text"; line 5: "text" is not a string \(int\); line 6: a JSON list, not an object/);
  assert.equal(fs.existsSync(path.join(dir, "out.json")), false);
  assertCleanError(runEval(SCRIPT, ["--dst", "out.json"], dir), /--src not given/);
  assertCleanError(runEval(SCRIPT, ["--src", "missing.jsonl", "--dst", "out.json"], dir), /answers file missing\.jsonl: file not found/);
});
