/** Options, results and small helpers shared by the conversions. */
import fs from "node:fs";
import path from "node:path";
import { isFile } from "../io/files.js";
import { parseSize } from "../io/safetensors-write.js";
import { type ProgressSink, silentProgress } from "./progress.js";
import type { Interrupt } from "../io/output.js";
import { byteSize, type PlannedTensor, writeShardedStreaming } from "./shard-writer.js";
import type { Part } from "../llava/keys.js";
export { readModelConfig } from "../llava/spec.js";
import { naturalCompare } from "./natural-order.js";

export interface ConvertOptions {
  /** the folder (or file, for extract-projector) to create */
  out: string;
  /** replace an existing non-empty output */
  force?: boolean;
  /** largest weight shard, like save_pretrained's max_shard_size (default "5GB") */
  maxShardSize?: string | number;
  progress?: ProgressSink;
}

export interface ConvertResult {
  out: string;
  /** every file written, relative to `out` (or its name, for a single file) */
  files: string[];
  tensors: number;
  bytes: number;
  /** what the user should know about choices made on the way */
  notes: string[];
}

export const DEFAULT_MAX_SHARD_SIZE = "5GB";

/** Rejects a bad --max-shard-size before any work is done. */
export function checkShardSize(opts: ConvertOptions): void {
  parseSize(opts.maxShardSize ?? DEFAULT_MAX_SHARD_SIZE);
}

export function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + "\n");
}

/** Copies a file as an ordinary writable file (inputs may be read-only, like hub caches). */
export function copyFile(src: string, dst: string): void {
  fs.copyFileSync(src, dst);
  fs.chmodSync(dst, 0o644);
}

/** Copies side files that need no change (generation settings). */
export function copyIfPresent(srcDir: string, outDir: string, names: string[]): void {
  for (const n of names) if (isFile(path.join(srcDir, n))) copyFile(path.join(srcDir, n), path.join(outDir, n));
}

const PART_ORDER: Record<Part, number> = { llm: 0, projector: 1, vision: 2, newline: 3 };

/** The order transformers' state dicts list a LLaVA's tensors in: LLM, projector, tower, newline. */
export function sortPlan(plan: Array<PlannedTensor & { part: Part }>): PlannedTensor[] {
  return [...plan].sort((a, b) => PART_ORDER[a.part] - PART_ORDER[b.part] || naturalCompare(a.name, b.name));
}

/** Writes planned weight groups (a file name stem per folder) with one progress count over all of them. */
export async function writeWeightGroups(
  groups: Array<{ dir: string; tensors: PlannedTensor[] }>, opts: ConvertOptions, interrupt: Interrupt,
): Promise<{ files: string[]; tensors: number; bytes: number }> {
  const progress = opts.progress ?? silentProgress;
  const tensors = groups.reduce((n, g) => n + g.tensors.length, 0);
  const bytes = groups.reduce((n, g) => n + g.tensors.reduce((s, t) => s + byteSize(t), 0), 0);
  progress.start(tensors, bytes);
  const files: string[] = [];
  for (const g of groups) {
    fs.mkdirSync(g.dir, { recursive: true });
    files.push(...(await writeShardedStreaming(g.dir, g.tensors, opts.maxShardSize ?? DEFAULT_MAX_SHARD_SIZE, { progress, interrupt })));
  }
  progress.finish();
  return { files, tensors, bytes };
}

/** Every file under `dir`, relative to it, sorted. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name), path.join(rel, e.name));
      else out.push(path.join(rel, e.name));
    }
  };
  walk(dir, "");
  return out.sort();
}
