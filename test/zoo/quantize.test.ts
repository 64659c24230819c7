/**
 * `llava convert quantize`: the GGUF pair it writes holds every weight as --load-8bit /
 * --load-4bit keeps it, so loading the pair gives the model those flags give, bit for bit (the
 * same packed bytes, the same logits), from f32 and bf16 checkpoints; bad input is one line.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { loadImages } from "../../src/image/decode.js";
import { GgufFile } from "../../src/io/gguf.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { traceRequest } from "../../src/llava/trace.js";
import { PackedTensor } from "../../src/tensor/tensor.js";
import { convertToGguf } from "../../src/zoo/to-gguf.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { MODELS } from "../helpers/paths.js";
import { squareImage, tempDir } from "./helpers.js";

const root = tempDir("llava-quantize-");
const image = squareImage(root);
const text = { hidden_size: 128, intermediate_size: 352, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32001, max_position_embeddings: 256 };
const vision = { hidden_size: 64, intermediate_size: 160, num_hidden_layers: 3, num_attention_heads: 4, image_size: 56, patch_size: 14 };
const tokenizerFrom = path.join(MODELS, "tiny-llava-1.5-mha");

async function trace(loaded: LoadedLlava) {
  const { trace } = await traceRequest(loaded, { images: await loadImages([await image]), query: "What is shown?", convMode: "llava_v1", maxNewTokens: 4 });
  return trace.arrays;
}

/** Every packed weight of the model by a name of its place (canonical LLM names, tower layer slots). */
function packedWeights(loaded: LoadedLlava): Map<string, PackedTensor> {
  const out = new Map<string, PackedTensor>();
  for (const [name, l] of loaded.model.llm.namedLinears()) if (l.weight instanceof PackedTensor) out.set(name, l.weight);
  loaded.model.vision.layers.forEach((layer, i) => {
    for (const [slot, l] of Object.entries(layer.linears)) if (l.weight instanceof PackedTensor) out.set(`tower.${i}.${slot}`, l.weight);
  });
  return out;
}

for (const [dtype, format] of [["BF16", "hf"], ["F32", "original"]] as const) {
  const { modelDir } = writeRandomLlava(path.join(root, `${format}-${dtype}`), { format, dtype, seed: 3, text, vision, tokenizerFrom });
  for (const type of ["q8_0", "q4_0"] as const) {
    test(`convert quantize ${type} of a ${dtype} ${format} checkpoint loads as --load-${type === "q8_0" ? 8 : 4}bit loads the checkpoint, bit for bit`, async () => {
      const out = path.join(root, `${format}-${dtype}-${type}`);
      await convertToGguf({ modelPath: modelDir, out, type, asLoaded: type });
      const stored = await loadLlava(out, { warn: () => {} });
      const flagged = await loadLlava(modelDir, { quantize: type, warn: () => {} });
      const want = packedWeights(flagged);
      const got = packedWeights(stored);
      assert.ok(want.size > 10, `${want.size} packed weights`);
      for (const [name, w] of want) {
        if (name.startsWith("tower.") && Number(name.split(".")[1]) >= vision.num_hidden_layers - 1) continue; // past the feature layer: not in mmproj
        const g = got.get(name);
        assert.ok(g, `${name} is packed in the stored model`);
        assert.equal(g.matrix.format, w.matrix.format, name);
        assert.ok(Buffer.from(g.matrix.data).equals(Buffer.from(w.matrix.data)), `${name}: the same ${w.matrix.format} bytes`);
      }
      const [a, b] = [await trace(stored), await trace(flagged)];
      for (const key of ["projector_output", "logits_last", "generated_ids"]) {
        assert.deepEqual(Array.from(a.get(key)!.data as ArrayLike<number>), Array.from(b.get(key)!.data as ArrayLike<number>), key);
      }
      const llm = GgufFile.open(path.join(out, `${path.basename(modelDir)}-${type.toUpperCase()}.gguf`));
      try {
        assert.equal(llm.tensors.get("token_embd.weight")!.type.name, "BF16", "the embedding is kept 16-bit, as the flags keep it");
        assert.equal(llm.tensors.get("output.weight")!.type.name, "Q8_0", "lm_head at 8 bits");
        assert.equal(llm.tensors.get("blk.0.ffn_down.weight")!.type.name, type.toUpperCase());
      } finally {
        llm.close();
      }
    });
  }
}

test("llava convert quantize writes the pair and says so; a --type it cannot keep is a usage error", () => {
  const out = path.join(root, "cli");
  const model = path.join(MODELS, "tiny-llava-1.5-mha");
  const r = llava(["convert", "quantize", "--model-path", model, "--out", out, "--type", "q4_0"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), out);
  assert.deepEqual(fs.readdirSync(out).sort(), ["mmproj-tiny-llava-1.5-mha-f16.gguf", "tiny-llava-1.5-mha-Q4_0.gguf"]);
  const bad = llava(["convert", "quantize", "--model-path", model, "--out", path.join(root, "x"), "--type", "q4_k_m"]);
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /^llava: --type q4_k_m: expected q8_0 \(as --load-8bit\) or q4_0 \(as --load-4bit\)$/m);
  assert.doesNotMatch(bad.stderr, /^\s+at /m, "no stack trace");
  assertCleanError(llava(["convert", "quantize", "--model-path", model, "--out", path.join(root, "y")]), /--type is required/);
  assert.equal(fs.existsSync(path.join(root, "x")), false);
});
