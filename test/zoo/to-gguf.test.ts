/**
 * The GGUF pair `llava convert to-gguf` writes from the shared tiny models loads back (gguf-load)
 * as the same model: the same prompt ids from the tokenizer rebuilt from the metadata, the same
 * image features from the mmproj file, the same logits and greedy tokens, within what each type's
 * rounding allows.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { loadImages } from "../../src/image/decode.js";
import { GgufFile } from "../../src/io/gguf.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import { type TracedArray, traceRequest } from "../../src/llava/trace.js";
import { convertToGguf, type GgufFileType } from "../../src/zoo/to-gguf.js";
import { MODELS } from "../helpers/paths.js";
import { squareImage, tempDir } from "./helpers.js";

const root = tempDir("llava-to-gguf-");
// square: a GGUF pair loads as llama.cpp runs LLaVA-1.5 (pad to square), the HF fixture center-crops; on a square image both see the same pixels
const image = squareImage(root);

async function trace(loaded: LoadedLlava): Promise<Map<string, TracedArray>> {
  const { trace } = await traceRequest(loaded, { images: await loadImages([await image]), query: "What is shown?", convMode: "llava_v1", maxNewTokens: 6 });
  return trace.arrays;
}

/** Prompt ids with the image marker written as the original format's -200 (a GGUF pair's), as a GGUF-loaded model traces them. */
function withOriginalMarker(ids: TracedArray, marker: number): number[] {
  return Array.from(ids.data as ArrayLike<number | bigint>, (id) => (Number(id) === marker ? -200 : Number(id)));
}

/** Largest difference relative to the largest magnitude of the reference. */
function relDiff(a: TracedArray, b: TracedArray): number {
  assert.deepEqual(a.shape, b.shape);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.data.length; i++) {
    diff = Math.max(diff, Math.abs(Number(a.data[i]) - Number(b.data[i])));
    scale = Math.max(scale, Math.abs(Number(a.data[i])));
  }
  return diff / scale;
}

const expected = new Map<string, Promise<Map<string, TracedArray>>>();
const reference = (model: string) => {
  if (!expected.has(model)) expected.set(model, loadLlava(path.join(MODELS, model), { warn: () => {} }).then(trace));
  return expected.get(model)!;
};

/**
 * Bounds on the relative difference (largest difference over largest magnitude) of the image
 * features and the logits, per type. The mmproj file is f16 in every case (measured 4.6e-4);
 * the logits measured: f32 1.2e-4, f16 5.4e-4, q8_0 1.5e-2, q4_k_m 1.3e-1, q4_0 1.9e-1 (this
 * model's rows are 32 or 86 wide, so K-quant types fall back to 32-blocks, as llama.cpp does).
 */
const BOUND: Partial<Record<GgufFileType, number>> = { f32: 1e-3, f16: 2e-3, q8_0: 5e-2, q4_k_m: 3e-1, q4_0: 3e-1 };

for (const [model, type] of [["tiny-llava-1.5-mha", "f32"], ["tiny-llava-1.5-mha", "f16"], ["tiny-llava-next", "f16"], ["tiny-llava-1.5-mha", "q8_0"], ["tiny-llava-1.5-mha", "q4_k_m"], ["tiny-llava-1.5-mha", "q4_0"]] as const) {
  test(`to-gguf ${type} of ${model} loads back as the same model`, async () => {
    const out = path.join(root, `${model}-${type}`);
    const result = await convertToGguf({ modelPath: path.join(MODELS, model), out, type });
    assert.deepEqual(fs.readdirSync(out).sort(), [`${model}-${type.toUpperCase()}.gguf`, `mmproj-${model}-f16.gguf`].sort());
    assert.deepEqual(result.files, [result.llmFile, result.mmprojFile]);
    const want = await reference(model);
    const got = await trace(await loadLlava(out, { warn: () => {} }));
    assert.deepEqual(withOriginalMarker(got.get("input_ids")!, NaN), withOriginalMarker(want.get("input_ids")!, 32000), "prompt ids from the tokenizer rebuilt from the GGUF metadata");
    const features = model === "tiny-llava-next" ? "image_features_packed" : "projector_output";
    const featureDiff = relDiff(want.get(features)!, got.get(features)!);
    const logitDiff = relDiff(want.get("logits_last")!, got.get("logits_last")!);
    console.log(`# ${model} ${type}: image features ${featureDiff.toExponential(2)}, last logits ${logitDiff.toExponential(2)} (relative)`);
    assert.ok(featureDiff <= BOUND[type]!, `image features differ by ${featureDiff}`);
    assert.ok(logitDiff <= BOUND[type]!, `logits differ by ${logitDiff}`);
    // 4-bit weights on this 32-wide random model move the logits by ~15%, more than its top-2 margins after the first step
    const agreeing = type === "q4_0" || type === "q4_k_m" ? 1 : 6;
    assert.deepEqual(got.get("generated_ids")!.data.slice(0, agreeing), want.get("generated_ids")!.data.slice(0, agreeing), "greedy tokens");
  });
}

test("the files carry llama.cpp's metadata: architecture, file type, tokenizer, clip keys, Q/K rows permuted", async () => {
  const out = path.join(root, "meta");
  const { llmFile, mmprojFile } = await convertToGguf({ modelPath: path.join(MODELS, "tiny-llava-next"), out, type: "q8_0" });
  const llm = GgufFile.open(path.join(out, llmFile));
  const mm = GgufFile.open(path.join(out, mmprojFile));
  try {
    assert.equal(llm.string("general.architecture", null), "llama");
    assert.equal(llm.uint("general.file_type", null), 7);
    assert.equal(llm.string("tokenizer.ggml.model", null), "llama");
    assert.equal(llm.strings("tokenizer.ggml.tokens")!.length, llm.tensors.get("token_embd.weight")!.ne[1]);
    assert.equal(llm.uint("tokenizer.ggml.bos_token_id", null), 1);
    assert.equal(mm.string("general.architecture", null), "clip");
    assert.equal(mm.string("clip.projector_type", null), "mlp");
    assert.equal(mm.string("clip.vision.mm_patch_merge_type", null), "spatial_unpad");
    assert.ok(mm.tensors.has("model.image_newline"));
    assert.ok(mm.numbers("clip.vision.image_grid_pinpoints")!.length >= 2);
    // the tower stops at the feature layer (-2 of 3): blocks 0 and 1, no post_ln
    assert.equal(mm.uint("clip.vision.block_count", null), 2);
    assert.ok(mm.tensors.has("v.blk.1.ln1.weight") && !mm.tensors.has("v.blk.2.ln1.weight") && !mm.tensors.has("v.post_ln.weight"));
  } finally {
    llm.close();
    mm.close();
  }
});
