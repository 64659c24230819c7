/**
 * Reader for GGUF, llama.cpp's model file (versions 2 and 3, little-endian):
 *
 *   "GGUF" u32 version, u64 tensor count, u64 metadata count,
 *   metadata: (string key, u32 value type, value)*,
 *   tensor infos: (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)*,
 *   padding to `general.alignment` (default 32), then the data section; each tensor's offset is
 *   relative to it and a multiple of the alignment. A string is a u64 byte count and UTF-8 bytes;
 *   an array is a u32 item type, a u64 count and the items (arrays may nest).
 *
 * Opening reads and validates the header only; tensor data is read (from a file) or viewed (in a
 * buffer) when asked for. Every count is checked against the bytes left before anything is
 * allocated for it, so a corrupt or hostile file fails with one line instead of exhausting memory.
 */
import fs from "node:fs";
import path from "node:path";
import { describeFsError, openForRead, readFully } from "./files.js";
import { type GgmlType, ggmlBytes, ggmlTypeById } from "../tensor/ggml-types.js";
import { LlavaError } from "../util/errors.js";

export const GGUF_MAGIC = "GGUF";
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS */
const MAX_DIMS = 4;
/** arrays of arrays deeper than this are refused (no real file nests at all beyond one level) */
const MAX_NESTING = 8;

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** Bytes of each fixed-size value type (strings and arrays: their smallest encoding). */
const VALUE_BYTES: Record<GgufValueType, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 9: 12, 10: 8, 11: 8, 12: 8 };

/** A metadata value: integers that fit a double as numbers, larger 64-bit ones as bigints. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufEntry {
  type: GgufValueType;
  /** an array's item type */
  itemType?: GgufValueType;
  value: GgufValue;
}

export interface GgufTensorInfo {
  name: string;
  type: GgmlType;
  /** ggml's ne: innermost (contiguous) dimension first */
  ne: number[];
  /** the shape as PyTorch writes it: outermost first (ne reversed) */
  shape: number[];
  /** offset in the data section */
  offset: number;
  byteLength: number;
}

/** Where header bytes come from: a file read in windows, or a buffer. */
interface ByteSource {
  readonly size: number;
  /** `n` bytes at `pos` (pos + n <= size); valid until the next call */
  bytes(pos: number, n: number): Uint8Array;
}

const WINDOW = 1 << 20;

function fileSource(fd: number, size: number, file: string): ByteSource {
  let start = 0;
  let window = new Uint8Array(0);
  return {
    size,
    bytes(pos, n) {
      if (pos < start || pos + n > start + window.length) {
        const len = Math.min(Math.max(n, WINDOW), size - pos);
        if (window.length < len) window = new Uint8Array(len);
        window = window.subarray(0, len);
        readFully(fd, window, pos, file);
        start = pos;
      }
      return window.subarray(pos - start, pos - start + n);
    },
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Reads the header's values in order, failing on anything that runs past the end. */
class Cursor {
  pos = 0;
  constructor(
    private readonly src: ByteSource,
    private readonly fail: (msg: string) => never,
  ) {}

  get left(): number {
    return this.src.size - this.pos;
  }

  private view(n: number, what: string): DataView {
    if (n > this.left) this.fail(`truncated: ${what} at byte ${this.pos} needs ${n} bytes, ${this.left} left`);
    const b = this.src.bytes(this.pos, n);
    this.pos += n;
    return new DataView(b.buffer, b.byteOffset, n);
  }

  u32(what: string): number {
    return this.view(4, what).getUint32(0, true);
  }

  /** a u64 count or size: must fit a double */
  u64(what: string): number {
    const v = this.view(8, what).getBigUint64(0, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is absurd: the file is corrupt`);
    return Number(v);
  }

  /** a count of items of at least `itemBytes` each: no more than the bytes left can hold */
  count(what: string, itemBytes: number): number {
    const n = this.u64(what);
    if (n * itemBytes > this.left) this.fail(`${what} ${n} cannot fit in the ${this.left} bytes left: truncated or corrupt`);
    return n;
  }

  string(what: string): string {
    const n = this.count(`length of ${what}`, 1);
    const b = this.src.bytes(this.pos, n);
    this.pos += n;
    try {
      return utf8.decode(b);
    } catch {
      return this.fail(`${what} is not valid UTF-8`);
    }
  }

  value(type: number, what: string, depth = 0): GgufEntry {
    switch (type) {
      case GgufValueType.UINT8: return { type, value: this.view(1, what).getUint8(0) };
      case GgufValueType.INT8: return { type, value: this.view(1, what).getInt8(0) };
      case GgufValueType.UINT16: return { type, value: this.view(2, what).getUint16(0, true) };
      case GgufValueType.INT16: return { type, value: this.view(2, what).getInt16(0, true) };
      case GgufValueType.UINT32: return { type, value: this.view(4, what).getUint32(0, true) };
      case GgufValueType.INT32: return { type, value: this.view(4, what).getInt32(0, true) };
      case GgufValueType.FLOAT32: return { type, value: this.view(4, what).getFloat32(0, true) };
      case GgufValueType.FLOAT64: return { type, value: this.view(8, what).getFloat64(0, true) };
      case GgufValueType.UINT64: return { type, value: small(this.view(8, what).getBigUint64(0, true)) };
      case GgufValueType.INT64: return { type, value: small(this.view(8, what).getBigInt64(0, true)) };
      case GgufValueType.BOOL: {
        const b = this.view(1, what).getUint8(0);
        if (b > 1) this.fail(`${what}: bool value ${b} is neither 0 nor 1`);
        return { type, value: b === 1 };
      }
      case GgufValueType.STRING: return { type, value: this.string(what) };
      case GgufValueType.ARRAY: {
        if (depth >= MAX_NESTING) this.fail(`${what}: arrays nested more than ${MAX_NESTING} deep`);
        const itemType = this.u32(`item type of ${what}`);
        if (!(itemType in VALUE_BYTES)) this.fail(`${what}: unknown array item type ${itemType} (GGUF defines 0-12)`);
        const n = this.count(`item count of ${what}`, VALUE_BYTES[itemType as GgufValueType]);
        const items: GgufValue[] = new Array(n);
        for (let i = 0; i < n; i++) items[i] = this.value(itemType, what, depth + 1).value;
        return { type, itemType, value: items };
      }
      default:
        return this.fail(`${what}: unknown value type ${type} (GGUF defines 0-12)`);
    }
  }
}

function small(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

export class GgufFile {
  private constructor(
    /** the file, or what the buffer is, for messages */
    readonly source: string,
    readonly version: number,
    readonly metadata: ReadonlyMap<string, GgufEntry>,
    /** tensor infos in file order */
    readonly tensors: ReadonlyMap<string, GgufTensorInfo>,
    readonly alignment: number,
    /** absolute offset of the data section */
    readonly dataStart: number,
    private readonly data: { fd: number } | { buffer: Uint8Array },
  ) {}

  /** Opens a .gguf file and validates its header; no tensor data is read. */
  static open(file: string): GgufFile {
    const abs = path.resolve(file);
    const fd = openForRead(abs, "GGUF file");
    try {
      const size = fs.fstatSync(fd).size;
      return GgufFile.parse(fileSource(fd, size, abs), abs, { fd });
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** A GGUF held in memory; tensor data are views of `bytes`. */
  static fromBytes(bytes: Uint8Array, source = "GGUF buffer"): GgufFile {
    const src: ByteSource = { size: bytes.length, bytes: (pos, n) => bytes.subarray(pos, pos + n) };
    return GgufFile.parse(src, source, { buffer: bytes });
  }

  private static parse(src: ByteSource, source: string, data: { fd: number } | { buffer: Uint8Array }): GgufFile {
    const fail = (msg: string): never => {
      throw new LlavaError(`GGUF file ${source}: ${msg}`);
    };
    const c = new Cursor(src, fail);
    if (src.size < 4 || String.fromCharCode(...src.bytes(0, 4)) !== GGUF_MAGIC) fail(`does not start with "GGUF": not a GGUF file`);
    c.pos = 4;
    const version = c.u32("version");
    if (version !== 2 && version !== 3) {
      // a big-endian file's small version number reads, little-endian, as a multiple of 2^24
      fail(version === 1 ? "GGUF version 1 is not supported (versions 2 and 3 are)"
        : version % 2 ** 24 === 0 ? `version field reads ${version}: a big-endian GGUF, which is not supported`
        : `unknown GGUF version ${version} (versions 2 and 3 are supported)`);
    }
    const tensorCount = c.count("tensor count", 24);
    const kvCount = c.count("metadata count", 13);
    const metadata = new Map<string, GgufEntry>();
    for (let i = 0; i < kvCount; i++) {
      const key = c.string(`key of metadata entry ${i}`);
      if (metadata.has(key)) fail(`metadata key "${key}" appears twice`);
      metadata.set(key, c.value(c.u32(`value type of "${key}"`), `metadata "${key}"`));
    }
    const alignEntry = metadata.get("general.alignment");
    let alignment = GGUF_DEFAULT_ALIGNMENT;
    if (alignEntry) {
      const a = alignEntry.value;
      if (alignEntry.type !== GgufValueType.UINT32 || typeof a !== "number" || a === 0 || (a & (a - 1)) !== 0) {
        fail(`general.alignment must be a u32 power of two, got ${String(a)}`);
      }
      alignment = a as number;
    }
    const infos: Omit<GgufTensorInfo, "byteLength">[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = c.string(`name of tensor ${i}`);
      const nDims = c.u32(`dimension count of tensor "${name}"`);
      if (nDims < 1 || nDims > MAX_DIMS) fail(`tensor "${name}" has ${nDims} dimensions (1 to ${MAX_DIMS} allowed)`);
      const ne: number[] = [];
      for (let d = 0; d < nDims; d++) ne.push(c.u64(`dimension ${d} of tensor "${name}"`));
      const typeId = c.u32(`type of tensor "${name}"`);
      const type = ggmlTypeById(typeId) ?? fail(`tensor "${name}" has unknown GGML type id ${typeId}`);
      infos.push({ name, type, ne, shape: [...ne].reverse(), offset: c.u64(`offset of tensor "${name}"`) });
    }
    const dataStart = Math.ceil(c.pos / alignment) * alignment;
    const dataLength = Math.max(0, src.size - dataStart);
    const tensors = new Map<string, GgufTensorInfo>();
    for (const info of infos) {
      const where = `tensor "${info.name}"`;
      if (tensors.has(info.name)) fail(`${where} appears twice`);
      if (info.ne[0] % info.type.blockSize !== 0) {
        fail(`${where}: its rows of ${info.ne[0]} are not whole ${info.type.name} blocks of ${info.type.blockSize}`);
      }
      const rows = info.ne.slice(1).reduce((a, b) => a * b, 1);
      const byteLength = ggmlBytes(info.type, info.ne[0]) * rows;
      if (!Number.isSafeInteger(byteLength)) fail(`${where}: shape [${info.ne.join(", ")}] is absurdly large`);
      if (info.offset % alignment !== 0) fail(`${where}: offset ${info.offset} is not a multiple of the alignment ${alignment}`);
      if (info.offset + byteLength > dataLength) {
        fail(`${where}: bytes [${info.offset}, ${info.offset + byteLength}) run past the end of the ${dataLength}-byte data section: truncated or corrupt`);
      }
      tensors.set(info.name, { ...info, byteLength });
    }
    const spans = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < spans.length; i++) {
      const [a, b] = [spans[i - 1], spans[i]];
      if (b.offset < a.offset + a.byteLength) {
        fail(`tensors "${a.name}" [${a.offset}, ${a.offset + a.byteLength}) and "${b.name}" [${b.offset}, ${b.offset + b.byteLength}) overlap`);
      }
    }
    return new GgufFile(source, version, metadata, tensors, alignment, dataStart, data);
  }

  has(key: string): boolean {
    return this.metadata.has(key);
  }

  /** A metadata value, or undefined. */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(key)?.value;
  }

  tensor(name: string): GgufTensorInfo {
    return this.tensors.get(name) ?? this.fail(`has no tensor "${name}"`);
  }

  /**
   * The tensor's bytes: a view of the buffer (no copy) for an in-memory GGUF, else a fresh
   * buffer of exactly its bytes read from the file (its own ArrayBuffer, so any view is aligned).
   */
  tensorBytes(name: string): Uint8Array {
    const t = this.tensor(name);
    const start = this.dataStart + t.offset;
    if ("buffer" in this.data) return this.data.buffer.subarray(start, start + t.byteLength);
    const out = new Uint8Array(t.byteLength);
    readFully(this.data.fd, out, start, this.source);
    return out;
  }

  close(): void {
    if ("fd" in this.data && this.data.fd >= 0) {
      try {
        fs.closeSync(this.data.fd);
      } catch (err) {
        throw new LlavaError(`${this.source}: ${describeFsError(err)}`);
      }
      (this.data as { fd: number }).fd = -1;
    }
  }

  fail(msg: string): never {
    throw new LlavaError(`GGUF file ${this.source}: ${msg}`);
  }

  /** Typed metadata getters: a missing required key or a value of the wrong kind fails naming the key. */
  string(key: string): string;
  string(key: string, fallback: string | null): string | null;
  string(key: string, fallback?: string | null): string | null {
    const v = this.get(key);
    if (v === undefined && fallback !== undefined) return fallback;
    return typeof v === "string" ? v : this.fail(v === undefined ? `metadata "${key}" is missing` : `metadata "${key}" should be a string`);
  }

  number(key: string): number;
  number(key: string, fallback: number | null): number | null;
  number(key: string, fallback?: number | null): number | null {
    const v = this.get(key);
    if (v === undefined && fallback !== undefined) return fallback;
    return typeof v === "number" ? v : this.fail(v === undefined ? `metadata "${key}" is missing` : `metadata "${key}" should be a number`);
  }

  /** a non-negative integer */
  uint(key: string): number;
  uint(key: string, fallback: number | null): number | null;
  uint(key: string, fallback?: number | null): number | null {
    const v = fallback === undefined ? this.number(key) : this.number(key, fallback);
    if (v !== null && (!Number.isInteger(v) || v < 0)) this.fail(`metadata "${key}" should be a non-negative integer, got ${v}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.get(key);
    if (v === undefined) return fallback;
    return typeof v === "boolean" ? v : this.fail(`metadata "${key}" should be a bool`);
  }

  /** An array of numbers (null when absent). */
  numbers(key: string): number[] | null {
    const v = this.get(key);
    if (v === undefined) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number")) this.fail(`metadata "${key}" should be an array of numbers`);
    return v as number[];
  }

  /** An array of strings (null when absent). */
  strings(key: string): string[] | null {
    const v = this.get(key);
    if (v === undefined) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) this.fail(`metadata "${key}" should be an array of strings`);
    return v as string[];
  }
}

/** Whether a path names a GGUF file (by its extension). */
export function isGgufPath(p: string): boolean {
  return p.toLowerCase().endsWith(".gguf");
}
