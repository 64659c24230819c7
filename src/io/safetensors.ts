/**
 * Lazy reader for safetensors checkpoints: one file, a directory with `model.safetensors`, or a
 * sharded checkpoint described by `*.safetensors.index.json`. Opening reads and validates headers
 * only; each tensor is read from disk at its offset when asked for, so a 7B model never has to sit
 * in memory as a whole file.
 *
 * The writers live in safetensors-write.ts and are re-exported here.
 */
import fs from "node:fs";
import { LlavaError } from "../util/errors.js";
import { bf16ToF32Array, f16ToF32Array, f64ToF32Array } from "../tensor/dtypes.js";
import { openForRead, readFully } from "./files.js";
import { CONVERT_CHUNK_ELEMENTS, DataFileStore, type OpenDataFile, type OpenedDataFile, openDataFiles } from "./checkpoint-files.js";
import {
  MAX_HEADER_BYTES,
  dtypeSize,
  shapeNumel,
  validateHeader,
  type HeaderEntry,
  type SafetensorsDtype,
} from "./safetensors-header.js";

export { writeSafetensors, writeShardedSafetensors } from "./safetensors-write.js";
export type { TensorToWrite, WritableDtype, ShardedWriteOptions, ShardedWriteResult } from "./safetensors-write.js";
export type { SafetensorsDtype } from "./safetensors-header.js";

/** Where one tensor lives on disk. */
export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute path of the file holding the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  byteOffset: number;
  byteLength: number;
}

export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** A fresh buffer of exactly the tensor's bytes (its own ArrayBuffer, offset 0, so any view is aligned). */
  bytes: Uint8Array;
}

/** Typed array for each integer dtype, as returned by `readInt`. */
export type IntArray =
  | BigInt64Array
  | BigUint64Array
  | Int32Array
  | Uint32Array
  | Int16Array
  | Uint16Array
  | Int8Array
  | Uint8Array;

/** The typed array class that holds each integer dtype (readInt of both weight stores). */
export const INT_ARRAYS: Partial<Record<SafetensorsDtype, { new (length: number): IntArray; new (buffer: ArrayBuffer): IntArray }>> = {
  BOOL: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  I16: Int16Array,
  U16: Uint16Array,
  I32: Int32Array,
  U32: Uint32Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
};

interface OpenFile extends OpenDataFile {
  dataStart: number;
  metadata: Record<string, string>;
}

interface Located {
  file: OpenFile;
  entry: HeaderEntry;
}


export class WeightStore extends DataFileStore<Located> {
  /**
   * Opens a `.safetensors` file, a `*.safetensors.index.json` shard index, or a directory holding
   * `model.safetensors` or a shard index. Reads headers only.
   */
  static open(pathOrDir: string): WeightStore {
    const { file, files, tensors } = openDataFiles(pathOrDir, "safetensors", openSafetensorsFile);
    return new WeightStore(file, files, tensors);
  }

  /** `__metadata__` of the (first) file, e.g. `{ format: "pt" }`. */
  metadata(): Record<string, string> {
    return { ...((this.files[0] as OpenFile | undefined)?.metadata ?? {}) };
  }

  info(name: string): TensorInfo {
    const { file, entry } = this.locate(name);
    return {
      dtype: entry.dtype,
      shape: [...entry.shape],
      file: file.path,
      byteOffset: file.dataStart + entry.begin,
      byteLength: entry.end - entry.begin,
    };
  }

  /** The tensor's bytes, unconverted (into `into` when it is large enough: see WeightReader.readRaw). */
  readRaw(name: string, into?: Uint8Array): RawTensor {
    const { file, entry } = this.locate(name);
    const n = entry.end - entry.begin;
    const bytes = into && into.length >= n ? into.subarray(0, n) : new Uint8Array(n);
    readFully(file.fd, bytes, file.dataStart + entry.begin, file.path);
    return { dtype: entry.dtype, shape: [...entry.shape], bytes };
  }

  /** A floating-point tensor as float32 (F16 and BF16 exactly, F64 rounded to nearest). */
  readF32(name: string): Float32Array {
    const { file, entry } = this.locate(name);
    const numel = shapeNumel(entry.shape);
    const start = file.dataStart + entry.begin;
    const out = new Float32Array(numel);
    switch (entry.dtype) {
      case "F32":
        readFully(file.fd, new Uint8Array(out.buffer), start, file.path);
        return out;
      case "F16":
      case "BF16": {
        const chunk = new Uint16Array(Math.min(numel, CONVERT_CHUNK_ELEMENTS));
        const convert = entry.dtype === "F16" ? f16ToF32Array : bf16ToF32Array;
        for (let i = 0; i < numel; i += chunk.length) {
          const part = chunk.subarray(0, Math.min(chunk.length, numel - i));
          readFully(file.fd, new Uint8Array(part.buffer, 0, part.byteLength), start + i * 2, file.path);
          convert(part, out.subarray(i, i + part.length));
        }
        return out;
      }
      case "F64": {
        const chunk = new Float64Array(Math.min(numel, CONVERT_CHUNK_ELEMENTS));
        for (let i = 0; i < numel; i += chunk.length) {
          const part = chunk.subarray(0, Math.min(chunk.length, numel - i));
          readFully(file.fd, new Uint8Array(part.buffer, 0, part.byteLength), start + i * 8, file.path);
          f64ToF32Array(part, out.subarray(i, i + part.length));
        }
        return out;
      }
      default:
        throw new LlavaError(
          `${file.path}: tensor "${name}" has integer dtype ${entry.dtype}; read it with readInt, not readF32`,
        );
    }
  }

  /** An integer or bool tensor as the matching typed array (BOOL and U8 -> Uint8Array). */
  readInt(name: string): IntArray {
    const { file, entry } = this.locate(name);
    const ctor = INT_ARRAYS[entry.dtype];
    if (ctor === undefined) {
      throw new LlavaError(
        `${file.path}: tensor "${name}" has floating-point dtype ${entry.dtype}; read it with readF32, not readInt`,
      );
    }
    const numel = shapeNumel(entry.shape);
    const out = new ctor(numel);
    readFully(file.fd, new Uint8Array(out.buffer), file.dataStart + entry.begin, file.path);
    return out;
  }

}

/** Opens one file and validates its header without reading any tensor data. */
function openSafetensorsFile(file: string): OpenedDataFile<Located> {
  const fd = openForRead(file, "safetensors file");
  try {
    const size = fs.fstatSync(fd).size;
    const fail = (msg: string): never => {
      throw new LlavaError(`safetensors file ${file}: ${msg}`);
    };
    if (size < 8) fail(`only ${size} bytes long; a safetensors file starts with an 8-byte header length`);
    const lenBytes = Buffer.alloc(8);
    readFully(fd, lenBytes, 0, file);
    const headerLen = lenBytes.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) {
      fail(`header length ${headerLen} is over the ${MAX_HEADER_BYTES}-byte limit: not a safetensors file, or corrupt`);
    }
    const n = Number(headerLen);
    if (8 + n > size) fail(`header length ${n} runs past the end of the ${size}-byte file: truncated or not safetensors`);
    const headerBytes = Buffer.alloc(n);
    readFully(fd, headerBytes, 8, file);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
    } catch {
      return fail("header is not valid UTF-8: not a safetensors file, or corrupt");
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      return fail(`header is not valid JSON (${err instanceof Error ? err.message : String(err)})`);
    }
    const dataStart = 8 + n;
    const { metadata, entries } = validateHeader(json, size - dataStart, file);
    const opened: OpenFile = { path: file, fd, dataStart, metadata };
    return { file: opened, tensors: new Map([...entries].map(([name, entry]) => [name, { file: opened, entry }])) };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/** Bytes per element of a safetensors dtype. */
export function safetensorsDtypeSize(dtype: SafetensorsDtype): number {
  return dtypeSize(dtype);
}
