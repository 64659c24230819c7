/**
 * The precision policy: which format each weight is kept in under `--dtype`, `--load-8bit`,
 * `--load-4bit` and `--quant`, decided by its canonical name (keys.ts), and the memory that
 * takes. The loader packs by this policy and `llava inspect` estimates by it, so the two cannot
 * disagree.
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
  /** quantize the LLM's Linear weights at load time with one of llama.cpp's mixes (QUANT_TYPES) */
  quant?: QuantType;
  /** the LLM's layer count: the q4_k_m / q5_k_m mixes choose by layer */
  llmLayers?: number;
  /** refuse to load a model needing more bytes than this (default: 90% of the machine's memory) */
  memoryLimit?: number;
}

/**
 * The --quant names: llama.cpp's file types (`llama-quantize` ftypes) we can hold. q4_k_m and
 * q5_k_m are its mixes; the others put every LLM Linear weight in that type, except the output
 * layer (lm_head), which llama.cpp keeps in q6_k unless the type is q8_0.
 */
export const QUANT_TYPES = ["q4_k_m", "q5_k_m", "q6_k", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k"] as const;
export type QuantType = (typeof QUANT_TYPES)[number];

/** llama-quant.cpp's use_more_bits: the first and last eighth of the layers and every third between. */
function useMoreBits(layer: number, layers: number): boolean {
  const eighth = Math.trunc(layers / 8);
  return layer < eighth || layer >= Math.trunc((7 * layers) / 8) || (layer - eighth) % 3 === 2;
}

const MORE_BITS_MODULE = /^model\.layers\.(\d+)\.(self_attn\.v_proj|mlp\.down_proj)\.weight$/;

/**
 * The type of an LLM Linear weight under --quant, by llama-quant.cpp's llama_tensor_get_type for
 * a LLaMA model: the output layer takes q6_k (q8_0 stays q8_0); under q4_k_m / q5_k_m, attn_v and
 * ffn_down take q6_k in the layers use_more_bits picks (attn_v is counted per layer, as there is
 * one per layer); every other weight takes the base type. Rows that are not whole blocks fall
 * back as llama.cpp's do (fittingFormat).
 */
export function quantFormat(name: string, quant: QuantType, layers: number | undefined): PackedFormat {
  const base: PackedFormat = quant === "q4_k_m" ? "q4_k" : quant === "q5_k_m" ? "q5_k" : quant;
  if (name === HEAD) return base === "q8_0" ? "q8_0" : "q6_k";
  const bumped = MORE_BITS_MODULE.exec(name);
  if (bumped && (quant === "q4_k_m" || quant === "q5_k_m")) {
    if (!layers) throw new LlavaError(`--quant ${quant} needs the LLM's layer count`);
    if (useMoreBits(Number(bumped[1]), layers)) return "q6_k";
  }
  return base;
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
 * bf16). --quant (quantFormat) quantizes the LLM's Linear weights by llama.cpp's rules and treats
 * the rest as --load-4bit does. The projector, norms, biases and the patch embedding stay f32.
 */
export function keptFormat(name: string, opts: PrecisionOptions): PackedFormat | null {
  const quantized = opts.quantize ?? opts.quant;
  const vision: PackedFormat | null = opts.dtype && opts.dtype !== "f32" ? opts.dtype : quantized ? "f16" : null;
  if (opts.quant && partOf(name) === "llm" && name !== EMBEDDING) {
    const linear = name.endsWith(".weight") && LLM_LINEAR_MODULE.test(name.slice(0, -".weight".length));
    return linear ? quantFormat(name, opts.quant, opts.llmLayers) : null;
  }
  const llm = opts.quantize ?? (opts.quant ? "bf16" : vision);
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

/** A Linear weight of the LLM's layers, whose format decides the KV cache's. */
const LLM_LAYER_LINEAR = `${PREFIX.llm}layers.0.self_attn.q_proj.weight`;

/**
 * Whether the KV cache is 16-bit (f16, as llama.cpp keeps its cache; half the memory, and half
 * the bytes a decode step's attention reads): when the LLM's layers are packed (16-bit or
 * quantized), whose products already round. An f32 model keeps an f32 cache and stays exact to
 * the reference. `LlamaForCausalLM.newCache` asks this of the weights as loaded.
 */
export function halfKVCache(llmLinearFormat: PackedFormat | null): boolean {
  return llmLinearFormat !== null;
}

/** Bytes per cached key or value when the weights take `format` (by canonical name; keptFormat's under `opts` unless given). */
export function kvCacheValueBytes(opts: PrecisionOptions, format = (name: string) => keptFormat(name, opts)): number {
  return halfKVCache(format(LLM_LAYER_LINEAR)) ? 2 : 4;
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
