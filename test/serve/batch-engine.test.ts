/**
 * The batching engine: concurrent requests decoded together give each the answer it gets alone
 * (greedy or seeded sampling, at f32, q8_0 and q4_0, MHA and GQA, AnyRes); a full queue, aborts and bad requests;
 * the image feature cache and the KV prefix reuse of a multi-turn chat.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadLlava, type LoadOptions } from "../../src/llava/load.js";
import { PromptTooLongError } from "../../src/llava/generate.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { answerGeneration } from "../../src/llava/pipeline.js";
import { conversationFor } from "../../src/cli/common.js";
import { loadImage } from "../../src/image/decode.js";
import { BatchEngine } from "../../src/serve/batch-engine.js";
import { QueueFullError } from "../../src/serve/engine.js";
import type { EngineOutput, EngineRequest } from "../../src/serve/engine.js";
import type { LoadedLlava } from "../../src/llava/load.js";
import { IMAGES, MODELS } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";

const gradient = loadImage(path.join(IMAGES, "gradient_640x480.png"));
const checker = loadImage(path.join(IMAGES, "checker_300x500.png"));

function prompt(loaded: LoadedLlava, turns: Array<[string, string | null]>): string {
  const conv = conversationFor(loaded, undefined);
  for (const [q, a] of turns) {
    conv.appendMessage(conv.roles[0], q);
    conv.appendMessage(conv.roles[1], a);
  }
  return conv.getPrompt();
}

async function collect(out: EngineOutput, onPiece?: () => void): Promise<string> {
  let s = "";
  for await (const piece of out) {
    s += piece;
    onPiece?.();
  }
  return s;
}

/** The answer alone, as the serial engine computes it. */
async function alone(loaded: LoadedLlava, r: EngineRequest) {
  const g = answerGeneration(loaded, r.prompt, r.images, { ...r, temperature: r.temperature ?? 0 });
  await g.complete();
  return { text: g.text, tokens: g.tokens.length, finish: g.finishReason };
}

async function requests(loaded: LoadedLlava): Promise<EngineRequest[]> {
  const [g, c] = await Promise.all([gradient, checker]);
  return [
    { prompt: prompt(loaded, [["<image>\nWhat is shown in this image?", null]]), images: [g], maxNewTokens: 14 },
    { prompt: prompt(loaded, [["Tell me a story about a cat that lives on a boat.", null]]), images: [], maxNewTokens: 9 },
    { prompt: prompt(loaded, [["<image>\nDescribe the pattern.", null]]), images: [c], maxNewTokens: 11, stop: ["zz"] },
    { prompt: prompt(loaded, [["<image>\nCompare.\n<image>", null]]), images: [c, g], maxNewTokens: 6 },
    { prompt: prompt(loaded, [["Hi", null]]), images: [], maxNewTokens: 17 },
    { prompt: prompt(loaded, [["<image>\nWhat colour dominates?", null]]), images: [g], maxNewTokens: 12, temperature: 0.9, topP: 0.8, seed: 11 },
  ];
}

/** Requests arrive at different times: two at once, the others after the first pieces of the first. */
async function batched(engine: BatchEngine, reqs: EngineRequest[]) {
  const outs: Array<Promise<{ text: string; tokens: number; finish: string | null }>> = [];
  const start = (r: EngineRequest) => {
    const out = engine.generate(r);
    outs.push(collect(out, pieces).then((text) => ({ text, tokens: out.completionTokens, finish: out.finishReason })));
  };
  let seen = 0;
  let next = 2;
  const pieces = () => {
    seen++;
    if (seen % 2 === 0 && next < reqs.length) start(reqs[next++]);
  };
  start(reqs[0]);
  start(reqs[1]);
  const first = await Promise.all(outs);
  while (next < reqs.length) start(reqs[next++]);
  return [...first, ...(await Promise.all(outs.slice(first.length)))];
}

let gqaDir: string | null = null;
function gqaModel(): string {
  if (gqaDir) return gqaDir;
  const tmp = tempDir("llava-gqa-");
  gqaDir = writeRandomLlava(tmp, {
    format: "hf", seed: 3, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
    text: { hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32001, max_position_embeddings: 512 },
    vision: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, image_size: 56, patch_size: 14 },
  }).modelDir;
  return gqaDir;
}

const MODELS_UNDER_TEST: Array<[string, () => string]> = [
  ["tiny-llava-1.5-mha", () => path.join(MODELS, "tiny-llava-1.5-mha")],
  ["tiny-llava-1.5-orig", () => path.join(MODELS, "tiny-llava-1.5-orig")],
  ["tiny-llava-next", () => path.join(MODELS, "tiny-llava-next")],
  ["random GQA", gqaModel],
];
const PRECISIONS: Array<[string, LoadOptions]> = [["f32", {}], ["q8_0", { quantize: "q8_0" }], ["q4_0", { quantize: "q4_0" }]];

for (const [name, dir] of MODELS_UNDER_TEST) {
  test(`${name}: each of 6 requests decoded together answers as it does alone (greedy, and sampled with a seed; f32, q8_0, q4_0)`, async () => {
    for (const [precision, opts] of PRECISIONS) {
      const loaded = await loadLlava(dir(), opts);
      const reqs = await requests(loaded);
      const want = [];
      for (const r of reqs) want.push(await alone(loaded, r));
      // no prefix reuse here: a tail prefilled on its own sums in another order, so only greedy answers agree (the reuse test below)
      const engine = new BatchEngine(loaded, { maxBatch: 4, prefixCacheBytes: 0 });
      const got = await batched(engine, reqs);
      assert.deepEqual(got, want, `${name} at ${precision}`);
      assert.ok(engine.stats.stepRows > engine.stats.steps * 1.5, `sequences were decoded together (${engine.stats.stepRows} rows in ${engine.stats.steps} steps)`);
      assert.equal(engine.queueLength, 0);
      await engine.close();
    }
  });
}

test("a full queue refuses at once; an abort leaves the queue or the batch; bad requests fail alone", async () => {
  const loaded = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
  const image = await gradient;
  const engine = new BatchEngine(loaded, { maxBatch: 2, maxQueue: 2 });
  const p = prompt(loaded, [["<image>\nWhat is this?", null]]);
  const running = [0, 1].map(() => engine.generate({ prompt: p, images: [image], maxNewTokens: 30 }));
  const texts = Promise.all(running.map((o) => collect(o)));
  for (let i = 0; i < 100 && running[1].completionTokens === 0; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(running[1].completionTokens > 0, "both are in the batch");
  const waitingAbort = new AbortController();
  const waiting = engine.generate({ prompt: p, images: [image], maxNewTokens: 30, signal: waitingAbort.signal });
  const doomed = engine.generate({ prompt: "<image>\n" + "word ".repeat(3000), images: [image], maxNewTokens: 4 });
  assert.throws(() => engine.generate({ prompt: p, images: [image], maxNewTokens: 4 }), QueueFullError);
  assert.equal(engine.queueLength, 4);
  waitingAbort.abort(new Error("client went away"));
  assert.equal(engine.queueLength, 3, "an aborted request leaves the queue at once");
  await assert.rejects(collect(waiting), /client went away/);

  // the second running one is aborted after 3 pieces; the other goes on to its budget
  const batchAbort = new AbortController();
  const victim = engine.generate({ prompt: p, images: [image], maxNewTokens: 30, signal: batchAbort.signal });
  let n = 0;
  await assert.rejects(collect(victim, () => ++n === 3 && batchAbort.abort(new Error("gone"))), /gone/);
  await assert.rejects(collect(doomed), PromptTooLongError);
  await assert.rejects(collect(engine.generate({ prompt: p, images: [], maxNewTokens: 4 })), /image marker/);
  const [a, b] = await texts;
  assert.equal(a, b);
  assert.equal(running[0].completionTokens, 30);
  assert.equal(engine.queueLength, 0);
  await engine.close();
  assert.throws(() => engine.generate({ prompt: p, images: [], maxNewTokens: 1 }), /closed/);
});

test("an image seen before skips the tower; a chat's next turn prefills only its new tokens and answers as from scratch", async () => {
  const loaded = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
  const image = await gradient;
  let towerCalls = 0;
  const encode = loaded.model.encodeImages.bind(loaded.model);
  loaded.model.encodeImages = (...args) => (towerCalls++, encode(...args));

  const engine = new BatchEngine(loaded);
  const turn1 = prompt(loaded, [["<image>\nWhat is shown in this image?", null]]);
  const answer1 = await collect(engine.generate({ prompt: turn1, images: [image], maxNewTokens: 10 }));
  assert.equal(towerCalls, 1);
  const before = { ...engine.stats };
  const turn2 = prompt(loaded, [["<image>\nWhat is shown in this image?", answer1], ["And the colours?", null]]);
  const answer2 = await collect(engine.generate({ prompt: turn2, images: [image], maxNewTokens: 10 }));
  assert.equal(towerCalls, 1, "the image features came from the cache");
  const prefilled = engine.stats.prefilled - before.prefilled;
  const reused = engine.stats.reused - before.reused;
  const total = answerGeneration(loaded, turn2, [image], { maxNewTokens: 1 }).promptTokens;
  assert.equal(prefilled + reused, total);
  assert.ok(prefilled < 30 && reused > total - 30, `turn 2 prefilled ${prefilled} of ${total} positions`);
  assert.equal(answer2, (await alone(loaded, { prompt: turn2, images: [image], maxNewTokens: 10 })).text);
  await engine.close();

  const off = new BatchEngine(loaded, { imageCacheBytes: 0, prefixCacheBytes: 0 });
  towerCalls = 0;
  await collect(off.generate({ prompt: turn1, images: [image], maxNewTokens: 3 }));
  await collect(off.generate({ prompt: turn1, images: [image], maxNewTokens: 3 }));
  assert.equal(towerCalls, 2);
  assert.equal(off.stats.reused, 0);
  await off.close();
});
