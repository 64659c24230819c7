/**
 * config.json, preprocessor_config.json and processor_config.json of each format, built from
 * the other format's files the way transformers' conversion scripts
 * (convert_llava_weights_to_hf.py, convert_llava_next_weights_to_hf.py) and the original LLaVA
 * training code write them.
 */
import { type ClipVisionConfig, isObject, parseClipVisionConfig } from "../io/config.js";
import { OPENAI_CLIP_MEAN, OPENAI_CLIP_STD } from "../image/processor.js";
import { HF_DEFAULT_VISION, type ModelSpec } from "../llava/spec.js";
import { LlavaError } from "../util/errors.js";

type Json = Record<string, unknown>;

/** Keys of an original config that belong to LLaVA, not to its decoder. */
const LLAVA_KEYS = new Set([
  "image_aspect_ratio", "image_grid_pinpoints", "image_crop_resolution", "image_split_resolution",
  "tokenizer_model_max_length", "tokenizer_padding_side", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
  "tune_mm_vision_resampler", "freeze_mm_vision_resampler", "use_mm_proj", "unfreeze_mm_vision_tower", "s2", "s2_scales",
]);
/** Bookkeeping keys that describe a file, not a model. */
const FILE_KEYS = new Set(["_name_or_path", "transformers_version", "architectures", "model_type"]);

export type HfTarget = "llava" | "llava_next";

/** Checks that HF Llava / LlavaNext can hold this original model, and says which of the two. */
export function hfTargetOf(spec: ModelSpec): HfTarget {
  const { configFile } = spec;
  if (spec.projector.type !== "mlp2x_gelu") {
    throw new LlavaError(
      `${configFile}: mm_projector_type "${spec.projector.type}" cannot be represented in the HF llava format, ` +
        `whose projector is always Linear-GELU-Linear (mlp2x_gelu)`,
    );
  }
  if (spec.settings.imageStartEnd) throw new LlavaError(`${configFile}: mm_use_im_start_end models cannot be represented in the HF llava format`);
  const { mergeType } = spec;
  if (spec.settings.anyres) {
    if (mergeType !== "spatial_unpad") {
      throw new LlavaError(`${configFile}: AnyRes with mm_patch_merge_type "${mergeType}" cannot be represented in HF llava_next (only spatial_unpad)`);
    }
    return "llava_next";
  }
  if (mergeType !== "flat") {
    throw new LlavaError(`${configFile}: mm_patch_merge_type "${mergeType}" without AnyRes cannot be represented in the HF llava format`);
  }
  return "llava";
}

/** The CLIP vision config dict of a tower folder's config.json (a CLIPVisionModel or a full CLIPModel config). */
export function visionConfigDict(json: unknown, file: string): { dict: Json; parsed: ClipVisionConfig } {
  const parsed = parseClipVisionConfig(json, file);
  const j = json as Json;
  const source = j.model_type === "clip" ? { ...(isObject(j.vision_config) ? j.vision_config : {}), ...(isObject(j.vision_config_dict) ? j.vision_config_dict : {}) } : j;
  const dict: Json = { model_type: "clip_vision_model" };
  for (const [k, v] of Object.entries(source)) if (!FILE_KEYS.has(k)) dict[k] = v;
  return { dict, parsed };
}

/** Image features per image of a 1.5-style model: (S/p)^2, +1 with the CLS token kept. */
export const imageSeqLength = (v: ClipVisionConfig, feature: "patch" | "cls_patch") => (v.imageSize / v.patchSize) ** 2 + (feature === "cls_patch" ? 1 : 0);

const swapPairs = (pairs: number[][]) => pairs.map(([a, b]) => [b, a]);

export interface HfConfigInput {
  spec: ModelSpec;
  target: HfTarget;
  vision: { dict: Json; parsed: ClipVisionConfig };
  vocabSize: number;
  imageTokenId: number;
  padTokenId: number;
}

/** config.json of the HF model, as the conversion scripts save it. */
export function hfConfig(input: HfConfigInput): Json {
  const { spec, target, vision } = input;
  const original = spec.config;
  const family = spec.text.modelType;
  const feature = spec.settings.visionSelectFeature;
  const text: Json = { model_type: family, architectures: [family === "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"] };
  for (const [k, v] of Object.entries(original)) {
    if (!k.startsWith("mm_") && !LLAVA_KEYS.has(k) && !FILE_KEYS.has(k)) text[k] = v;
  }
  text.vocab_size = input.vocabSize;
  const config: Json = {
    architectures: [target === "llava_next" ? "LlavaNextForConditionalGeneration" : "LlavaForConditionalGeneration"],
    model_type: target,
    ignore_index: -100,
    image_token_index: input.imageTokenId,
    image_seq_length: imageSeqLength(vision.parsed, feature),
    projector_hidden_act: "gelu",
    multimodal_projector_bias: true,
    vision_feature_layer: spec.settings.visionSelectLayer,
    vision_feature_select_strategy: feature === "patch" ? "default" : "full",
    pad_token_id: input.padTokenId,
    tie_word_embeddings: original.tie_word_embeddings === true,
  };
  if (original.torch_dtype !== undefined) config.torch_dtype = original.torch_dtype;
  if (target === "llava_next") {
    // transformers reads pinpoints as (height, width); the original code as (width, height)
    config.image_grid_pinpoints = swapPairs(spec.settings.anyres!.pinpoints);
    config.use_image_newline_parameter = true;
  }
  config.text_config = text;
  config.vision_config = vision.dict;
  return config;
}

const CLIP_PROCESSOR_KEYS = [
  "crop_size", "do_center_crop", "do_convert_rgb", "do_normalize", "do_rescale", "do_resize",
  "image_mean", "image_std", "resample", "rescale_factor", "size",
];

/** CLIPImageProcessor settings: those of `source`, or CLIP's at the tower's resolution. */
function clipProcessorFields(source: Json | null, imageSize: number): Json {
  const defaults: Json = {
    crop_size: { height: imageSize, width: imageSize }, do_center_crop: true, do_convert_rgb: true, do_normalize: true,
    do_rescale: true, do_resize: true, image_mean: [...OPENAI_CLIP_MEAN], image_std: [...OPENAI_CLIP_STD], resample: 3,
    rescale_factor: 1 / 255, size: { shortest_edge: imageSize },
  };
  const out: Json = {};
  for (const k of CLIP_PROCESSOR_KEYS) out[k] = source && source[k] !== undefined ? source[k] : defaults[k];
  return out;
}

/** preprocessor_config.json of the HF model (CLIPImageProcessor, or LlavaNextImageProcessor with pinpoints). */
export function hfPreprocessorConfig(towerProcessor: Json | null, imageSize: number, target: HfTarget, pinpointsHW: number[][] | null): Json {
  const fields = clipProcessorFields(towerProcessor, imageSize);
  if (target === "llava") return { ...fields, image_processor_type: "CLIPImageProcessor", processor_class: "LlavaProcessor" };
  return {
    ...fields, image_processor_type: "LlavaNextImageProcessor", processor_class: "LlavaNextProcessor",
    image_grid_pinpoints: pinpointsHW, do_pad: true,
  };
}

/** processor_config.json: what the HF processor needs to expand `<image>` into one token per feature. */
export function hfProcessorConfig(vision: ClipVisionConfig, spec: ModelSpec, target: HfTarget): Json {
  return {
    num_additional_image_tokens: 1,
    patch_size: vision.patchSize,
    processor_class: target === "llava_next" ? "LlavaNextProcessor" : "LlavaProcessor",
    vision_feature_select_strategy: spec.settings.visionSelectFeature === "patch" ? "default" : "full",
  };
}

/** Checks that the original format can hold this HF model. */
export function checkOriginalCanHold(spec: ModelSpec): void {
  const { config, configFile } = spec;
  if (spec.projector.activation !== "gelu") {
    throw new LlavaError(`${configFile}: projector_hidden_act "${String(config.projector_hidden_act)}" cannot be represented in the original format (its mlp2x_gelu projector uses exact GELU)`);
  }
  if (config.multimodal_projector_bias === false) {
    throw new LlavaError(`${configFile}: a projector without biases (multimodal_projector_bias false) cannot be represented in the original format`);
  }
}

/** The HF model's vision_config as a CLIP config dict. */
export function hfVisionDict(spec: ModelSpec): { dict: Json; parsed: ClipVisionConfig } {
  const visionJson = isObject(spec.config.vision_config) ? spec.config.vision_config : HF_DEFAULT_VISION;
  return visionConfigDict({ model_type: "clip_vision_model", ...visionJson }, `${spec.configFile} (vision_config)`);
}

export interface OriginalConfigInput {
  spec: ModelSpec;
  vision: ClipVisionConfig;
  vocabSize: number;
  towerName: string;
  tokenizerModelMaxLength: number;
}

/** config.json of the original-format model, with the keys LLaVA's training writes. */
export function originalConfig(input: OriginalConfigInput): Json {
  const { spec } = input;
  const hf = spec.config;
  const family = spec.text.modelType;
  const next = spec.format === "hf-llava-next";
  const text = isObject(hf.text_config) ? hf.text_config : {};
  const config: Json = {
    architectures: [family === "mistral" ? "LlavaMistralForCausalLM" : "LlavaLlamaForCausalLM"],
    model_type: family === "mistral" ? "llava_mistral" : "llava_llama",
  };
  for (const [k, v] of Object.entries(text)) if (!FILE_KEYS.has(k)) config[k] = v;
  config.vocab_size = input.vocabSize;
  // HF configs may name <pad> (beyond the original vocabulary) as pad token; LLaMA's is <unk> = 0
  if (typeof config.pad_token_id === "number" && config.pad_token_id >= input.vocabSize) config.pad_token_id = 0;
  const dtype = hf.torch_dtype ?? text.torch_dtype;
  if (dtype !== undefined) config.torch_dtype = dtype;
  Object.assign(config, {
    mm_vision_tower: input.towerName,
    mm_hidden_size: input.vision.hiddenSize,
    mm_projector_type: "mlp2x_gelu",
    mm_vision_select_layer: spec.settings.visionSelectLayer,
    mm_vision_select_feature: spec.settings.visionSelectFeature,
    mm_patch_merge_type: next ? "spatial_unpad" : "flat",
    image_aspect_ratio: next ? "anyres" : "pad",
    image_grid_pinpoints: next ? swapPairs(spec.settings.anyres!.pinpoints) : null,
    tokenizer_model_max_length: input.tokenizerModelMaxLength,
    tokenizer_padding_side: "right",
    mm_use_im_start_end: false,
    mm_use_im_patch_token: false,
    mm_projector_lr: null,
    tune_mm_mlp_adapter: false,
    freeze_mm_mlp_adapter: false,
    unfreeze_mm_vision_tower: true,
    use_mm_proj: true,
  });
  return config;
}

/** config.json and preprocessor_config.json of a plain CLIP vision tower folder. */
export function towerFolderConfigs(vision: { dict: Json; parsed: ClipVisionConfig }, hfProcessor: Json | null): { config: Json; preprocessor: Json } {
  return {
    config: { architectures: ["CLIPVisionModel"], ...vision.dict, model_type: "clip_vision_model" },
    preprocessor: { ...clipProcessorFields(hfProcessor, vision.parsed.imageSize), image_processor_type: "CLIPImageProcessor" },
  };
}
