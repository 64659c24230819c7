/** The serial engine: requests in arrival order, each answered as if alone; aborts and too-long prompts. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { loadLlava } from "../../src/llava/load.js";
import { PromptTooLongError } from "../../src/llava/generate.js";
import { loadImage } from "../../src/image/decode.js";
import { SerialEngine } from "../../src/serve/engine.js";
import { streamAnswer } from "../../src/llava/pipeline.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";

const PROMPT = fs.readFileSync(path.join(CASES, "tiny-llava-1.5-mha", "gradient", "prompt.txt"), "utf8");

async function collect(it: AsyncIterable<string>): Promise<string> {
  let s = "";
  for await (const piece of it) s += piece;
  return s;
}

test("concurrent requests are answered one after the other, each as if alone", async () => {
  const loaded = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
  const image = await loadImage(path.join(IMAGES, "gradient_640x480.png"));
  const alone = await collect(streamAnswer(loaded, PROMPT, [image], { maxNewTokens: 12 }));
  const engine = new SerialEngine(loaded);
  const outs = [0, 1, 2].map(() => engine.generate({ prompt: PROMPT, images: [image], maxNewTokens: 12 }));
  const seen: number[] = [];
  const texts = await Promise.all(outs.map(async (o) => {
    const t = await collect(o);
    seen.push(engine.queueLength);
    return t;
  }));
  assert.deepEqual(texts, [alone, alone, alone]);
  assert.deepEqual(seen, [2, 1, 0]);
  assert.equal(outs[0].completionTokens, 12);
  assert.equal(outs[0].finishReason, "length");
  assert.ok(outs[0].promptTokens > PROMPT.split(" ").length, "the image features count as prompt tokens");

  const abort = new AbortController();
  abort.abort(new Error("client went away"));
  await assert.rejects(collect(engine.generate({ prompt: PROMPT, images: [image], maxNewTokens: 4, signal: abort.signal })), /client went away/);
  const long = "<image>\n" + "word ".repeat(3000);
  await assert.rejects(collect(engine.generate({ prompt: long, images: [image], maxNewTokens: 4 })), PromptTooLongError);
  assert.equal(engine.queueLength, 0);
  await engine.close();
  assert.throws(() => engine.generate({ prompt: PROMPT, images: [image], maxNewTokens: 1 }), /closed/);
});
