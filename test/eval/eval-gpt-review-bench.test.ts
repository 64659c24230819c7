/**
 * `llava eval eval_gpt_review_bench` against a fake judge, compared byte for byte with what the
 * reference script printed and wrote for the same inputs and judge replies (data/.../expected,
 * made by running the reference with a recording stand-in for its OpenAI client).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT } from "../helpers/paths.js";
import { llavaAsync, startFakeJudge, type Fault } from "./fake-judge.js";
import { tempDir } from "../helpers/tmp.js";

const DATA = path.join(ROOT, "test", "eval", "data", "eval_gpt_review_bench");
const expected = (name: string) => fs.readFileSync(path.join(DATA, "expected", name), "utf8");
const questions = fs.readFileSync(path.join(DATA, "questions.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).text as string);
const replies = JSON.parse(fs.readFileSync(path.join(DATA, "replies.json"), "utf8")) as string[];

function workdir(): string {
  const dir = tempDir("llava-review-");
  for (const f of fs.readdirSync(DATA)) if (f.includes(".")) fs.copyFileSync(path.join(DATA, f), path.join(dir, f));
  return dir;
}

const args = (apiBase: string, ...extra: string[]) => [
  "eval", "eval_gpt_review_bench",
  "-q", "questions.jsonl", "-c", "context.jsonl", "-a", "answers_gpt4.jsonl", "answers_model.jsonl",
  "-r", "rule.json", "-o", "review.jsonl", "--max-tokens", "512",
  "--api-base", apiBase, "--api-key", "sk-test", "--max-tries", "3", "--request-timeout", "0.5", ...extra,
];

async function run(faults: Record<number, Fault[] | { always: Fault }>, dir: string, ...extra: string[]) {
  const judge = await startFakeJudge(questions, replies, faults);
  try {
    return { judge, result: await llavaAsync(args(judge.apiBase, ...extra), dir) };
  } finally {
    await judge.close();
  }
}

test("reviews: the reference's requests, printed lines and output file, through retried HTTP errors, a bad body and a hang", async () => {
  const dir = workdir();
  const { judge, result } = await run({ 1: [500], 3: ["garbage"], 5: ["hang"], 6: [429] }, dir);
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stdout, expected("stdout.txt"));
  assert.equal(fs.readFileSync(path.join(dir, "review.jsonl"), "utf8"), expected("review.jsonl"));
  const sent = expected("requests.jsonl").trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(judge.answered, sent, "model, system text, prompt, temperature and max_tokens as the reference sends them");
  assert.ok(judge.authorizations.every((a) => a === "Bearer sk-test"));
  assert.match(result.stderr, /review 2 \(question 1\): HTTP 500 .*trying again/);
  assert.match(result.stderr, /review 4 \(question 3\): a reply without choices\[0\]\.message\.content/);
  assert.match(result.stderr, /review 6 \(question 5\): no reply within 0\.5 s; trying again/);
  assert.match(result.stderr, /captions of images 002\.jpg are strings/);
  assert.match(result.stderr, /no score pair for questions 1, 3, 4, 5/);
  assert.doesNotMatch(result.stderr, /^llava: (?!warning)/m);
});

test("resume: a partial output is kept and only the missing reviews are asked for, as the reference does", async () => {
  const dir = workdir();
  fs.copyFileSync(path.join(DATA, "expected", "partial.jsonl"), path.join(dir, "review.jsonl"));
  const { judge, result } = await run({}, dir);
  assert.equal(result.status, 0, result.stderr);
  assert.equal(result.stdout, expected("stdout_resume.txt"));
  assert.equal(fs.readFileSync(path.join(dir, "review.jsonl"), "utf8"), expected("review.jsonl"));
  assert.equal(judge.answered.length, questions.length - 3);
});

test("a review that fails every try is counted and named; the run goes on, and a rerun fills the gap in order", async () => {
  const dir = workdir();
  const first = await run({ 2: { always: 500 } }, dir, "--max-tries", "2");
  assert.equal(first.result.status, 1);
  const errors = first.result.stderr.split("\n").filter((l) => l.startsWith("llava:") && !l.startsWith("llava: warning:"));
  assert.equal(errors.length, 1, first.result.stderr);
  assert.match(errors[0], /eval_gpt_review_bench: 1 of 8 reviews failed \(questions 2\): 2 tries failed, the last with HTTP 500/);
  assert.equal(first.judge.answered.length, 7, "the run went on after the failure");
  const partial = fs.readFileSync(path.join(dir, "review.jsonl"), "utf8");
  assert.equal(partial, expected("review.jsonl").split("\n").filter((l) => !l.startsWith('{"id": 3,')).join("\n"));

  const second = await run({}, dir);
  assert.equal(second.result.status, 0, second.result.stderr);
  assert.equal(second.judge.answered.length, 1);
  assert.equal(fs.readFileSync(path.join(dir, "review.jsonl"), "utf8"), expected("review.jsonl"));
  assert.match(second.result.stdout, /^Skipping 1 as we already have it\.\n2\n3\nSkipping 3 as/m);
});

test("a judge that refuses the key stops at once with one line, no review written", async () => {
  const dir = workdir();
  const { judge, result } = await run({ 0: { always: 401 } }, dir);
  assert.equal(result.status, 1);
  assert.match(result.stderr, /^llava: the judge at http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions refused the request: HTTP 401/m);
  assert.doesNotMatch(result.stderr, /^\s+at /m);
  assert.equal(judge.answered.length, 0);
  assert.equal(fs.readFileSync(path.join(dir, "review.jsonl"), "utf8"), "");
});
