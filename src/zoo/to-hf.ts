/**
 * `llava convert to-hf`: an original LLaVA checkpoint (LlavaLlamaForCausalLM, mlp2x_gelu
 * projector; v1.5 pad/square, or v1.6 AnyRes with spatial_unpad) to the HF llava-hf
 * (LlavaForConditionalGeneration) or llava_next (LlavaNextForConditionalGeneration) format, as
 * transformers' convert_llava_weights_to_hf.py / convert_llava_next_weights_to_hf.py do it.
 */
import path from "node:path";
import { hasModelWeights } from "../io/checkpoint-files.js";
import { isFile, readJsonFile } from "../io/files.js";
import type { WeightReader } from "../io/weights.js";
import { type Part, partOf, PREFIX, storedName } from "../llava/keys.js";
import { readModelSpec, requireTower } from "../llava/spec.js";
import { openCheckpointWeights } from "../llava/weights.js";
import { LlavaError } from "../util/errors.js";
import { checkShardSize, type ConvertOptions, type ConvertResult, copyIfPresent, listFiles, sortPlan, writeJson, writeWeightGroups } from "./common.js";
import { hfConfig, hfPreprocessorConfig, hfProcessorConfig, hfTargetOf, visionConfigDict } from "./configs.js";
import { checkOutsideInputs, writeOutputFolder } from "../io/output.js";
import type { PlannedTensor } from "./shard-writer.js";
import { writeTokenizerWithImageToken } from "./tokenizer-files.js";
import { grownRows, paddedVocabSize } from "./vocab.js";

export interface ToHfOptions extends ConvertOptions {
  modelPath: string;
  /** CLIP folder, overriding `mm_vision_tower` */
  visionTower?: string;
}

const EMBEDDING = `${PREFIX.llm}embed_tokens.weight`;
const RESIZED = new Set([EMBEDDING, `${PREFIX.head}weight`]);

/** The tensors of the HF checkpoint, read lazily from the original weights (the tower folder's included). */
function planTensors(weights: WeightReader, next: boolean, newVocab: number, notes: string[]) {
  const plan: Array<PlannedTensor & { part: Part }> = [];
  for (const name of weights.names()) {
    const stored = storedName(name, "hf", next);
    if (stored === null) {
      if (partOf(name) === "newline") {
        notes.push(`dropped "${name}" (LLaVA-1.5 does not use it)`);
        continue;
      }
      throw new LlavaError(`${weights.source}: tensor "${name}" has no place in the HF llava format`);
    }
    const { dtype, shape } = weights.info(name);
    const base = { name: stored, part: partOf(name), dtype };
    plan.push(RESIZED.has(name)
      ? { ...base, shape: [newVocab, shape[1]], bytes: () => grownRows(weights, name, newVocab) }
      : { ...base, shape, bytes: () => weights.readRaw(name).bytes });
  }
  const names = new Set(plan.map((t) => t.name));
  const required = [EMBEDDING, `${PREFIX.projector}0.weight`, `${PREFIX.projector}2.weight`, `${PREFIX.tower}vision_model.pre_layrnorm.weight`, ...(next ? [PREFIX.newline] : [])];
  for (const r of required) {
    const stored = storedName(r, "hf", next)!;
    if (!names.has(stored)) throw new LlavaError(`${weights.source}: the checkpoint lacks the tensor that becomes "${stored}"`);
  }
  return sortPlan(plan);
}

export async function convertToHf(opts: ToHfOptions): Promise<ConvertResult> {
  checkShardSize(opts);
  const spec = readModelSpec(opts.modelPath, { visionTower: opts.visionTower });
  const { dir, format } = spec;
  if (format !== "original") throw new LlavaError(`${dir} is already in the HF format (${format}); to-hf converts original LLaVA checkpoints`);
  if (!hasModelWeights(dir)) {
    throw new LlavaError(`${dir}: holds no full model weights (a LoRA or projector-only checkpoint?); merge it first with "llava convert merge-lora"`);
  }
  const target = hfTargetOf(spec);
  requireTower(spec);
  const towerDir = spec.tower.dir!;
  const towerConfigFile = path.join(towerDir, "config.json");
  const vision = visionConfigDict(readJsonFile(towerConfigFile, "vision tower config"), towerConfigFile);
  checkOutsideInputs(opts.out, [dir, towerDir]);
  const notes: string[] = [];
  const weights = openCheckpointWeights(spec);
  try {
    const { reader } = weights;
    notes.push(weights.tower === "checkpoint" ? `vision tower weights taken from the checkpoint (config from ${towerDir})` : `vision tower taken from ${towerDir}`);
    if (!reader.has(EMBEDDING)) throw new LlavaError(`${reader.source}: no "${EMBEDDING}"`);
    const oldVocab = reader.info(EMBEDDING).shape[0];
    const newVocab = paddedVocabSize(oldVocab, 2);
    const plan = planTensors(reader, target === "llava_next", newVocab, notes);
    notes.push(`embeddings resized from ${oldVocab} to ${newVocab} rows; the new rows are the mean of the old ones (transformers samples them around that mean)`);
    const pinpointsHW = target === "llava_next" ? spec.settings.anyres!.pinpoints.map(([w, h]) => [h, w]) : null;
    const towerProcessorFile = path.join(towerDir, "preprocessor_config.json");
    const towerProcessor = isFile(towerProcessorFile) ? (readJsonFile(towerProcessorFile, "image processor config") as Record<string, unknown>) : null;
    const written = await writeOutputFolder(opts.out, opts.force ?? false, async (tmp, interrupt) => {
      const processorClass = target === "llava_next" ? "LlavaNextProcessor" : "LlavaProcessor";
      const ids = writeTokenizerWithImageToken(dir, tmp, oldVocab, processorClass);
      writeJson(path.join(tmp, "config.json"), hfConfig({ spec, target, vision, vocabSize: newVocab, imageTokenId: ids.image, padTokenId: ids.pad }));
      writeJson(path.join(tmp, "preprocessor_config.json"), hfPreprocessorConfig(towerProcessor, vision.parsed.imageSize, target, pinpointsHW));
      writeJson(path.join(tmp, "processor_config.json"), hfProcessorConfig(vision.parsed, spec, target));
      copyIfPresent(dir, tmp, ["generation_config.json"]);
      const result = await writeWeightGroups([{ dir: tmp, tensors: plan }], opts, interrupt);
      return { ...result, files: listFiles(tmp) };
    });
    if (spec.settings.imageAspectMode === "pad") {
      notes.push(`the original pads images to a square (image_aspect_ratio pad); HF's CLIPImageProcessor center-crops, so non-square images give different answers`);
    }
    return { out: path.resolve(opts.out), ...written, notes };
  } finally {
    weights.close();
  }
}
