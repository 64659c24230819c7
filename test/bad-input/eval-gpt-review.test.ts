/**
 * Bad input to the review commands: what the reference would stop on is found before any
 * request and reported in one line with the questions concerned; what it would silently
 * mis-score gets a warning naming them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { ROOT } from "../helpers/paths.js";
import { assertCleanError as assertOneError, llava, type CliResult } from "../helpers/cli.js";
import { llavaAsync, startFakeJudge } from "../eval/fake-judge.js";
import { tempDir } from "../helpers/tmp.js";

const DATA = path.join(ROOT, "test", "eval", "data", "eval_gpt_review_bench");
/** No judge listens here: a test that reached a request would fail on it. */
const NOWHERE = "http://127.0.0.1:9/v1";

function workdir(edit: (dir: string) => void = () => {}): string {
  const dir = tempDir("llava-review-bad-");
  for (const f of fs.readdirSync(DATA)) if (f.includes(".")) fs.copyFileSync(path.join(DATA, f), path.join(dir, f));
  edit(dir);
  return dir;
}

const bench = (...extra: string[]) => [
  "eval", "eval_gpt_review_bench", "-q", "questions.jsonl", "-c", "context.jsonl", "-a", "answers_gpt4.jsonl", "answers_model.jsonl",
  "-r", "rule.json", "-o", "review.jsonl", "--api-base", NOWHERE, "--max-tries", "1", ...extra,
];

/** One error line, exit 1, no stack trace; warnings (the sample context has a string caption) aside. */
function assertCleanError(r: CliResult, mention: RegExp): void {
  assertOneError({ ...r, stderr: r.stderr.split("\n").filter((l) => !l.startsWith("llava: warning:")).join("\n") }, mention);
}

const rewriteLine = (file: string, n: number, text: string) => {
  const lines = fs.readFileSync(file, "utf8").split("\n");
  lines[n] = text;
  fs.writeFileSync(file, lines.join("\n"));
};

test("a question whose image has no context, a malformed answer line, an unknown category: all named, nothing sent or written", () => {
  const dir = workdir((d) => {
    rewriteLine(path.join(d, "questions.jsonl"), 2, '{"question_id": 2, "image": "999.jpg", "text": "?", "category": "complex"}');
    rewriteLine(path.join(d, "answers_model.jsonl"), 4, '{"question_id": 4, "text": "cut off');
    rewriteLine(path.join(d, "questions.jsonl"), 6, '{"question_id": 6, "image": "001.jpg", "text": "?", "category": "poetry"}');
  });
  const r = llava(bench(), { cwd: dir });
  assertCleanError(r, /3 of 8 reviews cannot be made .*nothing was sent.*line 3 \(question 2\): image 999\.jpg is not in the context file; line 5 \(question 4\): answer file 2 line 5: Unterminated string.*; line 7 \(question 6\): Visual QA category not found in rule file: llava_bench_poetry\./);
  assert.equal(fs.existsSync(path.join(dir, "review.jsonl")), false);
});

test("an answer without answer_id, where the reference raises KeyError", () => {
  const dir = workdir((d) => rewriteLine(path.join(d, "answers_model.jsonl"), 0, '{"question_id": 0, "text": "Ramen."}'));
  assertCleanError(llava(bench(), { cwd: dir }), /line 1 \(question 0\): answer 2 has no "answer_id"/);
});

test("missing files and options, one answer file, bad judge settings: one line each", () => {
  const dir = workdir();
  assertCleanError(llava(bench().map((a) => (a === "context.jsonl" ? "nope.jsonl" : a)), { cwd: dir }), /context file nope\.jsonl: file not found/);
  assertCleanError(llava(bench().filter((a) => a !== "answers_model.jsonl"), { cwd: dir }), /-a\/--answer-list needs two answer files .* got 1/);
  assertCleanError(llava(bench().filter((a, k, all) => a !== "-q" && all[k - 1] !== "-q"), { cwd: dir }), /-q\/--question is required/);
  assertCleanError(llava(bench("--max-tries", "0"), { cwd: dir }), /--max-tries must be at least 1/);
  assertCleanError(llava(bench("--api-base", "localhost:8000"), { cwd: dir }), /--api-base must be an http\(s\) URL/);
  const usage = llava(bench("-a"), { cwd: dir });
  assert.equal(usage.status, 2, "argparse's exit status");
});

test("a partly written last line in the output to resume from is named, as the reference fails on it", () => {
  const dir = workdir((d) => fs.writeFileSync(path.join(d, "review.jsonl"), fs.readFileSync(path.join(DATA, "expected", "partial.jsonl"), "utf8") + '{"id": 4, "quest'));
  assertCleanError(llava(bench(), { cwd: dir }), /output file review\.jsonl, line 4: Unterminated string .*remove it to resume/);
});

test("answers from another question file and short files: reviewed as the reference pairs them, with warnings naming the questions", async () => {
  const dir = workdir((d) => {
    const file = path.join(d, "answers_model.jsonl");
    const lines = fs.readFileSync(file, "utf8").trim().split("\n");
    // the model's answers of another question file: other ids, one line fewer
    fs.writeFileSync(file, lines.slice(0, 7).map((l) => l.replace(/"question_id": (\d+)/, (_, n) => `"question_id": ${Number(n) + 100}`)).join("\n") + "\n");
  });
  const questions = fs.readFileSync(path.join(DATA, "questions.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).text as string);
  const judge = await startFakeJudge(questions, questions.map(() => "8 7\nok"));
  try {
    const r = await llavaAsync(bench().map((a) => (a === NOWHERE ? judge.apiBase : a)), dir);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(judge.answered.length, 7);
    assert.match(r.stderr, /the question file has 8 lines, the answer files 8 and 7: only the first 7 are reviewed/);
    assert.match(r.stderr, /question ids differ .* on the lines of questions 0, 1, 2, 3, 4, 5, 6:/);
  } finally {
    await judge.close();
  }
});

test("summarize_gpt_review: a category whose reference mean is 0 is the reference's ZeroDivisionError, in one line", () => {
  const dir = tempDir("llava-summary-bad-");
  fs.writeFileSync(path.join(dir, "review_x.jsonl"), '{"question_id": 1, "category": "conv", "tuple": [0, 5]}\n');
  assertCleanError(llava(["eval", "summarize_gpt_review", "-d", dir]), /mean reference score of all is 0 .*float division by zero/);
  fs.writeFileSync(path.join(dir, "review_x.jsonl"), '{"question_id": 1, "category": "conv", "tuple": [7]}\n');
  assertCleanError(llava(["eval", "summarize_gpt_review", "-d", dir]), /not pairs of numbers/);
});
