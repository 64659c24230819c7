/**
 * The training init of random checkpoints: each part starts as its reference class initializes
 * it (LLaMA normal(0, 0.02), CLIP's factor-scaled normals, the projector as torch's nn.Linear),
 * read back through the loader under canonical names.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadLlava } from "../../src/llava/load.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { MODELS } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";

const WIDTH = 48;
const DEPTH = 2;

async function trainInitModel() {
  const dir = path.join(tempDir("llava-init-"), "m");
  writeRandomLlava(dir, {
    format: "hf", seed: 7, init: "train", tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
    text: { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 4, vocab_size: 32001, max_position_embeddings: 256 },
    vision: { hidden_size: WIDTH, intermediate_size: 96, num_hidden_layers: DEPTH, num_attention_heads: 4, image_size: 64, patch_size: 16 },
  });
  const loaded = await loadLlava(dir);
  return new Map(loaded.model.namedParameters().map(([name, t]) => [name, Float64Array.from(t.toArray())]));
}

const std = (x: Float64Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
const maxAbs = (x: Float64Array) => x.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

function find(params: Map<string, Float64Array>, pattern: RegExp): Float64Array {
  const hits = [...params].filter(([name]) => pattern.test(name));
  assert.equal(hits.length, 1, `one parameter matches ${pattern}, found ${hits.map(([n]) => n)}`);
  return hits[0][1];
}

test("training init: each part as its reference class starts it", async () => {
  const p = await trainInitModel();
  const near = (x: Float64Array, expected: number, what: string) => assert.ok(Math.abs(std(x) / expected - 1) < 0.1, `${what}: std ${std(x)}, expected ${expected}`);
  // LLaMA: normal(0, initializer_range 0.02) for Linear and embeddings; RMSNorm weights 1
  near(find(p, /^model\.embed_tokens\.weight$/), 0.02, "embed_tokens");
  near(find(p, /^model\.layers\.0\.mlp\.gate_proj\.weight$/), 0.02, "gate_proj");
  near(find(p, /^lm_head\.weight$/), 0.02, "lm_head");
  assert.ok(find(p, /^model\.layers\.1\.input_layernorm\.weight$/).every((v) => v === 1));
  // CLIP: q/k/v and fc2 width^-1/2 (2 depth)^-1/2, out_proj width^-1/2, fc1 (2 width)^-1/2, LayerNorms 1 and 0, biases 0
  near(find(p, /encoder\.layers\.0\.self_attn\.q_proj\.weight$/), WIDTH ** -0.5 * (2 * DEPTH) ** -0.5, "CLIP q_proj");
  near(find(p, /encoder\.layers\.1\.self_attn\.out_proj\.weight$/), WIDTH ** -0.5, "CLIP out_proj");
  near(find(p, /encoder\.layers\.0\.mlp\.fc1\.weight$/), (2 * WIDTH) ** -0.5, "CLIP fc1");
  near(find(p, /embeddings\.patch_embedding\.weight$/), 0.02, "patch embedding");
  assert.ok(find(p, /encoder\.layers\.0\.self_attn\.v_proj\.bias$/).every((v) => v === 0));
  assert.ok(find(p, /pre_layrnorm\.weight$/).every((v) => v === 1));
  assert.ok(find(p, /pre_layrnorm\.bias$/).every((v) => v === 0));
  // projector: nn.Linear's uniform bound 1/sqrt(fan_in), for the weight and the bias alike
  for (const [name, fanIn] of [["0.weight", WIDTH], ["0.bias", WIDTH], ["2.weight", 64], ["2.bias", 64]] as const) {
    const x = find(p, new RegExp(`mm_projector\\.${name.replace(".", "\\.")}$`));
    const bound = 1 / Math.sqrt(fanIn);
    assert.ok(maxAbs(x) <= bound && maxAbs(x) > 0.8 * bound, `mm_projector.${name}: max |x| ${maxAbs(x)}, bound ${bound}`);
  }
});
