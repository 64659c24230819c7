/**
 * The precision each kind of weight is kept in, and the memory that needs: checked from the file
 * headers before anything large is read.
 */
import os from "node:os";
import type { PackedFormat } from "../tensor/packed.js";
import { LlavaError } from "../util/errors.js";
import type { WeightFiles } from "./weights.js";

export interface PrecisionOptions {
  /** precision of the Linear weights of the tower and the LLM (default f32; bf16/f16 stay 16-bit in memory) */
  dtype?: "f32" | "bf16" | "f16";
  /** quantize the LLM's Linear weights at load time (the reference's --load-8bit / --load-4bit) */
  quantize?: "q8_0" | "q4_0";
  /** refuse to load a model needing more bytes than this (default: 90% of the machine's memory) */
  memoryLimit?: number;
}

/**
 * Bytes the weights will occupy once loaded in the requested precisions, from the file headers
 * alone: Linear weights (2-D `*_proj`, `fc*`, `lm_head` weights) packed as asked, the rest f32.
 */
export function residentBytes(store: WeightFiles, opts: PrecisionOptions): number {
  let total = 0;
  for (const name of store.names()) {
    const shape = store.info(name).shape;
    const n = shape.reduce((a, b) => a * b, 1);
    const isLinear = shape.length === 2 && /(_proj|\.fc\d|lm_head)\.weight$/.test(name) && !/projector/.test(name);
    const inTower = /vision_tower|vision_model/.test(name);
    const isEmbedding = /embed_tokens\.weight$/.test(name);
    const format = isEmbedding ? embeddingFormat(opts) : !isLinear ? null : inTower ? visionFormat(opts) : name.endsWith("lm_head.weight") ? headFormat(opts) : llmFormat(opts);
    total += format === null ? 4 * n : format === "q8_0" && shape[1] % 32 === 0 ? (n / 32) * 34 : format === "q4_0" && shape[1] % 32 === 0 ? (n / 32) * 18 : format === "bf16" || format === "f16" ? 2 * n : 4 * n;
  }
  return total;
}

export function checkMemory(stores: WeightFiles[], opts: PrecisionOptions): void {
  const need = stores.reduce((s, st) => s + residentBytes(st, opts), 0);
  const limit = opts.memoryLimit ?? 0.9 * os.totalmem();
  if (need > limit) {
    const gb = (x: number) => `${(x / 2 ** 30).toFixed(1)} GiB`;
    const hint = opts.quantize === "q4_0" ? "" : "; try --load-4bit (or --load-8bit)";
    throw new LlavaError(`the model needs about ${gb(need)} for its weights but ${gb(limit)} is available${hint}`);
  }
}

/**
 * Formats of the Linear weights. --dtype applies to the tower and the LLM. With --load-8bit /
 * --load-4bit the LLM's layers are quantized and the tower runs in f16, as the reference runs
 * it (torch_dtype float16 with bitsandbytes on the LLM); the 4-bit model keeps lm_head at
 * 8 bits, as llama.cpp keeps its output layer at higher precision. The projector stays f32.
 */
export const visionFormat = (opts: PrecisionOptions): PackedFormat | null =>
  opts.dtype && opts.dtype !== "f32" ? opts.dtype : opts.quantize ? "f16" : null;
export const llmFormat = (opts: PrecisionOptions): PackedFormat | null => opts.quantize ?? visionFormat(opts);
export const embeddingFormat = (opts: PrecisionOptions): PackedFormat | null => {
  const f = llmFormat(opts);
  return f === null ? null : f === "f16" ? "f16" : "bf16";
};
export const headFormat = (opts: PrecisionOptions): PackedFormat | null => (opts.quantize === "q4_0" ? "q8_0" : llmFormat(opts));
