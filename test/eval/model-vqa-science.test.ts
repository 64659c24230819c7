/** `llava eval model_vqa_science` against the reference script's answers file, stdout and prompts. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertSameAnswers, assertSamePrompts, expected, runCase, workspace } from "./answers-helpers.js";
import { scienceScript } from "../../src/eval/model-vqa-science.js";
import { llava } from "../helpers/cli.js";

const cwd = workspace();
const answersPath = path.join(cwd, "out", "answers.jsonl");

for (const [name, convMode] of [["single-pred", "llava_v0"], ["plain", "llava_v1"]]) {
  test(`model_vqa_science (${name}): image and text-only questions as the reference asks and records them`, () => {
    const c = expected("model_vqa_science", name);
    fs.rmSync(path.join(cwd, "out"), { recursive: true, force: true });
    const r = runCase("model_vqa_science", c, cwd);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, c.stdout);
    assertSameAnswers(fs.readFileSync(answersPath, "utf8"), c.answers!);
    assertSamePrompts(scienceScript, c, cwd, convMode);
  });
}

test("a text-only ScienceQA question is answered as llava run answers it without an image", () => {
  const c = expected("model_vqa_science", "plain");
  fs.rmSync(path.join(cwd, "out"), { recursive: true, force: true });
  runCase("model_vqa_science", c, cwd);
  const texts = assertSameAnswers(fs.readFileSync(answersPath, "utf8"), c.answers!);
  const r = llava(["run", "--model-path", "models/tiny-llava-1.5-orig", "--query", "Context: N/A\nWhich is a mammal?\nA. whale\nB. shark\nC. trout", "--conv-mode", "llava_v1", "--temperature", "0", "--max-new-tokens", "4"], { cwd });
  assert.equal(r.stdout, texts[1] + "\n");
});
