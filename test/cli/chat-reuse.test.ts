/** `llava chat` runs only each turn's new tokens, and answers as a chat without that reuse. */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadLlava } from "../../src/llava/load.js";
import { streamAnswer } from "../../src/llava/pipeline.js";
import { loadImage } from "../../src/image/decode.js";
import { llava } from "../helpers/cli.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

const MHA = path.join(MODELS, "tiny-llava-1.5-mha");
const GRADIENT = path.join(IMAGES, "gradient_640x480.png");

test("chat: later turns prefill only their new positions; the answers equal ones computed from scratch", async () => {
  const r = llava(["chat", "--model-path", MHA, "--image-file", GRADIENT, "--conv-mode", "llava_v1", "--temperature", "0", "--max-new-tokens", "8", "--debug"], { input: "What is shown?\nAnd then?\nWhy?\n" });
  assert.equal(r.status, 0, r.stderr);
  const prefills = [...r.stderr.matchAll(/\[prefill\] (\d+) of (\d+) positions/g)].map((m) => [Number(m[1]), Number(m[2])]);
  assert.equal(prefills.length, 3, r.stderr);
  assert.equal(prefills[0][0], prefills[0][1], "the first turn runs its whole prompt");
  for (const [run, total] of prefills.slice(1)) assert.ok(run < 25 && total > 50, `a later turn ran ${run} of ${total} positions`);

  const prompts = [...r.stderr.matchAll(/\[prompt\] (.*)/g)].map((m) => JSON.parse(m[1]) as string);
  const answers = [...r.stderr.matchAll(/\[answer\] (.*)/g)].map((m) => JSON.parse(m[1]) as string);
  const loaded = await loadLlava(MHA);
  const image = await loadImage(GRADIENT);
  for (const [i, prompt] of prompts.entries()) {
    let answer = "";
    for await (const piece of streamAnswer(loaded, prompt, [image], { maxNewTokens: 8, temperature: 0, stop: ["</s>"] })) answer += answer ? piece : piece.trimStart();
    assert.equal(answers[i], answer, `turn ${i + 1}`);
  }
});
