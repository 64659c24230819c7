/** The benchmarks' random-weight checkpoints of real shapes, written once into a cache folder, and their test image. */
import fs from "node:fs";
import path from "node:path";
import type { RgbImage } from "../image/decode.js";
import { writeRandomLlava } from "../llava/random-checkpoint.js";
import { packageRoot } from "../tensor/native-backend.js";
import { LlavaError } from "../util/errors.js";
import { seededRandom } from "../util/random.js";

export const SHAPES = {
  "bench-small": {
    text: { hidden_size: 1024, intermediate_size: 2816, num_hidden_layers: 8, num_attention_heads: 16, num_key_value_heads: 4, vocab_size: 32001, max_position_embeddings: 2048 },
    vision: { hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, image_size: 224, patch_size: 16 },
  },
  "bench-1b": {
    text: { hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4, vocab_size: 32001, max_position_embeddings: 2048 },
    vision: { hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16, image_size: 336, patch_size: 14 },
  },
} as const;
export type ModelName = keyof typeof SHAPES;
export const MODEL_NAMES = Object.keys(SHAPES) as ModelName[];

/** Where the bench keeps what it writes once (checkpoints, GGUF copies): bench/.cache in the package. */
export function defaultCacheDir(): string {
  return path.join(packageRoot(), "bench", ".cache");
}

/** The checkpoint folder of `name` under `cacheDir`, written on first use with the LLaMA tokenizer of the project's fixtures. */
export function ensureCheckpoint(name: ModelName, cacheDir = defaultCacheDir()): string {
  const dir = path.join(cacheDir, name);
  if (fs.existsSync(path.join(dir, "config.json"))) return dir;
  const tokenizer = path.resolve(packageRoot(), "../shared/fixtures/models/tiny-llava-1.5-mha");
  if (!fs.existsSync(path.join(tokenizer, "tokenizer.json"))) {
    throw new LlavaError(`--model ${name} is written with the tokenizer of the project's test fixtures, and ${tokenizer} has none: use --model-path`);
  }
  process.stderr.write(`writing random checkpoint ${dir} ...\n`);
  const tmp = `${dir}.partial`;
  fs.rmSync(tmp, { recursive: true, force: true });
  writeRandomLlava(tmp, { format: "hf", seed: 7, dtype: "BF16", tokenizerFrom: tokenizer, ...SHAPES[name] });
  fs.renameSync(tmp, dir);
  return dir;
}

/** An image of uniform random pixels (the same for the same seed). */
export function noiseImage(width: number, height: number, seed = 3): RgbImage {
  const r = seededRandom(seed);
  return { width, height, data: Uint8Array.from({ length: width * height * 3 }, () => Math.floor(r() * 256)) };
}
