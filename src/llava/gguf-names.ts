/**
 * llama.cpp's names for a LLaVA model in GGUF: the LLM file's tensors (`token_embd`,
 * `blk.N.attn_q`, ... as convert_hf_to_gguf.py's LLaMA mapping writes them) and the mmproj
 * file's (`v.blk.N.ln1`, `mm.0`, ... as tools/mtmd/clip-impl.h reads them), each mapped from the
 * canonical (original LLaVA) name, and the metadata keys both files use.
 */
import { PREFIX } from "./keys.js";

const LLM_LAYER: Record<string, string> = {
  "input_layernorm": "attn_norm",
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.o_proj": "attn_output",
  "post_attention_layernorm": "ffn_norm",
  "mlp.gate_proj": "ffn_gate",
  "mlp.up_proj": "ffn_up",
  "mlp.down_proj": "ffn_down",
};

const LLM_TOP: Record<string, string> = {
  [`${PREFIX.llm}embed_tokens.weight`]: "token_embd.weight",
  [`${PREFIX.llm}norm.weight`]: "output_norm.weight",
  [`${PREFIX.head}weight`]: "output.weight",
};

/** The LLM file's name for a canonical LLM tensor; null when llama.cpp's LLaMA has none. */
export function llmGgufName(canonical: string): string | null {
  if (LLM_TOP[canonical]) return LLM_TOP[canonical];
  const m = /^model\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(canonical);
  const module = m && LLM_LAYER[m[2]];
  return module ? `blk.${m![1]}.${module}.${m![3]}` : null;
}

const TOWER = `${PREFIX.tower}vision_model.`;

const CLIP_LAYER: Record<string, string> = {
  "self_attn.q_proj": "attn_q",
  "self_attn.k_proj": "attn_k",
  "self_attn.v_proj": "attn_v",
  "self_attn.out_proj": "attn_out",
  "layer_norm1": "ln1",
  "layer_norm2": "ln2",
  // fc1 widens, fc2 narrows: clip.cpp's up/down (the legacy converter had them swapped; clip.cpp accepts both)
  "mlp.fc1": "ffn_up",
  "mlp.fc2": "ffn_down",
};

const CLIP_TOP: Record<string, string> = {
  [`${TOWER}embeddings.class_embedding`]: "v.class_embd",
  [`${TOWER}embeddings.patch_embedding.weight`]: "v.patch_embd.weight",
  [`${TOWER}embeddings.position_embedding.weight`]: "v.position_embd.weight",
  [`${TOWER}pre_layrnorm.weight`]: "v.pre_ln.weight",
  [`${TOWER}pre_layrnorm.bias`]: "v.pre_ln.bias",
  [`${TOWER}post_layernorm.weight`]: "v.post_ln.weight",
  [`${TOWER}post_layernorm.bias`]: "v.post_ln.bias",
  [PREFIX.newline]: "model.image_newline",
};

/** The mmproj file's name for a canonical tower, projector or image_newline tensor; null otherwise. */
export function mmprojGgufName(canonical: string): string | null {
  if (CLIP_TOP[canonical]) return CLIP_TOP[canonical];
  let m = /^model\.vision_tower\.vision_tower\.vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$/.exec(canonical);
  if (m && CLIP_LAYER[m[2]]) return `v.blk.${m[1]}.${CLIP_LAYER[m[2]]}.${m[3]}`;
  m = /^model\.mm_projector\.(\d+)\.(weight|bias)$/.exec(canonical);
  return m ? `mm.${m[1]}.${m[2]}` : null;
}

/** The CLIP encoder layer a canonical tower tensor belongs to, else null. */
export function clipLayerOf(canonical: string): number | null {
  const m = /^model\.vision_tower\.vision_tower\.vision_model\.encoder\.layers\.(\d+)\./.exec(canonical);
  return m ? Number(m[1]) : null;
}

/** Metadata keys (llama.cpp's llama-arch.cpp LLM_KV names and clip-impl.h KEY_* names). */
export const GGUF_KEY = {
  architecture: "general.architecture",
  name: "general.name",
  fileType: "general.file_type",
  quantizationVersion: "general.quantization_version",
  alignment: "general.alignment",
  llama: {
    contextLength: "llama.context_length",
    embeddingLength: "llama.embedding_length",
    blockCount: "llama.block_count",
    feedForwardLength: "llama.feed_forward_length",
    ropeDimensionCount: "llama.rope.dimension_count",
    headCount: "llama.attention.head_count",
    headCountKv: "llama.attention.head_count_kv",
    rmsEps: "llama.attention.layer_norm_rms_epsilon",
    ropeFreqBase: "llama.rope.freq_base",
    ropeScalingType: "llama.rope.scaling.type",
    ropeScalingFactor: "llama.rope.scaling.factor",
    vocabSize: "llama.vocab_size",
    keyLength: "llama.attention.key_length",
    valueLength: "llama.attention.value_length",
  },
  tokenizer: {
    model: "tokenizer.ggml.model",
    tokens: "tokenizer.ggml.tokens",
    scores: "tokenizer.ggml.scores",
    tokenType: "tokenizer.ggml.token_type",
    bos: "tokenizer.ggml.bos_token_id",
    eos: "tokenizer.ggml.eos_token_id",
    unknown: "tokenizer.ggml.unknown_token_id",
    padding: "tokenizer.ggml.padding_token_id",
    addBos: "tokenizer.ggml.add_bos_token",
    addEos: "tokenizer.ggml.add_eos_token",
    chatTemplate: "tokenizer.chat_template",
  },
  clip: {
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
    blockCount: "clip.vision.block_count",
    headCount: "clip.vision.attention.head_count",
    layerNormEps: "clip.vision.attention.layer_norm_epsilon",
    imageMean: "clip.vision.image_mean",
    imageStd: "clip.vision.image_std",
    featureLayer: "clip.vision.feature_layer",
    imageGridPinpoints: "clip.vision.image_grid_pinpoints",
    imageCropResolution: "clip.vision.image_crop_resolution",
    mmPatchMergeType: "clip.vision.mm_patch_merge_type",
  },
} as const;

/** llama.cpp's `enum llama_token_type` (gguf-py TokenType). */
export const GGUF_TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;
