/** eval_science_qa against the reference script's stdout and files on the same sample inputs. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseOption } from "../../src/eval/eval-science-qa.js";
import { errorLine, runReferenceCase, warnings } from "./reference-case.js";

const ARGS = ["--base-dir", "data", "--result-file", "answers.jsonl", "--output-file", "analysis.json", "--output-result", "result.json"];

test("letters, 'X. ' prefixes, one 'The answer is X.', FAILED parses, a missing answer: the reference's lines and files", () => {
  const r = runReferenceCase("eval_science_qa", "scores", "expected", ARGS);
  const w = warnings(r);
  assert.equal(w.length, 3, r.stderr);
  assert.match(w[0], /answered more than once.*'102'/);
  assert.match(w[1], /1 questions of split test have no answer and are scored wrong: ids '109'/);
  assert.match(w[2], /2 answers are for questions outside split test.*'201', '202'/);
});

test("--split and --options (argparse's type=list: a string's letters)", () => {
  runReferenceCase("eval_science_qa", "scores", "expected-val", [...ARGS, "--split", "val", "--options", "ABC"]);
});

test("an answer index beyond --options fails as the reference does, writing nothing", () => {
  const r = runReferenceCase("eval_science_qa", "scores", "expected-index-error", [...ARGS, "--split", "val", "--options", "AB"]);
  assert.match(errorLine(r), /question 202: answer 2 is out of the options' range.*IndexError/);
});

test("no question with an image: IMG-Accuracy divides by zero in the reference; one error line, no files", () => {
  const r = runReferenceCase("eval_science_qa", "no-image", "expected", ARGS);
  assert.match(errorLine(r), /no question of the split has <image>/);
});

test("option parsing", () => {
  const options = ["A", "B", "C", "D", "E"];
  assert.equal(parseOption("C", options), "C");
  assert.equal(parseOption("B. cat", options), "B");
  assert.equal(parseOption("B.", options), "FAILED");
  assert.equal(parseOption("So. The answer is D!", options), "D");
  assert.equal(parseOption("The answer is A. The answer is B.", options), "FAILED");
  assert.equal(parseOption("The answer is A\n", options), "FAILED");
  assert.equal(parseOption("The answer is A\r", options), "A");
});
