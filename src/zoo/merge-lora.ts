/**
 * `llava convert merge-lora`: a LoRA checkpoint (adapter_config.json, adapter_model.*,
 * non_lora_trainables.*) or a projector-only checkpoint (mm_projector.*) on its base LLM, written
 * as one full original-format checkpoint, like the reference's scripts/merge_lora_weights.py
 * (load_pretrained_model, PEFT merge_and_unload, save_pretrained).
 *
 * The tensors are combined as the reference loader combines them (the LoRA's non-LoRA trainables
 * or the projector file over the base) and every targeted Linear gets W + scale * B A, computed
 * in f32 by `mergedWeight` and stored in the base weight's dtype. One tensor is in memory at a time.
 */
import path from "node:path";
import { isFile } from "../io/files.js";
import { checkOutsideInputs, writeOutputFolder } from "../io/output.js";
import type { WeightReader } from "../io/weights.js";
import { LLM_LINEAR_MODULE, type Part, partOf, PREFIX } from "../llava/keys.js";
import { readModelSpec, resolveVisionTower } from "../llava/spec.js";
import { checkpointKind, openCheckpointWeights } from "../llava/weights.js";
import { Linear } from "../nn/layers.js";
import { attachLora, checkAdapterUsed, isLoraTarget, type LoraConfig, loraKeys, mergedWeight } from "../nn/lora.js";
import { RefBackend } from "../tensor/ref-backend.js";
import { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import { checkShardSize, type ConvertOptions, type ConvertResult, copyIfPresent, listFiles, sortPlan, writeJson, writeWeightGroups } from "./common.js";
import type { PlannedTensor } from "./shard-writer.js";
import { copyTokenizerFiles } from "./tokenizer-files.js";
import { encodeFloats } from "./vocab.js";

export interface MergeLoraOptions extends ConvertOptions {
  /** the LoRA (or projector-only) checkpoint */
  modelPath: string;
  /** its base LLM */
  modelBase: string;
}

type Adapter = { config: LoraConfig; weights: WeightReader };

/** W + scale * B A of one Linear, computed as the loader attaches the adapter, stored in the dtype of W. */
function mergedBytes(reader: WeightReader, name: string, module: string, adapter: Adapter): Uint8Array {
  const backend = new RefBackend();
  const { dtype, shape } = reader.info(name);
  const linear = new Linear(new Tensor(reader.readF32(name), shape, backend));
  attachLora([[module, linear]], adapter.weights, adapter.config, backend);
  return encodeFloats(mergedWeight(linear).data, dtype, `${reader.source}: tensor "${name}"`);
}

/** The LLM Linear layer a tensor is the weight of, when the adapter targets it. */
function targetedModule(name: string, adapter: Adapter | null): string | null {
  const module = name.endsWith(".weight") ? name.slice(0, -".weight".length) : "";
  return adapter && LLM_LINEAR_MODULE.test(module) && isLoraTarget(module, adapter.config.targetModules) ? module : null;
}

/** mm_vision_tower as a folder written at `out` must say it to reach the same CLIP folder. */
export function towerNameFor(name: unknown, dir: string, out: string, notes: string[]): unknown {
  if (typeof name !== "string") return name;
  const found = resolveVisionTower(name, dir);
  if (!found) {
    notes.push(`the vision tower "${name}" (mm_vision_tower) was not found here; the merged model names it unchanged`);
    return name;
  }
  if (resolveVisionTower(name, path.resolve(out)) === found) return name;
  notes.push(`mm_vision_tower "${name}" becomes the absolute path ${found}, which the merged folder needs to find it`);
  return found;
}

export async function mergeLora(opts: MergeLoraOptions): Promise<ConvertResult> {
  checkShardSize(opts);
  const spec = readModelSpec(opts.modelPath, { modelBase: opts.modelBase });
  const { dir, config, configFile } = spec;
  if (spec.peftAdapter) {
    throw new LlavaError(`${spec.peftAdapter}: a PEFT adapter without config.json; merge-lora merges the reference's LoRA folders (with config.json); such an adapter loads unmerged with --model-base`);
  }
  if (spec.format !== "original") {
    throw new LlavaError(`${configFile}: merge-lora needs an original-format LLaVA config (with mm_vision_tower), as LoRA and projector checkpoints have`);
  }
  if (checkpointKind(dir) === "full") {
    throw new LlavaError(`${dir}: holds neither a LoRA adapter (adapter_config.json) nor a projector (mm_projector.bin); merge-lora combines those with --model-base`);
  }
  const base = path.resolve(opts.modelBase);
  checkOutsideInputs(opts.out, [dir, base]);
  const notes: string[] = [];
  // the reference saves what it loaded from the checkpoints; a LLaVA-1.5 tower stays in its CLIP folder
  const weights = openCheckpointWeights(spec, { modelBase: base, towerFolder: false });
  try {
    const { reader, adapter } = weights;
    const embedding = `${PREFIX.llm}embed_tokens.weight`;
    if (!reader.has(embedding)) throw new LlavaError(`--model-base ${base}: not a LLaMA-style model (no "${embedding}")`);
    const taken = new Set<string>();
    const plan: Array<PlannedTensor & { part: Part }> = reader.names().map((name) => {
      const { dtype, shape } = reader.info(name);
      const module = targetedModule(name, adapter);
      if (!module) return { name, part: partOf(name), dtype, shape, bytes: () => reader.readRaw(name).bytes };
      loraKeys(adapter!.weights, module); // a targeted layer without adapter weights fails now, before anything is written
      taken.add(module);
      return { name, part: partOf(name), dtype, shape, bytes: () => mergedBytes(reader, name, module, adapter!) };
    });
    if (adapter) {
      checkAdapterUsed(adapter.weights, taken);
      notes.push(`merged the LoRA adapter (r ${adapter.config.r}, alpha ${adapter.config.alpha}) into ${taken.size} Linear layers`);
    } else {
      notes.push(`combined the projector with the base model (no adapter to merge)`);
    }
    const merged = { ...config, mm_vision_tower: towerNameFor(config.mm_vision_tower, dir, opts.out, notes) };
    const tokenizerDir = isFile(path.join(base, "tokenizer_config.json")) || isFile(path.join(base, "tokenizer.json")) ? base : dir;
    const written = await writeOutputFolder(opts.out, opts.force ?? false, async (tmp, interrupt) => {
      copyTokenizerFiles(tokenizerDir, tmp);
      writeJson(path.join(tmp, "config.json"), merged);
      copyIfPresent(base, tmp, ["generation_config.json"]);
      const result = await writeWeightGroups([{ dir: tmp, tensors: sortPlan(plan) }], opts, interrupt);
      return { ...result, files: listFiles(tmp) };
    });
    return { out: path.resolve(opts.out), ...written, notes };
  } finally {
    weights.close();
  }
}
