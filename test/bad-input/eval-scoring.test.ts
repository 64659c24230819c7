/**
 * Bad inputs to the POPE, ScienceQA, TextVQA and VQA submission commands: one `llava:` line
 * naming the file, line or ids concerned and the reference's own failure, exit 1, no trace;
 * where the reference would go on with a silently wrong score, a warning naming the ids.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertCleanError, llava } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

/** A working folder holding `files` (name -> text). */
function folder(files: Record<string, string>): string {
  const dir = tempDir("llava-eval-bad-");
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r) + "\n").join("");
const popeQuestions = jsonl([1, 2, 3].map((id) => ({ question_id: id, image: `${id}.jpg`, text: "q", category: "random" })));
const popeLabels = { "coco/coco_pope_random.json": jsonl([1, 2, 3].map((id) => ({ question_id: id, image: `${id}.jpg`, label: id === 2 ? "no" : "yes" }))) };
const POPE = ["eval", "eval_pope", "--annotation-dir", "coco", "--question-file", "q.jsonl", "--result-file", "a.jsonl"];

test("POPE: a malformed answers line names the file and line", () => {
  const cwd = folder({ "q.jsonl": popeQuestions, "a.jsonl": '{"question_id": 1, "text": "Yes"}\n{"question_id": 2, "text": \n', ...popeLabels });
  assertCleanError(llava(POPE, { cwd }), /a\.jsonl: 1 bad line, nothing written: line 2: Expecting value/);
});

test("POPE: answers to questions missing from the question file are all named (the reference's KeyError)", () => {
  const cwd = folder({ "q.jsonl": popeQuestions, "a.jsonl": jsonl([{ question_id: 7, text: "Yes" }, { question_id: 1, text: "No" }, { question_id: 8, text: "No" }]), ...popeLabels });
  const r = llava(POPE, { cwd });
  assertCleanError(r, /2 answers have a question_id not in the question file: ids 7, 8 .*KeyError/);
  assert.equal(r.stdout, "");
});

test("POPE: a missing result file is one line", () => {
  assertCleanError(llava(POPE, { cwd: folder({ "q.jsonl": popeQuestions, ...popeLabels }) }), /result file a\.jsonl: file not found/);
});

test("POPE: a question answered twice is scored twice, as the reference does, with a warning naming it", () => {
  const cwd = folder({ "q.jsonl": popeQuestions, "a.jsonl": jsonl([{ question_id: 1, text: "Yes" }, { question_id: 1, text: "Yes" }, { question_id: 3, text: "No" }]), ...popeLabels });
  const r = llava(POPE, { cwd });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /llava: warning: .*1 questions are answered more than once, each answer scored: ids 1\n/);
  assert.match(r.stderr, /1 answers are paired by order with a label for another image: ids 1\n/);
});

test("a stray file in the POPE annotation folder stops it as the reference's assert does", () => {
  const cwd = folder({ "q.jsonl": popeQuestions, "a.jsonl": jsonl([{ question_id: 1, text: "Yes" }]), ...popeLabels, "coco/README": "x" });
  assertCleanError(llava(POPE, { cwd }), /coco holds README, not a coco_pope_<category>\.json label file.*AssertionError/);
});

const tvqaAnnotations = (answers: string[][]) =>
  JSON.stringify({ data: answers.map((a, i) => ({ image_id: `img${i}`, question: `Question ${i}?`, answers: a })) });
const ten = Array(10).fill("yes");
const tvqaAnswer = (i: number, prompt = `Question ${i}?\nAnswer briefly.`) => ({ question_id: `img${i}`, prompt, text: "yes" });
const TEXTVQA = ["eval", "eval_textvqa", "--annotation-file", "ann.json", "--result-file", "r.jsonl"];

test("TextVQA: annotations without 10 answers are all named (the reference's AssertionError)", () => {
  const cwd = folder({ "ann.json": tvqaAnnotations([ten, ten.slice(1), ten, [...ten, "no"]]), "r.jsonl": jsonl([0, 1, 2, 3].map((i) => tvqaAnswer(i))) });
  const r = llava(TEXTVQA, { cwd });
  assertCleanError(r, /2 annotations do not hold 10 answer strings: ids 'img1', 'img3'/);
  assert.equal(r.stdout, "r\n", "the reference prints the experiment name first");
});

test("TextVQA: prompts with no recognisable question are named (the reference's assert False)", () => {
  const cwd = folder({ "ann.json": tvqaAnnotations([ten, ten]), "r.jsonl": jsonl([tvqaAnswer(0), tvqaAnswer(1, "Question 1?")]) });
  assertCleanError(llava(TEXTVQA, { cwd }), /1 answers have a prompt with no recognisable question: ids 'img1'/);
});

test("TextVQA: a question answered twice is warned about and both answers scored", () => {
  const cwd = folder({ "ann.json": tvqaAnnotations([ten]), "r.jsonl": jsonl([tvqaAnswer(0), tvqaAnswer(0)]) });
  const r = llava(TEXTVQA, { cwd });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "r\nSamples: 2\nAccuracy: 100.00%\n\n");
  assert.match(r.stderr, /1 questions are answered more than once, each answer scored: ids 'img0'/);
});

test("ScienceQA: --base-dir not given stops as the reference's os.path.join(None) does", () => {
  assertCleanError(llava(["eval", "eval_science_qa", "--result-file", "r.jsonl"], { cwd: folder({}) }), /--base-dir not given.*TypeError/);
});

test("ScienceQA: an answer text that is not a string names the question", () => {
  const cwd = folder({
    "d/pid_splits.json": JSON.stringify({ test: ["1"] }),
    "d/problems.json": JSON.stringify({ 1: { choices: ["a", "b"], answer: 0 } }),
    "r.jsonl": jsonl([{ question_id: "1", prompt: "<image>\nq", text: 3 }]),
  });
  const r = llava(["eval", "eval_science_qa", "--base-dir", "d", "--result-file", "r.jsonl", "--output-file", "o.json", "--output-result", "s.json"], { cwd });
  assertCleanError(r, /question 1: "text" is int, expected a string/);
  assert.deepEqual(fs.readdirSync(cwd).sort(), ["d", "r.jsonl"], "nothing written");
});

test("ScienceQA: split ids missing from problems.json are all named", () => {
  const cwd = folder({ "d/pid_splits.json": JSON.stringify({ test: ["1", "2", "3"] }), "d/problems.json": JSON.stringify({ 2: {} }), "r.jsonl": "" });
  assertCleanError(llava(["eval", "eval_science_qa", "--base-dir", "d", "--result-file", "r.jsonl"], { cwd }), /2 ids of split test are not in problems\.json: '1', '3'.*KeyError/);
});

test("VQAv2: a missing split question file is one line", () => {
  const cwd = folder({ "v/answers/dev/m/merge.jsonl": jsonl([{ question_id: 1, text: "yes" }]) });
  assertCleanError(llava(["eval", "convert_vqav2_for_submission", "--dir", "v", "--ckpt", "m", "--split", "dev"], { cwd }), /question file v\/llava_vqav2_mscoco_test2015\.jsonl: file not found/);
});

test("an unknown option exits 2 as argparse does", () => {
  const r = llava(["eval", "eval_pope", "--annotation-file", "x"], { cwd: folder({}) });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unrecognized arguments: --annotation-file/);
});
