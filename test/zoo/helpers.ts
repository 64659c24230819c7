/** Shared set-up of the model-zoo tests: temp folders, a square test image, dumps and their comparison. */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { dumpTrace } from "../helpers/dump.js";
import { encodePng } from "../../src/image/decode.js";
import { readNpy, npyToNumbers } from "../../src/io/npy.js";
import { WeightStore, writeSafetensors, type TensorToWrite } from "../../src/io/safetensors.js";
import { loadLlava } from "../../src/llava/load.js";
import { writeRandomLlava, type RandomLlavaSpec } from "../../src/llava/random-checkpoint.js";
import { MODELS } from "../helpers/paths.js";

export { tempDir } from "../helpers/tmp.js";

/**
 * A square PNG: LLaVA's pad mode and HF's center crop see the same pixels only for square
 * images, so it lets 1.5 models be compared across the two formats.
 */
export async function squareImage(dir: string, size = 64): Promise<string> {
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      data[i] = (x * 255) / size;
      data[i + 1] = (y * 255) / size;
      data[i + 2] = ((x >> 3) + (y >> 3)) % 2 ? 230 : 20;
    }
  }
  const file = path.join(dir, "square.png");
  fs.writeFileSync(file, await encodePng({ width: size, height: size, data }));
  return file;
}

export interface Dump {
  /** [T, V] */
  logits: number[];
  rows: number;
  vocab: number;
  generated: number[];
}

let dumpCounter = 0;

/** Logits at every position and 8 greedy tokens for one image and a question. */
export async function dumpModel(modelPath: string, image: string, opts: { modelBase?: string; visionTower?: string } = {}): Promise<Dump> {
  const out = path.join(os.tmpdir(), `llava-zoo-dump-${process.pid}-${dumpCounter++}`);
  try {
    const loaded = await loadLlava(modelPath, opts);
    await dumpTrace(loaded, { images: [image], query: "What is shown here?", convMode: "llava_v1", maxNewTokens: 8, out });
    const logits = readNpy(path.join(out, "logits_all.npy"));
    return {
      logits: npyToNumbers(logits), rows: logits.shape[0], vocab: logits.shape[1],
      generated: npyToNumbers(readNpy(path.join(out, "generated_ids.npy"))),
    };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/** Same logits on the first `cols` vocabulary columns (HF models have extra ones) and same greedy tokens. */
export function assertSameOutputs(a: Dump, b: Dump, cols: number, tol = 1e-5): void {
  assert.equal(a.rows, b.rows, "positions");
  let worst = 0;
  for (let r = 0; r < a.rows; r++) {
    for (let c = 0; c < cols; c++) worst = Math.max(worst, Math.abs(a.logits[r * a.vocab + c] - b.logits[r * b.vocab + c]));
  }
  assert.ok(worst <= tol, `max logit difference ${worst}`);
  assert.deepEqual(a.generated, b.generated);
}

export const TOKENIZER_FROM = path.join(MODELS, "tiny-llava-1.5-orig");

export const TINY_TEXT = { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32000, max_position_embeddings: 256 };
export const TINY_VISION = { hidden_size: 24, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, image_size: 28, patch_size: 14 };

/** A random original-format checkpoint (tower beside it). */
export function randomOriginal(dir: string, spec: Partial<RandomLlavaSpec> = {}) {
  return writeRandomLlava(dir, { format: "original", tokenizerFrom: TOKENIZER_FROM, text: TINY_TEXT, vision: TINY_VISION, ...spec });
}

export function readAll(dir: string): TensorToWrite[] {
  const store = WeightStore.open(dir);
  try {
    return store.names().map((name) => {
      const raw = store.readRaw(name);
      const data = raw.dtype === "F32" ? new Float32Array(raw.bytes.buffer) : new Uint16Array(raw.bytes.buffer);
      return { name, dtype: raw.dtype as "F32" | "BF16" | "F16", shape: raw.shape, data };
    });
  } finally {
    store.close();
  }
}

/** AnyRes pinpoints of the tiny tower, (width, height) as the original config writes them. */
export const TINY_PINPOINTS_WH = [[28, 56], [56, 28], [56, 56], [84, 28], [28, 84]];

/**
 * A LLaVA-1.6-style original checkpoint: AnyRes with spatial_unpad, (width, height) pinpoints,
 * `model.image_newline`, and a fine-tuned tower stored in the checkpoint (different from the CLIP
 * folder's, so a conversion that takes the wrong one fails the comparison).
 */
export function randomAnyresOriginal(dir: string, seed = 21) {
  const { towerDir } = randomOriginal(dir, { seed });
  const tensors = readAll(dir);
  const tower = readAll(towerDir!);
  for (const t of tower) {
    const data = Float32Array.from(t.data as Float32Array, (x, i) => x * 1.05 + 0.01 * Math.sin(i));
    tensors.push({ name: `model.vision_tower.vision_tower.${t.name}`, dtype: "F32", shape: t.shape, data });
  }
  tensors.push({ name: "model.image_newline", dtype: "F32", shape: [TINY_TEXT.hidden_size], data: Float32Array.from({ length: TINY_TEXT.hidden_size }, (_, i) => Math.cos(i) / 4) });
  writeSafetensors(path.join(dir, "model.safetensors"), tensors, { format: "pt" });
  const configFile = path.join(dir, "config.json");
  const config = JSON.parse(fs.readFileSync(configFile, "utf8"));
  Object.assign(config, {
    image_aspect_ratio: "anyres", mm_patch_merge_type: "spatial_unpad", image_grid_pinpoints: TINY_PINPOINTS_WH,
    unfreeze_mm_vision_tower: true, tokenizer_model_max_length: 4096,
  });
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2));
  return { modelDir: dir, towerDir: towerDir! };
}
