/**
 * Bad input to the answer runners: a missing image, a question without its fields, a malformed
 * line, an answers file of another run, options the reference cannot take. Each is counted and
 * reported with the ids concerned in one line, never a crash halfway, never a silently short file.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { BUDGET, workspace } from "../eval/answers-helpers.js";
import { assertCleanError, llava } from "../helpers/cli.js";

const cwd = workspace();
const answersPath = path.join(cwd, "out", "answers.jsonl");
const MODEL = ["--model-path", "models/tiny-llava-1.5-orig", "--image-folder", "images", "--temperature", "0"];
const fresh = () => fs.rmSync(path.join(cwd, "out"), { recursive: true, force: true });
const ids = () => fs.readFileSync(answersPath, "utf8").split("\n").slice(0, -1).map((l) => JSON.parse(l).question_id);

function vqa(questions: string, extra: string[] = []) {
  fs.writeFileSync(path.join(cwd, "q.jsonl"), questions);
  return llava(["eval", "model_vqa", ...MODEL, "--question-file", "q.jsonl", "--answers-file", "out/answers.jsonl", ...BUDGET, ...extra], { cwd });
}

const q = (id: number, image: string, text = `question ${id}`) => JSON.stringify({ question_id: id, image, text }) + "\n";

test("a missing image and a question without text are skipped and reported by id; the rest is answered; a rerun fills the gap in order", () => {
  fresh();
  const questions = q(1, "checker_300x500.png") + q(2, "nowhere.png") + q(3, "gradient_640x480.png") + JSON.stringify({ question_id: 4, image: "checker_300x500.png" }) + "\n";
  const r = vqa(questions);
  assertCleanError(r, /2 of 4 question\(s\) not answered .*question_id 4: has no "text" \(KeyError\).*question_id 2: image images\/nowhere\.png: file not found/);
  assert.deepEqual(ids(), [1, 3]);
  // the image now exists (an absolute path replaces the image folder, as os.path.join does)
  fs.copyFileSync(path.join(cwd, "images", "checker_300x500.png"), path.join(cwd, "found.png"));
  const again = vqa(questions.replace("nowhere.png", path.join(cwd, "found.png")));
  assertCleanError(again, /1 of 4 question\(s\) not answered .*question_id 4/);
  assert.deepEqual(ids(), [1, 2, 3], "the late answer is put back in question order");
});

test("malformed question lines are all listed before anything runs, and no answers file is written", () => {
  fresh();
  const r = vqa(q(1, "checker_300x500.png") + "{not json\n" + q(3, "checker_300x500.png") + "\n");
  assertCleanError(r, /2 line\(s\) are not JSON \(the reference fails with JSONDecodeError\): line 2: Expecting property name.*; line 4: Expecting value/);
  assert.equal(fs.existsSync(answersPath), false);
});

test("an answers file from another question file is refused, naming its ids, and left as it was", () => {
  fresh();
  fs.mkdirSync(path.join(cwd, "out"));
  const other = '{"question_id": 77, "prompt": "elsewhere", "text": "x", "answer_id": "a", "model_id": "tiny-llava-1.5-orig", "metadata": {}}\n';
  fs.writeFileSync(answersPath, other);
  const r = vqa(q(1, "checker_300x500.png"));
  assertCleanError(r, /out\/answers\.jsonl: 1 answer\(s\) are not this model's answers to this chunk's questions: line 1 \(question_id 77\)/);
  assert.equal(fs.readFileSync(answersPath, "utf8"), other);
});

test("a broken line inside an answers file is refused (only a torn last line is dropped)", () => {
  fresh();
  fs.mkdirSync(path.join(cwd, "out"));
  fs.writeFileSync(answersPath, "garbage\n");
  assertCleanError(vqa(q(1, "checker_300x500.png")), /answers\.jsonl, line 1: Expecting value.*not an answers file this command wrote/);
});

test("options the reference cannot take: an answers file without a folder, beam search, an unknown template", () => {
  fresh();
  const questions = q(1, "checker_300x500.png");
  fs.writeFileSync(path.join(cwd, "q.jsonl"), questions);
  const base = ["eval", "model_vqa", ...MODEL, "--question-file", "q.jsonl"];
  assertCleanError(llava([...base, "--answers-file", "answers.jsonl"], { cwd }), /has no folder part \(the reference's os\.makedirs\(''\) fails/);
  assertCleanError(vqa(questions, ["--num_beams", "3"]), /--num_beams 3: beam search is not implemented/);
  assertCleanError(vqa(questions, ["--conv-mode", "nope"]), /--conv-mode "nope" is not a template \(the reference fails with KeyError\)/);
  assert.equal(vqa(questions, ["--num-chunks", "two"]).status, 2, "argparse's exit status");
});

test("MMBench rows without a question or with a broken image are reported by index; the others are answered", () => {
  fresh();
  const image = fs.readFileSync(path.join(cwd, "images", "checker_300x500.png")).toString("base64");
  const row = (index: number, question: string, hint: string, img: string) => [index, question, hint, "y", "n", "", "", img].join("\t");
  const tsv = ["index\tquestion\thint\tA\tB\tC\tD\timage", row(1, "ok?", "", image), row(2, "", "", image), row(3, "bad image", "", "AAAA"), row(4, "fine", "hint", image)].join("\n") + "\n";
  fs.writeFileSync(path.join(cwd, "q.tsv"), tsv);
  const r = llava(["eval", "model_vqa_mmbench", ...MODEL, "--question-file", "q.tsv", "--answers-file", "out/answers.jsonl", ...BUDGET], { cwd });
  assertCleanError(r, /2 of 4 question\(s\) not answered .*index 2: the question is missing, not text \(TypeError\).*index 3: image from the base64 column: cannot decode/);
  assert.deepEqual(ids(), [1, 4]);
});
