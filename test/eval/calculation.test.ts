/**
 * `llava eval calculation` prints what MME's calculation.py prints for the reference's converted
 * answers, and fails where it fails, after the same lines.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertFails, assertSuccess, DATA, expected, runEval } from "./cases.js";
import { tempDir } from "../helpers/tmp.js";

const SCRIPT = "calculation";
const CONVERTED = path.join(DATA, "convert_answer_to_mme", "expected", "eval_tool", "answers", "llava-test");

/** A copy of the converted answers in <tmp>/altered, changed by `alter` (as the expected outputs were made). */
function altered(alter: (dir: string) => void): string {
  const work = tempDir("llava-eval-mme-");
  fs.cpSync(CONVERTED, path.join(work, "altered"), { recursive: true });
  alter(path.join(work, "altered"));
  return work;
}
const edit = (file: string, change: (text: string) => string) => fs.writeFileSync(file, change(fs.readFileSync(file, "utf8")));

test("acc + acc+ per subtask and the Perception and Cognition totals, printed as Python prints them", () => {
  const cwd = path.dirname(path.dirname(CONVERTED));
  assertSuccess(runEval(SCRIPT, ["--results_dir", "answers/llava-test"], cwd), expected(SCRIPT, "expected-stdout.txt"));
});

test("lines pairing two images: the reference's numbers and a warning naming the lines", () => {
  const cwd = altered((dir) => edit(path.join(dir, "existence.txt"), (text) => {
    const lines = text.split(/(?<=\n)/);
    return [...lines.slice(1), lines[0]].join("");
  }));
  const r = runEval(SCRIPT, ["--results_dir", "altered"], cwd);
  assertSuccess(r, expected(SCRIPT, "expected-misordered-stdout.txt"));
  assert.match(r.stderr, /^llava: warning: eval \w+: altered\/existence\.txt: line pairs of two different images: 3 \(1-2, 3-4, 5-6\); their acc\+ is not MME's$/m);
});

test("where calculation.py fails: the same lines first, then one error line", () => {
  const cases: Array<[string, (dir: string) => void, RegExp]> = [
    ["missing-file", (dir) => fs.rmSync(path.join(dir, "OCR.txt")), /MME answers file altered\/OCR\.txt: file not found/],
    ["odd-lines", (dir) => edit(path.join(dir, "count.txt"), (text) => text + text.split(/(?<=\n)/)[0]), /altered\/count\.txt has 5 lines, not two per image \(the reference fails here: AssertionError\)/],
    ["empty-file", (dir) => fs.writeFileSync(path.join(dir, "posters.txt"), ""), /altered\/posters\.txt is empty \(the reference fails here: ZeroDivisionError\)/],
    ["bad-gt", (dir) => edit(path.join(dir, "color.txt"), (text) => text.replace("\tYes\t", "\tMaybe\t")), /altered\/color\.txt:\d+: ground truth "Maybe" is not yes or no/],
    ["three-fields", (dir) => edit(path.join(dir, "scene.txt"), (text) => text.replace("\t", " ")), /altered\/scene\.txt:1 has 3 tab-separated fields, not 4 \(the reference fails here: ValueError\)/],
  ];
  for (const [name, alter, message] of cases) {
    const r = runEval(SCRIPT, ["--results_dir", "altered"], altered(alter));
    assert.equal(r.stdout, expected(SCRIPT, `expected-${name}-stdout.txt`), name);
    assertFails(r, message);
  }
});
