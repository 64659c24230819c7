/** setTrainables: what trains in each stage (spec 6.5), LoRA as PEFT attaches it, and LoRA dropout. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dropout } from "../../src/tensor/ops.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { defaultLoraTargets, setTrainables, type TrainablesOptions } from "../../src/train/trainables.js";
import { LlavaError } from "../../src/util/errors.js";
import { Rng } from "../../src/util/random.js";
import { loadTiny, randomize } from "./loss-helpers.js";

const TOWER = "model.vision_tower.vision_tower.";
const part = (name: string) =>
  name.startsWith("model.mm_projector.") ? "projector" : name.startsWith(TOWER) ? "vision" : name.includes(".lora_") ? "lora" : name.startsWith("lm_head") ? "head" : "decoder";

async function trainable(opts: Omit<TrainablesOptions, "rng">) {
  const loaded = await loadTiny();
  const params = setTrainables(loaded, { ...opts, rng: new Rng(1) });
  const names = params.map(([n]) => n);
  const frozen = loaded.model.namedParameters().filter(([, t]) => !t.requiresGrad).map(([n]) => n);
  assert.equal(names.length + frozen.length, loaded.model.namedParameters().length);
  return { loaded, names, parts: new Set(names.map(part)), frozen };
}

test("stage 1 (tune_mm_mlp_adapter) trains the projector alone", async () => {
  const { names, parts } = await trainable({ tuneMmMlpAdapter: true });
  assert.deepEqual([...parts], ["projector"]);
  assert.equal(names.length, 4);
});

test("stage 2 trains the LLM (embeddings, layers, norm, lm_head) and the projector; never the tower unless asked", async () => {
  const { names, parts, loaded } = await trainable({});
  assert.deepEqual([...parts].sort(), ["decoder", "head", "projector"]);
  assert.ok(names.includes("model.embed_tokens.weight") && names.includes("model.norm.weight") && names.includes("lm_head.weight"));
  assert.equal(names.filter((n) => part(n) === "decoder").length, 2 + loaded.spec.text.numHiddenLayers * 9);
  const withTower = await trainable({ unfreezeVisionTower: true });
  assert.ok(withTower.parts.has("vision"));
  assert.ok(withTower.names.includes(`${TOWER}vision_model.embeddings.patch_embedding.weight`));
});

test("freeze_backbone freezes the decoder (lm_head still trains); freeze_mm_mlp_adapter the projector", async () => {
  assert.deepEqual([...(await trainable({ freezeBackbone: true })).parts].sort(), ["head", "projector"]);
  assert.deepEqual([...(await trainable({ freezeMmMlpAdapter: true })).parts].sort(), ["decoder", "head"]);
});

test("LoRA: adapters on every LLM Linear but lm_head (find_all_linear_names), initialised as PEFT, plus the projector", async () => {
  const { names, parts, loaded } = await trainable({ lora: { r: 4, alpha: 8, dropout: 0.05 } });
  assert.deepEqual(defaultLoraTargets(loaded), ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]);
  assert.deepEqual([...parts].sort(), ["lora", "projector"]);
  assert.equal(names.filter((n) => part(n) === "lora").length, loaded.spec.text.numHiddenLayers * 7 * 2);
  const q = loaded.model.llm.layers[0].linears.q;
  assert.equal(q.adapter!.scale, 2);
  assert.equal(q.adapter!.dropout, 0.05);
  const bound = 1 / Math.sqrt(q.inFeatures);
  assert.ok(q.adapter!.a.data.every((v) => Math.abs(v) <= bound) && q.adapter!.a.data.some((v) => v !== 0));
  assert.ok(q.adapter!.b.data.every((v) => v === 0));
  assert.equal(loaded.model.llm.lmHead.adapter, null);
  // named targets
  const some = await trainable({ lora: { r: 2, alpha: 2, dropout: 0, targets: ["q_proj", "v_proj"] } });
  assert.deepEqual(new Set(some.names.filter((n) => part(n) === "lora").map((n) => n.split(".").at(-3))), new Set(["q_proj", "v_proj"]));
});

test("LoRA dropout is active only with a training random stream, scaled by 1/(1-p)", async () => {
  const { loaded } = await trainable({ lora: { r: 4, alpha: 8, dropout: 0.5 } });
  const q = loaded.model.llm.layers[0].linears.q;
  randomize(q.adapter!.b.data, 0.5);
  const x = new Tensor(Float32Array.from({ length: 3 * q.inFeatures }, (_, i) => Math.sin(i)), [3, q.inFeatures], loaded.model.backend);
  const evalOut = q.forward(x).data;
  assert.deepEqual(q.forward(x, { rng: null }).data, evalOut);
  const a = q.forward(x, { rng: new Rng(7) }).data;
  assert.deepEqual(q.forward(x, { rng: new Rng(7) }).data, a, "the same stream gives the same mask");
  assert.notDeepEqual(a, evalOut);
  const be = new RefBackend();
  const ones = new Tensor(new Float32Array(10000).fill(1), [10000], be);
  const dropped = dropout(ones, 0.25, new Rng(3)).data;
  const kept = dropped.filter((v) => v !== 0);
  assert.ok(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6));
  assert.ok(Math.abs(kept.length / 10000 - 0.75) < 0.02);
});

test("setTrainables refuses what cannot train", async () => {
  const refuses = async (opts: Omit<TrainablesOptions, "rng">, pattern: RegExp, load = {}) => {
    const loaded = await loadTiny(load);
    assert.throws(() => setTrainables(loaded, { ...opts, rng: new Rng(1) }), (e: unknown) => e instanceof LlavaError && pattern.test(e.message));
  };
  await refuses({}, /needs the LLM in f32.*LoRA/, { quantize: "q8_0" });
  await refuses({ unfreezeVisionTower: true, lora: { r: 2, alpha: 2, dropout: 0 } }, /vision tower in f32/, { dtype: "bf16" });
  await refuses({ lora: { r: 0, alpha: 2, dropout: 0 } }, /lora_r/);
  await refuses({ lora: { r: 2, alpha: 2, dropout: 1 } }, /lora_dropout/);
  await refuses({ lora: { r: 2, alpha: 2, dropout: 0, targets: ["fc1"] } }, /no Linear layer/);
  await refuses({ lora: { r: 2, alpha: 2, dropout: 0 }, tuneMmMlpAdapter: true }, /choose one/);
  const loaded = await loadTiny();
  setTrainables(loaded, { lora: { r: 2, alpha: 2, dropout: 0 }, rng: new Rng(1) });
  assert.throws(() => setTrainables(loaded, { lora: { r: 2, alpha: 2, dropout: 0 }, rng: new Rng(1) }), /already carries a LoRA adapter/);
});
