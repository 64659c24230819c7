/**
 * The generation loop: choosing tokens (greedy, temperature and top-p as transformers does them),
 * stopping (EOS, stop strings, budget, context), hooks, cancellation and non-finite logits.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { argmax, Generation, sampleToken } from "../../src/llava/generate.js";
import { loadLlava } from "../../src/llava/load.js";
import { answerGeneration, buildInputs, prepareImages, streamAnswer } from "../../src/llava/pipeline.js";
import { traceInference } from "../../src/llava/trace.js";
import { loadImage } from "../../src/image/decode.js";
import { npyToNumbers, readNpy } from "../../src/io/npy.js";
import { LlavaError } from "../../src/util/errors.js";
import { seededRandom } from "../../src/util/random.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";

const CASE = path.join(CASES, "tiny-llava-1.5-mha", "gradient");
const PROMPT = fs.readFileSync(path.join(CASE, "prompt.txt"), "utf8");
const GREEDY = npyToNumbers(readNpy(path.join(CASE, "generated_ids.npy")));
const llavaPromise = loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
const imagePromise = loadImage(path.join(IMAGES, "gradient_640x480.png"));

async function promptEmbeds() {
  const llava = await llavaPromise;
  return { llava, embeds: buildInputs(llava, PROMPT, prepareImages(llava, [await imagePromise])).embeds };
}

test("temperature 0 is argmax; top-p keeps the smallest set reaching p, as TopPLogitsWarper does", () => {
  const logits = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  assert.equal(sampleToken(logits, 0, 1, () => 0.99), argmax(logits));
  const draw = (topP: number, temperature = 1) => {
    const r = seededRandom(7);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 20000; i++) counts[sampleToken(logits, temperature, topP, r)]++;
    return counts.map((c) => c / 20000);
  };
  // p = 0.7: tokens 0 and 1 (0.5 + 0.3 >= 0.7), renormalised to 0.625 / 0.375
  const p07 = draw(0.7);
  assert.ok(Math.abs(p07[0] - 0.625) < 0.02 && Math.abs(p07[1] - 0.375) < 0.02 && p07[2] === 0 && p07[3] === 0, `${p07}`);
  // p = 1: the full distribution
  const p1 = draw(1);
  [0.5, 0.3, 0.15, 0.05].forEach((want, i) => assert.ok(Math.abs(p1[i] - want) < 0.02, `${p1}`));
  // a tiny p keeps the top token only
  assert.deepEqual(draw(0.1), [1, 0, 0, 0]);
  // temperature 2 flattens: p ∝ sqrt(p)
  const t2 = draw(1, 2);
  const z = [0.5, 0.3, 0.15, 0.05].reduce((s, p) => s + Math.sqrt(p), 0);
  [0.5, 0.3, 0.15, 0.05].forEach((p, i) => assert.ok(Math.abs(t2[i] - Math.sqrt(p) / z) < 0.02, `${t2}`));
});

test("a stop string ends the answer before it, even when it arrives split across tokens", async () => {
  const meta = JSON.parse(fs.readFileSync(path.join(CASE, "meta.json"), "utf8"));
  const full: string = meta.generated_text;
  const llava = await llavaPromise;
  const image = await imagePromise;
  const answer = async (stop: string[]) => {
    let text = "";
    for await (const piece of streamAnswer(llava, PROMPT, [image], { maxNewTokens: 20, temperature: 0, stop })) text += piece;
    return text;
  };
  assert.equal(await answer([]), full);
  // "ave hum" spans two tokens (" nave", " hum")
  const stop = "ave hum";
  assert.ok(full.includes(stop));
  assert.equal(await answer([stop]), full.slice(0, full.indexOf(stop)));
  assert.equal(await answer(["no such text"]), full);
  const stopped = await answerGeneration(llava, PROMPT, [image], { maxNewTokens: 20, temperature: 0, stop: [stop] }).complete();
  assert.equal(stopped.finishReason, "stop");
  assert.equal(stopped.text, full.slice(0, full.indexOf(stop)));
});

test("the loop gives the reference's greedy ids, calling each hook in order", async () => {
  const { llava, embeds } = await promptEmbeds();
  const events: string[] = [];
  const generation = new Generation(llava, embeds, {
    maxNewTokens: 20, temperature: 0, eosTokenIds: [],
    hooks: {
      onPrefill: ({ promptTokens, maxNewTokens }) => events.push(`prefill ${promptTokens} ${maxNewTokens}`),
      onLogits: (logits, step) => events.push(`logits ${step} ${argmax(logits)}`),
      onToken: (token, step) => events.push(`token ${step} ${token}`),
    },
  });
  const pieces = [];
  for await (const piece of generation) pieces.push(piece);
  assert.deepEqual(generation.tokens, GREEDY);
  assert.deepEqual(pieces.map((p) => p.token), GREEDY);
  assert.equal(pieces.map((p) => p.text).join(""), generation.text);
  assert.equal(generation.finishReason, "length");
  assert.equal(events[0], `prefill ${embeds.dim(1)} 20`);
  assert.deepEqual(events.slice(1, 5), [`logits 0 ${GREEDY[0]}`, `token 0 ${GREEDY[0]}`, `logits 1 ${GREEDY[1]}`, `token 1 ${GREEDY[1]}`]);
  assert.equal(events.length, 1 + 2 * 20);
  assert.throws(() => generation[Symbol.asyncIterator](), /only once/);
  // the traced generated_ids come from the same loop
  const trace = await traceInference(llava, PROMPT, [await imagePromise], 20);
  assert.deepEqual(Array.from(trace.arrays.get("generated_ids")!.data, Number), GREEDY);
});

test("an EOS id ends the answer after that token; sampling with a seed repeats itself", async () => {
  const { llava, embeds } = await promptEmbeds();
  const eos = await new Generation(llava, embeds, { maxNewTokens: 20, temperature: 0, eosTokenIds: [GREEDY[3]] }).complete();
  assert.deepEqual(eos.tokens, GREEDY.slice(0, 4));
  assert.equal(eos.finishReason, "eos");
  const sampled = async (seed: number) => (await new Generation(llava, embeds, { maxNewTokens: 12, temperature: 1, topP: 0.9, seed, eosTokenIds: [] }).complete()).tokens;
  assert.deepEqual(await sampled(5), await sampled(5));
  assert.notDeepEqual(await sampled(5), GREEDY.slice(0, 12));
});

test("prompt + answer stay within the context: the budget is capped, a full prompt is refused", async () => {
  const { llava, embeds } = await promptEmbeds();
  const t = embeds.dim(1);
  assert.equal(llava.spec.text.maxPositionEmbeddings, 512);
  const capped = await new Generation(llava, embeds, { maxNewTokens: 3e8, temperature: 0, eosTokenIds: [], contextLength: t + 3 }).complete();
  assert.deepEqual(capped.tokens, GREEDY.slice(0, 3));
  assert.equal(capped.finishReason, "length");
  assert.equal(new Generation(llava, embeds, { maxNewTokens: 3e8 }).maxNewTokens, 512 - t);
  assert.throws(() => new Generation(llava, embeds, { maxNewTokens: 5, contextLength: t }), (err: Error) => err instanceof LlavaError && /fills 62 positions .* context holds 62/.test(err.message));
  assert.throws(() => new Generation(llava, embeds, { maxNewTokens: 0 }), /maxNewTokens/);
});

test("an AbortSignal stops the loop between two tokens", async () => {
  const { llava, embeds } = await promptEmbeds();
  const controller = new AbortController();
  const generation = new Generation(llava, embeds, {
    maxNewTokens: 20, temperature: 0, eosTokenIds: [], signal: controller.signal,
    hooks: { onToken: (_, step) => step === 2 && controller.abort() },
  });
  await assert.rejects(generation.complete(), { name: "AbortError" });
  assert.deepEqual(generation.tokens, GREEDY.slice(0, 3));
  assert.equal(generation.finishReason, null);
  // an abort from elsewhere (a timer, a closed socket) lands while the loop waits between tokens
  const timed = new AbortController();
  const waiting = new Generation(llava, embeds, { maxNewTokens: 20, temperature: 0, eosTokenIds: [], signal: timed.signal, hooks: { onToken: (_, step) => step === 1 && setImmediate(() => timed.abort()) } });
  await assert.rejects(waiting.complete(), { name: "AbortError" });
  assert.deepEqual(waiting.tokens, GREEDY.slice(0, 2));
  const early = new AbortController();
  early.abort();
  await assert.rejects(new Generation(llava, embeds, { maxNewTokens: 5, signal: early.signal }).complete(), { name: "AbortError" });
});

test("non-finite logits are an error naming the step, greedy or sampling", async () => {
  const { llava, embeds } = await promptEmbeds();
  for (const temperature of [0, 1]) {
    // a NaN that argmax would silently skip, and an infinity that would always win
    for (const [value, what] of [[NaN, /1 NaN logits/], [Infinity, /1 infinite logits/]] as const) {
      const poisoned = new Generation(llava, embeds, {
        maxNewTokens: 10, temperature, eosTokenIds: [],
        hooks: { onLogits: (logits, step) => step === 3 && (logits[7] = value) },
      });
      await assert.rejects(poisoned.complete(), (err: Error) => err instanceof LlavaError && what.test(err.message) && /generation step 4 \(sequence position 64\)/.test(err.message));
      assert.equal(poisoned.tokens.length, 3);
    }
  }
});
