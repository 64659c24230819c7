/**
 * Read access to the weight files of a checkpoint folder, whatever their container: safetensors
 * (single or sharded) or PyTorch `.bin` (single or sharded). Opening reads headers only, so the
 * converters and `llava inspect` can plan from names, dtypes and shapes before touching any data.
 */
import fs from "node:fs";
import path from "node:path";
import { isFile } from "../io/files.js";
import type { RawTensor, SafetensorsDtype } from "../io/safetensors.js";
import { WeightStore } from "../io/safetensors.js";
import { TorchBinStore } from "../io/torch-bin.js";
import { LlavaError } from "../util/errors.js";

/** What the converters need from a weight store (WeightStore and TorchBinStore both fit). */
export interface WeightReader {
  readonly source: string;
  names(): string[];
  has(name: string): boolean;
  info(name: string): { dtype: SafetensorsDtype; shape: number[] };
  readRaw(name: string): RawTensor;
  readF32(name: string): Float32Array;
  filePaths(): string[];
  close(): void;
}

/** Full-model weight files in the order transformers prefers them. */
const MODEL_FILES = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"];

function openPath(file: string): WeightReader {
  return file.endsWith(".safetensors") || file.endsWith(".safetensors.index.json") ? WeightStore.open(file) : TorchBinStore.open(file);
}

/** The model weights of a folder (model.safetensors, pytorch_model.bin, or their shard indexes), or null. */
export function findModelWeights(dir: string): string | null {
  return MODEL_FILES.map((f) => path.join(dir, f)).find(isFile) ?? null;
}

/** Opens the model weights of a folder; `what` names the folder's role in the error. */
export function openModelWeights(dir: string, what = "model folder"): WeightReader {
  const file = findModelWeights(dir);
  if (!file) throw new LlavaError(`${what} ${dir}: no model weights (model.safetensors, pytorch_model.bin or a shard index) found`);
  return openPath(file);
}

/**
 * The weights of a CLIP folder: the model files above, else a single other `.safetensors`
 * or `.bin` file (hub snapshots sometimes name it differently).
 */
export function openTowerWeights(dir: string): WeightReader {
  const file = findModelWeights(dir);
  if (file) return openPath(file);
  const others = fs.readdirSync(dir).filter((f) => /\.(safetensors|bin)$/.test(f) && f !== "training_args.bin");
  if (others.length === 1) return openPath(path.join(dir, others[0]));
  throw new LlavaError(`vision tower folder ${dir}: no weights (model.safetensors or pytorch_model.bin) found`);
}

/** Names sorted as a person reads them: layer 10 after layer 9. */
export function naturalCompare(a: string, b: string): number {
  const pa = a.split(/(\d+)/);
  const pb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] === pb[i]) continue;
    const numeric = i % 2 === 1;
    return numeric ? Number(pa[i]) - Number(pb[i]) : pa[i] < pb[i] ? -1 : 1;
  }
  return pa.length - pb.length;
}
