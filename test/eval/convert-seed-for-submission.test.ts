/**
 * `llava eval convert_seed_for_submission` prints the reference's accuracies and writes its upload
 * file byte for byte, and fails where the reference fails, after the same lines.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertCleanError } from "../helpers/cli.js";
import { assertFails, assertSuccess, expected, runEval, sampleCopy } from "./cases.js";

const SCRIPT = "convert_seed_for_submission";
const args = (annotation: string, answers: string) => ["--annotation-file", annotation, "--result-file", answers, "--result-upload-file", "upload.jsonl"];

test("exact match per question type (sorted ids, '%.2f' ties to even), image and video totals, upload in annotation order", () => {
  const dir = sampleCopy(SCRIPT);
  const r = runEval(SCRIPT, args("annotation.json", "answers.jsonl"), dir);
  assertSuccess(r, expected(SCRIPT, "expected-ok-stdout.txt"));
  assert.equal(fs.readFileSync(path.join(dir, "upload.jsonl"), "utf8"), expected(SCRIPT, "expected-upload.jsonl"));
  // the string id "777" is uploaded but never scored; 104 is answered twice
  assert.match(r.stderr, /^llava: warning: eval \w+: answers\.jsonl: duplicate question ids 1 \(104\); only the last answer of each is scored$/m);
  assert.match(r.stderr, /^llava: warning: eval \w+: answers\.jsonl: answers matching no question of annotation\.json \(by int\(question_id\)\): 2 \(777, 99999\); the accuracy does not count them$/m);
});

test("where the reference fails: the same lines first, then one error naming what it failed on, no upload file", () => {
  const cases: Array<[string, string, string, RegExp]> = [
    ["annotation.json", "answers-missing.jsonl", "missing", /questions without an answer in answers-missing\.jsonl: 2 \(110, 130\), upload\.jsonl not written \(the reference fails here: KeyError\)/],
    ["annotation.json", "answers-none-right.jsonl", "none-right", /question type 3 \(Instance Attributes\) has answers but none correct \(the reference fails here: KeyError\)/],
    ["annotation-image-only.json", "answers.jsonl", "image-only", /no video questions to score \(the reference fails here: ZeroDivisionError\)/],
  ];
  for (const [annotation, answers, tag, message] of cases) {
    const dir = sampleCopy(SCRIPT);
    const r = runEval(SCRIPT, args(annotation, answers), dir);
    assert.equal(r.stdout, expected(SCRIPT, `expected-${tag}-stdout.txt`), tag);
    assertFails(r, message);
    assert.equal(fs.existsSync(path.join(dir, "upload.jsonl")), false, tag);
  }
});

test("an annotation file that is not SEED-Bench's is one clear line", () => {
  const dir = sampleCopy(SCRIPT);
  fs.writeFileSync(path.join(dir, "bad.json"), '{"questions": []}');
  assertCleanError(runEval(SCRIPT, args("bad.json", "answers.jsonl"), dir), /bad\.json has no "question_type" \(the reference fails here: KeyError\)/);
  assertCleanError(runEval(SCRIPT, args("missing.json", "answers.jsonl"), dir), /annotation file missing\.json: file not found/);
});
