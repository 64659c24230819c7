/**
 * Safetensors writers: a single file byte-identical to what the Python library writes for the
 * same tensors and metadata, and sharded checkpoints laid out like transformers' `save_pretrained`
 * (huggingface_hub `split_state_dict_into_shards_factory`). Every file is written atomically.
 */
import fs from "node:fs";
import path from "node:path";
import { LlavaError } from "../util/errors.js";
import { dumpJson, fromJs } from "./python.js";
import { f32ToBf16Array, f32ToF16Array } from "../tensor/dtypes.js";
import { writeFileAtomic, writeFully } from "./files.js";
import { buildHeader, dtypeSize, shapeNumel, type SafetensorsDtype } from "./safetensors-header.js";

export type WritableDtype = Extract<
  SafetensorsDtype,
  "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL"
>;

export interface TensorToWrite {
  name: string;
  dtype: WritableDtype;
  shape: number[];
  /**
   * F32: Float32Array. F64: Float64Array. F16/BF16: Uint16Array of raw bits, or a Float32Array that
   * is rounded to nearest even on the way out. I64: BigInt64Array. I32: Int32Array. I16: Int16Array.
   * I8: Int8Array. U8/BOOL: Uint8Array.
   */
  data: Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;
}

/** Elements converted per write when narrowing float32 to F16/BF16. */
const CONVERT_CHUNK_ELEMENTS = 1 << 20;

function expectedArrayName(t: TensorToWrite): string {
  switch (t.dtype) {
    case "F32":
      return "Float32Array";
    case "F64":
      return "Float64Array";
    case "F16":
    case "BF16":
      return "Uint16Array (bits) or Float32Array";
    case "I64":
      return "BigInt64Array";
    case "I32":
      return "Int32Array";
    case "I16":
      return "Int16Array";
    case "I8":
      return "Int8Array";
    case "U8":
    case "BOOL":
      return "Uint8Array";
  }
}

function dataMatchesDtype(t: TensorToWrite): boolean {
  const d = t.data;
  switch (t.dtype) {
    case "F32":
      return d instanceof Float32Array;
    case "F64":
      return d instanceof Float64Array;
    case "F16":
    case "BF16":
      return d instanceof Uint16Array || d instanceof Float32Array;
    case "I64":
      return d instanceof BigInt64Array;
    case "I32":
      return d instanceof Int32Array;
    case "I16":
      return d instanceof Int16Array;
    case "I8":
      return d instanceof Int8Array;
    case "U8":
    case "BOOL":
      return d instanceof Uint8Array;
  }
}

function validateTensors(file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  const fail = (msg: string): never => {
    throw new LlavaError(`cannot write ${file}: ${msg}`);
  };
  const seen = new Set<string>();
  for (const t of tensors) {
    if (typeof t.name !== "string" || t.name === "") fail("a tensor has an empty name");
    if (t.name === "__metadata__") fail(`"__metadata__" is reserved and cannot name a tensor`);
    if (seen.has(t.name)) fail(`tensor "${t.name}" appears twice`);
    seen.add(t.name);
    if (!["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"].includes(t.dtype)) {
      fail(`tensor "${t.name}": unsupported dtype "${String(t.dtype)}"`);
    }
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      fail(`tensor "${t.name}": shape must be a list of non-negative integers`);
    }
    if (!dataMatchesDtype(t)) fail(`tensor "${t.name}": dtype ${t.dtype} needs a ${expectedArrayName(t)}`);
    const numel = shapeNumel(t.shape);
    if (t.data.length !== numel) {
      fail(`tensor "${t.name}": shape [${t.shape.join(", ")}] has ${numel} elements but data has ${t.data.length}`);
    }
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") fail(`metadata value for "${k}" must be a string`);
    }
  }
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function writeTensorData(fd: number, t: TensorToWrite): void {
  if ((t.dtype === "F16" || t.dtype === "BF16") && t.data instanceof Float32Array) {
    const src = t.data;
    const convert = t.dtype === "F16" ? f32ToF16Array : f32ToBf16Array;
    const chunk = new Uint16Array(Math.min(src.length, CONVERT_CHUNK_ELEMENTS));
    for (let i = 0; i < src.length; i += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, src.length - i));
      convert(src.subarray(i, i + part.length), part);
      writeFully(fd, bytesOf(part));
    }
    return;
  }
  writeFully(fd, bytesOf(t.data));
}

/**
 * Writes `tensors` to `file` in safetensors format, atomically (`file.partial`, fsync, rename).
 * Tensor order in the file and header follows the Python library (descending dtype alignment,
 * then name), so output is byte-identical to `safetensors.torch.save_file` for the same inputs
 * (with at most one metadata key; the library writes several in hash-map order). Pass
 * `{ format: "pt" }` as metadata for files transformers will load.
 */
export function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): void {
  validateTensors(file, tensors, metadata);
  const { header, layout } = buildHeader(tensors, metadata);
  writeFileAtomic(file, (fd) => {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    writeFully(fd, len);
    writeFully(fd, header);
    for (const { tensor } of layout) writeTensorData(fd, tensor);
  });
}

export interface ShardedWriteOptions {
  /** Largest shard in bytes of tensor data (a bigger single tensor gets a shard of its own);
   * a number or a size like "5GB" / "2GiB". Default "5GB", transformers' default. */
  maxShardBytes?: number | string;
  /** File name stem: `model` gives `model-00001-of-00002.safetensors` and `model.safetensors.index.json`. */
  baseName?: string;
  /** `__metadata__` of every shard; default `{ format: "pt" }` as save_pretrained writes. */
  metadata?: Record<string, string>;
  /** If given, also recorded as `metadata.total_parameters` in the index (newer transformers do). */
  totalParameters?: number;
}

export interface ShardedWriteResult {
  /** Weight files written, in shard order. */
  files: string[];
  /** The index file, or null when everything fit in one `<baseName>.safetensors`. */
  indexFile: string | null;
  /** Sum of tensor data bytes (the index's `metadata.total_size`). */
  totalSize: number;
}

/** Parses "5GB", "500MB", "2GiB", "1000" like huggingface_hub's `parse_size_to_int`. */
export function parseSize(size: number | string): number {
  if (typeof size === "number") {
    if (!Number.isSafeInteger(size) || size <= 0) throw new LlavaError(`shard size must be a positive integer, got ${size}`);
    return size;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)?\s*$/i.exec(size);
  if (m === null) throw new LlavaError(`shard size "${size}" is not a size like "5GB", "500MB" or "2GiB"`);
  const units: Record<string, number> = {
    KB: 1e3,
    MB: 1e6,
    GB: 1e9,
    TB: 1e12,
    KIB: 2 ** 10,
    MIB: 2 ** 20,
    GIB: 2 ** 30,
    TIB: 2 ** 40,
  };
  const value = Math.floor(Number(m[1]) * (m[2] === undefined ? 1 : units[m[2].toUpperCase()]));
  if (value <= 0) throw new LlavaError(`shard size "${size}" must be positive`);
  return value;
}

/**
 * Splits tensors into shards in the given order exactly like huggingface_hub: a tensor larger than
 * the limit becomes its own shard (placed before the shard being filled); otherwise a new shard
 * starts when the next tensor would push the current one past the limit.
 */
export function planShards<T extends { dtype: WritableDtype; shape: number[] }>(tensors: readonly T[], maxBytes: number): T[][] {
  const shards: T[][] = [];
  let current: T[] = [];
  let currentSize = 0;
  for (const t of tensors) {
    const size = shapeNumel(t.shape) * dtypeSize(t.dtype);
    if (size > maxBytes) {
      shards.push([t]);
      continue;
    }
    if (currentSize + size > maxBytes) {
      shards.push(current);
      current = [];
      currentSize = 0;
    }
    current.push(t);
    currentSize += size;
  }
  if (current.length > 0) shards.push(current);
  return shards;
}

/**
 * Writes a checkpoint the way transformers' `save_pretrained` does: one `<base>.safetensors` when
 * everything fits under `maxShardBytes`, else `<base>-00001-of-0000N.safetensors` shards plus
 * `<base>.safetensors.index.json` (`json.dumps(index, indent=2, sort_keys=True) + "\n"`). Shard
 * files are written first and the index last, each atomically. Weight files from an earlier save
 * with the same base name that this save does not replace are removed, so a stale single file can
 * never shadow a new index (or the reverse).
 */
export function writeShardedSafetensors(
  dir: string,
  tensors: readonly TensorToWrite[],
  options: ShardedWriteOptions = {},
): ShardedWriteResult {
  const baseName = options.baseName ?? "model";
  const maxBytes = parseSize(options.maxShardBytes ?? "5GB");
  const metadata = options.metadata ?? { format: "pt" };
  const indexName = `${baseName}.safetensors.index.json`;
  validateTensors(path.join(dir, indexName), tensors, metadata);
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new LlavaError(`cannot create directory ${dir}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const totalSize = tensors.reduce((s, t) => s + shapeNumel(t.shape) * dtypeSize(t.dtype), 0);
  const shards = planShards(tensors, maxBytes);

  if (shards.length <= 1) {
    const file = path.join(dir, `${baseName}.safetensors`);
    writeSafetensors(file, tensors, metadata);
    removeStaleWeights(dir, baseName, new Set([path.basename(file)]));
    return { files: [file], indexFile: null, totalSize };
  }

  const pad = (i: number): string => String(i).padStart(5, "0");
  const names = shards.map((_, i) => `${baseName}-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    writeSafetensors(path.join(dir, names[i]), shard, metadata);
    for (const t of shard) weightMap[t.name] = names[i];
  });
  const indexMeta: Record<string, number> = { total_size: totalSize };
  if (options.totalParameters !== undefined) indexMeta.total_parameters = options.totalParameters;
  const indexText = pythonJsonDumps({ metadata: indexMeta, weight_map: weightMap }) + "\n";
  const indexFile = path.join(dir, indexName);
  writeFileAtomic(indexFile, (fd) => writeFully(fd, Buffer.from(indexText, "utf8")));
  removeStaleWeights(dir, baseName, new Set([...names, indexName]));
  return { files: names.map((n) => path.join(dir, n)), indexFile, totalSize };
}

/** Deletes `<base>.safetensors`, `<base>-NNNNN-of-NNNNN.safetensors` and the index unless kept. */
function removeStaleWeights(dir: string, baseName: string, keep: Set<string>): void {
  const escaped = baseName.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const ours = new RegExp(`^${escaped}(-\\d{5}-of-\\d{5})?\\.safetensors(\\.index\\.json)?$`);
  for (const f of fs.readdirSync(dir)) {
    if (ours.test(f) && !keep.has(f)) fs.rmSync(path.join(dir, f), { force: true });
  }
}

/** Python's `json.dumps(value, indent=2, sort_keys=True)` of plain JSON data, as transformers writes a shard index. */
export function pythonJsonDumps(value: unknown): string {
  return dumpJson(fromJs(value), { indent: 2, sortKeys: true });
}
