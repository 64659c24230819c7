/**
 * A LLaVA model loaded from a GGUF pair made of a fixture checkpoint computes what the
 * checkpoint computes: the fixture's reference arrays (preprocessing, ids, tower, projector,
 * every hidden state, logits), and, for f32 files, the same numbers as the checkpoint itself.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { readNpy, npyToNumbers } from "../../src/io/npy.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import { packMatrix } from "../../src/tensor/packed.js";
import { PackedTensor } from "../../src/tensor/tensor.js";
import { dumpTrace } from "../helpers/dump.js";
import { compareCase } from "../helpers/compare.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";
import { writeGgufPair } from "./gguf-pair.js";

const dir = tempDir("llava-gguf-load-");
const CLIP = path.join(MODELS, "tiny-clip-vit-56");
let n = 0;
const quiet = { warn: () => {} };

async function trace(loaded: LoadedLlava, images: string[], query: string, maxNewTokens = 5): Promise<string> {
  const out = path.join(dir, `trace${n++}`);
  await dumpTrace(loaded, { images: images.map((f) => path.join(IMAGES, f)), query, convMode: "llava_v1", maxNewTokens, out });
  return out;
}

/**
 * Largest absolute difference between the arrays two traces both wrote. The mmproj holds the
 * tower's layers up to the selected one only (as llama.cpp's converter writes it), so its vision
 * hidden states are the first ones of the checkpoint's.
 */
function maxDiff(a: string, b: string): { diff: number; compared: string[] } {
  const compared = fs.readdirSync(a).filter((f) => f.endsWith(".npy") && fs.existsSync(path.join(b, f)));
  let diff = 0;
  for (const f of compared) {
    const [x, y] = [npyToNumbers(readNpy(path.join(a, f))), npyToNumbers(readNpy(path.join(b, f)))];
    if (f === "vision_hidden_states.npy") x.length = y.length;
    assert.equal(x.length, y.length, f);
    for (let i = 0; i < x.length; i++) diff = Math.max(diff, Math.abs(x[i] - y[i]));
  }
  return { diff, compared };
}

test("an f32 GGUF pair of the original-format fixture passes its reference case (pad preprocessing, -200 ids, tower, projector, logits)", async () => {
  const pair = writeGgufPair(path.join(MODELS, "tiny-llava-1.5-orig"), path.join(dir, "orig-f32"), { type: "F32", visionTower: CLIP });
  const loaded = await loadLlava(pair.model, { mmproj: pair.mmproj, ...quiet });
  const refDir = path.join(CASES, "tiny-llava-1.5-orig/gradient");
  const meta = JSON.parse(fs.readFileSync(path.join(refDir, "meta.json"), "utf8")) as { images: string[]; question: string };
  const out = await trace(loaded, meta.images, meta.question, 20);
  const verdicts = compareCase(refDir, out).filter((v) => v.name !== "vision_hidden_states");
  assert.deepEqual(verdicts.filter((v) => !v.ok), [], verdicts.map((v) => `${v.ok ? "PASS" : "FAIL"} ${v.name}: ${v.detail}`).join("\n"));
  assert.ok(verdicts.length >= 8, `only ${verdicts.length} arrays compared`);
});

test("f32 GGUF (legacy ffn names too) computes what the safetensors checkpoint computes, within 1e-6", async () => {
  const model = path.join(MODELS, "tiny-llava-1.5-orig");
  const reference = await loadLlava(model, { visionTower: CLIP, ...quiet });
  const want = await trace(reference, ["gradient_640x480.png"], "What is shown?");
  for (const legacyFfn of [false, true]) {
    const pair = writeGgufPair(model, path.join(dir, `orig-f32-${legacyFfn}`), { type: "F32", visionTower: CLIP, legacyFfn });
    const got = await trace(await loadLlava(pair.model, { mmproj: pair.mmproj, ...quiet }), ["gradient_640x480.png"], "What is shown?");
    const { diff, compared } = maxDiff(want, got);
    assert.ok(compared.includes("logits_last.npy") && compared.includes("projector_output.npy") && compared.includes("hidden_states.npy"), compared.join(", "));
    assert.ok(diff <= 1e-6, `legacy ffn names ${legacyFfn}: max difference ${diff}`);
  }
});

test("a folder holding the pair loads; the HF fixture's text case passes through GGUF", async () => {
  const folder = path.join(dir, "mha-folder");
  writeGgufPair(path.join(MODELS, "tiny-llava-1.5-mha"), folder, { type: "F32" });
  const loaded = await loadLlava(folder, quiet);
  assert.equal(loaded.spec.gguf?.name, "tiny-llava-1.5-mha");
  const refDir = path.join(CASES, "tiny-llava-1.5-mha/text_only");
  const out = await trace(loaded, [], "Tell me a joke.", 20);
  // the GGUF model marks images as the original format does (-200), so there is no expanded HF prompt
  const verdicts = compareCase(refDir, out).filter((v) => v.name !== "input_ids_expanded");
  assert.deepEqual(verdicts.filter((v) => !v.ok), [], verdicts.map((v) => `${v.ok ? "PASS" : "FAIL"} ${v.name}: ${v.detail}`).join("\n"));
  assert.ok(verdicts.some((v) => v.name === "logits_last"));
});

test("packed GGUF types stay packed as stored, the permuted Q/K rows put back without dequantizing", async () => {
  const model = path.join(MODELS, "tiny-llava-1.5-orig");
  const reference = await loadLlava(model, { visionTower: CLIP, ...quiet });
  const want = await trace(reference, [], "Tell me a joke.");
  const refLinears = new Map(reference.model.llm.namedLinears());
  for (const [type, format, bound] of [["F16", "f16", 1e-3], ["BF16", "bf16", 1e-2], ["Q8_0", "q8_0", 2e-2], ["Q4_0", "q4_0", 0.5]] as const) {
    const pair = writeGgufPair(model, path.join(dir, `orig-${type}`), { type, visionTower: CLIP });
    const loaded = await loadLlava(pair.model, { mmproj: pair.mmproj, ...quiet });
    const linears = new Map(loaded.model.llm.namedLinears());
    for (const proj of ["q_proj", "k_proj", "v_proj"]) {
      const name = `model.layers.1.self_attn.${proj}`;
      const w = linears.get(name)!.weight;
      assert.ok(w instanceof PackedTensor && w.matrix.format === format, `${type}: ${proj} is kept as ${format}`);
      const f32 = refLinears.get(name)!.weight;
      assert.ok(!(f32 instanceof PackedTensor));
      const [rows, cols] = f32.shape;
      // (q8_0 / q4_0 in the layout the native kernels read)
      const stored = loaded.model.llm.backend.kernelLayout(packMatrix(f32.data as Float32Array, rows, cols, format));
      assert.deepEqual([...w.matrix.data], [...stored.data], `${type}: ${proj} rows in the HF order`);
    }
    const got = await trace(loaded, [], "Tell me a joke.");
    const logits = (d: string) => npyToNumbers(readNpy(path.join(d, "logits_last.npy")));
    const [a, b] = [logits(want), logits(got)];
    const rms = Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0) / a.length) / Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length);
    assert.ok(rms < bound, `${type}: relative RMS of the logits ${rms}`);
  }
});

test("a LLaVA-NeXT pair: pinpoints, spatial_unpad and image_newline come from the mmproj; the LLM matches the checkpoint", async () => {
  const model = path.join(MODELS, "tiny-llava-next");
  const pair = writeGgufPair(model, path.join(dir, "next"), { type: "F32" });
  const loaded = await loadLlava(pair.model, { mmproj: pair.mmproj, ...quiet });
  const reference = await loadLlava(model, quiet);
  assert.equal(loaded.spec.settings.anyres?.mergeType, "spatial_unpad");
  assert.deepEqual(loaded.spec.settings.anyres?.pinpoints, reference.spec.settings.anyres?.pinpoints);
  assert.deepEqual([...loaded.model.imageNewline!.data], [...reference.model.imageNewline!.data]);
  const { diff, compared } = maxDiff(await trace(reference, [], "Hi there"), await trace(loaded, [], "Hi there"));
  assert.ok(compared.includes("logits_last.npy"));
  assert.ok(diff <= 1e-6, `max difference ${diff}`);
});
