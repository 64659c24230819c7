/** `llava eval model_vqa_mmbench` against the reference script's answers file, stdout and prompts: hints, options, rounds, Chinese, chunks. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertSameAnswers, assertSamePrompts, expected, runCase, workspace } from "./answers-helpers.js";
import { mmbenchScript } from "../../src/eval/model-vqa-mmbench.js";
import { assertCleanError, llava } from "../helpers/cli.js";

const cwd = workspace();
const answersPath = path.join(cwd, "out", "answers.jsonl");
const fresh = () => fs.rmSync(path.join(cwd, "out"), { recursive: true, force: true });

for (const name of ["all-rounds", "cn", "chunk"]) {
  test(`model_vqa_mmbench (${name}) writes the reference's answers with its prompts`, () => {
    const c = expected("model_vqa_mmbench", name);
    fresh();
    const r = runCase("model_vqa_mmbench", c, cwd);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, c.stdout);
    assertSameAnswers(fs.readFileSync(answersPath, "utf8"), c.answers!);
    assertSamePrompts(mmbenchScript, c, cwd, "llava_v1");
  });
}

test("an MMBench answer is llava run's greedy answer to the same question and image", () => {
  const c = expected("model_vqa_mmbench", "all-rounds");
  fresh();
  runCase("model_vqa_mmbench", c, cwd);
  const texts = assertSameAnswers(fs.readFileSync(answersPath, "utf8"), c.answers!);
  const query = "How many colours?\nA. two\nB. one\nAnswer with the option's letter from the given choices directly.";
  const r = llava(["run", "--model-path", "models/tiny-llava-1.5-orig", "--image-file", "images/checker_300x500.png", "--query", query, "--conv-mode", "llava_v1", "--temperature", "0", "--max-new-tokens", "4"], { cwd });
  assert.equal(r.stdout, texts[5] + "\n");
});

test("a chunk index past the chunks made fails as the reference does (IndexError), writing nothing", () => {
  const c = expected("model_vqa_mmbench", "chunk-out-of-range");
  fresh();
  const r = runCase("model_vqa_mmbench", c, cwd);
  assertCleanError(r, /--chunk-idx 2 is out of range: 4 question\(s\) in chunks of 2 make 2 chunk\(s\) \(the reference fails with IndexError\)/);
  assert.equal(r.stdout, c.stdout);
  assert.equal(fs.existsSync(answersPath), false);
});
