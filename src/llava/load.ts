/**
 * Loads a LLaVA checkpoint folder in any supported format into a LlavaModel, with its tokenizer
 * and image processor settings:
 * - original LLaVA (`LlavaLlamaForCausalLM`, detected by `mm_vision_tower`): LLM + projector in
 *   the folder, the CLIP tower in a separate folder named by `mm_vision_tower`;
 * - HF llava-hf (`LlavaForConditionalGeneration`) and LLaVA-NeXT (`LlavaNextForConditionalGeneration`),
 *   old (`language_model.model.*`) and new (`model.language_model.*`) key layouts.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { PatchMergeType } from "./anyres.js";
import { ClipVisionModel } from "./clip.js";
import { LlamaForCausalLM } from "./llama.js";
import { type ImageAspectMode, LlavaModel, type LlavaSettings } from "./model.js";
import { checkMemory, headFormat, llmFormat, type PrecisionOptions, visionFormat } from "./precision.js";
import { Projector, projectorDepth } from "./projector.js";
import { baseAndPartialWeights, openWeights, type WeightFiles } from "./weights.js";
import { type ClipVisionConfig, type LlamaConfig, parseClipVisionConfig, parseLlamaConfig } from "../io/config.js";
import { isDirectory, isFile, readJsonFile } from "../io/files.js";
import { type ImageProcessorConfig, loadImageProcessorConfig, parseImageProcessorConfig, parsePinpoints } from "../image/processor.js";
import { activationByName } from "../nn/layers.js";
import { attachLora, unusedLoraKeys } from "../nn/lora.js";
import { ParamLoader, type TensorSource } from "../nn/params.js";
import type { Backend } from "../tensor/backend.js";
import { createBackend } from "../tensor/backends.js";
import { LlavaTokenizer } from "../tokenizer/tokenizer.js";
import { LlavaError } from "../util/errors.js";

export type CheckpointFormat = "original" | "hf-llava" | "hf-llava-next";

export interface LoadOptions extends PrecisionOptions {
  backend?: Backend;
  /** folder of the CLIP vision tower, overriding `mm_vision_tower` (original format) */
  visionTower?: string;
  /** the base LLM folder under a LoRA or projector-only checkpoint (the reference's --model-base) */
  modelBase?: string;
}

export interface LoadedLlava {
  model: LlavaModel;
  tokenizer: LlavaTokenizer;
  imageProcessor: ImageProcessorConfig;
  format: CheckpointFormat;
  /** the folder that was loaded */
  dir: string;
  /** config.json as read */
  config: Record<string, unknown>;
  textConfig: LlamaConfig;
  visionConfig: ClipVisionConfig;
}

type Json = Record<string, unknown>;

export function detectFormat(config: Json, configFile: string): CheckpointFormat {
  if (typeof config.mm_vision_tower === "string") return "original";
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

const asNumber = (v: unknown, fallback: number) => (typeof v === "number" ? v : fallback);

function loadOriginal(dir: string, config: Json, configFile: string, weights: TensorSource, backend: Backend, opts: LoadOptions, track: (s: WeightFiles) => WeightFiles) {
  const textConfig = parseLlamaConfig(config, configFile);
  const towerName = config.mm_vision_tower as string;
  const towerDir = opts.visionTower ?? resolveVisionTower(towerName, dir);
  if (!towerDir || !isFile(path.join(towerDir, "config.json"))) {
    throw new LlavaError(
      `${configFile}: the vision tower "${towerName}" (mm_vision_tower) was not found as a folder; ` +
        `put the CLIP model there or pass its folder with --vision-tower`,
    );
  }
  const towerConfigFile = path.join(towerDir, "config.json");
  const visionConfig = parseClipVisionConfig(readJsonFile(towerConfigFile, "vision tower config"), towerConfigFile);
  const main = new ParamLoader(weights, backend);
  // v1.6 checkpoints carry a fine-tuned tower; otherwise it comes from the CLIP folder
  const inCheckpoint = main.sub("model.vision_tower.vision_tower.vision_model.");
  const vision = new ClipVisionModel(
    (inCheckpoint.has("pre_layrnorm.weight") ? inCheckpoint : new ParamLoader(track(openWeights(towerDir)), backend, "vision_model.")).packing(visionFormat(opts)),
    visionConfig,
  );
  const type = typeof config.mm_projector_type === "string" ? config.mm_projector_type : "linear";
  const depth = projectorDepth(type);
  const mmHidden = asNumber(config.mm_hidden_size, visionConfig.hiddenSize);
  if (mmHidden !== visionConfig.hiddenSize) {
    throw new LlavaError(`${configFile}: mm_hidden_size ${mmHidden} differs from the vision tower's hidden size ${visionConfig.hiddenSize}`);
  }
  const names = type === "linear" ? [""] : Array.from({ length: depth }, (_, i) => String(2 * i));
  const projector = Projector.load(main.sub("model.mm_projector."), depth, names, mmHidden, textConfig.hiddenSize);
  const llm = new LlamaForCausalLM(main.sub("model.").packing(llmFormat(opts)), main.sub("lm_head.").packing(headFormat(opts)), textConfig);
  const aspect = config.image_aspect_ratio;
  const mergeType = (config.mm_patch_merge_type ?? "flat") as string;
  if (!["flat", "spatial", "spatial_unpad"].includes(mergeType)) {
    throw new LlavaError(`${configFile}: unsupported mm_patch_merge_type "${mergeType}" (flat, spatial or spatial_unpad)`);
  }
  const anyres = aspect === "anyres"
    ? { pinpoints: checkedPinpoints(config.image_grid_pinpoints, visionConfig, configFile), convention: "llava" as const, mergeType: mergeType as PatchMergeType }
    : null;
  if (typeof aspect === "string" && aspect.startsWith("anyres") && aspect !== "anyres") {
    throw new LlavaError(`${configFile}: image_aspect_ratio "${aspect}" is not supported (pad, square or anyres)`);
  }
  const feature = config.mm_vision_select_feature ?? "patch";
  if (feature !== "patch" && feature !== "cls_patch") {
    throw new LlavaError(`${configFile}: unknown mm_vision_select_feature "${String(feature)}" (patch or cls_patch)`);
  }
  const settings: LlavaSettings = {
    visionSelectLayer: asNumber(config.mm_vision_select_layer, -1),
    visionSelectFeature: feature,
    imageTokenId: -200,
    expandImageTokens: false,
    imageAspectMode: (anyres ? "anyres" : aspect === "pad" ? "pad" : "square") as ImageAspectMode,
    maxSequenceLength: typeof config.tokenizer_model_max_length === "number" ? config.tokenizer_model_max_length : null,
    anyres,
  };
  const newline = mergeType === "spatial_unpad" ? main.tensor("model.image_newline", [textConfig.hiddenSize]) : null;
  return { model: new LlavaModel(vision, projector, llm, settings, newline), textConfig, visionConfig, processorDir: towerDir };
}

/** transformers' LlavaNextConfig default pinpoints (height, width) */
const HF_DEFAULT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];

/** transformers' LlavaConfig default vision tower: CLIP ViT-L/14 at 336 px */
const HF_DEFAULT_VISION = {
  model_type: "clip_vision_model", intermediate_size: 4096, hidden_size: 1024, patch_size: 14, image_size: 336,
  num_hidden_layers: 24, num_attention_heads: 16, projection_dim: 768,
};

/**
 * Pinpoints that tile exactly: every size a multiple of the tower's input, or the feature grid
 * would not line up with the tiles.
 */
function checkedPinpoints(value: unknown, vision: ClipVisionConfig, configFile: string): number[][] {
  if (value === undefined || value === null) throw new LlavaError(`${configFile}: AnyRes needs image_grid_pinpoints`);
  const pinpoints = parsePinpoints(value, `${configFile}: image_grid_pinpoints`);
  for (const [a, b] of pinpoints) {
    if (a % vision.imageSize !== 0 || b % vision.imageSize !== 0) {
      throw new LlavaError(`${configFile}: image_grid_pinpoints entry [${a}, ${b}] is not a multiple of the vision tower's ${vision.imageSize} px input`);
    }
  }
  return pinpoints;
}

function loadHf(dir: string, config: Json, configFile: string, store: WeightFiles, backend: Backend, next: boolean, opts: LoadOptions) {
  const textConfig = parseLlamaConfig((config.text_config as Json | undefined) ?? {}, `${configFile} (text_config)`);
  const visionConfig = parseClipVisionConfig((config.vision_config as Json | undefined) ?? HF_DEFAULT_VISION, `${configFile} (vision_config)`);
  const root = new ParamLoader(store, backend);
  // transformers >= 4.52 saves model.language_model.*; older hub repos language_model.model.*
  const newLayout = store.has("model.language_model.embed_tokens.weight");
  const p = newLayout
    ? { llm: "model.language_model.", head: "lm_head.", vision: "model.vision_tower.vision_model.", proj: "model.multi_modal_projector." }
    : { llm: "language_model.model.", head: "language_model.lm_head.", vision: "vision_tower.vision_model.", proj: "multi_modal_projector." };
  const layer = config.vision_feature_layer ?? -2;
  if (typeof layer !== "number") throw new LlavaError(`${configFile}: a list vision_feature_layer is not supported yet`);
  const strategy = config.vision_feature_select_strategy ?? "default";
  if (strategy !== "default" && strategy !== "full") {
    throw new LlavaError(`${configFile}: unknown vision_feature_select_strategy "${String(strategy)}" (default or full)`);
  }
  const act = activationByName(typeof config.projector_hidden_act === "string" ? config.projector_hidden_act : "gelu");
  const projector = Projector.load(root.sub(p.proj), 2, ["linear_1", "linear_2"], visionConfig.hiddenSize, textConfig.hiddenSize, act);
  const settings: LlavaSettings = {
    visionSelectLayer: layer,
    visionSelectFeature: strategy === "default" ? "patch" : "cls_patch",
    imageTokenId: asNumber(config.image_token_index ?? config.image_token_id, 32000),
    expandImageTokens: true,
    imageAspectMode: next ? "anyres" : "square",
    maxSequenceLength: null,
    anyres: next
      ? { pinpoints: checkedPinpoints(config.image_grid_pinpoints ?? HF_DEFAULT_PINPOINTS, visionConfig, configFile), convention: "hf", mergeType: "spatial_unpad" }
      : null,
  };
  const newline = next ? root.tensor(newLayout ? "model.image_newline" : "image_newline", [textConfig.hiddenSize]) : null;
  const model = new LlavaModel(
    new ClipVisionModel(root.sub(p.vision).packing(visionFormat(opts)), visionConfig),
    projector,
    new LlamaForCausalLM(root.sub(p.llm).packing(llmFormat(opts)), root.sub(p.head).packing(headFormat(opts)), textConfig),
    settings,
    newline,
  );
  return { model, textConfig, visionConfig, processorDir: dir };
}

/** Image processor settings of a folder, or CLIP's defaults at the tower's resolution. */
async function imageProcessorFor(dir: string, vision: ClipVisionConfig): Promise<ImageProcessorConfig> {
  if (isFile(path.join(dir, "preprocessor_config.json"))) return loadImageProcessorConfig(dir);
  const size = vision.imageSize;
  return parseImageProcessorConfig({ size: { shortest_edge: size }, crop_size: { height: size, width: size } }, `${dir} (defaults)`);
}

export async function loadLlava(modelPath: string, opts: LoadOptions = {}): Promise<LoadedLlava> {
  const dir = path.resolve(modelPath);
  if (!isDirectory(dir)) throw new LlavaError(`model folder ${dir} does not exist or is not a folder`);
  const configFile = path.join(dir, "config.json");
  const config = readJsonFile(configFile, "model config");
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new LlavaError(`${configFile}: expected a JSON object`);
  }
  const json = config as Json;
  const backend = opts.backend ?? createBackend({ bf16Dot: opts.dtype === "bf16" });
  const format = detectFormat(json, configFile);
  if (opts.modelBase && format !== "original") {
    throw new LlavaError(`${configFile}: --model-base needs an original-format LLaVA config (with mm_vision_tower), as LoRA and projector checkpoints have`);
  }
  // every weight file is read while the model is built, then closed
  const opened: WeightFiles[] = [];
  const track = (s: WeightFiles) => (opened.push(s), s);
  let loaded;
  try {
    const partial = opts.modelBase ? baseAndPartialWeights(dir, path.resolve(opts.modelBase)) : null;
    partial?.stores.forEach(track);
    const weights = partial?.weights ?? track(openWeights(dir));
    checkMemory(partial ? partial.stores : [weights as WeightFiles], opts);
    loaded = format === "original"
      ? loadOriginal(dir, json, configFile, weights, backend, opts, track)
      : loadHf(dir, json, configFile, weights as WeightFiles, backend, format === "hf-llava-next", opts);
    if (partial?.adapter) {
      const linears = loaded.model.llm.namedLinears();
      attachLora(linears, partial.adapter.weights, partial.adapter.config, backend);
      const unused = unusedLoraKeys(partial.adapter.weights.names(), linears);
      if (unused.length) {
        throw new LlavaError(`${partial.adapter.weights.source}: the adapter does not match the base model: no layer for "${unused[0]}"${unused.length > 1 ? ` and ${unused.length - 1} more` : ""}`);
      }
    }
  } finally {
    for (const s of opened) s.close();
  }
  // the reference takes the tokenizer of the base under a LoRA or projector checkpoint
  const tokenizerDir = opts.modelBase && isFile(path.join(opts.modelBase, "tokenizer_config.json")) ? path.resolve(opts.modelBase) : dir;
  const tokenizer = LlavaTokenizer.load(tokenizerDir);
  const imageProcessor = await imageProcessorFor(loaded.processorDir, loaded.visionConfig);
  return {
    model: loaded.model, tokenizer, imageProcessor, format, dir, config: json,
    textConfig: loaded.textConfig, visionConfig: loaded.visionConfig,
  };
}
