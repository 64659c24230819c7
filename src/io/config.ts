/**
 * Typed model configs read from `config.json`, filling omitted fields with the defaults of
 * transformers' config classes (LlamaConfig, MistralConfig, CLIPVisionConfig): real hub configs
 * leave default-valued fields out, so a loader that does not apply them builds the wrong model.
 */
import { LlavaError } from "../util/errors.js";

export { readJsonFile } from "./files.js";

/** RoPE scaling settings (`rope_scaling`, or non-default `rope_parameters` in transformers v5). */
export interface RopeScaling {
  /** "linear", "dynamic", "llama3", "yarn", ... (old configs' `type` is read as `rope_type`). */
  ropeType: string;
  factor: number | null;
  originalMaxPositionEmbeddings: number | null;
  lowFreqFactor: number | null;
  highFreqFactor: number | null;
  /** The entry exactly as written, for variants that need more fields. */
  raw: Record<string, unknown>;
}

export interface LlamaConfig {
  /** Decoder family: which transformers config class supplied the defaults. */
  modelType: "llama" | "mistral";
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  hiddenAct: string;
  attentionBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  padTokenId: number | null;
  /** Mistral's attention window (null: full attention); always null for llama. */
  slidingWindow?: number | null;
}

export interface ClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  imageSize: number;
  patchSize: number;
  numChannels: number;
  hiddenAct: string;
  layerNormEps: number;
  projectionDim: number;
}

type Json = Record<string, unknown>;

export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads typed fields of one JSON object, naming the file and field in every error. */
export class FieldReader {
  constructor(
    private readonly json: Json,
    readonly file: string,
    /** Path of this object inside the file, e.g. "text_config.". */
    private readonly prefix = "",
  ) {}

  fail(key: string, problem: string): never {
    throw new LlavaError(`config ${this.file}: field "${this.prefix}${key}" ${problem}`);
  }

  has(key: string): boolean {
    return this.json[key] !== undefined;
  }

  raw(key: string): unknown {
    return this.json[key];
  }

  positiveInt(key: string, fallback: number): number {
    const v = this.json[key];
    if (v === undefined) return fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) this.fail(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  }

  /** A positive integer, or null when written as null; absent gives `fallback`. */
  positiveIntOrNull(key: string, fallback: number | null): number | null {
    const v = this.json[key];
    if (v === null) return null;
    if (v === undefined) return fallback;
    return this.positiveInt(key, 0);
  }

  positiveNumber(key: string, fallback: number): number {
    const v = this.json[key];
    if (v === undefined) return fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) this.fail(key, `must be a positive number, got ${JSON.stringify(v)}`);
    return v as number;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.json[key];
    if (v === undefined) return fallback;
    if (typeof v !== "boolean") this.fail(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  }

  string(key: string, fallback: string): string {
    const v = this.json[key];
    if (v === undefined) return fallback;
    if (typeof v !== "string" || v === "") this.fail(key, `must be a non-empty string, got ${JSON.stringify(v)}`);
    return v as string;
  }

  /** An integer of either sign. */
  int(key: string, fallback: number): number {
    const v = this.json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !Number.isInteger(v)) this.fail(key, `must be an integer, got ${JSON.stringify(v)}`);
    return v as number;
  }

  /** One of `options` (absent or null: `fallback`). */
  oneOf<T extends string>(key: string, fallback: T, options: readonly T[]): T {
    const v = this.json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "string" || !options.includes(v as T)) this.fail(key, `must be one of ${options.map((o) => `"${o}"`).join(", ")}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  /** A token id: an integer or null. */
  tokenId(key: string, fallback: number | null): number | null {
    const v = this.json[key];
    if (v === undefined || v === null) return v === null ? null : fallback;
    if (typeof v !== "number" || !Number.isInteger(v)) this.fail(key, `must be an integer or null, got ${JSON.stringify(v)}`);
    return v as number;
  }

  /** An integer, a list of integers, or null (eos_token_id may list several). */
  tokenIds(key: string, fallback: number | null): number | number[] | null {
    const v = this.json[key];
    if (Array.isArray(v)) {
      if (v.length === 0 || !v.every((x) => typeof x === "number" && Number.isInteger(x))) {
        this.fail(key, `must be an integer, a non-empty list of integers, or null, got ${JSON.stringify(v)}`);
      }
      return [...(v as number[])];
    }
    return this.tokenId(key, fallback);
  }
}

/** Defaults of transformers' LlamaConfig / MistralConfig `__init__`. */
const TEXT_DEFAULTS = {
  llama: {
    vocabSize: 32000,
    hiddenSize: 4096,
    intermediateSize: 11008,
    numHiddenLayers: 32,
    numAttentionHeads: 32,
    /** null: same as num_attention_heads. */
    numKeyValueHeads: null,
    maxPositionEmbeddings: 2048,
    slidingWindow: null,
  },
  mistral: {
    vocabSize: 32000,
    hiddenSize: 4096,
    intermediateSize: 14336,
    numHiddenLayers: 32,
    numAttentionHeads: 32,
    numKeyValueHeads: 8,
    maxPositionEmbeddings: 4096 * 32,
    slidingWindow: 4096,
  },
} as const;

/** model_type values whose decoder is a LLaMA or a Mistral (LLaVA's own types included). */
const TEXT_FAMILIES: Record<string, "llama" | "mistral"> = {
  llama: "llama",
  llava: "llama", // original-format LLaVA configs (detected by mm_vision_tower) are llama decoders
  llava_llama: "llama",
  mistral: "mistral",
  llava_mistral: "mistral",
};

/** True for an HF composite (llava / llava_next) config, whose decoder lives in `text_config`. */
function isHfComposite(json: Json): boolean {
  return (json.model_type === "llava" || json.model_type === "llava_next") && json.mm_vision_tower === undefined;
}

/**
 * Parses a LLaMA or Mistral decoder config. Accepts the decoder config itself (llama, mistral, or an
 * original-format LLaVA config: llava, llava_llama, llava_mistral) or an HF llava / llava_next config,
 * whose `text_config` is used (absent: all LlamaConfig defaults, as transformers does).
 */
export function parseLlamaConfig(json: unknown, file: string): LlamaConfig {
  if (!isObject(json)) throw new LlavaError(`config ${file}: expected a JSON object`);
  if (isHfComposite(json)) {
    const text = json.text_config;
    if (text !== undefined && text !== null && !isObject(text)) {
      throw new LlavaError(`config ${file}: field "text_config" must be an object`);
    }
    return parseDecoder(isObject(text) ? text : {}, file, "text_config.");
  }
  return parseDecoder(json, file, "");
}

function parseDecoder(json: Json, file: string, prefix: string): LlamaConfig {
  const f = new FieldReader(json, file, prefix);
  const modelType = json.model_type === undefined ? "llama" : f.string("model_type", "llama");
  const family = TEXT_FAMILIES[modelType];
  if (family === undefined) {
    f.fail("model_type", `is "${modelType}"; supported decoders: ${Object.keys(TEXT_FAMILIES).join(", ")}`);
  }
  const d = TEXT_DEFAULTS[family];

  const hiddenSize = f.positiveInt("hidden_size", d.hiddenSize);
  const numAttentionHeads = f.positiveInt("num_attention_heads", d.numAttentionHeads);
  // transformers: a missing num_key_value_heads takes the class default; an explicit null means MHA.
  const kvDefault = d.numKeyValueHeads ?? numAttentionHeads;
  const numKeyValueHeads = f.raw("num_key_value_heads") === null ? numAttentionHeads : f.positiveInt("num_key_value_heads", kvDefault);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    f.fail("num_key_value_heads", `(${numKeyValueHeads}) must divide num_attention_heads (${numAttentionHeads})`);
  }
  let headDim: number;
  if (f.raw("head_dim") === undefined || f.raw("head_dim") === null) {
    if (hiddenSize % numAttentionHeads !== 0) {
      f.fail("num_attention_heads", `(${numAttentionHeads}) must divide hidden_size (${hiddenSize})`);
    }
    headDim = hiddenSize / numAttentionHeads;
  } else {
    headDim = f.positiveInt("head_dim", 0);
  }
  if (headDim % 2 !== 0) f.fail("head_dim", `(${headDim}) must be even for rotary embeddings`);

  const ropeParameters = f.raw("rope_parameters");
  if (ropeParameters !== undefined && ropeParameters !== null && !isObject(ropeParameters)) {
    f.fail("rope_parameters", "must be an object");
  }
  const ropeFields = isObject(ropeParameters) ? new FieldReader(ropeParameters, file, `${prefix}rope_parameters.`) : null;
  const ropeTheta = ropeFields?.has("rope_theta")
    ? ropeFields.positiveNumber("rope_theta", 10000)
    : f.positiveNumber("rope_theta", 10000);
  const ropeScaling = parseRopeScaling(f, isObject(ropeParameters) ? ropeParameters : null, file, prefix);

  // Mistral's modules have no biases whatever the config says.
  const biasesAllowed = family === "llama";
  return {
    modelType: family,
    hiddenSize,
    intermediateSize: f.positiveInt("intermediate_size", d.intermediateSize),
    numHiddenLayers: f.positiveInt("num_hidden_layers", d.numHiddenLayers),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    vocabSize: f.positiveInt("vocab_size", d.vocabSize),
    rmsNormEps: f.positiveNumber("rms_norm_eps", 1e-6),
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: f.positiveInt("max_position_embeddings", d.maxPositionEmbeddings),
    hiddenAct: f.string("hidden_act", "silu"),
    attentionBias: biasesAllowed ? f.bool("attention_bias", false) : false,
    mlpBias: biasesAllowed ? f.bool("mlp_bias", false) : false,
    tieWordEmbeddings: f.bool("tie_word_embeddings", false),
    bosTokenId: f.tokenId("bos_token_id", 1),
    eosTokenId: f.tokenIds("eos_token_id", 2),
    padTokenId: f.tokenId("pad_token_id", null),
    slidingWindow: family === "mistral" ? f.positiveIntOrNull("sliding_window", d.slidingWindow) : null,
  };
}

/** Rope types whose scaling needs `factor` (transformers' rope_config_validation). */
const NEEDS_FACTOR = new Set(["linear", "dynamic", "yarn", "llama3"]);

function parseRopeScaling(f: FieldReader, ropeParameters: Json | null, file: string, prefix: string): RopeScaling | null {
  let raw: Json;
  let where: string;
  const scaling = f.raw("rope_scaling");
  if (scaling !== undefined && scaling !== null) {
    if (!isObject(scaling)) f.fail("rope_scaling", "must be an object or null");
    raw = scaling as Json;
    where = `${prefix}rope_scaling.`;
  } else if (ropeParameters !== null) {
    raw = ropeParameters;
    where = `${prefix}rope_parameters.`;
  } else {
    return null;
  }
  const r = new FieldReader(raw, file, where);
  const typeKey = raw.rope_type !== undefined ? "rope_type" : "type";
  if (raw[typeKey] === undefined) r.fail("rope_type", "is missing");
  const ropeType = r.string(typeKey, "default");
  if (ropeType === "default") return null;
  const num = (key: string): number | null => (raw[key] === undefined || raw[key] === null ? null : r.positiveNumber(key, 0));
  const scalingOut: RopeScaling = {
    ropeType,
    factor: num("factor"),
    originalMaxPositionEmbeddings: num("original_max_position_embeddings"),
    lowFreqFactor: num("low_freq_factor"),
    highFreqFactor: num("high_freq_factor"),
    raw: { ...raw },
  };
  if (NEEDS_FACTOR.has(ropeType) && scalingOut.factor === null) r.fail("factor", `is required for rope type "${ropeType}"`);
  if (ropeType === "llama3") {
    for (const key of ["original_max_position_embeddings", "low_freq_factor", "high_freq_factor"]) {
      if (num(key) === null) r.fail(key, `is required for rope type "llama3"`);
    }
  }
  return scalingOut;
}

/**
 * Parses a CLIP vision tower config: a `clip_vision_model` config, a full `clip` config (its
 * `vision_config`, with legacy `vision_config_dict` entries taking precedence as in CLIPConfig), or an
 * HF llava / llava_next config's `vision_config`. Omitted fields get CLIPVisionConfig's defaults.
 */
export function parseClipVisionConfig(json: unknown, file: string): ClipVisionConfig {
  if (!isObject(json)) throw new LlavaError(`config ${file}: expected a JSON object`);
  let vision: Json = json;
  let prefix = "";
  if (json.model_type === "clip" || isHfComposite(json)) {
    const base = json.vision_config;
    const legacy = json.model_type === "clip" ? json.vision_config_dict : undefined;
    if (!isObject(base) && !isObject(legacy)) {
      throw new LlavaError(`config ${file}: a "${String(json.model_type)}" config needs a "vision_config" object`);
    }
    vision = { ...(isObject(base) ? base : {}), ...(isObject(legacy) ? legacy : {}) };
    prefix = "vision_config.";
  }
  const f = new FieldReader(vision, file, prefix);
  if (vision.model_type !== undefined && vision.model_type !== "clip_vision_model") {
    f.fail("model_type", `is ${JSON.stringify(vision.model_type)}; only CLIP vision towers ("clip_vision_model") are supported`);
  }
  const hiddenSize = f.positiveInt("hidden_size", 768);
  const numAttentionHeads = f.positiveInt("num_attention_heads", 12);
  if (hiddenSize % numAttentionHeads !== 0) {
    f.fail("num_attention_heads", `(${numAttentionHeads}) must divide hidden_size (${hiddenSize})`);
  }
  const imageSize = f.positiveInt("image_size", 224);
  const patchSize = f.positiveInt("patch_size", 32);
  if (patchSize > imageSize) f.fail("patch_size", `(${patchSize}) is larger than image_size (${imageSize})`);
  // CLIP's patch convolution would silently drop the remainder; LLaVA's towers always tile exactly
  if (imageSize % patchSize !== 0) f.fail("image_size", `(${imageSize}) must be a multiple of patch_size (${patchSize})`);
  return {
    hiddenSize,
    intermediateSize: f.positiveInt("intermediate_size", 3072),
    numHiddenLayers: f.positiveInt("num_hidden_layers", 12),
    numAttentionHeads,
    imageSize,
    patchSize,
    numChannels: f.positiveInt("num_channels", 3),
    hiddenAct: f.string("hidden_act", "quick_gelu"),
    layerNormEps: f.positiveNumber("layer_norm_eps", 1e-5),
    projectionDim: f.positiveInt("projection_dim", 512),
  };
}
