/**
 * `llava eval eval_gpt_review_visual` against a fake judge, compared byte for byte with what the
 * reference script printed and wrote for the same inputs and replies (data/.../expected).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT } from "../helpers/paths.js";
import { llavaAsync, startFakeJudge } from "./fake-judge.js";
import { tempDir } from "../helpers/tmp.js";

const DATA = path.join(ROOT, "test", "eval", "data", "eval_gpt_review_visual");
const expected = (name: string) => fs.readFileSync(path.join(DATA, "expected", name), "utf8");
const questions = fs.readFileSync(path.join(DATA, "qa90_questions.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).text as string);
const replies = JSON.parse(fs.readFileSync(path.join(DATA, "replies.json"), "utf8")) as string[];

test("COCO reviews: captions then boxes as Python prints them, the category's rule, the output written afresh", async () => {
  const dir = tempDir("llava-review-");
  for (const f of fs.readdirSync(DATA)) if (f.includes(".")) fs.copyFileSync(path.join(DATA, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, "gpt4_text.jsonl"), '{"id": 1, "stale": true}\n');
  const judge = await startFakeJudge(questions, replies, { 0: [503] });
  try {
    const r = await llavaAsync([
      "eval", "eval_gpt_review_visual", "--question", "qa90_questions.jsonl", "--context", "caps_boxes.jsonl",
      "--answer-list", "qa90_gpt4_answer.jsonl", "answers_model.jsonl", "--rule", "rule.json", "--output", "gpt4_text.jsonl",
      "--api-base", judge.apiBase, "--max-tries", "2",
    ], dir);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, expected("stdout.txt"));
    assert.equal(fs.readFileSync(path.join(dir, "gpt4_text.jsonl"), "utf8"), expected("gpt4_text.jsonl"));
    assert.deepEqual(judge.answered, expected("requests.jsonl").trim().split("\n").map((l) => JSON.parse(l)));
    assert.ok(judge.authorizations.every((a) => a === undefined), "no key given, none sent");
    assert.match(r.stderr, /review 1 \(question 0\): HTTP 503/);
  } finally {
    await judge.close();
  }
});

test("a review that fails every try: the others are written in order, the failure named, exit 1", async () => {
  const dir = tempDir("llava-review-");
  for (const f of fs.readdirSync(DATA)) if (f.includes(".")) fs.copyFileSync(path.join(DATA, f), path.join(dir, f));
  const judge = await startFakeJudge(questions, replies, { 1: { always: "hang" } });
  try {
    const r = await llavaAsync([
      "eval", "eval_gpt_review_visual", "-q", "qa90_questions.jsonl", "-c", "caps_boxes.jsonl", "-a", "qa90_gpt4_answer.jsonl", "answers_model.jsonl",
      "-r", "rule.json", "-o", "gpt4_text.jsonl", "--api-base", judge.apiBase, "--max-tries", "1", "--request-timeout", "2",
    ], dir);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^llava: eval_gpt_review_visual: 1 of 3 reviews failed \(questions 1\): the one try failed with no reply within 2 s/m);
    assert.equal(r.stdout, expected("stdout.txt"));
    const lines = expected("gpt4_text.jsonl").split("\n");
    assert.equal(fs.readFileSync(path.join(dir, "gpt4_text.jsonl"), "utf8"), [lines[0], lines[2], ""].join("\n"));
  } finally {
    await judge.close();
  }
});
