/**
 * `node dist/bench/memory.js`: resident memory of a 7B-shaped LLaVA-1.5 (CLIP ViT-L/14-336 +
 * LLaMA-7B shape) loaded with --load-4bit and --load-8bit, answering one question about an
 * image. Writes the random bf16 checkpoint (13.5 GB, sharded) once into bench/.cache.
 * Prints one JSON line per precision, with the CPU model, its SIMD features and the thread count
 * (src/perf/machine.ts). `node dist/bench/memory.js q4_0` runs one precision.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadLlava } from "../src/llava/load.js";
import { streamAnswer } from "../src/llava/pipeline.js";
import { writeRandomLlava } from "../src/llava/random-checkpoint.js";
import { createBackend } from "../src/tensor/backends.js";
import { NativeBackend } from "../src/tensor/native-backend.js";
import { emit } from "../src/perf/machine.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const DIR = path.join(ROOT, "bench", ".cache", "llava-7b-shape");

function ensureCheckpoint(): void {
  if (fs.existsSync(path.join(DIR, "config.json"))) return;
  process.stderr.write(`writing a 7B-shaped random checkpoint to ${DIR} (about 14 GB) ...\n`);
  const tmp = `${DIR}.partial`;
  fs.rmSync(tmp, { recursive: true, force: true });
  writeRandomLlava(tmp, {
    format: "hf", seed: 9, dtype: "BF16", maxShardBytes: 2 ** 30,
    tokenizerFrom: path.resolve(ROOT, "../shared/fixtures/models/tiny-llava-1.5-mha"),
    text: { hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, vocab_size: 32001, max_position_embeddings: 4096 },
    vision: { hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16, image_size: 336, patch_size: 14 },
  });
  fs.renameSync(tmp, DIR);
}

async function child(quantize: "q4_0" | "q8_0"): Promise<void> {
  const started = performance.now();
  const backend = createBackend();
  const loaded = await loadLlava(DIR, { quantize, backend });
  const loadMs = performance.now() - started;
  // what stays resident, without the load's converted copies that await collection
  (globalThis as { gc?: () => void }).gc?.();
  const afterLoad = process.memoryUsage().rss;
  const image = { width: 640, height: 480, data: new Uint8Array(640 * 480 * 3).fill(128) };
  let tokens = 0;
  const t = performance.now();
  for await (const piece of streamAnswer(loaded, "USER: <image>\nWhat is shown? ASSISTANT:", [image], { maxNewTokens: 8, temperature: 0 })) tokens += piece.length > 0 ? 1 : 0;
  // the reference backend, the fallback without the addon, runs on one thread
  emit(backend instanceof NativeBackend ? backend.settings.threads : 1, {
    model: "llava-7b-shape", precision: quantize, loadMs, answerMs: performance.now() - t,
    rssAfterLoadBytes: afterLoad, peakRssBytes: process.resourceUsage().maxRSS * 1024, limitBytes: 5 * 2 ** 30,
  });
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (arg === "--child") return child(process.argv[3] as "q4_0" | "q8_0");
  ensureCheckpoint();
  for (const q of arg ? arg.split(",") : ["q4_0", "q8_0"]) {
    const r = spawnSync(process.execPath, ["--expose-gc", fileURLToPath(import.meta.url), "--child", q], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
    process.stdout.write(r.status === 0 ? r.stdout : `${JSON.stringify({ precision: q, error: `exit ${r.status}` })}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
