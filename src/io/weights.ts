/**
 * The one interface to a checkpoint's weights, whatever the container (safetensors or PyTorch
 * .bin, single or sharded), and the ways to combine stores: an overlay (a LoRA's trainables or a
 * projector file over a base) and a renaming (a checkpoint format's key layout). Opening reads
 * headers only, so loaders, converters and `llava inspect` plan from names, dtypes and shapes.
 */
import fs from "node:fs";
import path from "node:path";
import { containerOf, resolveWeightsInDirectory } from "./checkpoint-files.js";
import { isDirectory, isFile } from "./files.js";
import type { SafetensorsDtype } from "./safetensors-header.js";
import { type IntArray, type RawTensor, WeightStore } from "./safetensors.js";
import { TorchBinStore } from "./torch-bin.js";
import { LlavaError } from "../util/errors.js";

/** A tensor's stored type: a safetensors dtype, or a GGML block type of a GGUF file (Q4_0, Q4_K, IQ2_XS, MXFP4...). */
export type WeightDtype = SafetensorsDtype | `${"Q" | "IQ" | "TQ" | "MX"}${string}`;

/** `D`: the dtypes its tensors can have (a GGUF reader's include GGML block types, which the safetensors converters cannot take). */
export interface WeightReader<D extends WeightDtype = SafetensorsDtype> {
  /** what was opened, for messages */
  readonly source: string;
  /** tensor names, sorted */
  names(): string[];
  has(name: string): boolean;
  info(name: string): { dtype: D; shape: number[] };
  /**
   * The stored bytes; with `into` large enough, they may be read into it (the result then views
   * it, valid until it is read into again) instead of a new buffer.
   */
  readRaw(name: string, into?: Uint8Array): Omit<RawTensor, "dtype"> & { dtype: D };
  readF32(name: string): Float32Array;
  readInt(name: string): IntArray;
  /** the data files behind the reader */
  filePaths(): string[];
  close(): void;
  /** the name `name` has (or would have) in the files, for messages, when the reader renames */
  storedName?(name: string): string;
}

/** Opens a weight file (by its extension) or a checkpoint folder's weights; `what` names the folder's role in errors. */
export function openWeights(pathOrDir: string, what = "model folder"): WeightReader {
  const target = path.resolve(pathOrDir);
  if (!fs.existsSync(target)) throw new LlavaError(`${what} ${target} does not exist`);
  const file = isDirectory(target) ? resolveWeightsInDirectory(target, undefined, what) : target;
  return containerOf(file) === "safetensors" ? WeightStore.open(file) : TorchBinStore.open(file);
}

/** One weight file: `<dir>/<stem>.safetensors` or `<dir>/<stem>.bin`, or null when neither exists. */
export function openWeightFile(dir: string, stem: string): WeightReader | null {
  for (const ext of [".safetensors", ".bin"]) {
    const file = path.join(dir, stem + ext);
    if (isFile(file)) return openWeights(file);
  }
  return null;
}

/** Several readers as one: a name is read from the first that has it; closing closes them all. */
export function overlay<D extends WeightDtype = SafetensorsDtype>(readers: WeightReader<D>[]): WeightReader<D> {
  const find = (name: string) => readers.find((r) => r.has(name)) ?? readers[0];
  return {
    source: readers.map((r) => r.source).join(" + "),
    names: () => [...new Set(readers.flatMap((r) => r.names()))].sort(),
    has: (name) => readers.some((r) => r.has(name)),
    info: (name) => find(name).info(name),
    readRaw: (name, into) => find(name).readRaw(name, into),
    readF32: (name) => find(name).readF32(name),
    readInt: (name) => find(name).readInt(name),
    filePaths: () => readers.flatMap((r) => r.filePaths()),
    close: () => readers.forEach((r) => r.close()),
    storedName: (name) => find(name).storedName?.(name) ?? name,
  };
}

/**
 * A reader whose tensors are known under other names: `rename` maps a stored name to the new
 * one, or to null to hide it; `inverse`, when given, names in messages a tensor that is missing.
 * Two stored names may not map to one new name.
 */
export function renamed<D extends WeightDtype = SafetensorsDtype>(reader: WeightReader<D>, rename: (stored: string) => string | null, inverse?: (name: string) => string | null): WeightReader<D> {
  const map = new Map<string, string>();
  for (const stored of reader.names()) {
    const name = rename(stored);
    if (name === null) continue;
    const other = map.get(name);
    if (other !== undefined) throw new LlavaError(`${reader.source}: tensors "${other}" and "${stored}" both stand for "${name}"`);
    map.set(name, stored);
  }
  const stored = (name: string) => map.get(name) ?? name;
  return {
    storedName: (name) => map.get(name) ?? inverse?.(name) ?? name,
    source: reader.source,
    names: () => [...map.keys()].sort(),
    has: (name) => map.has(name),
    info: (name) => reader.info(stored(name)),
    readRaw: (name, into) => reader.readRaw(stored(name), into),
    readF32: (name) => reader.readF32(stored(name)),
    readInt: (name) => reader.readInt(stored(name)),
    filePaths: () => reader.filePaths(),
    close: () => reader.close(),
  };
}
