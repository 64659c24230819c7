// The prompts the reference fixtures were made with, rebuilt from the llava_v1 template.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { getConvTemplate } from "../../src/llava/conversation.js";
import { CASES } from "../helpers/paths.js";

function readCase(caseDir: string): { prompt: string; meta: Record<string, unknown> } {
  const dir = path.join(CASES, caseDir);
  return {
    prompt: readFileSync(path.join(dir, "prompt.txt"), "utf8"),
    meta: JSON.parse(readFileSync(path.join(dir, "meta.json"), "utf8")) as Record<string, unknown>,
  };
}

function generationPrompt(question: string, images: string[]): string {
  const conv = getConvTemplate<string>("llava_v1");
  conv.appendMessage(conv.roles[0], images.length > 0 ? { text: question, images } : question);
  conv.appendMessage(conv.roles[1], null);
  return conv.getPrompt();
}

for (const caseDir of [
  "tiny-llava-1.5-mha/gradient",
  "tiny-llava-1.5-mha/text_only",
  "tiny-llava-1.5-orig/gradient",
  "tiny-llava-next/gradient",
]) {
  test(`${caseDir}: prompt.txt is llava_v1 with the default system`, () => {
    const { prompt, meta } = readCase(caseDir);
    assert.equal(meta.system ?? null, null); // absent or null: the template's default system
    const rendered = generationPrompt(meta.question as string, meta.images as string[]);
    assert.equal(rendered, prompt);
    assert.equal(rendered, meta.prompt);
  });
}

test("gradient prompt, built the cli way (a string with <image>\\n in front)", () => {
  const { prompt } = readCase("tiny-llava-1.5-mha/gradient");
  const conv = getConvTemplate("llava_v1");
  conv.appendMessage(conv.roles[0], "<image>\nWhat is shown?");
  conv.appendMessage(conv.roles[1], null);
  assert.equal(conv.getPrompt(), prompt);
});

test("train_grad: the full training text is prompt + ' ' + answer + '</s>'", () => {
  const { prompt, meta } = readCase("tiny-llava-1.5-mha/train_grad");
  const conv = getConvTemplate<string>("llava_v1");
  conv.appendMessage(conv.roles[0], { text: "What is shown?", images: meta.images as string[] });
  conv.appendMessage(conv.roles[1], "A red square on a checkerboard.");
  assert.equal(conv.getPrompt(), meta.text);
  assert.equal(conv.getPrompt(), prompt);

  const open = conv.copy();
  open.updateLastMessage(null);
  assert.equal(open.getPrompt() + " A red square on a checkerboard.</s>", meta.text);
});
