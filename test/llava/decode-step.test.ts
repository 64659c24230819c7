/**
 * The decoder's step of several sequences: each row's logits equal, bit for bit, the step of that
 * sequence alone, and its cache grows as alone; the prefix copy of a cache continues identically.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { loadLlava } from "../../src/llava/load.js";
import type { KVCache, LlamaForCausalLM } from "../../src/llava/llama.js";
import { reshape, slice } from "../../src/tensor/ops.js";
import { MODELS } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";

function prefilled(llm: LlamaForCausalLM, ids: number[], capacity: number): KVCache {
  const cache = llm.newCache(1, capacity);
  llm.forward(reshape(llm.embedTokens.forward(Int32Array.from(ids)), [1, ids.length, -1]), { cache });
  return cache;
}

const lastLogits = (llm: LlamaForCausalLM, hidden: ReturnType<LlamaForCausalLM["decodeStep"]>) => llm.logits(slice(hidden, 1, hidden.dim(1) - 1, hidden.dim(1))).data;

/** Wider than the fixtures, so that the products run their full vector loops and tails. */
function wideModel(): string {
  const dir = tempDir("llava-wide-");
  return writeRandomLlava(dir, {
    format: "hf", seed: 5, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
    text: { hidden_size: 160, intermediate_size: 224, num_hidden_layers: 2, num_attention_heads: 5, num_key_value_heads: 1, vocab_size: 32001, max_position_embeddings: 256 },
    vision: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, image_size: 28, patch_size: 14 },
  }).modelDir;
}
const WIDE = wideModel();

for (const [name, dir, quantize] of [
  ["tiny-llava-1.5-mha", path.join(MODELS, "tiny-llava-1.5-mha"), undefined],
  ["tiny-llava-1.5-mha", path.join(MODELS, "tiny-llava-1.5-mha"), "q8_0"],
  ["tiny-llava-1.5-mha", path.join(MODELS, "tiny-llava-1.5-mha"), "q4_0"],
  ["wide GQA", WIDE, undefined],
  ["wide GQA", WIDE, "q4_0"],
] as const) {
  test(`${name}: decodeStep of 6 sequences equals each step alone, bit for bit (${quantize ?? "f32"})`, async () => {
    const { model } = await loadLlava(dir, { quantize });
    const llm = model.llm;
    const prompts = [3, 9, 1, 17, 5, 12].map((n, s) => Array.from({ length: n }, (_, i) => 1 + ((i * 37 + s * 101) % 500)));
    const next = Int32Array.from([5, 77, 300, 12, 9, 400]);
    const batchCaches = prompts.map((ids) => prefilled(llm, ids, ids.length + 4));
    const aloneCaches = batchCaches.map((c) => c.prefix(c.length, c.capacity));
    const hidden = llm.decodeStep(reshape(llm.embedTokens.forward(next), [6, 1, -1]), batchCaches);
    const logits = llm.logits(hidden, { rowwise: true }).data;
    const vocab = logits.length / 6;
    aloneCaches.forEach((cache, i) => {
      const h = llm.forward(reshape(llm.embedTokens.forward(next.subarray(i, i + 1)), [1, 1, -1]), { cache }).hidden;
      assert.deepEqual(logits.subarray(i * vocab, (i + 1) * vocab), lastLogits(llm, h), `row ${i}`);
      assert.equal(batchCaches[i].length, cache.length);
      assert.deepEqual(batchCaches[i].keys[1].data, cache.keys[1].data);
    });
    assert.throws(() => llm.decodeStep(reshape(llm.embedTokens.forward(next), [6, 1, -1]), batchCaches.slice(1)), /decode step/);
  });
}
