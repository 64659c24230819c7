/**
 * Finding a checkpoint folder's weights (safetensors or PyTorch .bin) and combining a LoRA or
 * projector-only checkpoint with its base LLM the way the reference loader does.
 */
import fs from "node:fs";
import path from "node:path";
import { isDirectory, isFile, readJsonFile } from "../io/files.js";
import { WeightStore } from "../io/safetensors.js";
import { TorchBinStore } from "../io/torch-bin.js";
import { parseLoraConfig } from "../nn/lora.js";
import { overlaySources, renamedSource, type TensorSource } from "../nn/params.js";
import { LlavaError } from "../util/errors.js";

const MODEL_WEIGHTS = /^(model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json|pytorch_model(-\d+-of-\d+)?\.bin|pytorch_model\.bin\.index\.json)$/;

/** Whether a folder holds full model weights (safetensors or PyTorch .bin, single or sharded). */
export function hasModelWeights(dir: string): boolean {
  return fs.readdirSync(dir).some((n) => MODEL_WEIGHTS.test(n));
}

/** A checkpoint's weight files, read tensor by tensor and closed once the model is built. */
export type WeightFiles = TensorSource & { names(): string[]; close(): void };

/** The weights of a folder: safetensors (single or sharded) first, else PyTorch .bin, as transformers prefers. */
export function openWeights(dir: string): WeightFiles {
  const names = fs.readdirSync(dir);
  if (names.some((n) => /^model(-\d+-of-\d+)?\.safetensors$|\.safetensors\.index\.json$/.test(n))) return WeightStore.open(dir);
  if (names.some((n) => /^pytorch_model(-\d+-of-\d+)?\.bin$|^pytorch_model\.bin\.index\.json$/.test(n))) return TorchBinStore.open(dir);
  if (names.some((n) => n.endsWith(".safetensors"))) return WeightStore.open(dir);
  throw new LlavaError(`${dir}: no model weights (model.safetensors, pytorch_model.bin or a shard index) found`);
}

/** One weight file: `<dir>/<stem>.safetensors` or `<dir>/<stem>.bin`, or null when neither exists. */
export function openWeightFile(dir: string, stem: string): WeightStore | TorchBinStore | null {
  const st = path.join(dir, `${stem}.safetensors`);
  if (isFile(st)) return WeightStore.open(st);
  const bin = path.join(dir, `${stem}.bin`);
  return isFile(bin) ? TorchBinStore.open(bin) : null;
}

/** The name a non-LoRA trainable gets: the reference strips "base_model." and then a leading "model." from "model.model.*". */
export function trainableName(n: string): string {
  const k = n.startsWith("base_model.") ? n.slice("base_model.".length) : n;
  return k.startsWith("model.model.") ? k.slice("model.".length) : k;
}

/** What a --model-path folder holds when used with --model-base. */
export type PartialCheckpoint = "lora" | "projector";

export function partialCheckpointKind(dir: string): PartialCheckpoint {
  const has = (f: string) => isFile(path.join(dir, f));
  const lora = has("adapter_config.json");
  const projector = has("mm_projector.bin") || has("mm_projector.safetensors");
  if (lora && projector) {
    throw new LlavaError(`${dir}: holds both a LoRA adapter (adapter_config.json) and a projector (mm_projector.*); remove the one that does not belong`);
  }
  if (lora) return "lora";
  if (projector) return "projector";
  if (hasModelWeights(dir)) throw new LlavaError(`${dir}: holds a full model; --model-base is only for LoRA adapters and projector-only checkpoints`);
  throw new LlavaError(`${dir}: holds neither a LoRA adapter (adapter_config.json) nor a projector (mm_projector.bin), so --model-base does not apply`);
}

/**
 * The weights of a partial checkpoint on top of its base LLM, as the reference loader combines
 * them: the LoRA's non-LoRA trainables or the projector file first, then the base. Returns the
 * adapter for a LoRA checkpoint, to attach once the model is built.
 */
export function baseAndPartialWeights(dir: string, base: string) {
  if (!isDirectory(base)) throw new LlavaError(`--model-base ${base} does not exist or is not a folder`);
  const kind = partialCheckpointKind(dir);
  const baseWeights = openWeights(base);
  if (kind === "projector") {
    const projector = openWeightFile(dir, "mm_projector")!;
    return { weights: overlaySources([projector, baseWeights]), stores: [projector, baseWeights], adapter: null };
  }
  const trainables = openWeightFile(dir, "non_lora_trainables");
  const renamed = trainables && renamedSource(trainables, trainableName);
  const adapterFile = path.join(dir, "adapter_config.json");
  const adapter = {
    config: parseLoraConfig(readJsonFile(adapterFile, "LoRA adapter config"), adapterFile),
    weights: openWeightFile(dir, "adapter_model") ?? (() => {
      throw new LlavaError(`${dir}: has adapter_config.json but no adapter_model.safetensors or adapter_model.bin`);
    })(),
  };
  const stores = [baseWeights, adapter.weights, ...(trainables ? [trainables] : [])];
  return { weights: overlaySources(renamed ? [renamed, baseWeights] : [baseWeights]), stores, adapter };
}
