/**
 * `llava inspect`: the numbers it reports for the fixtures, computed independently here from the
 * weight files, and image token counts equal to what the model really splices in.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { WeightStore } from "../../src/io/safetensors.js";
import { npyToNumbers, readNpy } from "../../src/io/npy.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import { prepareImages } from "../../src/llava/pipeline.js";
import { INSPECT_IMAGE_SIZES, imageTokenCount, inspectModel } from "../../src/zoo/inspect.js";
import { CASES, MODELS } from "../helpers/paths.js";
import { randomAnyresOriginal, tempDir } from "./helpers.js";

const tmp = tempDir();
const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");

function numels(dir: string, keep: (name: string) => boolean) {
  const store = WeightStore.open(dir);
  try {
    return store.names().filter(keep).reduce((s, n) => s + store.info(n).shape.reduce((a, b) => a * b, 1), 0);
  } finally {
    store.close();
  }
}

/** Feature rows the model splices in for a blank image of this size. */
function realTokens(loaded: LoadedLlava, width: number, height: number): number {
  const img = { width, height, data: new Uint8Array(width * height * 3).fill(90) };
  const prepared = prepareImages(loaded, [img]);
  const encoded = loaded.model.encodeImages(prepared.pixels);
  return loaded.model.imageFeatures(encoded.projected, prepared.layouts)[0].dim(0);
}

test("the original fixture: shapes, tower folder, parameter counts, tokens and memory", () => {
  const r = inspectModel(ORIG);
  assert.equal(r.format, "original");
  assert.equal(r.architecture, "LlavaLlamaForCausalLM");
  assert.equal(r.checkpoint, "full");
  assert.deepEqual(r.llm, {
    modelType: "llama", hiddenSize: 32, layers: 2, heads: 4, kvHeads: 4, headDim: 8, intermediateSize: 86, vocabSize: 32000,
    ropeTheta: 10000, ropeScaling: null, maxPositions: 512, tiedEmbeddings: false,
  });
  assert.deepEqual(r.vision, { weights: "folder", folder: path.join(MODELS, "tiny-clip-vit-56"), name: "tiny-clip-vit-56", imageSize: 56, patchSize: 14, layers: 3, hiddenSize: 48, heads: 4 });
  assert.deepEqual(r.projector, { type: "mlp2x_gelu", activation: "gelu" });
  assert.equal(r.selectLayer, -2);
  assert.equal(r.selectFeature, "patch");
  assert.equal(r.image.mode, "pad");
  assert.equal(r.image.maxSequenceLength, 2048);
  const llm = numels(ORIG, (n) => !n.startsWith("model.mm_projector."));
  const vision = numels(path.join(MODELS, "tiny-clip-vit-56"), (n) => n.startsWith("vision_model."));
  assert.deepEqual(r.parameters, { llm, vision, projector: 32 * 48 + 32 + 32 * 32 + 32, other: null, lora: null, total: llm + vision + 2624 });
  assert.deepEqual(Object.keys(r.dtypes), ["F32"]);
  assert.equal(r.dtypes.F32.parameters, r.parameters.total);
  assert.deepEqual(r.templates, { modelName: "tiny-llava-1.5-orig", cli: "llava_v0", web: "llava_v0" });
  assert.deepEqual(r.imageTokens.map((t) => t.tokens), INSPECT_IMAGE_SIZES.map(() => 16));
  // KV: 2 (K, V) x 2 layers x 4 kv heads x 8 dims x 512 positions x 4 bytes
  // f32 weights keep an f32 cache, packed ones a 16-bit cache
  assert.deepEqual(r.memory.kvCache, { f32: 2 * 2 * 4 * 8 * 512 * 4, bf16: 2 * 2 * 4 * 8 * 512 * 2, q8_0: 2 * 2 * 4 * 8 * 512 * 2, q4_0: 2 * 2 * 4 * 8 * 512 * 2 });
  assert.equal(r.memory.weights.f32, 4 * r.parameters.total);
  // the loader's precision policy: LLM Linear layers q, k, v, o [32, 32], gate, up [86, 32], down [32, 86] per layer;
  // lm_head [32000, 32]; the embedding table [32000, 32] (16-bit whenever the LLM is); tower Linear layers (16-bit)
  const layers = 2 * (4 * 32 * 32 + 2 * 86 * 32 + 32 * 86);
  const head = 32000 * 32;
  const embed = 32000 * 32;
  const visionLinear = 3 * (4 * 48 * 48 + 2 * 80 * 48);
  const total = 4 * r.parameters.total;
  assert.equal(r.memory.weights.bf16, total - 2 * (layers + head + embed + visionLinear));
  // down_proj rows of 86 are not whole 32-blocks: they stay f32; under 4 bits lm_head keeps 8
  const blocked = layers - 2 * 32 * 86;
  const sixteenBit = 2 * (embed + visionLinear);
  assert.equal(r.memory.weights.q8_0, total - 4 * (blocked + head) + ((blocked + head) / 32) * 34 - sixteenBit);
  assert.equal(r.memory.weights.q4_0, total - 4 * (blocked + head) + (blocked / 32) * 18 + (head / 32) * 34 - sixteenBit);
});

test("the HF fixtures: tower in the checkpoint, NeXT pinpoints as (height, width), token counts as the model computes them", async () => {
  const mha = inspectModel(path.join(MODELS, "tiny-llava-1.5-mha"));
  assert.equal(mha.format, "hf-llava");
  assert.equal(mha.llm.vocabSize, 32001);
  assert.equal(mha.vision.weights, "checkpoint");
  assert.equal(mha.parameters.llm, inspectModel(ORIG).parameters.llm! + 2 * 32);
  assert.equal(mha.parameters.vision, inspectModel(ORIG).parameters.vision);

  const nextDir = path.join(MODELS, "tiny-llava-next");
  const next = inspectModel(nextDir);
  assert.equal(next.format, "hf-llava-next");
  assert.equal(next.image.pinpointOrder, "height,width");
  assert.equal(next.parameters.other, 16);
  const loaded = await loadLlava(nextDir);
  for (const t of next.imageTokens) assert.equal(t.tokens, realTokens(loaded, t.width, t.height), `${t.width}x${t.height}`);
  // and the count the reference processor produced for the case image
  const expanded = npyToNumbers(readNpy(path.join(CASES, "tiny-llava-next", "gradient", "input_ids_expanded.npy")));
  assert.equal(imageTokenCount(next.vision as { imageSize: number; patchSize: number }, "patch", next.image, 640, 480).tokens, expanded.filter((id) => id === 32000).length);
});

test("an original AnyRes checkpoint: (width, height) pinpoints, tokens as the model computes them; the worked 1.6 example", async () => {
  const dir = path.join(tmp, "llava-v1.6-tiny");
  randomAnyresOriginal(dir);
  const r = inspectModel(dir);
  assert.equal(r.vision.weights, "checkpoint");
  assert.equal(r.image.pinpointOrder, "width,height");
  assert.equal(r.image.mergeType, "spatial_unpad");
  assert.equal(r.templates.cli, "llava_v1");
  const loaded = await loadLlava(dir);
  for (const [w, h] of [...INSPECT_IMAGE_SIZES, [300, 500], [500, 301]]) {
    assert.equal(imageTokenCount({ imageSize: 28, patchSize: 14 }, "patch", r.image, w, h).tokens, realTokens(loaded, w, h), `${w}x${h}`);
  }
  // spec 1.6: a 1024x899 image on LLaVA-1.6's pinpoints and a 336 px tower gives 2634 tokens; 672x672 gives 2928
  const v16 = { mode: "anyres" as const, pinpoints: [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]], pinpointOrder: "width,height" as const, mergeType: "spatial_unpad", maxSequenceLength: null };
  assert.equal(imageTokenCount({ imageSize: 336, patchSize: 14 }, "patch", v16, 1024, 899).tokens, 2634);
  assert.equal(imageTokenCount({ imageSize: 336, patchSize: 14 }, "patch", v16, 672, 672).tokens, 2928);
});

test("a LoRA checkpoint with and without its base", () => {
  const lora = path.join(tmp, "llava-lora");
  fs.mkdirSync(lora);
  fs.copyFileSync(path.join(ORIG, "config.json"), path.join(lora, "config.json"));
  fs.writeFileSync(path.join(lora, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: 4, lora_alpha: 8, target_modules: ["q_proj"] }));
  fs.copyFileSync(path.join(ORIG, "model.safetensors"), path.join(lora, "adapter_model.safetensors"));
  const alone = inspectModel(lora, { visionTower: path.join(MODELS, "tiny-clip-vit-56") });
  assert.equal(alone.checkpoint, "lora");
  assert.equal(alone.parameters.llm, null);
  assert.match(alone.notes.join("\n"), /--model-base/);
  const withBase = inspectModel(lora, { modelBase: ORIG, visionTower: path.join(MODELS, "tiny-clip-vit-56") });
  assert.equal(withBase.parameters.llm, inspectModel(ORIG).parameters.llm);
  assert.equal(withBase.lora?.r, 4);
  assert.equal(withBase.parameters.lora, inspectModel(ORIG).parameters.total - inspectModel(ORIG).parameters.vision!);
});
