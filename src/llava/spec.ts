/**
 * The model spec: everything a checkpoint folder's configs say about the model, read and
 * validated once, with transformers' and LLaVA's defaults, for every supported format:
 * - original LLaVA (`LlavaLlamaForCausalLM`, detected by `mm_vision_tower`), its CLIP tower in
 *   a separate folder (or, for v1.6, also inside the checkpoint);
 * - HF llava-hf (`LlavaForConditionalGeneration`) and LLaVA-NeXT (`LlavaNextForConditionalGeneration`).
 * The loader, `llava inspect` and the converters all read a folder through `readModelSpec`.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { PatchMergeType } from "./anyres.js";
import type { LlavaSettings } from "./model.js";
import { projectorDepth } from "./projector.js";
import { type ClipVisionConfig, FieldReader, isObject, type LlamaConfig, parseClipVisionConfig, parseLlamaConfig } from "../io/config.js";
import { isDirectory, isFile, readJsonFile } from "../io/files.js";
import { parsePinpoints } from "../image/processor.js";
import { activationByName } from "../nn/layers.js";
import type { Activation } from "../tensor/backend.js";
import { DEFAULT_IMAGE_TOKEN } from "../tokenizer/image-tokens.js";
import { LlavaError } from "../util/errors.js";

type Json = Record<string, unknown>;

export type CheckpointFormat = "original" | "hf-llava" | "hf-llava-next";

/** transformers' LlavaConfig default vision tower (CLIP ViT-L/14 at 336 px), for HF configs without vision_config. */
export const HF_DEFAULT_VISION: Json = {
  model_type: "clip_vision_model", hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16,
  patch_size: 14, image_size: 336, projection_dim: 768, vocab_size: 32000,
};

/** transformers' LlavaNextConfig default pinpoints, (height, width). */
export const HF_DEFAULT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];

/** The reference's DEFAULT_IMAGE_TOKEN: where an image goes in a prompt. */
export const IMAGE_TOKEN = DEFAULT_IMAGE_TOKEN;

/** The reference's DEFAULT_IM_START_TOKEN / DEFAULT_IM_END_TOKEN, wrapped around each image when `mm_use_im_start_end`. */
export const IM_START = "<im_start>";
export const IM_END = "<im_end>";

export interface TowerSpec {
  /** `mm_vision_tower` as written (original format) */
  name: string | null;
  /** the CLIP folder its config (and, unless the checkpoint holds them, its weights) come from; null: the checkpoint itself (HF) or not found */
  dir: string | null;
  /** null only for an original checkpoint whose tower folder was not found */
  config: ClipVisionConfig | null;
}

export interface ModelSpec {
  /** the folder */
  dir: string;
  configFile: string;
  /** config.json as read */
  config: Json;
  format: CheckpointFormat;
  text: LlamaConfig;
  tower: TowerSpec;
  projector: { type: string; activation: Activation };
  /** how AnyRes tiles are merged (mm_patch_merge_type; HF llava "flat", llava_next "spatial_unpad"); used only with AnyRes */
  mergeType: PatchMergeType;
  settings: LlavaSettings;
  /** the folder named with --vision-tower, if any (for messages) */
  visionTowerOption: string | null;
  /**
   * A PEFT adapter folder applied over this folder, when --model-path named an adapter without a
   * config.json of its own (as PEFT saves one on llava-hf) and --model-base this folder.
   */
  peftAdapter: string | null;
  /** a GGUF pair's files (gguf-load.ts), with what picks its chat template: general.name and tokenizer.chat_template */
  gguf?: { model: string; mmproj: string; name: string | null; chatTemplate: string | null };
}

export function detectFormat(config: Json, configFile: string): CheckpointFormat {
  if (config.mm_vision_tower !== undefined) return "original";
  const archs = Array.isArray(config.architectures) ? config.architectures : [];
  if (config.model_type === "llava_next" || archs.includes("LlavaNextForConditionalGeneration")) return "hf-llava-next";
  if (config.model_type === "llava" || archs.includes("LlavaForConditionalGeneration")) return "hf-llava";
  throw new LlavaError(
    `${configFile}: unknown checkpoint format: neither an original LLaVA config (no "mm_vision_tower") ` +
      `nor an HF llava config (model_type "${String(config.model_type)}")`,
  );
}

/**
 * The folder named by `mm_vision_tower`: as given (relative to the working directory, as the
 * reference resolves it), next to the model folder, inside it, or in the Hugging Face hub cache.
 */
export function resolveVisionTower(name: string, modelDir: string): string | null {
  const candidates = [path.resolve(name), path.resolve(modelDir, "..", name), path.resolve(modelDir, name)];
  const hubHome = process.env.HF_HUB_CACHE ?? path.join(process.env.HF_HOME ?? path.join(os.homedir(), ".cache", "huggingface"), "hub");
  const snapshots = path.join(hubHome, `models--${name.replaceAll("/", "--")}`, "snapshots");
  if (isDirectory(snapshots)) candidates.push(...fs.readdirSync(snapshots).map((s) => path.join(snapshots, s)));
  return candidates.find((c) => isFile(path.join(c, "config.json"))) ?? null;
}

/** The model folder and its config.json, checked to be a folder and a JSON object. */
export function readModelConfig(modelPath: string): { dir: string; config: Json; configFile: string } {
  const dir = path.resolve(modelPath);
  if (!isDirectory(dir)) throw new LlavaError(`model folder ${dir} does not exist or is not a folder`);
  const configFile = path.join(dir, "config.json");
  const config = readJsonFile(configFile, "model config");
  if (!isObject(config)) throw new LlavaError(`${configFile}: expected a JSON object`);
  return { dir, config, configFile };
}

export interface SpecOptions {
  /** folder of the CLIP vision tower, overriding `mm_vision_tower` (original format) */
  visionTower?: string;
  /** the base model under a LoRA or projector checkpoint; the spec of a bare PEFT adapter folder is its base's */
  modelBase?: string;
}

/** A PEFT adapter folder with no config.json: the model it applies to is its base's. */
function isBareAdapter(dir: string): boolean {
  return isFile(path.join(dir, "adapter_config.json")) && !isFile(path.join(dir, "config.json"));
}

/** Reads and validates a checkpoint folder's configs. A wrongly typed field fails naming the file and the field. */
export function readModelSpec(modelPath: string, opts: SpecOptions = {}): ModelSpec {
  const adapterDir = path.resolve(modelPath);
  if (isBareAdapter(adapterDir)) {
    if (!opts.modelBase) {
      const named = (readJsonFile(path.join(adapterDir, "adapter_config.json"), "LoRA adapter config") as Json | null)?.base_model_name_or_path;
      throw new LlavaError(`${adapterDir}: a PEFT adapter without config.json; pass the model it was trained on with --model-base${typeof named === "string" ? ` (it names "${named}")` : ""}`);
    }
    if (isBareAdapter(path.resolve(opts.modelBase))) throw new LlavaError(`--model-base ${path.resolve(opts.modelBase)}: a PEFT adapter, not a model`);
    return { ...readModelSpec(opts.modelBase, { visionTower: opts.visionTower }), peftAdapter: adapterDir };
  }
  const { dir, config, configFile } = readModelConfig(modelPath);
  const format = detectFormat(config, configFile);
  const f = new FieldReader(config, configFile);
  const text = parseLlamaConfig(config, configFile);
  const visionTowerOption = opts.visionTower ? path.resolve(opts.visionTower) : null;
  const base = { dir, configFile, config, format, text, visionTowerOption, peftAdapter: null };
  return format === "original" ? { ...base, ...originalParts(f, dir, visionTowerOption) } : { ...base, ...hfParts(f, config, configFile, format === "hf-llava-next") };
}

/** The tower's config, or the error that says where it was looked for. */
export function requireTower(spec: ModelSpec): ClipVisionConfig {
  if (spec.tower.config) return spec.tower.config;
  throw new LlavaError(
    spec.visionTowerOption
      ? `--vision-tower ${spec.visionTowerOption}: no config.json there; expected a CLIP model folder`
      : `${spec.configFile}: the vision tower "${spec.tower.name}" (mm_vision_tower) was not found as a folder; ` +
          `put the CLIP model there or pass its folder with --vision-tower`,
  );
}

function towerOf(name: string, dir: string, override: string | null): TowerSpec {
  const towerDir = override ?? resolveVisionTower(name, dir);
  const file = towerDir ? path.join(towerDir, "config.json") : null;
  if (!towerDir || !file || !isFile(file)) return { name, dir: null, config: null };
  return { name, dir: towerDir, config: parseClipVisionConfig(readJsonFile(file, "vision tower config"), file) };
}

/**
 * Pinpoints that tile exactly: every size a multiple of the tower's input, or the feature grid
 * would not line up with the tiles.
 */
function checkedPinpoints(f: FieldReader, value: unknown, vision: ClipVisionConfig | null, configFile: string): number[][] {
  if (value === undefined || value === null) f.fail("image_grid_pinpoints", "is required for AnyRes");
  const pinpoints = parsePinpoints(value, `${configFile}: image_grid_pinpoints`);
  for (const [a, b] of pinpoints) {
    if (vision && (a % vision.imageSize !== 0 || b % vision.imageSize !== 0)) {
      f.fail("image_grid_pinpoints", `entry [${a}, ${b}] is not a multiple of the vision tower's ${vision.imageSize} px input`);
    }
  }
  return pinpoints;
}

function originalParts(f: FieldReader, dir: string, override: string | null) {
  const tower = towerOf(f.string("mm_vision_tower", ""), dir, override);
  const type = f.string("mm_projector_type", "linear");
  try {
    projectorDepth(type);
  } catch {
    f.fail("mm_projector_type", `is "${type}"; supported: linear, mlp{N}x_gelu, identity`);
  }
  if (tower.config) {
    const mmHidden = f.positiveInt("mm_hidden_size", tower.config.hiddenSize);
    if (mmHidden !== tower.config.hiddenSize) f.fail("mm_hidden_size", `(${mmHidden}) differs from the vision tower's hidden size ${tower.config.hiddenSize}`);
  }
  const aspect = f.string("image_aspect_ratio", "square");
  if (aspect.startsWith("anyres") && aspect !== "anyres") f.fail("image_aspect_ratio", `"${aspect}" is not supported (pad, square or anyres)`);
  const mergeType = f.oneOf<PatchMergeType>("mm_patch_merge_type", "flat", ["flat", "spatial", "spatial_unpad"]);
  const useImStartEnd = f.bool("mm_use_im_start_end", false);
  if (useImStartEnd && f.bool("tune_mm_mlp_adapter", false)) {
    f.fail("mm_use_im_start_end", "together with tune_mm_mlp_adapter is not implemented by the reference (NotImplementedError)");
  }
  const settings: LlavaSettings = {
    visionSelectLayer: f.int("mm_vision_select_layer", -1),
    visionSelectFeature: f.oneOf("mm_vision_select_feature", "patch", ["patch", "cls_patch"]),
    imageTokenId: -200,
    expandImageTokens: false,
    imageAspectMode: aspect === "anyres" ? "anyres" : aspect === "pad" ? "pad" : "square",
    maxSequenceLength: f.positiveIntOrNull("tokenizer_model_max_length", null),
    anyres: aspect === "anyres"
      ? { pinpoints: checkedPinpoints(f, f.raw("image_grid_pinpoints"), tower.config, f.file), convention: "llava", mergeType }
      : null,
    imageStartEnd: useImStartEnd,
  };
  return { tower, projector: { type, activation: "gelu" as Activation }, mergeType, settings };
}

function hfParts(f: FieldReader, config: Json, configFile: string, next: boolean) {
  const visionJson = config.vision_config ?? HF_DEFAULT_VISION;
  if (!isObject(visionJson)) f.fail("vision_config", "must be an object");
  const vision = parseClipVisionConfig({ model_type: "clip_vision_model", ...visionJson }, `${configFile} (vision_config)`);
  if (Array.isArray(config.vision_feature_layer)) f.fail("vision_feature_layer", "is a list of layers; only a single layer is supported");
  const tokenKey = config.image_token_index !== undefined ? "image_token_index" : "image_token_id";
  const imageTokenId = f.int(tokenKey, 32000);
  // an id past the vocabulary is allowed: transformers embeds those positions as token 0 before the features replace them
  if (imageTokenId < 0) f.fail(tokenKey, `must be a token id (>= 0), got ${imageTokenId}`);
  const actName = f.string("projector_hidden_act", "gelu");
  let activation: Activation;
  try {
    activation = activationByName(actName);
  } catch {
    return f.fail("projector_hidden_act", `is "${actName}", an activation this project does not implement`);
  }
  const settings: LlavaSettings = {
    visionSelectLayer: f.int("vision_feature_layer", -2),
    visionSelectFeature: f.oneOf("vision_feature_select_strategy", "default", ["default", "full"]) === "default" ? "patch" : "cls_patch",
    imageTokenId,
    expandImageTokens: true,
    imageAspectMode: next ? "anyres" : "square",
    maxSequenceLength: null,
    anyres: next
      ? { pinpoints: checkedPinpoints(f, config.image_grid_pinpoints ?? HF_DEFAULT_PINPOINTS, vision, configFile), convention: "hf", mergeType: "spatial_unpad" as const }
      : null,
    imageStartEnd: false,
  };
  const mergeType: PatchMergeType = next ? "spatial_unpad" : "flat";
  return { tower: { name: null, dir: null, config: vision }, projector: { type: "mlp2x_gelu", activation }, mergeType, settings };
}
