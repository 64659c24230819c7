/** convert_vqav2_for_submission and convert_vizwiz_for_submission against the reference's stdout and upload files. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { errorLine, runReferenceCase, warnings } from "./reference-case.js";

test("VQAv2: the default --dir, malformed lines counted, duplicates, unanswered questions submitted empty", () => {
  const r = runReferenceCase("convert_vqav2_for_submission", "scores", "expected", ["--ckpt", "llava-v1.5-13b", "--split", "llava_vqav2_mscoco_test-dev2015"]);
  const w = warnings(r);
  assert.equal(w.length, 4, r.stderr);
  assert.match(w[0], /2 lines of .*merge\.jsonl are not JSON.*lines 4, 7$/);
  assert.match(w[1], /answered more than once.*ids 1001$/);
  assert.match(w[2], /1 answers are for questions outside the split.*ids 5000$/);
  assert.match(w[3], /2 questions have no answer and are submitted empty: ids 1010, 1011$/);
});

test("VQAv2: --ckpt and --split are required as argparse requires them", () => {
  const r = runReferenceCase("convert_vqav2_for_submission", "scores", "expected-usage", ["--ckpt", "x"]);
  assert.equal(r.status, 2);
});

const VIZWIZ = ["--result-file", "answers/llava-v1.5-13b.jsonl"];

test("VizWiz: normalised answers by image, malformed lines counted", () => {
  runReferenceCase("convert_vizwiz_for_submission", "scores", "expected", [...VIZWIZ, "--annotation-file", "llava_test.jsonl", "--result-upload-file", "answers_upload/llava-v1.5-13b.json"]);
});

test("VizWiz: unanswered questions stop the reference (AssertionError); one line names them all, nothing written", () => {
  const r = runReferenceCase("convert_vizwiz_for_submission", "scores", "expected-missing", [...VIZWIZ, "--annotation-file", "llava_test_more.jsonl", "--result-upload-file", "answers_upload/llava-v1.5-13b.json"]);
  assert.match(errorLine(r), /2 questions have no answer: ids 10, 11 .*AssertionError/);
});

test("VizWiz: an upload file without a folder fails as the reference's os.makedirs('') does", () => {
  const r = runReferenceCase("convert_vizwiz_for_submission", "scores", "expected-bare-name", [...VIZWIZ, "--annotation-file", "llava_test.jsonl", "--result-upload-file", "upload.json"]);
  assert.match(errorLine(r), /upload\.json names no folder/);
});
