/** The batching engine refuses bad options at once and fails a bad request alone, with a clear message, while the others go on. */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadLlava } from "../../src/llava/load.js";
import { loadImage } from "../../src/image/decode.js";
import { BatchEngine } from "../../src/serve/batch-engine.js";
import type { EngineOutput } from "../../src/serve/engine.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

async function collect(out: EngineOutput): Promise<string> {
  let s = "";
  for await (const piece of out) s += piece;
  return s;
}

test("bad engine options and bad requests", async () => {
  const loaded = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
  const image = await loadImage(path.join(IMAGES, "gradient_640x480.png"));
  assert.throws(() => new BatchEngine(loaded, { maxBatch: 0 }), /maxBatch must be a whole number >= 1, got 0/);
  assert.throws(() => new BatchEngine(loaded, { maxQueue: 1.5 }), /maxQueue must be a whole number >= 0, got 1.5/);
  assert.throws(() => new BatchEngine(loaded, { imageCacheBytes: -1 }), /imageCacheBytes must be a number of bytes >= 0, got -1/);

  const engine = new BatchEngine(loaded, { maxBatch: 3 });
  const good = engine.generate({ prompt: "USER: <image>\nHi ASSISTANT:", images: [image], maxNewTokens: 6 });
  const bad = [
    engine.generate({ prompt: "USER: <image>\nHi ASSISTANT:", images: [image], maxNewTokens: 0 }),
    engine.generate({ prompt: "USER: <image>\nHi ASSISTANT:", images: [image, image], maxNewTokens: 3 }),
    engine.generate({ prompt: "USER: Hi ASSISTANT:", images: [image], maxNewTokens: 3 }),
  ];
  await assert.rejects(collect(bad[0]), /maxNewTokens must be a whole number >= 1, got 0/);
  await assert.rejects(collect(bad[1]), /1 image marker\(s\) but 2 image\(s\)/);
  await assert.rejects(collect(bad[2]), /0 image marker\(s\) but 1 image\(s\)/);
  assert.ok((await collect(good)).length > 0);
  assert.equal(good.completionTokens, 6);
  const out = engine.generate({ prompt: "USER: Hi ASSISTANT:", images: [], maxNewTokens: 2 });
  await collect(out);
  await assert.rejects(collect(out), /only once/);
  assert.equal(engine.queueLength, 0);
  await engine.close();
});
