/** eval_textvqa and the EvalAI answer normaliser against the reference's outputs. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { normalizeAnswer } from "../../src/eval/answer-processor.js";
import { questionOfPrompt } from "../../src/eval/eval-textvqa.js";
import { softScore } from "../../src/eval/vqa-accuracy.js";
import { errorLine, EVAL_DATA, runReferenceCase, warnings } from "./reference-case.js";

test("the answer normaliser gives EvalAIAnswerProcessor's output on every sample (Python 3.11)", () => {
  const cases = JSON.parse(fs.readFileSync(path.join(EVAL_DATA, "answer_processor", "cases.json"), "utf8")) as Array<[string, string]>;
  assert.ok(cases.length > 100);
  for (const [input, want] of cases) assert.equal(normalizeAnswer(input), want, JSON.stringify(input));
});

test("soft accuracy: min(1, matches / 3) averaged over the 10 leave-one-out subsets", () => {
  const humans = ["coke", "coke", "cola", "cola", "cola", "pepsi", "x", "x", "x", "x"];
  assert.equal(softScore("Coke", humans), (2 * (1 / 3) + 8 * (2 / 3)) / 10);
  assert.equal(softScore("x", humans), 1);
  assert.equal(softScore("sprite", humans), 0);
});

test("the question in each prompt format", () => {
  assert.equal(questionOfPrompt("What is it?\nReference OCR token: A, B\nAnswer the question using a single word or phrase."), "what is it?");
  assert.equal(questionOfPrompt("Reference OCR token: A\nWhat IS it?\nAnswer briefly."), "what is it?");
  assert.equal(questionOfPrompt("What is it?\nAnswer briefly."), "what is it?");
  assert.equal(questionOfPrompt("OCR tokens: a b\nQuestion: What\nis it? Short answer:"), "what\nis it?");
  assert.equal(questionOfPrompt("What is it?"), null);
});

const ARGS = ["--annotation-file", "TextVQA_0.5.1_val.json"];

test("one result file: the reference's lines", () => {
  const r = runReferenceCase("eval_textvqa", "scores", "expected-file", [...ARGS, "--result-file", "answers/llava-v1.5-13b.jsonl"]);
  assert.deepEqual(warnings(r), []);
});

test("a result folder: every .jsonl in sorted order, other files skipped", () => {
  runReferenceCase("eval_textvqa", "scores", "expected-dir", [...ARGS, "--result-dir", "answers"]);
});

test("an answer matching no annotation: the reference's KeyError as one line naming the id", () => {
  const r = runReferenceCase("eval_textvqa", "scores", "expected-unmatched", [...ARGS, "--result-file", "unmatched.jsonl"]);
  assert.match(errorLine(r), /1 answers match no annotation.*'img99'.*KeyError/);
});
