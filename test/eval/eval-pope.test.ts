/** eval_pope against the reference script's stdout on the same sample inputs. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { popeAnswer } from "../../src/eval/eval-pope.js";
import { errorLine, runReferenceCase, warnings } from "./reference-case.js";

const ARGS = ["--annotation-dir", "coco", "--question-file", "llava_pope_test.jsonl", "--result-file", "answers.jsonl"];

test("three categories: yes/no parsing, scores and float formatting as the reference prints them", () => {
  const r = runReferenceCase("eval_pope", "scores", "expected", ARGS);
  assert.deepEqual(warnings(r), []);
});

test("the first sentence decides; No, no and not mean no, anything else yes", () => {
  assert.equal(popeAnswer("Yes. No, wait."), 1);
  assert.equal(popeAnswer("yes,no"), 1, "commas are dropped, not split on");
  assert.equal(popeAnswer("yes, no"), 0);
  assert.equal(popeAnswer("NO"), 1);
  assert.equal(popeAnswer("I do not see one"), 0);
  assert.equal(popeAnswer("不是"), 1);
});

test("answers and labels of different lengths, an answer without a label file: the reference's numbers, with warnings naming them", () => {
  const r = runReferenceCase("eval_pope", "misaligned", "expected", ARGS);
  const w = warnings(r);
  assert.equal(w.length, 3, r.stderr);
  assert.match(w[0], /category adversarial: 5 answers but 3 labels/);
  assert.match(w[1], /category popular: 2 answers but 4 labels/);
  assert.match(w[2], /1 answers are in a category without a label file.*ids 99$/);
});

test("a category with no yes answer: the reference's output up to its division by zero, then one error line", () => {
  const r = runReferenceCase("eval_pope", "no-yes-answer", "expected", ARGS);
  assert.match(errorLine(r), /category adversarial: no answer is yes, so precision divides by zero.*ZeroDivisionError/);
});

test("a category with no yes label: recall divides by zero as in the reference", () => {
  const r = runReferenceCase("eval_pope", "no-yes-label", "expected", ARGS);
  assert.match(errorLine(r), /category popular: no label is yes, so recall divides by zero/);
});
