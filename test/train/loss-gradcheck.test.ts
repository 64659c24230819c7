/**
 * Finite differences: the gradients batchLoss back-propagates, against central differences of
 * the loss itself, at the coordinates with the largest gradients of each checked tensor (LLM
 * Linear, RMSNorm, embedding table, LoRA A and B, on an f32 and on a q8_0 base, the vision
 * tower's Linear and patch convolution with the tower unfrozen).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { LoadedLlava } from "../../src/llava/load.js";
import type { NamedParameters } from "../../src/nn/layers.js";
import { createBackend } from "../../src/tensor/backends.js";
import { batchLoss, type TrainingExample } from "../../src/train/batch.js";
import { setTrainables, type TrainablesOptions } from "../../src/train/trainables.js";
import { Rng } from "../../src/util/random.js";
import { example, fixtureImages, loadTiny, randomize, zeroGrad } from "./loss-helpers.js";

const EPS = 4e-3;
const TOWER = "model.vision_tower.vision_tower.vision_model";

const lossOf = (loaded: LoadedLlava, examples: TrainingExample[]) => batchLoss(loaded, examples, { modelMaxLength: 2048, rng: new Rng(1) });

/** Indices of the `k` largest magnitudes. */
function largest(values: Float32Array, k: number): number[] {
  return Array.from(values.keys()).sort((a, b) => Math.abs(values[b]) - Math.abs(values[a])).slice(0, k);
}

function checkByFiniteDifferences(loaded: LoadedLlava, params: NamedParameters, examples: TrainingExample[], names: string[]): void {
  zeroGrad(params);
  lossOf(loaded, examples).loss.backward();
  const byName = new Map(params);
  for (const name of names) {
    const t = byName.get(name);
    assert.ok(t, `${name} trains`);
    const grad = Float32Array.from(t.grad ?? []);
    assert.equal(grad.length, t.size, `${name} received a gradient`);
    for (const i of largest(grad, 3)) {
      const saved = t.data[i];
      t.data[i] = saved + EPS;
      const up = lossOf(loaded, examples).loss.data[0];
      t.data[i] = saved - EPS;
      const down = lossOf(loaded, examples).loss.data[0];
      t.data[i] = saved;
      const numeric = (up - down) / (2 * EPS);
      assert.ok(Math.abs(grad[i]) > 1e-3, `${name}[${i}]: gradient ${grad[i]} too small to check`);
      assert.ok(Math.abs(numeric - grad[i]) <= 3e-2 * Math.abs(grad[i]) + 5e-4, `${name}[${i}]: back-propagated ${grad[i]}, finite differences ${numeric}`);
    }
  }
}

async function setup(opts: Omit<TrainablesOptions, "rng">, load: Parameters<typeof loadTiny>[0] = {}) {
  const loaded = await loadTiny(load);
  const { checker, gradient } = await fixtureImages();
  const params = setTrainables(loaded, { ...opts, rng: new Rng(2) });
  const examples = [
    example(loaded, "What is shown?", "A red square on a checkerboard.", [checker]),
    example(loaded, "Describe it.", "A smooth gradient from dark to light.", [gradient]),
  ];
  return { loaded, params, examples };
}

test("finite differences: LLM Linear, RMSNorm, embedding table, lm_head and projector (full fine-tuning)", async () => {
  const { loaded, params, examples } = await setup({});
  checkByFiniteDifferences(loaded, params, examples, [
    "model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.k_proj.weight", "model.layers.0.input_layernorm.weight",
    "model.norm.weight", "model.embed_tokens.weight", "lm_head.weight", "model.mm_projector.0.weight",
  ]);
});

test("finite differences: LoRA A and B", async () => {
  const { loaded, params, examples } = await setup({ lora: { r: 4, alpha: 8, dropout: 0 } });
  for (const [name, t] of params) if (name.endsWith("lora_B.weight")) randomize(t.data, 0.3);
  checkByFiniteDifferences(loaded, params, examples, [
    "model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj.lora_B.weight", "model.layers.1.mlp.gate_proj.lora_A.weight", "model.layers.1.mlp.down_proj.lora_B.weight",
  ]);
});

test("finite differences: LoRA A and B on a q8_0-quantized base (gradients flow through the packed weights)", async () => {
  // exact products: the integer-quantized activations of the fast path are not differentiable
  const { loaded, params, examples } = await setup({ lora: { r: 4, alpha: 8, dropout: 0 } }, { quantize: "q8_0", backend: createBackend({ exactQuant: true }) });
  assert.ok(loaded.model.llm.namedLinears().some(([, l]) => !("data" in l.weight)), "some LLM weights are packed");
  for (const [name, t] of params) if (name.endsWith("lora_B.weight")) randomize(t.data, 0.3);
  checkByFiniteDifferences(loaded, params, examples, ["model.layers.0.self_attn.v_proj.lora_A.weight", "model.layers.0.mlp.up_proj.lora_B.weight", "model.mm_projector.2.weight"]);
});

test("finite differences: the vision tower with unfreezeVisionTower", async () => {
  const { loaded, params, examples } = await setup({ unfreezeVisionTower: true });
  checkByFiniteDifferences(loaded, params, examples, [
    `${TOWER}.encoder.layers.0.self_attn.q_proj.weight`, `${TOWER}.encoder.layers.1.mlp.fc2.weight`, `${TOWER}.embeddings.patch_embedding.weight`,
    `${TOWER}.pre_layrnorm.weight`, `${TOWER}.embeddings.position_embedding.weight`,
  ]);
});
