/**
 * The --quant policy (src/llava/precision.ts): llama-quant.cpp's per-tensor types for a LLaMA
 * model, the K formats' fallback for rows that are not whole super-blocks, and the CLI check.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { keptBytes, keptFormat, QUANT_TYPES } from "../../src/llava/precision.js";
import { fittingFormat } from "../../src/tensor/packed.js";

const layer = (i: number, m: string) => `model.layers.${i}.${m}.weight`;

test("q4_k_m: attn_v and ffn_down in q6_k on use_more_bits layers, lm_head q6_k, the rest q4_k", () => {
  const opts = { quant: "q4_k_m" as const, llmLayers: 32 };
  // use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2
  const bumped = Array.from({ length: 32 }, (_, i) => i).filter((i) => keptFormat(layer(i, "self_attn.v_proj"), opts) === "q6_k");
  assert.deepEqual(bumped, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
  for (let i = 0; i < 32; i++) {
    assert.equal(keptFormat(layer(i, "mlp.down_proj"), opts), bumped.includes(i) ? "q6_k" : "q4_k");
    for (const m of ["self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj"]) assert.equal(keptFormat(layer(i, m), opts), "q4_k");
  }
  assert.equal(keptFormat("lm_head.weight", opts), "q6_k");
  assert.equal(keptFormat("model.embed_tokens.weight", opts), "bf16");
  assert.equal(keptFormat("model.layers.0.input_layernorm.weight", opts), null);
  assert.equal(keptFormat("model.mm_projector.0.weight", opts), null);
  assert.equal(keptFormat("model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", opts), "f16");
});

test("q5_k_m bumps the same tensors; plain types keep every Linear in the type, lm_head q6_k unless q8_0", () => {
  assert.equal(keptFormat(layer(0, "self_attn.v_proj"), { quant: "q5_k_m", llmLayers: 8 }), "q6_k");
  assert.equal(keptFormat(layer(2, "self_attn.v_proj"), { quant: "q5_k_m", llmLayers: 8 }), "q5_k");
  assert.equal(keptFormat(layer(3, "mlp.down_proj"), { quant: "q5_k_m", llmLayers: 8 }), "q6_k"); // (3 - 1) % 3 == 2
  for (const quant of ["q6_k", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k"] as const) {
    assert.equal(keptFormat(layer(0, "self_attn.v_proj"), { quant }), quant);
    assert.equal(keptFormat("lm_head.weight", { quant }), quant === "q8_0" ? "q8_0" : "q6_k");
  }
  assert.throws(() => keptFormat(layer(0, "mlp.down_proj"), { quant: "q4_k_m" }), /layer count/);
  assert.equal(QUANT_TYPES.length, 10);
});

test("--load-4bit and --load-8bit keep their meaning", () => {
  assert.equal(keptFormat(layer(0, "self_attn.v_proj"), { quantize: "q4_0" }), "q4_0");
  assert.equal(keptFormat("lm_head.weight", { quantize: "q4_0" }), "q8_0");
  assert.equal(keptFormat("lm_head.weight", { quantize: "q8_0" }), "q8_0");
});

test("K formats on rows that are not whole super-blocks fall back as llama.cpp's do", () => {
  assert.equal(fittingFormat("q4_k", 4096 + 32), "q5_0");
  assert.equal(fittingFormat("q5_k", 96), "q5_1");
  assert.equal(fittingFormat("q6_k", 4128), "q8_0");
  assert.equal(fittingFormat("q6_k", 32001), null);
  assert.equal(fittingFormat("q4_k", 17), null);
  assert.equal(keptBytes([10, 4096], "q4_k"), 10 * 16 * 144);
  assert.equal(keptBytes([10, 96], "q4_k"), 10 * 3 * 22);
});

test("loading with --quant q4_k_m packs each LLM weight in its llama.cpp type", async () => {
  const fs = await import("node:fs");
  const os = await import("node:os");
  const path = await import("node:path");
  const { writeRandomLlava } = await import("../../src/llava/random-checkpoint.js");
  const { loadLlava } = await import("../../src/llava/load.js");
  const { PackedTensor } = await import("../../src/tensor/tensor.js");
  const { MODELS } = await import("../helpers/paths.js");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llava-quant-mix-"));
  try {
    writeRandomLlava(dir, {
      format: "hf", seed: 3, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
      text: { hidden_size: 256, intermediate_size: 288, num_hidden_layers: 8, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32001, max_position_embeddings: 128 },
      vision: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, image_size: 28, patch_size: 14 },
    });
    const { model } = await loadLlava(dir, { quant: "q4_k_m" });
    const formats = Object.fromEntries(model.llm.namedLinears().map(([name, l]) => [name, l.weight instanceof PackedTensor ? l.weight.matrix.format : "f32"]));
    // use_more_bits(i, 8): layers 0, 3, 6, 7
    assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => formats[`model.layers.${i}.self_attn.v_proj`]), ["q6_k", "q4_k", "q4_k", "q6_k", "q4_k", "q4_k", "q6_k", "q6_k"]);
    // down_proj rows have 288 columns: q6_k falls back to q8_0, q4_k to q5_0
    assert.deepEqual([0, 1].map((i) => formats[`model.layers.${i}.mlp.down_proj`]), ["q8_0", "q5_0"]);
    assert.equal(formats["model.layers.1.mlp.up_proj"], "q4_k");
    assert.equal(formats.lm_head, "q6_k");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the CLI refuses an unknown --quant and --quant with --load-4bit in one line", async () => {
  const { llava, assertCleanError } = await import("../helpers/cli.js");
  const { MODELS } = await import("../helpers/paths.js");
  const model = `${MODELS}/tiny-llava-1.5-mha`;
  assertCleanError(llava(["run", "--model-path", model, "--quant", "q3_k_m", "--query", "hi"]), /--quant must be one of q4_k_m, q5_k_m/);
  assertCleanError(llava(["run", "--model-path", model, "--quant", "q4_k_m", "--load-4bit", "--query", "hi"]), /--quant excludes --load-8bit and --load-4bit/);
});
