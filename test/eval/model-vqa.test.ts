/** `llava eval model_vqa` and `model_vqa_loader` against the reference scripts' files, stdout and prompts; chunking; resume. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { assertSameAnswers, assertSamePrompts, BUDGET, expected, runCase, workspace } from "./answers-helpers.js";
import { modelVqaLoaderScript, modelVqaScript } from "../../src/eval/model-vqa.js";
import { CLI, llava } from "../helpers/cli.js";

const cwd = workspace();
const answersPath = path.join(cwd, "out", "answers.jsonl");
const readAnswers = () => fs.readFileSync(answersPath, "utf8");
const fresh = () => fs.rmSync(path.join(cwd, "out"), { recursive: true, force: true });
/** Answer lines without their random answer ids. */
const withoutIds = (text: string) => text.replace(/"answer_id": "[^"]*"/g, '"answer_id": ""');

test("model_vqa writes the reference's answers file, stdout and prompts, whole and chunked", () => {
  for (const name of ["all", "chunk-1-of-3", "chunk-last-of-2"]) {
    const c = expected("model_vqa", name);
    fresh();
    const r = runCase("model_vqa", c, cwd);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, c.stdout);
    assertSameAnswers(readAnswers(), c.answers!);
    assertSamePrompts(modelVqaScript, c, cwd, "llava_v1");
  }
});

test("model_vqa's answers are llava run's greedy answers to the same questions", () => {
  const c = expected("model_vqa", "all");
  fresh();
  assert.equal(runCase("model_vqa", c, cwd).status, 0);
  const texts = assertSameAnswers(readAnswers(), c.answers!);
  const run = (query: string, image: string) =>
    llava(["run", "--model-path", "models/tiny-llava-1.5-orig", "--image-file", `images/${image}`, "--query", query, "--conv-mode", "llava_v1", "--temperature", "0", "--max-new-tokens", "4"], { cwd });
  assert.equal(run("What is in the image?", "checker_300x500.png").stdout, texts[0] + "\n");
  assert.equal(run("Describe the colors.\nAnswer the question using a single word or phrase.", "gradient_640x480.png").stdout, texts[1] + "\n");
});

test("a duplicated question id is answered each time, and warned about with the id", () => {
  fresh();
  const r = runCase("model_vqa", expected("model_vqa", "all"), cwd);
  assert.equal(r.status, 0);
  assert.match(r.stderr, /^llava: warning: .*questions\.jsonl: 1 question id\(s\) appear more than once: question_id 1 \(2 times\)/m);
});

test("the chunks of a split run, concatenated, are the whole run", () => {
  const c = expected("model_vqa", "all");
  fresh();
  runCase("model_vqa", c, cwd);
  const whole = withoutIds(readAnswers());
  let merged = "";
  for (const k of ["0", "1", "2"]) {
    fresh();
    assert.equal(runCase("model_vqa", c, cwd, ["--num-chunks", "3", "--chunk-idx", k]).status, 0);
    merged += readAnswers();
  }
  assert.equal(withoutIds(merged), whole);
});

test("model_vqa_loader switches a plain model to the _mmtag template as the reference does, printing the same line", () => {
  const c = expected("model_vqa_loader", "plain-model");
  fresh();
  const r = runCase("model_vqa_loader", c, cwd);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, c.stdout);
  assertSameAnswers(readAnswers(), c.answers!);
  assertSamePrompts(modelVqaLoaderScript, c, cwd, "v1_mmtag");
});

test("resume: a torn last line is dropped and answered again; answers already there are kept; a finished file stays as it is", () => {
  const c = expected("model_vqa", "all");
  fresh();
  runCase("model_vqa", c, cwd);
  const full = readAnswers();
  const lines = full.split("\n");
  fs.writeFileSync(answersPath, lines.slice(0, 2).join("\n") + "\n" + lines[2].slice(0, 30));
  const r = runCase("model_vqa", c, cwd);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /dropped its unfinished last line/);
  assert.match(r.stderr, /2 answer\(s\) kept, 3 to go/);
  const resumed = readAnswers();
  assert.ok(resumed.startsWith(lines.slice(0, 2).join("\n") + "\n"), "kept lines are kept byte for byte");
  assert.equal(withoutIds(resumed), withoutIds(full));
  assert.equal(runCase("model_vqa", c, cwd).status, 0);
  assert.equal(readAnswers(), resumed);
});

test("resume: a run killed mid-way and run again ends with the same file", async () => {
  const c = expected("model_vqa", "all");
  fresh();
  assert.equal(runCase("model_vqa", c, cwd, ["--max_new_tokens", "300"]).status, 0);
  const full = readAnswers();
  fresh();
  const child = spawn(process.execPath, [CLI, "eval", "model_vqa", ...c.args, "--answers-file", "out/answers.jsonl", ...BUDGET, "--max_new_tokens", "300"], { cwd, stdio: "ignore" });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const linesAtKill = await new Promise<number>((resolve) => {
    const count = () => (fs.existsSync(answersPath) ? readAnswers().split("\n").length - 1 : 0);
    const poll = setInterval(() => {
      if (count() >= 1) child.kill("SIGKILL");
      if (count() >= 1 || child.exitCode !== null) {
        clearInterval(poll);
        resolve(count());
      }
    }, 2);
  });
  await exited;
  assert.ok(linesAtKill < 5, `killed after ${linesAtKill} answers`);
  assert.equal(runCase("model_vqa", c, cwd, ["--max_new_tokens", "300"]).status, 0);
  assert.equal(withoutIds(readAnswers()), withoutIds(full));
});
