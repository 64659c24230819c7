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
import { isDirectory, isFile, readJsonFile } from "../io/files.js";
import { detectFormat, resolveVisionTower } from "../llava/spec.js";
import { openWeightFile, openWeights as openModelWeights, type WeightReader } from "../io/weights.js";
import { LLM_LINEAR_MODULE, partOf, type Part } from "../llava/keys.js";
import { checkpointKind, trainableName } from "../llava/weights.js";
import { Linear } from "../nn/layers.js";
import { isLoraTarget, loraScale, mergedWeight, parseLoraConfig, type LoraConfig } from "../nn/lora.js";
import { RefBackend } from "../tensor/ref-backend.js";
import { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import { checkShardSize, type ConvertOptions, type ConvertResult, copyIfPresent, listFiles, readModelConfig, sortPlan, writeJson, writeWeightGroups } from "./common.js";
import { checkOutsideInputs, writeOutputFolder } from "../io/output.js";
import type { PlannedTensor } from "./shard-writer.js";
import { copyTokenizerFiles } from "./tokenizer-files.js";
import { encodeFloats } from "./vocab.js";

export interface MergeLoraOptions extends ConvertOptions {
  /** the LoRA (or projector-only) checkpoint */
  modelPath: string;
  /** its base LLM */
  modelBase: string;
}

interface Adapter {
  config: LoraConfig;
  weights: WeightReader;
}

/** Where a named tensor is read from: the overlay (trainables / projector file) before the base. */
interface Located {
  reader: WeightReader;
  stored: string;
}

function adapterKey(adapter: Adapter, module: string, ab: "A" | "B"): string | null {
  for (const k of [`base_model.model.${module}.lora_${ab}.weight`, `base_model.model.${module}.lora_${ab}.default.weight`]) {
    if (adapter.weights.has(k)) return k;
  }
  return null;
}

/** W + scale * B A of one Linear, in the stored dtype of W. */
function mergedBytes(src: Located, name: string, adapter: Adapter, keys: { a: string; b: string }): Uint8Array {
  const backend = new RefBackend();
  const { dtype, shape } = src.reader.info(src.stored);
  const [out, inp] = shape;
  const { r } = adapter.config;
  const tensor = (reader: WeightReader, key: string, expected: number[]) => {
    const actual = reader.info(key).shape;
    if (actual.length !== 2 || actual[0] !== expected[0] || actual[1] !== expected[1]) {
      throw new LlavaError(`${reader.source}: tensor "${key}" has shape [${actual.join(", ")}], expected [${expected.join(", ")}]`);
    }
    return new Tensor(reader.readF32(key), expected, backend);
  };
  const linear = new Linear(tensor(src.reader, src.stored, [out, inp]));
  linear.adapter = { a: tensor(adapter.weights, keys.a, [r, inp]), b: tensor(adapter.weights, keys.b, [out, r]), scale: loraScale(adapter.config) };
  return encodeFloats(mergedWeight(linear).data, dtype, `${src.reader.source}: tensor "${name}"`);
}

function openAdapter(dir: string): Adapter {
  const file = path.join(dir, "adapter_config.json");
  const config = parseLoraConfig(readJsonFile(file, "LoRA adapter config"), file);
  const weights = openWeightFile(dir, "adapter_model");
  if (!weights) throw new LlavaError(`${dir}: has adapter_config.json but no adapter_model.safetensors or adapter_model.bin`);
  return { config, weights };
}

/** mm_vision_tower as the merged folder must say it to reach the same CLIP folder. */
function towerNameFor(name: unknown, dir: string, out: string, notes: string[]): unknown {
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
  const { dir, config, configFile } = readModelConfig(opts.modelPath);
  if (detectFormat(config, configFile) !== "original") {
    throw new LlavaError(`${configFile}: merge-lora needs an original-format LLaVA config (with mm_vision_tower), as LoRA and projector checkpoints have`);
  }
  const base = path.resolve(opts.modelBase);
  if (!isDirectory(base)) throw new LlavaError(`--model-base ${base} does not exist or is not a folder`);
  const kind = checkpointKind(dir);
  if (kind === "full") throw new LlavaError(`${dir}: holds neither a LoRA adapter (adapter_config.json) nor a projector (mm_projector.bin); merge-lora combines those with --model-base`);
  checkOutsideInputs(opts.out, [dir, base]);
  const notes: string[] = [];
  const opened: WeightReader[] = [];
  const track = <T extends WeightReader | null>(r: T): T => {
    if (r) opened.push(r);
    return r;
  };
  try {
    const baseWeights = track(openModelWeights(base, "--model-base"));
    const overlay = track(openWeightFile(dir, kind === "lora" ? "non_lora_trainables" : "mm_projector"));
    const adapter = kind === "lora" ? openAdapter(dir) : null;
    if (adapter) track(adapter.weights);
    const sources = new Map<string, Located>();
    for (const n of baseWeights.names()) sources.set(n, { reader: baseWeights, stored: n });
    for (const n of overlay?.names() ?? []) sources.set(kind === "lora" ? trainableName(n) : n, { reader: overlay!, stored: n });
    if (!sources.has("model.embed_tokens.weight")) throw new LlavaError(`--model-base ${base}: not a LLaMA-style model (no "model.embed_tokens.weight")`);

    const used = new Set<string>();
    const plan: Array<PlannedTensor & { part: Part }> = [];
    for (const [name, src] of sources) {
      const { dtype, shape } = src.reader.info(src.stored);
      const module = name.endsWith(".weight") ? name.slice(0, -".weight".length) : "";
      if (adapter && LLM_LINEAR_MODULE.test(module) && isLoraTarget(module, adapter.config.targetModules)) {
        const a = adapterKey(adapter, module, "A");
        const b = adapterKey(adapter, module, "B");
        if (!a || !b) throw new LlavaError(`${adapter.weights.source}: no LoRA weights for targeted layer "${module}" (expected "base_model.model.${module}.lora_A.weight")`);
        used.add(a).add(b);
        plan.push({ name, part: partOf(name), dtype, shape, bytes: () => mergedBytes(src, name, adapter, { a, b }) });
      } else {
        plan.push({ name, part: partOf(name), dtype, shape, bytes: () => src.reader.readRaw(src.stored).bytes });
      }
    }
    if (adapter) {
      const unused = adapter.weights.names().filter((n) => /\.lora_[AB]\./.test(n) && !used.has(n));
      if (unused.length) {
        throw new LlavaError(`${adapter.weights.source}: the adapter does not match the base model: no layer for "${unused[0]}"${unused.length > 1 ? ` and ${unused.length - 1} more` : ""}`);
      }
      notes.push(`merged the LoRA adapter (r ${adapter.config.r}, alpha ${adapter.config.alpha}) into ${used.size / 2} Linear layers`);
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
    for (const r of opened) r.close();
  }
}
