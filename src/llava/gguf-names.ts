/**
 * llama.cpp's names for a LLaVA model, mapped to the canonical names (keys.ts) both ways: the
 * tensors of the language-model file (`token_embd`, `blk.N.attn_q`, ... as convert_hf_to_gguf.py
 * writes them) and of the vision file (`v.blk.N.*`, `mm.N.*`, as tools/mtmd/clip.cpp reads them),
 * the metadata keys of both, and the row permutation llama.cpp applies to the query and key
 * weights. The reader (gguf-load.ts) and the writer both use this one table.
 */
import { PREFIX } from "./keys.js";

/** The LLM architectures read: LLaVA's language models are LLaMA-family (Vicuna, Mistral convert as "llama"). */
export const GGUF_LLM_ARCHITECTURES = ["llama"] as const;
/** general.architecture of a vision (mmproj) file */
export const GGUF_CLIP_ARCHITECTURE = "clip";

/** Metadata keys of the LLM file (`{arch}` is general.architecture). */
export const LLM_KEY = {
  architecture: "general.architecture",
  name: "general.name",
  fileType: "general.file_type",
  quantizationVersion: "general.quantization_version",
  contextLength: "{arch}.context_length",
  embeddingLength: "{arch}.embedding_length",
  blockCount: "{arch}.block_count",
  feedForwardLength: "{arch}.feed_forward_length",
  headCount: "{arch}.attention.head_count",
  headCountKv: "{arch}.attention.head_count_kv",
  rmsEps: "{arch}.attention.layer_norm_rms_epsilon",
  keyLength: "{arch}.attention.key_length",
  valueLength: "{arch}.attention.value_length",
  ropeDimensionCount: "{arch}.rope.dimension_count",
  ropeFreqBase: "{arch}.rope.freq_base",
  ropeScalingType: "{arch}.rope.scaling.type",
  ropeScalingFactor: "{arch}.rope.scaling.factor",
  vocabSize: "{arch}.vocab_size",
} as const;

/** A key of LLM_KEY for an architecture. */
export function llmKey(key: keyof typeof LLM_KEY, arch: string): string {
  return LLM_KEY[key].replace("{arch}", arch);
}

/** The tokenizer's keys live with the tokenizer, which may not import this layer; re-exported so every key is found here. */
export { TOKENIZER_KEY, TOKEN_TYPE } from "../tokenizer/gguf-tokenizer.js";

/** Metadata keys of the vision (mmproj) file, as clip.cpp reads them. */
export const CLIP_KEY = {
  hasTextEncoder: "clip.has_text_encoder",
  hasVisionEncoder: "clip.has_vision_encoder",
  hasLlavaProjector: "clip.has_llava_projector",
  projectorType: "clip.projector_type",
  useGelu: "clip.use_gelu",
  imageSize: "clip.vision.image_size",
  patchSize: "clip.vision.patch_size",
  embeddingLength: "clip.vision.embedding_length",
  feedForwardLength: "clip.vision.feed_forward_length",
  projectionDim: "clip.vision.projection_dim",
  headCount: "clip.vision.attention.head_count",
  layerNormEps: "clip.vision.attention.layer_norm_epsilon",
  blockCount: "clip.vision.block_count",
  imageMean: "clip.vision.image_mean",
  imageStd: "clip.vision.image_std",
  featureLayer: "clip.vision.feature_layer",
  pinpoints: "clip.vision.image_grid_pinpoints",
  mergeType: "clip.vision.mm_patch_merge_type",
  cropResolution: "clip.vision.image_crop_resolution",
} as const;

const LLM_GLOBAL: [string, string][] = [
  ["token_embd.weight", `${PREFIX.llm}embed_tokens.weight`],
  ["output_norm.weight", `${PREFIX.llm}norm.weight`],
  ["output.weight", `${PREFIX.head}weight`],
];

/** blk.N.<gguf> <-> model.layers.N.<canonical> */
const LLM_LAYER: [string, string][] = [
  ["attn_norm", "input_layernorm"],
  ["attn_q", "self_attn.q_proj"],
  ["attn_k", "self_attn.k_proj"],
  ["attn_v", "self_attn.v_proj"],
  ["attn_output", "self_attn.o_proj"],
  ["ffn_norm", "post_attention_layernorm"],
  ["ffn_gate", "mlp.gate_proj"],
  ["ffn_up", "mlp.up_proj"],
  ["ffn_down", "mlp.down_proj"],
];

const TOWER = `${PREFIX.tower}vision_model.`;

const VISION_GLOBAL: [string, string][] = [
  ["v.class_embd", `${TOWER}embeddings.class_embedding`],
  ["v.patch_embd.weight", `${TOWER}embeddings.patch_embedding.weight`],
  ["v.position_embd.weight", `${TOWER}embeddings.position_embedding.weight`],
  ["v.pre_ln.weight", `${TOWER}pre_layrnorm.weight`],
  ["v.pre_ln.bias", `${TOWER}pre_layrnorm.bias`],
  ["v.post_ln.weight", `${TOWER}post_layernorm.weight`],
  ["v.post_ln.bias", `${TOWER}post_layernorm.bias`],
  ["model.image_newline", PREFIX.newline],
];

/**
 * v.blk.N.<gguf> <-> encoder.layers.N.<canonical>. ffn_up is CLIP's fc1 (hidden -> intermediate)
 * as current converters name it; files from the legacy LLaVA converter swap the two names, which
 * the loader recognises by shape, as clip.cpp does.
 */
const VISION_LAYER: [string, string][] = [
  ["attn_q", "self_attn.q_proj"],
  ["attn_k", "self_attn.k_proj"],
  ["attn_v", "self_attn.v_proj"],
  ["attn_out", "self_attn.out_proj"],
  ["ln1", "layer_norm1"],
  ["ln2", "layer_norm2"],
  ["ffn_up", "mlp.fc1"],
  ["ffn_down", "mlp.fc2"],
];

const GLOBAL_TO_CANONICAL = new Map([...LLM_GLOBAL, ...VISION_GLOBAL]);
const GLOBAL_TO_GGUF = new Map([...GLOBAL_TO_CANONICAL].map(([g, c]) => [c, g]));
const LAYER_GGUF = /^(v\.)?blk\.(\d+)\.([a-z0-9_]+)\.(weight|bias)$/;
const LAYER_CANONICAL = new RegExp(`^(?:${PREFIX.llm.replace(".", "\\.")}layers|${TOWER.replaceAll(".", "\\.")}encoder\\.layers)\\.(\\d+)\\.(.+)\\.(weight|bias)$`);

/**
 * The canonical name of a tensor of an LLM or vision GGUF file; null for what the model
 * recomputes (rope_freqs). A name no rule knows is returned as it is, so the loader reports it
 * as unused.
 */
export function canonicalFromGguf(name: string): string | null {
  if (name === "rope_freqs.weight") return null;
  const global = GLOBAL_TO_CANONICAL.get(name);
  if (global) return global;
  let m: RegExpExecArray | null;
  if ((m = /^mm\.(\d+)\.(weight|bias)$/.exec(name))) return `${PREFIX.projector}${m[1]}.${m[2]}`;
  if ((m = LAYER_GGUF.exec(name))) {
    const [, vision, n, module, kind] = m;
    const entry = (vision ? VISION_LAYER : LLM_LAYER).find(([g]) => g === module);
    if (entry) return vision ? `${TOWER}encoder.layers.${n}.${entry[1]}.${kind}` : `${PREFIX.llm}layers.${n}.${entry[1]}.${kind}`;
  }
  return name;
}

/** The name a canonical tensor has in a GGUF file (LLM or vision, by its part); null when it has none. */
export function ggufFromCanonical(canonical: string): string | null {
  const global = GLOBAL_TO_GGUF.get(canonical);
  if (global) return global;
  let m: RegExpExecArray | null;
  if ((m = /^model\.mm_projector\.(\d+)\.(weight|bias)$/.exec(canonical))) return `mm.${m[1]}.${m[2]}`;
  if ((m = LAYER_CANONICAL.exec(canonical))) {
    const vision = canonical.startsWith(TOWER);
    const entry = (vision ? VISION_LAYER : LLM_LAYER).find(([, c]) => c === m![2]);
    if (entry) return `${vision ? "v." : ""}blk.${m[1]}.${entry[0]}.${m[3]}`;
  }
  return null;
}

/** Whether a canonical LLM tensor is a query or key projection, whose rows llama.cpp permutes. */
export function permutedHeads(canonical: string, heads: { q: number; kv: number }): number | null {
  if (/^model\.layers\.\d+\.self_attn\.q_proj\.weight$/.test(canonical)) return heads.q;
  if (/^model\.layers\.\d+\.self_attn\.k_proj\.weight$/.test(canonical)) return heads.kv;
  return null;
}

/**
 * The row of the HF (rotate-half) layout that row `r` of llama.cpp's layout holds, for a
 * projection of `rows` rows in `heads` heads. convert_hf_to_gguf.py's `permute` reshapes each
 * head's rows as (2, half) and swaps the axes: row h*d + 2i + j of the GGUF holds HF row
 * h*d + j*half + i (d = rows / heads, half = d / 2). Rope pairs become adjacent, as in Meta's layout.
 */
export function hfRowOfGgufRow(r: number, rows: number, heads: number): number {
  const d = rows / heads;
  const half = d / 2;
  const h = Math.floor(r / d);
  const within = r - h * d;
  return h * d + (within % 2) * half + (within >> 1);
}

/**
 * Reorders whole rows of a matrix of `rows` rows of `rowBytes` bytes each (any packed format:
 * the permutation moves rows, never values within one). `toHf`: from llama.cpp's layout to HF's
 * (reading), else the other way (writing).
 */
export function permuteRows(data: Uint8Array, rows: number, rowBytes: number, heads: number, toHf: boolean): Uint8Array {
  if (rows % heads !== 0 || (rows / heads) % 2 !== 0) {
    throw new Error(`permuteRows: ${rows} rows do not split into ${heads} heads of an even size`);
  }
  const out = new Uint8Array(data.length);
  for (let r = 0; r < rows; r++) {
    const hf = hfRowOfGgufRow(r, rows, heads);
    const [from, to] = toHf ? [r, hf] : [hf, r];
    out.set(data.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
  }
  return out;
}
