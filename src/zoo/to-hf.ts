/**
 * `llava convert to-hf`: an original LLaVA checkpoint (LlavaLlamaForCausalLM, mlp2x_gelu
 * projector; v1.5 pad/square, or v1.6 AnyRes with spatial_unpad) to the HF llava-hf
 * (LlavaForConditionalGeneration) or llava_next (LlavaNextForConditionalGeneration) format, as
 * transformers' convert_llava_weights_to_hf.py / convert_llava_next_weights_to_hf.py do it.
 */
import path from "node:path";
import { isFile, readJsonFile } from "../io/files.js";
import { detectFormat, resolveVisionTower } from "../llava/load.js";
import { hasModelWeights } from "../llava/weights.js";
import { LlavaError } from "../util/errors.js";
import {
  checkShardSize, type ConvertOptions, type ConvertResult, copyIfPresent, listFiles, readModelConfig, sortPlan, writeJson, writeWeightGroups,
} from "./common.js";
import { hfConfig, hfPreprocessorConfig, hfProcessorConfig, hfTargetOf, originalSettings, visionConfigDict } from "./configs.js";
import { hfNameOf, type Part } from "./keys.js";
import { checkOutsideInputs, writeOutputFolder } from "./output.js";
import type { PlannedTensor } from "./shard-writer.js";
import { writeTokenizerWithImageToken } from "./tokenizer-files.js";
import { grownRows, paddedVocabSize } from "./vocab.js";
import { openModelWeights, openTowerWeights, type WeightReader } from "./weights.js";

export interface ToHfOptions extends ConvertOptions {
  modelPath: string;
  /** CLIP folder, overriding `mm_vision_tower` */
  visionTower?: string;
}

const TOWER_IN_CHECKPOINT = "model.vision_tower.vision_tower.vision_model.";
const RESIZED = new Set(["model.embed_tokens.weight", "lm_head.weight"]);

/** The tower folder named by the config (or --vision-tower); its config is needed even when the weights are in the checkpoint. */
function findTower(dir: string, configFile: string, towerName: string, override: string | undefined): string {
  const towerDir = override ? path.resolve(override) : resolveVisionTower(towerName, dir);
  if (!towerDir || !isFile(path.join(towerDir, "config.json"))) {
    throw new LlavaError(
      override
        ? `--vision-tower ${towerDir}: no config.json there; expected a CLIP model folder`
        : `${configFile}: the vision tower "${towerName}" (mm_vision_tower) was not found as a folder; ` +
            `put the CLIP model there or pass its folder with --vision-tower`,
    );
  }
  return towerDir;
}

/** The tensors of the HF checkpoint, read lazily from the original weights and the tower. */
function planTensors(weights: WeightReader, tower: WeightReader | null, next: boolean, newVocab: number, notes: string[]) {
  const plan: Array<PlannedTensor & { part: Part }> = [];
  for (const name of weights.names()) {
    const mapped = hfNameOf(name, next, weights.source);
    if (!mapped) {
      if (!name.endsWith(".inv_freq")) notes.push(`dropped "${name}" (LLaVA-1.5 does not use it)`);
      continue;
    }
    const { dtype, shape } = weights.info(name);
    if (RESIZED.has(name)) {
      plan.push({ ...mapped, dtype, shape: [newVocab, shape[1]], bytes: () => grownRows(weights, name, newVocab) });
    } else {
      plan.push({ ...mapped, dtype, shape, bytes: () => weights.readRaw(name).bytes });
    }
  }
  if (tower) {
    for (const name of tower.names().filter((n) => n.startsWith("vision_model."))) {
      const { dtype, shape } = tower.info(name);
      plan.push({ name: `vision_tower.${name}`, part: "vision", dtype, shape, bytes: () => tower.readRaw(name).bytes });
    }
  }
  const names = new Set(plan.map((t) => t.name));
  const required = [
    "language_model.model.embed_tokens.weight", "multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_2.weight",
    "vision_tower.vision_model.pre_layrnorm.weight", ...(next ? ["image_newline"] : []),
  ];
  for (const r of required) {
    if (!names.has(r)) throw new LlavaError(`${weights.source}: the checkpoint lacks the tensor that becomes "${r}"`);
  }
  return sortPlan(plan);
}

export async function convertToHf(opts: ToHfOptions): Promise<ConvertResult> {
  checkShardSize(opts);
  const { dir, config, configFile } = readModelConfig(opts.modelPath);
  const format = detectFormat(config, configFile);
  if (format !== "original") throw new LlavaError(`${dir} is already in the HF format (${format}); to-hf converts original LLaVA checkpoints`);
  if (!hasModelWeights(dir)) {
    throw new LlavaError(`${dir}: holds no full model weights (a LoRA or projector-only checkpoint?); merge it first with "llava convert merge-lora"`);
  }
  const settings = originalSettings(config, configFile);
  const target = hfTargetOf(settings, configFile);
  const towerDir = findTower(dir, configFile, settings.towerName, opts.visionTower);
  const towerConfigFile = path.join(towerDir, "config.json");
  const vision = visionConfigDict(readJsonFile(towerConfigFile, "vision tower config"), towerConfigFile);
  if (typeof config.mm_hidden_size === "number" && config.mm_hidden_size !== vision.parsed.hiddenSize) {
    throw new LlavaError(`${configFile}: mm_hidden_size ${config.mm_hidden_size} differs from the vision tower's hidden size ${vision.parsed.hiddenSize} (${towerConfigFile})`);
  }
  checkOutsideInputs(opts.out, [dir, towerDir]);
  const notes: string[] = [];
  const weights = openModelWeights(dir);
  let tower: WeightReader | null = null;
  try {
    const towerInCheckpoint = weights.has(`${TOWER_IN_CHECKPOINT}pre_layrnorm.weight`);
    if (!towerInCheckpoint) tower = openTowerWeights(towerDir);
    notes.push(towerInCheckpoint ? `vision tower weights taken from the checkpoint (config from ${towerDir})` : `vision tower taken from ${towerDir}`);
    if (!weights.has("model.embed_tokens.weight")) throw new LlavaError(`${weights.source}: no "model.embed_tokens.weight"`);
    const oldVocab = weights.info("model.embed_tokens.weight").shape[0];
    const newVocab = paddedVocabSize(oldVocab, 2);
    const plan = planTensors(weights, tower, target === "llava_next", newVocab, notes);
    notes.push(`embeddings resized from ${oldVocab} to ${newVocab} rows; the new rows are the mean of the old ones (transformers samples them around that mean)`);
    const pinpointsHW = target === "llava_next" ? settings.pinpointsWH!.map(([w, h]) => [h, w]) : null;
    const towerProcessorFile = path.join(towerDir, "preprocessor_config.json");
    const towerProcessor = isFile(towerProcessorFile) ? (readJsonFile(towerProcessorFile, "image processor config") as Record<string, unknown>) : null;
    const written = await writeOutputFolder(opts.out, opts.force ?? false, async (tmp, interrupt) => {
      const processorClass = target === "llava_next" ? "LlavaNextProcessor" : "LlavaProcessor";
      const ids = writeTokenizerWithImageToken(dir, tmp, oldVocab, processorClass);
      writeJson(path.join(tmp, "config.json"), hfConfig({ original: config, settings, target, vision, vocabSize: newVocab, imageTokenId: ids.image, padTokenId: ids.pad }));
      writeJson(path.join(tmp, "preprocessor_config.json"), hfPreprocessorConfig(towerProcessor, vision.parsed.imageSize, target, pinpointsHW));
      writeJson(path.join(tmp, "processor_config.json"), hfProcessorConfig(vision.parsed, settings, target));
      copyIfPresent(dir, tmp, ["generation_config.json"]);
      const result = await writeWeightGroups([{ dir: tmp, tensors: plan }], opts, interrupt);
      return { ...result, files: listFiles(tmp) };
    });
    if (settings.aspect === "pad") {
      notes.push(`the original pads images to a square (image_aspect_ratio pad); HF's CLIPImageProcessor center-crops, so non-square images give different answers`);
    }
    return { out: path.resolve(opts.out), ...written, notes };
  } finally {
    weights.close();
    tower?.close();
  }
}
