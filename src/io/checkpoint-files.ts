/**
 * Finding the weight files of a checkpoint folder and reading shard indexes, shared by the
 * safetensors and PyTorch .bin stores, and the body both stores share: one file or the shards of
 * an index, looked up by name, closed once.
 */
import fs from "node:fs";
import path from "node:path";
import { isFile, readJsonFile } from "./files.js";
import { noSuchTensor } from "./suggest.js";
import { LlavaError } from "../util/errors.js";

/** The two containers of weights, each with its file names. */
export type WeightContainer = "safetensors" | "bin";

const NAMES: Record<WeightContainer, { single: string; indexSuffix: string; extension: string }> = {
  safetensors: { single: "model.safetensors", indexSuffix: ".safetensors.index.json", extension: ".safetensors" },
  bin: { single: "pytorch_model.bin", indexSuffix: ".bin.index.json", extension: ".bin" },
};

/** Files next to weights that are never weights: trainer state. */
const TRAINER_FILES = /^(training_args\.bin|optimizer\.(bin|pt)|scheduler\.pt|rng_state.*\.pth)$/;
/** The partial checkpoints a LoRA or stage-1 run writes: weights, but not a full model's (read by name, see llava/weights.ts). */
const PARTIAL_FILES = /^(adapter_model|non_lora_trainables|mm_projector)\.(bin|safetensors)$/;

/** The container of a weight file, from its name. */
export function containerOf(file: string): WeightContainer {
  return /\.safetensors(\.index\.json)?$/.test(file) ? "safetensors" : "bin";
}

/**
 * The weights inside a checkpoint folder, the one rule every reader uses: transformers' own
 * names first (model.safetensors, its index, pytorch_model.bin, its index), else the only index
 * or the only weight file there (safetensors before .bin), never a LoRA's or projector's file.
 * `only` restricts it to one container, where any weight file is a candidate.
 */
export function resolveWeightsInDirectory(dir: string, only?: WeightContainer, what = "weights directory"): string {
  const kinds: WeightContainer[] = only ? [only] : ["safetensors", "bin"];
  for (const kind of kinds) {
    const n = NAMES[kind];
    for (const f of [n.single, n.single.slice(0, -n.extension.length) + n.indexSuffix]) {
      if (isFile(path.join(dir, f))) return path.join(dir, f);
    }
  }
  let entries: string[];
  try {
    entries = fs.readdirSync(dir).sort();
  } catch {
    entries = [];
  }
  const notWeights = (f: string) => TRAINER_FILES.test(f) || (!only && PARTIAL_FILES.test(f));
  const found: string[] = [];
  for (const kind of kinds) {
    const n = NAMES[kind];
    const indexes = entries.filter((f) => f.endsWith(n.indexSuffix) && isFile(path.join(dir, f)));
    const files = entries.filter((f) => f.endsWith(n.extension) && !notWeights(f) && isFile(path.join(dir, f)));
    if (indexes.length === 1) return path.join(dir, indexes[0]);
    if (indexes.length === 0 && files.length === 1) return path.join(dir, files[0]);
    found.push(...indexes, ...files);
  }
  const side = entries.filter((f) => notWeights(f) && PARTIAL_FILES.test(f));
  const expected = kinds.map((k) => `${NAMES[k].single}, ${NAMES[k].single.slice(0, -NAMES[k].extension.length)}${NAMES[k].indexSuffix}`).join(", ");
  const other = kinds.map((k) => `*${NAMES[k].extension}`).join(" or ");
  throw new LlavaError(
    `${what} ${dir}: ` +
      (found.length === 0
        ? `no model weights (${expected} or other ${other} file)` + (side.length ? `; ${side.join(", ")} belong to a LoRA or projector-only checkpoint, which needs --model-base` : "")
        : `no ${expected}, and several candidates (${found.join(", ")}); pass the file to use`),
  );
}

/** Whether a folder holds full model weights (not only a LoRA adapter or a projector). */
export function hasModelWeights(dir: string): boolean {
  try {
    resolveWeightsInDirectory(dir);
    return true;
  } catch {
    return false;
  }
}

/** Reads `weight_map` from a shard index, checking its shape and the shard names. */
export function readWeightMap(indexFile: string): Map<string, string> {
  const json = readJsonFile(indexFile, "shard index");
  const fail = (msg: string): never => {
    throw new LlavaError(`shard index ${indexFile}: ${msg}`);
  };
  if (typeof json !== "object" || json === null || Array.isArray(json)) fail("not a JSON object");
  const map = (json as Record<string, unknown>).weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) fail(`missing "weight_map" object`);
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard === "") fail(`weight_map entry for "${name}" is not a file name`);
    const s = shard as string;
    // Shards sit next to the index; refuse paths that would escape the checkpoint directory.
    if (path.isAbsolute(s) || s.split(/[\\/]/).includes("..")) fail(`weight_map entry for "${name}" ("${s}") leaves the checkpoint directory`);
    out.set(name, s);
  }
  if (out.size === 0) fail("weight_map is empty");
  return out;
}

/**
 * The shards of a shard index with the tensor names each holds, after checking that every
 * shard file exists (before any of them is opened).
 */
export function shardsOf(indexFile: string): Map<string, string[]> {
  const dir = path.dirname(indexFile);
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of readWeightMap(indexFile)) {
    const list = byShard.get(shard) ?? [];
    list.push(name);
    byShard.set(shard, list);
  }
  for (const [shard, names] of byShard) {
    if (!isFile(path.join(dir, shard))) {
      throw new LlavaError(
        `shard index ${indexFile}: names shard file "${shard}" (for ${names.length} tensors, e.g. "${names[0]}") ` +
          `but ${path.join(dir, shard)} does not exist`,
      );
    }
  }
  return byShard;
}

/** One open data file of a store. */
export interface OpenDataFile {
  path: string;
  fd: number;
}

/** A data file's tensors as a container format locates them. */
export interface OpenedDataFile<L> {
  file: OpenDataFile;
  tensors: Map<string, L>;
}

/** Elements converted per step when widening to float32, bounding the temporary buffer. */
export const CONVERT_CHUNK_ELEMENTS = 1 << 20;

/**
 * Opens a weight file, every shard of a `*.index.json` with the tensors the index assigns to
 * it, or the weights a folder holds in `container`; on any error the files already opened are
 * closed. `file` is what was opened: the data file or the index.
 */
export function openDataFiles<L>(
  pathOrDir: string, container: WeightContainer, openOne: (file: string) => OpenedDataFile<L>,
): { file: string; files: OpenDataFile[]; tensors: Map<string, L> } {
  const target = path.resolve(pathOrDir);
  if (!fs.existsSync(target)) throw new LlavaError(`weights ${target}: file not found`);
  const file = fs.statSync(target).isDirectory() ? resolveWeightsInDirectory(target, container) : target;
  if (!file.endsWith(".json")) {
    const opened = openOne(file);
    return { file, files: [opened.file], tensors: opened.tensors };
  }
  const dir = path.dirname(file);
  const files: OpenDataFile[] = [];
  const tensors = new Map<string, L>();
  try {
    for (const [shard, names] of shardsOf(file)) {
      const opened = openOne(path.join(dir, shard));
      files.push(opened.file);
      for (const name of names) {
        const located = opened.tensors.get(name);
        if (located === undefined) throw new LlavaError(`shard index ${file}: says tensor "${name}" is in ${shard}, but that file has no such tensor`);
        tensors.set(name, located);
      }
    }
  } catch (err) {
    for (const f of files) fs.closeSync(f.fd);
    throw err;
  }
  return { file, files, tensors };
}

/** What every weight store shares: names, lookup, the files behind it, closing. */
export abstract class DataFileStore<L> {
  private closed = false;

  protected constructor(
    /** What was opened: the file, or the index of a sharded checkpoint. */
    readonly source: string,
    protected readonly files: OpenDataFile[],
    protected readonly tensors: Map<string, L>,
  ) {}

  /** Tensor names, sorted. */
  names(): string[] {
    return [...this.tensors.keys()].sort();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Paths of the data files behind this store. */
  filePaths(): string[] {
    return this.files.map((f) => f.path);
  }

  /** Closes the file handles; later reads fail. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.files) fs.closeSync(f.fd);
  }

  protected locate(name: string): L {
    if (this.closed) throw new LlavaError(`weights ${this.source}: already closed`);
    const found = this.tensors.get(name);
    if (found !== undefined) return found;
    throw noSuchTensor(this.source, name, this.tensors);
  }
}
