/**
 * The bench's precisions: how each loads (the same options as `--dtype` / `--quant` on the
 * command line), the GGUF file type llama.cpp gets the same weights in, and the bytes of weights
 * decode streams per token.
 */
import { declaredTensors } from "../llava/tensors.js";
import { LLM_LINEAR_MODULE, partOf } from "../llava/keys.js";
import { type LoadedLlava, type LoadOptions, loadLlava } from "../llava/load.js";
import { keptBytes, keptFormat, type PrecisionOptions, QUANT_TYPES, type QuantType } from "../llava/precision.js";
import { requireTower } from "../llava/spec.js";
import { createBackend } from "../tensor/backends.js";
import { GGUF_FILE_TYPES, type GgufFileType } from "../zoo/to-gguf.js";

export const PRECISIONS = ["f32", "bf16", "f16", ...QUANT_TYPES] as const;
export type Precision = (typeof PRECISIONS)[number];

/** The load options of a precision: 16-bit weights as stored, or the LLM quantized by llama.cpp's rules (--quant). */
export function precisionOptions(precision: Precision): PrecisionOptions {
  if (precision === "f32") return {};
  if (precision === "bf16" || precision === "f16") return { dtype: precision };
  return { quant: precision as QuantType };
}

/** The model at `precision` on the native backend with `threads`; bf16 multiplies bf16-rounded activations, as PyTorch's bf16 does. */
export function loadAtPrecision(modelPath: string, precision: Precision, threads: number): Promise<LoadedLlava> {
  const backend = createBackend({ name: "native", threads, bf16Dot: precision === "bf16" });
  const opts: LoadOptions = { backend, warn: () => {}, ...precisionOptions(precision) };
  return loadLlava(modelPath, opts);
}

/** The GGUF file type holding the same LLM weights as `precision` (bf16: llama.cpp's f16), or null where the writer has none. */
export function ggufTypeFor(precision: Precision): GgufFileType | null {
  if (precision === "bf16") return "f16";
  return precision in GGUF_FILE_TYPES ? (precision as GgufFileType) : null;
}

const LLM_EMBEDDING = "model.embed_tokens.weight";

/**
 * What one LLM forward touches per token, from the model's declared tensors and the precision
 * policy: the weight bytes streamed, the prefill multiply-adds, and the KV cache bytes of one
 * position (keys and values of every layer, in the cache's element type), which a decode step
 * reads once per position of its context.
 */
export function llmWorkPerToken(loaded: LoadedLlava, precision: Precision): { weightBytes: number; prefillFlops: number; kvBytesPerPosition: number } {
  const opts = { ...precisionOptions(precision), llmLayers: loaded.spec.text.numHiddenLayers };
  let weightBytes = 0;
  let linearParams = 0;
  for (const { name, shape } of declaredTensors(loaded.spec)) {
    if (!shape || partOf(name) !== "llm" || name === LLM_EMBEDDING) continue;
    weightBytes += keptBytes(shape, keptFormat(name, opts));
    // prefill computes the logits of the last position only: lm_head is not per token
    const linear = name.endsWith(".weight") && LLM_LINEAR_MODULE.test(name.slice(0, -".weight".length)) && !name.startsWith("lm_head");
    if (linear) linearParams += shape[0] * shape[1];
  }
  return { weightBytes, prefillFlops: 2 * linearParams, kvBytesPerPosition: loaded.model.llm.newCache(1, 1).bytes };
}

/** The tower's multiply-adds for one image, as flops: the layers up to the feature layer LLaVA reads (attention included). */
export function encodeFlops(loaded: LoadedLlava): number {
  const v = requireTower(loaded.spec);
  const select = loaded.model.settings.visionSelectLayer;
  const layers = select < 0 ? v.numHiddenLayers + 1 + select : select;
  const tokens = (v.imageSize / v.patchSize) ** 2 + 1;
  const h = v.hiddenSize;
  return layers * tokens * (8 * h * h + 4 * h * v.intermediateSize + 4 * tokens * h);
}
