import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { MODELS } from "../helpers/paths.js";
import { parseClipVisionConfig, parseLlamaConfig, readJsonFile, type LlamaConfig } from "../../src/io/config.js";
import { LlavaError } from "../../src/util/errors.js";
import { tempDir } from "../helpers/tmp.js";

const FILE = "/models/x/config.json";

function expectConfigError(fn: () => unknown, field: string, pattern: RegExp): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof LlavaError, String(e));
    assert.ok(e.message.includes(FILE), `no file name in: ${e.message}`);
    assert.ok(e.message.includes(`"${field}"`), `no field ${field} in: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

const LLAMA_DEFAULTS: LlamaConfig = {
  modelType: "llama",
  hiddenSize: 4096,
  intermediateSize: 11008,
  numHiddenLayers: 32,
  numAttentionHeads: 32,
  numKeyValueHeads: 32,
  headDim: 128,
  vocabSize: 32000,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  ropeScaling: null,
  maxPositionEmbeddings: 2048,
  hiddenAct: "silu",
  attentionBias: false,
  mlpBias: false,
  tieWordEmbeddings: false,
  bosTokenId: 1,
  eosTokenId: 2,
  padTokenId: null,
  slidingWindow: null,
};

test("fixture configs: HF text_config, original format, NeXT, and the HF top level", () => {
  const mhaFile = path.join(MODELS, "tiny-llava-1.5-mha", "config.json");
  const mha = readJsonFile(mhaFile, "model config") as { text_config: unknown; vision_config: unknown };
  const text = parseLlamaConfig(mha.text_config, mhaFile);
  const expected: LlamaConfig = {
    ...LLAMA_DEFAULTS,
    hiddenSize: 32,
    intermediateSize: 86,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 4,
    headDim: 8,
    vocabSize: 32001,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 512,
    padTokenId: 0,
  };
  assert.deepEqual(text, expected);
  assert.deepEqual(parseLlamaConfig(mha, mhaFile), expected); // composite config: text_config is used

  const origFile = path.join(MODELS, "tiny-llava-1.5-orig", "config.json");
  assert.deepEqual(parseLlamaConfig(readJsonFile(origFile, "model config"), origFile), { ...expected, vocabSize: 32000 });

  const nextFile = path.join(MODELS, "tiny-llava-next", "config.json");
  const next = parseLlamaConfig(readJsonFile(nextFile, "model config"), nextFile);
  assert.equal(next.hiddenSize, 16);
  assert.equal(next.headDim, 8);
  assert.equal(next.maxPositionEmbeddings, 1024);

  const clipFile = path.join(MODELS, "tiny-clip-vit-56", "config.json");
  const clip = parseClipVisionConfig(readJsonFile(clipFile, "vision config"), clipFile);
  assert.deepEqual(clip, {
    hiddenSize: 48,
    intermediateSize: 80,
    numHiddenLayers: 3,
    numAttentionHeads: 4,
    imageSize: 56,
    patchSize: 14,
    numChannels: 3,
    hiddenAct: "quick_gelu",
    layerNormEps: 1e-5,
    projectionDim: 32,
  });
  assert.deepEqual(parseClipVisionConfig(mha, mhaFile), clip); // llava's vision_config
  assert.deepEqual(parseClipVisionConfig(mha.vision_config, mhaFile), clip);
});

test("an empty llama config gets every LlamaConfig default", () => {
  assert.deepEqual(parseLlamaConfig({}, FILE), LLAMA_DEFAULTS);
  assert.deepEqual(parseLlamaConfig({ model_type: "llama" }, FILE), LLAMA_DEFAULTS);
  assert.deepEqual(parseLlamaConfig({ model_type: "llava", text_config: null }, FILE), LLAMA_DEFAULTS);
  // num_key_value_heads absent or null -> num_attention_heads; head_dim -> hidden / heads.
  const c = parseLlamaConfig({ hidden_size: 2048, num_attention_heads: 16, num_key_value_heads: null, head_dim: null }, FILE);
  assert.equal(c.numKeyValueHeads, 16);
  assert.equal(c.headDim, 128);
});

test("llava-1.5-7b-hf style text_config (only non-defaults written)", () => {
  const c = parseLlamaConfig(
    {
      model_type: "llava",
      text_config: {
        architectures: ["LlamaForCausalLM"],
        max_position_embeddings: 4096,
        model_type: "llama",
        rms_norm_eps: 1e-5,
        torch_dtype: "float16",
        vocab_size: 32064,
      },
    },
    FILE,
  );
  assert.deepEqual(c, { ...LLAMA_DEFAULTS, maxPositionEmbeddings: 4096, rmsNormEps: 1e-5, vocabSize: 32064 });
});

test("mistral configs get MistralConfig defaults", () => {
  assert.deepEqual(parseLlamaConfig({ model_type: "mistral" }, FILE), {
    ...LLAMA_DEFAULTS,
    modelType: "mistral",
    intermediateSize: 14336,
    numKeyValueHeads: 8,
    maxPositionEmbeddings: 131072,
    slidingWindow: 4096,
  });
  // llava-v1.6-mistral-7b-hf style: v0.2 sets rope_theta 1e6 and disables the sliding window.
  const v02 = parseLlamaConfig(
    {
      model_type: "llava_next",
      text_config: {
        model_type: "mistral",
        intermediate_size: 14336,
        max_position_embeddings: 32768,
        num_key_value_heads: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 1000000.0,
        sliding_window: null,
        vocab_size: 32064,
        attention_bias: true, // Mistral modules have no biases: ignored
      },
    },
    FILE,
  );
  assert.equal(v02.modelType, "mistral");
  assert.equal(v02.ropeTheta, 1e6);
  assert.equal(v02.slidingWindow, null);
  assert.equal(v02.numKeyValueHeads, 8);
  assert.equal(v02.headDim, 128);
  assert.equal(v02.attentionBias, false);
  assert.equal(parseLlamaConfig({ model_type: "mistral", num_key_value_heads: null }, FILE).numKeyValueHeads, 32);
  assert.equal(parseLlamaConfig({ model_type: "llava_mistral", mm_vision_tower: "x" }, FILE).modelType, "mistral");
});

test("rope settings: rope_scaling (old and new keys), v5 rope_parameters, defaults", () => {
  const linear = parseLlamaConfig({ rope_scaling: { type: "linear", factor: 2.0 } }, FILE).ropeScaling;
  assert.equal(linear?.ropeType, "linear");
  assert.equal(linear?.factor, 2);
  const llama3 = parseLlamaConfig(
    {
      rope_theta: 500000,
      rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    },
    FILE,
  );
  assert.equal(llama3.ropeTheta, 500000);
  assert.deepEqual(
    { ...llama3.ropeScaling, raw: undefined },
    { ropeType: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192, raw: undefined },
  );
  const v5 = parseLlamaConfig({ rope_parameters: { rope_type: "default", rope_theta: 1e6 } }, FILE);
  assert.equal(v5.ropeTheta, 1e6);
  assert.equal(v5.ropeScaling, null);
  const v5scaled = parseLlamaConfig({ rope_parameters: { rope_type: "dynamic", rope_theta: 1e4, factor: 4 } }, FILE);
  assert.equal(v5scaled.ropeScaling?.ropeType, "dynamic");
  expectConfigError(() => parseLlamaConfig({ rope_scaling: { type: "linear" } }, FILE), "rope_scaling.factor", /required/);
  expectConfigError(
    () => parseLlamaConfig({ rope_scaling: { rope_type: "llama3", factor: 8 } }, FILE),
    "rope_scaling.original_max_position_embeddings",
    /required/,
  );
  expectConfigError(() => parseLlamaConfig({ rope_theta: -1 }, FILE), "rope_theta", /positive number/);
});

test("token ids: lists, nulls and negative pads", () => {
  const c = parseLlamaConfig({ eos_token_id: [128001, 128009], bos_token_id: null, pad_token_id: -1 }, FILE);
  assert.deepEqual(c.eosTokenId, [128001, 128009]);
  assert.equal(c.bosTokenId, null);
  assert.equal(c.padTokenId, -1);
  expectConfigError(() => parseLlamaConfig({ eos_token_id: [] }, FILE), "eos_token_id", /non-empty list/);
  expectConfigError(() => parseLlamaConfig({ bos_token_id: "1" }, FILE), "bos_token_id", /integer or null/);
});

test("invalid decoder configs name the file and the field", () => {
  for (const bad of [0, -4, 1.5, "4096", null, true]) {
    expectConfigError(() => parseLlamaConfig({ hidden_size: bad }, FILE), "hidden_size", /positive integer/);
  }
  expectConfigError(() => parseLlamaConfig({ hidden_size: 100, num_attention_heads: 3 }, FILE), "num_attention_heads", /must divide hidden_size \(100\)/);
  expectConfigError(() => parseLlamaConfig({ num_attention_heads: 32, num_key_value_heads: 5 }, FILE), "num_key_value_heads", /must divide num_attention_heads \(32\)/);
  expectConfigError(() => parseLlamaConfig({ model_type: "mpt" }, FILE), "model_type", /supported decoders/);
  expectConfigError(() => parseLlamaConfig({ model_type: "llava", text_config: { model_type: "qwen2" } }, FILE), "text_config.model_type", /"qwen2"/);
  expectConfigError(() => parseLlamaConfig({ model_type: "llava", text_config: { vocab_size: 0 } }, FILE), "text_config.vocab_size", /positive integer/);
  expectConfigError(() => parseLlamaConfig({ rms_norm_eps: "1e-6" }, FILE), "rms_norm_eps", /positive number/);
  expectConfigError(() => parseLlamaConfig({ tie_word_embeddings: "no" }, FILE), "tie_word_embeddings", /true or false/);
  expectConfigError(() => parseLlamaConfig({ head_dim: 7 }, FILE), "head_dim", /even/);
  expectConfigError(() => parseLlamaConfig({ model_type: "mistral", sliding_window: 0 }, FILE), "sliding_window", /positive integer/);
  assert.throws(() => parseLlamaConfig([1], FILE), (e: Error) => e instanceof LlavaError && e.message.includes(FILE));
  // An explicit head_dim need not equal hidden / heads.
  assert.equal(parseLlamaConfig({ hidden_size: 5120, num_attention_heads: 32, head_dim: 128 }, FILE).headDim, 128);
});

test("CLIP vision configs: defaults, full clip config, legacy vision_config_dict, errors", () => {
  assert.deepEqual(parseClipVisionConfig({}, FILE), {
    hiddenSize: 768,
    intermediateSize: 3072,
    numHiddenLayers: 12,
    numAttentionHeads: 12,
    imageSize: 224,
    patchSize: 32,
    numChannels: 3,
    hiddenAct: "quick_gelu",
    layerNormEps: 1e-5,
    projectionDim: 512,
  });
  // openai/clip-vit-large-patch14-336 style: a full clip config; the legacy dict wins over vision_config.
  const large = parseClipVisionConfig(
    {
      model_type: "clip",
      projection_dim: 768,
      text_config: { hidden_size: 768 },
      vision_config: { hidden_size: 768, image_size: 224, model_type: "clip_vision_model" },
      vision_config_dict: { hidden_size: 1024, image_size: 336, intermediate_size: 4096, num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14, projection_dim: 768 },
    },
    FILE,
  );
  assert.equal(large.hiddenSize, 1024);
  assert.equal(large.imageSize, 336);
  assert.equal(large.patchSize, 14);
  assert.equal(large.numHiddenLayers, 24);
  assert.equal(large.projectionDim, 768);
  assert.equal(large.hiddenAct, "quick_gelu");

  expectConfigError(() => parseClipVisionConfig({ hidden_size: 100, num_attention_heads: 12 }, FILE), "num_attention_heads", /must divide hidden_size/);
  expectConfigError(() => parseClipVisionConfig({ model_type: "clip", vision_config: { patch_size: -14 } }, FILE), "vision_config.patch_size", /positive integer/);
  expectConfigError(() => parseClipVisionConfig({ model_type: "siglip_vision_model" }, FILE), "model_type", /only CLIP vision towers/);
  expectConfigError(() => parseClipVisionConfig({ image_size: 14, patch_size: 28 }, FILE), "patch_size", /larger than image_size/);
  expectConfigError(() => parseClipVisionConfig({ layer_norm_eps: 0 }, FILE), "layer_norm_eps", /positive number/);
  assert.throws(() => parseClipVisionConfig({ model_type: "clip" }, FILE), /needs a "vision_config" object/);
});

test("readJsonFile: missing file and bad JSON name the file", () => {
  const dir = tempDir();
  const missing = path.join(dir, "config.json");
  assert.throws(() => readJsonFile(missing, "model config"), (e: Error) => e instanceof LlavaError && e.message === `model config ${missing}: file not found`);
  fs.writeFileSync(missing, '{"hidden_size": 4096,');
  assert.throws(() => readJsonFile(missing, "model config"), (e: Error) => e instanceof LlavaError && e.message.startsWith(`model config ${missing}: not valid JSON (`));
  fs.writeFileSync(missing, '{"hidden_size": 64}');
  assert.deepEqual(readJsonFile(missing, "model config"), { hidden_size: 64 });
  assert.throws(() => readJsonFile(dir, "model config"), /is a directory/);
});
