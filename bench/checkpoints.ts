/** The benchmarks' random-weight checkpoints of real shapes, written once into bench/.cache, and their test image. */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { RgbImage } from "../src/image/decode.js";
import { writeRandomLlava } from "../src/llava/random-checkpoint.js";
import { seededRandom } from "../src/util/random.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CACHE = path.join(ROOT, "bench", ".cache");
const TOKENIZER = path.resolve(ROOT, "../shared/fixtures/models/tiny-llava-1.5-mha");

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

/** The checkpoint folder of `name`, written on first use. */
export function ensureCheckpoint(name: ModelName): string {
  const dir = path.join(CACHE, name);
  if (fs.existsSync(path.join(dir, "config.json"))) return dir;
  process.stderr.write(`writing random checkpoint ${dir} ...\n`);
  const tmp = `${dir}.partial`;
  fs.rmSync(tmp, { recursive: true, force: true });
  writeRandomLlava(tmp, { format: "hf", seed: 7, dtype: "BF16", tokenizerFrom: TOKENIZER, ...SHAPES[name] });
  fs.renameSync(tmp, dir);
  return dir;
}

/** An image of uniform random pixels (the same for the same seed). */
export function noiseImage(width: number, height: number, seed = 3): RgbImage {
  const r = seededRandom(seed);
  return { width, height, data: Uint8Array.from({ length: width * height * 3 }, () => Math.floor(r() * 256)) };
}

const WORDS = ["red", "blue", "cat", "sky", "boat", "tree", "road", "lamp"];

/** Concurrent client i's question (40 words) and image, each its own, so no cache helps one client from another's work. */
export function clientRequest(i: number): { question: string; image: RgbImage } {
  const question = Array.from({ length: 40 }, (_, j) => WORDS[(i * 3 + j * (i + 1)) % WORDS.length]).join(" ");
  return { question, image: noiseImage(640, 480, 100 + i) };
}
