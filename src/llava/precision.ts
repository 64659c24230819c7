/**
 * The precision policy: which format each weight is kept in under `--dtype`, `--load-8bit` and
 * `--load-4bit`, decided by its canonical name (keys.ts), and the memory that takes. The loader
 * packs by this policy and `llava inspect` estimates by it, so the two cannot disagree.
 */
import os from "node:os";
import { fittingFormat, type PackedFormat, rowBytes } from "../tensor/packed.js";
import { LlavaError } from "../util/errors.js";
import { LLM_LINEAR_MODULE, partOf, PREFIX } from "./keys.js";

export interface PrecisionOptions {
  /** precision of the Linear weights of the tower and the LLM (default f32; bf16/f16 stay 16-bit in memory) */
  dtype?: "f32" | "bf16" | "f16";
  /** quantize the LLM's Linear weights at load time (the reference's --load-8bit / --load-4bit) */
  quantize?: "q8_0" | "q4_0";
  /** refuse to load a model needing more bytes than this (default: 90% of the machine's memory) */
  memoryLimit?: number;
}

/** The tower's Linear weights, in canonical names. */
const VISION_LINEAR = /\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.weight$/;
const EMBEDDING = `${PREFIX.llm}embed_tokens.weight`;
const HEAD = `${PREFIX.head}weight`;

/**
 * The format of a 2-D weight (null: f32). --dtype applies to the Linear layers of the tower and
 * the LLM. With --load-8bit / --load-4bit the LLM's layers are quantized and the tower runs in
 * f16, as the reference runs it (torch_dtype float16 with bitsandbytes on the LLM); the 4-bit
 * model keeps lm_head at 8 bits, as llama.cpp keeps its output layer at higher precision. The
 * frozen embedding table is 16-bit whenever the LLM is not f32 (f16 under --dtype f16, else
 * bf16). The projector, norms, biases and the patch embedding stay f32.
 */
export function keptFormat(name: string, opts: PrecisionOptions): PackedFormat | null {
  const vision: PackedFormat | null = opts.dtype && opts.dtype !== "f32" ? opts.dtype : opts.quantize ? "f16" : null;
  const llm = opts.quantize ?? vision;
  switch (partOf(name)) {
    case "vision":
      return VISION_LINEAR.test(name) ? vision : null;
    case "llm":
      if (name === EMBEDDING) return llm === null ? null : llm === "f16" ? "f16" : "bf16";
      if (name === HEAD) return opts.quantize === "q4_0" ? "q8_0" : llm;
      return name.endsWith(".weight") && LLM_LINEAR_MODULE.test(name.slice(0, -".weight".length)) ? llm : null;
    default:
      return null;
  }
}

/** Bytes of a tensor kept in `format`; quantized rows that are not whole blocks stay f32, as the loader keeps them. */
export function keptBytes(shape: number[], format: PackedFormat | null): number {
  const kept = shape.length === 2 ? fittingFormat(format, shape[1]) : null;
  return kept === null ? 4 * shape.reduce((a, b) => a * b, 1) : shape[0] * rowBytes(kept, shape[1]);
}

/** Bytes the weights take once loaded, from canonical names and shapes alone (`format`: the loader's policy when it is not keptFormat's). */
export function residentBytes(tensors: Iterable<{ name: string; shape: number[] }>, opts: PrecisionOptions, format = (name: string) => keptFormat(name, opts)): number {
  let total = 0;
  for (const t of tensors) total += keptBytes(t.shape, format(t.name));
  return total;
}

/** Refuses, before anything large is read, a model whose weights need more memory than allowed. */
export function checkMemory(need: number, opts: PrecisionOptions): void {
  const limit = opts.memoryLimit ?? 0.9 * os.totalmem();
  if (need > limit) {
    const gb = (x: number) => `${(x / 2 ** 30).toFixed(1)} GiB`;
    const hint = opts.quantize === "q4_0" ? "" : "; try --load-4bit (or --load-8bit)";
    throw new LlavaError(`the model needs about ${gb(need)} for its weights but ${gb(limit)} is available${hint}`);
  }
}
