/**
 * config.json, preprocessor_config.json and processor_config.json of each format, built from
 * the other format's files the way transformers' conversion scripts
 * (convert_llava_weights_to_hf.py, convert_llava_next_weights_to_hf.py) and the original LLaVA
 * training code write them.
 */
import { type ClipVisionConfig, parseClipVisionConfig, parseLlamaConfig } from "../io/config.js";
import { OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, parsePinpoints } from "../image/processor.js";
import { projectorDepth } from "../llava/projector.js";
import { LlavaError } from "../util/errors.js";

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** Keys of an original config that belong to LLaVA, not to its decoder. */
const LLAVA_KEYS = new Set([
  "image_aspect_ratio", "image_grid_pinpoints", "image_crop_resolution", "image_split_resolution",
  "tokenizer_model_max_length", "tokenizer_padding_side", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter",
  "tune_mm_vision_resampler", "freeze_mm_vision_resampler", "use_mm_proj", "unfreeze_mm_vision_tower", "s2", "s2_scales",
]);
/** Bookkeeping keys that describe a file, not a model. */
const FILE_KEYS = new Set(["_name_or_path", "transformers_version", "architectures", "model_type"]);

/** transformers' LlavaConfig default vision tower (CLIP ViT-L/14 at 336 px), for HF configs without vision_config. */
export const HF_DEFAULT_VISION: Json = {
  model_type: "clip_vision_model", hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16,
  patch_size: 14, image_size: 336, projection_dim: 768, vocab_size: 32000,
};

/** transformers' LlavaNextConfig default pinpoints, (height, width). */
export const HF_DEFAULT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];

/** Where the two formats differ in what they can express, decided from an original config. */
export interface OriginalSettings {
  family: "llama" | "mistral";
  projectorType: string;
  selectLayer: number;
  selectFeature: "patch" | "cls_patch";
  /** "anyres" turns into llava_next */
  aspect: "pad" | "square" | "anyres";
  /** as written in the original: (width, height) */
  pinpointsWH: number[][] | null;
  mergeType: string;
  towerName: string;
}

export function originalSettings(config: Json, configFile: string): OriginalSettings {
  const family = parseLlamaConfig(config, configFile).modelType;
  const aspectRaw = config.image_aspect_ratio;
  const aspect = aspectRaw === "anyres" ? "anyres" : aspectRaw === "pad" ? "pad" : "square";
  if (typeof aspectRaw === "string" && aspectRaw.startsWith("anyres") && aspectRaw !== "anyres") {
    throw new LlavaError(`${configFile}: image_aspect_ratio "${aspectRaw}" is not supported (pad, square or anyres)`);
  }
  const feature = config.mm_vision_select_feature ?? "patch";
  if (feature !== "patch" && feature !== "cls_patch") throw new LlavaError(`${configFile}: unknown mm_vision_select_feature "${String(feature)}"`);
  const projectorType = typeof config.mm_projector_type === "string" ? config.mm_projector_type : "linear";
  projectorDepth(projectorType); // rejects unknown types
  return {
    family,
    projectorType,
    selectLayer: typeof config.mm_vision_select_layer === "number" ? config.mm_vision_select_layer : -1,
    selectFeature: feature,
    aspect,
    pinpointsWH: aspect === "anyres" ? parsePinpoints(config.image_grid_pinpoints, `${configFile}: image_grid_pinpoints`) : null,
    mergeType: typeof config.mm_patch_merge_type === "string" ? config.mm_patch_merge_type : "flat",
    towerName: String(config.mm_vision_tower),
  };
}

/** Checks that HF Llava / LlavaNext can hold this model, and says which of the two. */
export function hfTargetOf(s: OriginalSettings, configFile: string): "llava" | "llava_next" {
  if (s.projectorType !== "mlp2x_gelu") {
    throw new LlavaError(
      `${configFile}: mm_projector_type "${s.projectorType}" cannot be represented in the HF llava format, ` +
        `whose projector is always Linear-GELU-Linear (mlp2x_gelu)`,
    );
  }
  if (s.aspect === "anyres") {
    if (s.mergeType !== "spatial_unpad") {
      throw new LlavaError(`${configFile}: AnyRes with mm_patch_merge_type "${s.mergeType}" cannot be represented in HF llava_next (only spatial_unpad)`);
    }
    return "llava_next";
  }
  if (s.mergeType !== "flat") {
    throw new LlavaError(`${configFile}: mm_patch_merge_type "${s.mergeType}" without AnyRes cannot be represented in the HF llava format`);
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
  original: Json;
  settings: OriginalSettings;
  target: "llava" | "llava_next";
  vision: { dict: Json; parsed: ClipVisionConfig };
  vocabSize: number;
  imageTokenId: number;
  padTokenId: number;
}

/** config.json of the HF model, as the conversion scripts save it. */
export function hfConfig(input: HfConfigInput): Json {
  const { original, settings, target, vision } = input;
  const text: Json = { model_type: settings.family, architectures: [settings.family === "mistral" ? "MistralForCausalLM" : "LlamaForCausalLM"] };
  for (const [k, v] of Object.entries(original)) {
    if (!k.startsWith("mm_") && !LLAVA_KEYS.has(k) && !FILE_KEYS.has(k)) text[k] = v;
  }
  text.vocab_size = input.vocabSize;
  const config: Json = {
    architectures: [target === "llava_next" ? "LlavaNextForConditionalGeneration" : "LlavaForConditionalGeneration"],
    model_type: target,
    ignore_index: -100,
    image_token_index: input.imageTokenId,
    image_seq_length: imageSeqLength(vision.parsed, settings.selectFeature),
    projector_hidden_act: "gelu",
    multimodal_projector_bias: true,
    vision_feature_layer: settings.selectLayer,
    vision_feature_select_strategy: settings.selectFeature === "patch" ? "default" : "full",
    pad_token_id: input.padTokenId,
    tie_word_embeddings: original.tie_word_embeddings === true,
  };
  if (original.torch_dtype !== undefined) config.torch_dtype = original.torch_dtype;
  if (target === "llava_next") {
    // transformers reads pinpoints as (height, width); the original code as (width, height)
    config.image_grid_pinpoints = swapPairs(settings.pinpointsWH!);
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
export function hfPreprocessorConfig(towerProcessor: Json | null, imageSize: number, target: "llava" | "llava_next", pinpointsHW: number[][] | null): Json {
  const fields = clipProcessorFields(towerProcessor, imageSize);
  if (target === "llava") return { ...fields, image_processor_type: "CLIPImageProcessor", processor_class: "LlavaProcessor" };
  return {
    ...fields, image_processor_type: "LlavaNextImageProcessor", processor_class: "LlavaNextProcessor",
    image_grid_pinpoints: pinpointsHW, do_pad: true,
  };
}

/** processor_config.json: what the HF processor needs to expand `<image>` into one token per feature. */
export function hfProcessorConfig(vision: ClipVisionConfig, s: OriginalSettings, target: "llava" | "llava_next"): Json {
  return {
    num_additional_image_tokens: 1,
    patch_size: vision.patchSize,
    processor_class: target === "llava_next" ? "LlavaNextProcessor" : "LlavaProcessor",
    vision_feature_select_strategy: s.selectFeature === "patch" ? "default" : "full",
  };
}

/** What an HF config says, checked for what the original format can hold. */
export interface HfSettings {
  next: boolean;
  family: "llama" | "mistral";
  text: Json;
  vision: { dict: Json; parsed: ClipVisionConfig };
  imageTokenId: number;
  selectLayer: number;
  selectFeature: "patch" | "cls_patch";
  /** (height, width) as HF writes them */
  pinpointsHW: number[][] | null;
}

export function hfSettings(config: Json, configFile: string, next: boolean): HfSettings {
  const family = parseLlamaConfig(config, configFile).modelType;
  const act = config.projector_hidden_act ?? "gelu";
  if (act !== "gelu") {
    throw new LlavaError(`${configFile}: projector_hidden_act "${String(act)}" cannot be represented in the original format (its mlp2x_gelu projector uses exact GELU)`);
  }
  if (config.multimodal_projector_bias === false) {
    throw new LlavaError(`${configFile}: a projector without biases (multimodal_projector_bias false) cannot be represented in the original format`);
  }
  const layer = config.vision_feature_layer ?? -2;
  if (typeof layer !== "number") throw new LlavaError(`${configFile}: a list vision_feature_layer cannot be represented in the original format`);
  const strategy = config.vision_feature_select_strategy ?? "default";
  if (strategy !== "default" && strategy !== "full") throw new LlavaError(`${configFile}: unknown vision_feature_select_strategy "${String(strategy)}"`);
  const visionJson = isObject(config.vision_config) ? config.vision_config : HF_DEFAULT_VISION;
  return {
    next,
    family,
    text: isObject(config.text_config) ? config.text_config : {},
    vision: visionConfigDict({ model_type: "clip_vision_model", ...visionJson }, `${configFile} (vision_config)`),
    imageTokenId: typeof (config.image_token_index ?? config.image_token_id) === "number" ? ((config.image_token_index ?? config.image_token_id) as number) : 32000,
    selectLayer: layer,
    selectFeature: strategy === "default" ? "patch" : "cls_patch",
    pinpointsHW: next ? parsePinpoints(config.image_grid_pinpoints ?? HF_DEFAULT_PINPOINTS, `${configFile}: image_grid_pinpoints`) : null,
  };
}

export interface OriginalConfigInput {
  hf: Json;
  settings: HfSettings;
  vocabSize: number;
  towerName: string;
  tokenizerModelMaxLength: number;
}

/** config.json of the original-format model, with the keys LLaVA's training writes. */
export function originalConfig(input: OriginalConfigInput): Json {
  const { settings: s, hf } = input;
  const config: Json = {
    architectures: [s.family === "mistral" ? "LlavaMistralForCausalLM" : "LlavaLlamaForCausalLM"],
    model_type: s.family === "mistral" ? "llava_mistral" : "llava_llama",
  };
  for (const [k, v] of Object.entries(s.text)) if (!FILE_KEYS.has(k)) config[k] = v;
  config.vocab_size = input.vocabSize;
  // HF configs may name <pad> (beyond the original vocabulary) as pad token; LLaMA's is <unk> = 0
  if (typeof config.pad_token_id === "number" && config.pad_token_id >= input.vocabSize) config.pad_token_id = 0;
  const dtype = hf.torch_dtype ?? s.text.torch_dtype;
  if (dtype !== undefined) config.torch_dtype = dtype;
  Object.assign(config, {
    mm_vision_tower: input.towerName,
    mm_hidden_size: s.vision.parsed.hiddenSize,
    mm_projector_type: "mlp2x_gelu",
    mm_vision_select_layer: s.selectLayer,
    mm_vision_select_feature: s.selectFeature,
    mm_patch_merge_type: s.next ? "spatial_unpad" : "flat",
    image_aspect_ratio: s.next ? "anyres" : "pad",
    image_grid_pinpoints: s.next ? swapPairs(s.pinpointsHW!) : null,
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
