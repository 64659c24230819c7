/**
 * What a training run writes loads back and computes what the model in memory computes: a
 * projector-only checkpoint, a LoRA checkpoint (the reference's folder on an original base,
 * PEFT's adapter on an llava-hf base) and a full model, each from a tiny model whose trainable
 * weights were changed in memory. The merged LoRA model equals the unmerged one.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadImage, type RgbImage } from "../../src/image/decode.js";
import { WeightStore, writeSafetensors } from "../../src/io/safetensors.js";
import { TorchBinStore } from "../../src/io/torch-bin.js";
import { type LoadedLlava, loadLlava } from "../../src/llava/load.js";
import { buildInputs, prepareImages } from "../../src/llava/pipeline.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { addLoraAdapters, type LoraConfig } from "../../src/nn/lora.js";
import { reshape } from "../../src/tensor/ops.js";
import { saveFullModel, saveLora, saveProjector } from "../../src/train/save.js";
import { LlavaError } from "../../src/util/errors.js";
import { Rng } from "../../src/util/random.js";
import { mergeLora } from "../../src/zoo/merge-lora.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-save-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

const text = { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 32000 };
const vision = { hidden_size: 24, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, image_size: 28, patch_size: 14 };
const original = writeRandomLlava(path.join(tmp, "orig"), { format: "original", seed: 3, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-orig"), text, vision }).modelDir;
const hf = writeRandomLlava(path.join(tmp, "hf"), { format: "hf", seed: 4, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"), text: { ...text, vocab_size: 32064 }, vision }).modelDir;
const image: RgbImage = await loadImage(path.join(IMAGES, "checker_300x500.png"));
const LORA: LoraConfig = { r: 4, alpha: 8, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], useRslora: false, baseModel: null };

/** All-position logits of one image prompt. */
function logits(loaded: LoadedLlava): Float32Array {
  const { embeds } = buildInputs(loaded, "USER: <image>\nWhat is shown? ASSISTANT:", prepareImages(loaded, [image]));
  const { hidden } = loaded.model.llm.forward(embeds);
  return loaded.model.llm.logits(reshape(hidden, [hidden.dim(1), hidden.dim(2)])).data;
}

const quiet = { warn: () => {} };

/** Noise on the projector (made trainable, as training does) and, with `lora`, fresh adapters with noisy B. */
function perturb(loaded: LoadedLlava, lora: boolean, seed = 9): void {
  const rng = new Rng(seed);
  const noise = (data: Float32Array) => data.forEach((x, i) => (data[i] = x + 0.2 * (rng.next() - 0.5)));
  for (const [name, t] of loaded.model.namedParameters()) {
    if (!name.startsWith("model.mm_projector.")) continue;
    noise(t.data);
    t.requiresGrad = true;
  }
  if (!lora) return;
  const params = addLoraAdapters(loaded.model.llm.namedLinears(), LORA, () => rng.next());
  for (let i = 1; i < params.length; i += 2) noise(params[i].data);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test("a projector-only checkpoint (config.json + mm_projector.bin) loads over its base with the same logits", async () => {
  const loaded = await loadLlava(original);
  const before = logits(loaded);
  perturb(loaded, false);
  const expected = logits(loaded);
  assert.ok(maxDiff(before, expected) > 1e-4, "the perturbation changes the logits");
  const out = path.join(tmp, "stage1");
  saveProjector(out, loaded, { tokenizer_model_max_length: 2048 });
  assert.deepEqual(fs.readdirSync(out).sort(), ["config.json", "mm_projector.bin"]);
  const config = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"));
  assert.equal(config.tune_mm_mlp_adapter, true);
  assert.equal(config.mm_projector_type, "mlp2x_gelu");
  assert.equal(config.use_mm_proj, true);
  const bin = TorchBinStore.open(path.join(out, "mm_projector.bin"));
  assert.deepEqual(bin.names(), ["model.mm_projector.0.bias", "model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.mm_projector.2.weight"]);
  bin.close();
  const back = await loadLlava(out, { modelBase: original, ...quiet });
  assert.deepEqual(logits(back), expected);
});

test("saved next to nothing, a checkpoint of the fixture (mm_vision_tower relative to its folder) still finds its CLIP folder", async () => {
  const fixture = path.join(MODELS, "tiny-llava-1.5-orig");
  const loaded = await loadLlava(fixture);
  perturb(loaded, false);
  const expected = logits(loaded);
  const out = path.join(tmp, "fixture-stage1");
  saveProjector(out, loaded);
  const config = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"));
  assert.equal(config.mm_vision_tower, path.join(MODELS, "tiny-clip-vit-56"));
  assert.equal(config.image_aspect_ratio, "pad");
  assert.deepEqual(logits(await loadLlava(out, { modelBase: fixture, ...quiet })), expected);
});

test("a LoRA checkpoint on an original base loads with --model-base with the same logits, and merges to the same model", async () => {
  const loaded = await loadLlava(original);
  perturb(loaded, true);
  const expected = logits(loaded);
  const out = path.join(tmp, "lora");
  saveLora(out, loaded, { ...LORA, dropout: 0.05 }, { baseModelPath: "lmsys/vicuna-7b-v1.5" });
  assert.deepEqual(fs.readdirSync(out).sort(), ["adapter_config.json", "adapter_model.safetensors", "config.json", "non_lora_trainables.bin"]);
  const adapterConfig = JSON.parse(fs.readFileSync(path.join(out, "adapter_config.json"), "utf8"));
  assert.equal(adapterConfig.peft_type, "LORA");
  assert.equal(adapterConfig.task_type, "CAUSAL_LM");
  assert.equal(adapterConfig.r, 4);
  assert.equal(adapterConfig.lora_alpha, 8);
  assert.equal(adapterConfig.lora_dropout, 0.05);
  assert.equal(adapterConfig.bias, "none");
  assert.equal(adapterConfig.base_model_name_or_path, "lmsys/vicuna-7b-v1.5");
  assert.deepEqual(adapterConfig.target_modules, LORA.targetModules);
  const adapter = WeightStore.open(path.join(out, "adapter_model.safetensors"));
  assert.ok(adapter.has("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
  assert.equal(adapter.names().length, 2 * 7 * 2);
  adapter.close();
  const nonLora = TorchBinStore.open(path.join(out, "non_lora_trainables.bin"));
  assert.deepEqual(nonLora.names(), ["base_model.model.model.mm_projector.0.bias", "base_model.model.model.mm_projector.0.weight", "base_model.model.model.mm_projector.2.bias", "base_model.model.model.mm_projector.2.weight"]);
  nonLora.close();

  const back = await loadLlava(out, { modelBase: original, ...quiet });
  assert.deepEqual(logits(back), expected);

  const merged = path.join(tmp, "lora-merged");
  await mergeLora({ modelPath: out, modelBase: original, out: merged });
  const diff = maxDiff(logits(await loadLlava(merged, quiet)), expected);
  assert.ok(diff < 1e-4, `merged logits differ by ${diff}`);
});

test("a full model in the original format loads back with the same logits", async () => {
  const loaded = await loadLlava(original);
  perturb(loaded, false);
  const [, embed] = loaded.model.namedParameters().find(([n]) => n === "model.layers.0.mlp.up_proj.weight")!;
  embed.data[0] += 0.5;
  const expected = logits(loaded);
  const out = path.join(tmp, "full-orig");
  saveFullModel(out, loaded);
  for (const f of ["config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"]) assert.ok(fs.existsSync(path.join(out, f)), f);
  const stored = WeightStore.open(out);
  assert.ok(stored.has("model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight"), "the tower is kept, as the reference saves it");
  stored.close();
  assert.deepEqual(logits(await loadLlava(out, quiet)), expected);
});

test("a LoRA on an llava-hf base is PEFT's adapter folder (HF names, projector as modules_to_save, no config.json) and loads with --model-base", async () => {
  const loaded = await loadLlava(hf);
  perturb(loaded, true);
  const expected = logits(loaded);
  const out = path.join(tmp, "hf-lora");
  saveLora(out, loaded, LORA, { baseModelPath: "llava-hf/llava-1.5-7b-hf" });
  assert.deepEqual(fs.readdirSync(out).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
  const configText = fs.readFileSync(path.join(out, "adapter_config.json"), "utf8");
  assert.match(configText, /^\{\n  "alpha_pattern": \{\},\n/, "json.dumps(indent=2, sort_keys=True), as PEFT writes it");
  assert.match(configText, /"lora_dropout": 0\.0,/);
  const config = JSON.parse(configText);
  assert.equal(config.base_model_name_or_path, "llava-hf/llava-1.5-7b-hf");
  assert.deepEqual(config.modules_to_save, ["multi_modal_projector"]);
  // target_modules catches the LLM's layers in either HF layout, and not the tower's q_proj
  const targets = new RegExp(`^(?:${config.target_modules})$`);
  assert.ok(targets.test("language_model.model.layers.1.self_attn.q_proj"));
  assert.ok(targets.test("model.language_model.layers.1.mlp.gate_proj"));
  assert.ok(!targets.test("vision_tower.vision_model.encoder.layers.0.self_attn.q_proj"));
  const adapter = WeightStore.open(path.join(out, "adapter_model.safetensors"));
  assert.ok(adapter.has("base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  assert.ok(adapter.has("base_model.model.multi_modal_projector.linear_2.bias"));
  adapter.close();
  assert.deepEqual(logits(await loadLlava(out, { modelBase: hf, ...quiet })), expected);
  await assert.rejects(loadLlava(out), (e: unknown) => e instanceof LlavaError && /pass the model it was trained on with --model-base \(it names "llava-hf\/llava-1.5-7b-hf"\)/.test(e.message));
});

test("an adapter written by PEFT on a newer transformers (model.language_model.* names, .default suffixes) loads with --model-base", async () => {
  const loaded = await loadLlava(hf);
  perturb(loaded, true, 21);
  const expected = logits(loaded);
  const dir = path.join(tmp, "peft-new-layout");
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({
    peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 8, lora_dropout: 0.1, bias: "none",
    target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], modules_to_save: ["multi_modal_projector"],
    base_model_name_or_path: "llava-hf/llava-1.5-7b-hf",
  }));
  const tensors = loaded.model.namedParameters().flatMap(([n, t]) => {
    const lora = /^model\.(layers\..*)\.(lora_[AB])\.weight$/.exec(n);
    if (lora) return [{ name: `base_model.model.model.language_model.${lora[1]}.${lora[2]}.default.weight`, t }];
    const proj = /^model\.mm_projector\.(0|2)\.(weight|bias)$/.exec(n);
    if (proj) return [{ name: `base_model.model.model.multi_modal_projector.linear_${proj[1] === "0" ? 1 : 2}.${proj[2]}`, t }];
    return [];
  });
  writeSafetensors(path.join(dir, "adapter_model.safetensors"), tensors.map(({ name, t }) => ({ name, dtype: "F32", shape: [...t.shape], data: t.data })), { format: "pt" });
  assert.deepEqual(logits(await loadLlava(dir, { modelBase: hf, ...quiet })), expected);

  // LoRA on the CLIP tower (a bare ["q_proj"] catches it in transformers' model) is refused by name
  const tower = path.join(tmp, "peft-tower");
  fs.mkdirSync(tower);
  fs.copyFileSync(path.join(dir, "adapter_config.json"), path.join(tower, "adapter_config.json"));
  writeSafetensors(path.join(tower, "adapter_model.safetensors"), [
    { name: "base_model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight", dtype: "F32", shape: [4, 24], data: new Float32Array(96) },
  ]);
  await assert.rejects(loadLlava(tower, { modelBase: hf }), (e: unknown) => e instanceof LlavaError && /LoRA layer outside the language model/.test(e.message));
});

test("a full model in the llava-hf format loads back with the same logits", async () => {
  const loaded = await loadLlava(hf);
  perturb(loaded, false);
  const expected = logits(loaded);
  const out = path.join(tmp, "full-hf");
  saveFullModel(out, loaded);
  const stored = WeightStore.open(out);
  assert.ok(stored.has("language_model.model.layers.0.self_attn.q_proj.weight"));
  assert.ok(stored.has("multi_modal_projector.linear_1.weight"));
  stored.close();
  assert.ok(fs.existsSync(path.join(out, "preprocessor_config.json")));
  assert.deepEqual(logits(await loadLlava(out, quiet)), expected);
});

test("what cannot be saved faithfully is refused before anything is written", async () => {
  const loaded = await loadLlava(original);
  assert.throws(() => saveLora(path.join(tmp, "no-lora"), loaded, LORA), /no LoRA adapters to save/);
  const half = await loadLlava(original, { dtype: "bf16" });
  const hfModel = await loadLlava(hf);
  assert.throws(() => saveFullModel(path.join(tmp, "half"), half), /held in 16-bit or quantized form/);
  perturb(loaded, true);
  assert.throws(() => saveFullModel(path.join(tmp, "unmerged"), loaded), /unmerged LoRA adapters/);
  assert.throws(() => saveLora(path.join(tmp, "untargeted"), loaded, { ...LORA, targetModules: ["q_proj"] }), /do not name "model\.layers\.0\.self_attn\.k_proj", which has an adapter/);
  assert.throws(() => saveProjector(path.join(tmp, "hf-stage1"), hfModel), /projector-only checkpoint is the original LLaVA format's/);
  for (const d of ["no-lora", "half", "unmerged", "hf-stage1", "untargeted"]) assert.equal(fs.existsSync(path.join(tmp, d)), false);
});
