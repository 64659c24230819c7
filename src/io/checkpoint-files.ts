/**
 * Finding the weight files of a checkpoint folder and reading shard indexes, shared by the
 * safetensors and PyTorch .bin stores.
 */
import fs from "node:fs";
import path from "node:path";
import { isFile, readJsonFile } from "./files.js";
import { LlavaError } from "../util/errors.js";

export interface WeightFileNames {
  /** the single-file name transformers looks for first, e.g. "model.safetensors" */
  single: string;
  /** the shard index suffix, e.g. ".safetensors.index.json" */
  indexSuffix: string;
  /** the extension of weight files, e.g. ".safetensors" */
  extension: string;
  /** files with that extension that are not weights (e.g. training_args.bin) */
  ignore?: ReadonlySet<string>;
}

/**
 * The weights inside a checkpoint folder: the single file, else its shard index (as
 * transformers prefers), else the only index or the only weight file there.
 */
export function resolveWeightsInDirectory(dir: string, names: WeightFileNames): string {
  const single = path.join(dir, names.single);
  if (isFile(single)) return single;
  const stem = names.single.slice(0, -names.extension.length);
  const index = path.join(dir, stem + names.indexSuffix);
  if (isFile(index)) return index;
  let entries: string[];
  try {
    entries = fs.readdirSync(dir).sort();
  } catch {
    entries = [];
  }
  const indexes = entries.filter((f) => f.endsWith(names.indexSuffix) && isFile(path.join(dir, f)));
  if (indexes.length === 1) return path.join(dir, indexes[0]);
  const files = entries.filter((f) => f.endsWith(names.extension) && !names.ignore?.has(f) && isFile(path.join(dir, f)));
  if (indexes.length === 0 && files.length === 1) return path.join(dir, files[0]);
  const found = [...indexes, ...files];
  throw new LlavaError(
    `weights directory ${dir}: ` +
      (found.length === 0
        ? `no ${names.single}, ${stem}${names.indexSuffix} or other *${names.extension} file`
        : `no ${names.single} or ${stem}${names.indexSuffix}, and several candidates (${found.join(", ")}); ` +
          "pass the file to use"),
  );
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
