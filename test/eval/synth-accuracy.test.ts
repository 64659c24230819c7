import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { formatSynthScore, scoreSynth } from "../../src/eval/synth-accuracy.js";
import { assertCleanError, llava } from "../helpers/cli.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "synth-accuracy-"));
const write = (name: string, rows: object[]) => {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, rows.map((r) => JSON.stringify(r) + "\n").join(""));
  return file;
};

// six hand-made questions and their ground truth
const QUESTIONS = [
  { question_id: 0, image: "test-000000.png", text: "What color is the star?\nAnswer the question using a single word or phrase.", category: "color" },
  { question_id: 1, image: "test-000000.png", text: "What shape is the red object?\nAnswer the question using a single word or phrase.", category: "shape" },
  { question_id: 2, image: "test-000000.png", text: "How many objects are there?\nAnswer the question using a single word or phrase.", category: "count" },
  { question_id: 3, image: "test-000001.png", text: "Where is the blue ring?\nAnswer the question using a single word or phrase.", category: "position" },
  { question_id: 4, image: "test-000001.png", text: "Is there a blue ring?\nAnswer the question using a single word or phrase.", category: "exist" },
  { question_id: 5, image: "test-000001.png", text: "What color is the ring?\nAnswer the question using a single word or phrase.", category: "color" },
];
const TRUTH = [
  { question_id: 0, answer: "purple", category: "color" },
  { question_id: 1, answer: "circle", category: "shape" },
  { question_id: 2, answer: "2", category: "count" },
  { question_id: 3, answer: "top left", category: "position" },
  { question_id: 4, answer: "yes", category: "exist" },
  { question_id: 5, answer: "blue", category: "color" },
];
const CHANCE = { color: 0.125, shape: 0.125, count: 0.25, position: 1 / 9, exist: 0.5, relation: 0.5, overall: 0.2 };

// as the EvalAI normaliser reads them: "Purple." is purple, "a circle" is circle, "two" is 2
const ANSWERS = [
  { question_id: 0, prompt: "", text: "Purple.", answer_id: "a", model_id: "m", metadata: {} },
  { question_id: 1, prompt: "", text: "a circle", answer_id: "b", model_id: "m", metadata: {} },
  { question_id: 2, prompt: "", text: "two", answer_id: "c", model_id: "m", metadata: {} },
  { question_id: 3, prompt: "", text: "bottom left", answer_id: "d", model_id: "m", metadata: {} },
  // question 4 has no answer
  { question_id: 5, prompt: "", text: "Blue", answer_id: "f", model_id: "m", metadata: {} },
];

describe("llava eval synth_accuracy", () => {
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const questionFile = write("test.jsonl", QUESTIONS);
  write("test_answers.jsonl", TRUTH);
  fs.writeFileSync(path.join(tmp, "world.json"), JSON.stringify({ chance: CHANCE }));
  const resultFile = write("answers.jsonl", ANSWERS);

  it("scores normalised exact matches per category, a missing answer as wrong, beside each category's chance", () => {
    const truths = new Map(TRUTH.map((t) => [`i${t.question_id}`, t]));
    const predictions = new Map(ANSWERS.map((a) => [`i${a.question_id}`, a.text]));
    const score = scoreSynth(truths, predictions, CHANCE);
    assert.deepEqual(score.categories, {
      color: { questions: 2, correct: 2, missing: 0, accuracy: 1, chance: 0.125 },
      shape: { questions: 1, correct: 1, missing: 0, accuracy: 1, chance: 0.125 },
      count: { questions: 1, correct: 1, missing: 0, accuracy: 1, chance: 0.25 },
      position: { questions: 1, correct: 0, missing: 0, accuracy: 0, chance: 1 / 9 },
      exist: { questions: 1, correct: 0, missing: 1, accuracy: 0, chance: 0.5 },
    });
    assert.equal(score.overall.questions, 6);
    assert.equal(score.overall.correct, 4);
    assert.equal(score.overall.missing, 1);
    // the overall chance: each question's own, averaged
    assert.ok(Math.abs(score.overall.chance! - (2 * 0.125 + 0.125 + 0.25 + 1 / 9 + 0.5) / 6) < 1e-12);
    const table = formatSynthScore(score).split("\n");
    assert.match(table[0], /^category\s+questions\s+correct\s+missing\s+accuracy %\s+chance %$/);
    assert.match(table[5], /^exist\s+1\s+0\s+1\s+0\.00\s+50\.00$/);
    assert.match(table[6], /^overall\s+6\s+4\s+1\s+66\.67\s+20\.60$/);
    // without a world, no chance
    assert.equal(scoreSynth(truths, predictions, null).overall.chance, null);
  });

  it("prints the table and the JSON, finding the ground truth and the world beside the question file", () => {
    const r = llava(["eval", "synth_accuracy", "--question-file", questionFile, "--result-file", resultFile]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0], /^category/);
    const json = JSON.parse(lines.at(-1)!) as { overall: { accuracy: number; chance: number } };
    assert.equal(json.overall.accuracy, 4 / 6);
    // a world given explicitly must exist
    assertCleanError(llava(["eval", "synth_accuracy", "--question-file", questionFile, "--result-file", resultFile, "--world", path.join(tmp, "nope.json")]), /nope\.json/);
  });

  it("refuses answers to questions it does not have, answers given twice, and a ground truth that does not cover the questions", () => {
    const stray = write("stray.jsonl", [...ANSWERS, { question_id: 99, text: "red" }]);
    assertCleanError(llava(["eval", "synth_accuracy", "--question-file", questionFile, "--result-file", stray]), /1 answers to questions not in the question file.*99/);
    const twice = write("twice.jsonl", [...ANSWERS, ANSWERS[0]]);
    assertCleanError(llava(["eval", "synth_accuracy", "--question-file", questionFile, "--result-file", twice]), /answered more than once: ids 0/);
    const partial = write("partial_truth.jsonl", TRUTH.slice(1));
    assertCleanError(llava(["eval", "synth_accuracy", "--question-file", questionFile, "--result-file", resultFile, "--annotation-file", partial]), /1 questions .* have no ground truth/);
    const missing = llava(["eval", "synth_accuracy", "--question-file", questionFile]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /--result-file/);
  });
});
