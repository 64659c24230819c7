/**
 * A GGUF v3 writer (the layout of ggml's gguf.cpp): the header, typed metadata, tensor infos,
 * then each tensor's bytes at an offset aligned to `general.alignment` (32 unless the metadata
 * sets it). Tensors are produced one at a time while the file is written, so a 7B model never
 * sits whole in memory; the file appears only once complete (written as `.partial`, renamed).
 */
import fs from "node:fs";
import { describeFsError, writeFully } from "./files.js";
import { GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufValueType } from "./gguf.js";
import type { Interrupt } from "./output.js";
import { GGML_TYPES, type GgmlType } from "../tensor/ggml-types.js";
import { LlavaError } from "../util/errors.js";

/** The version written (readers take 2 and 3; 3 allows big-endian files, which this writer never makes). */
export const GGUF_VERSION = 3;

/** Short names of the metadata value types. */
const GGUF_VALUE_TYPE = {
  u8: GgufValueType.UINT8, i8: GgufValueType.INT8, u16: GgufValueType.UINT16, i16: GgufValueType.INT16,
  u32: GgufValueType.UINT32, i32: GgufValueType.INT32, f32: GgufValueType.FLOAT32, bool: GgufValueType.BOOL,
  string: GgufValueType.STRING, array: GgufValueType.ARRAY, u64: GgufValueType.UINT64, i64: GgufValueType.INT64, f64: GgufValueType.FLOAT64,
} as const;

export type GgufScalarType = Exclude<keyof typeof GGUF_VALUE_TYPE, "array">;
type Scalar = number | bigint | boolean | string;
export type GgufValueToWrite =
  | { type: GgufScalarType; value: Scalar }
  | { type: "array"; items: GgufScalarType; values: readonly Scalar[] }
  | { type: "array"; items: "array"; values: readonly GgufValueToWrite[] };

/** Shorthands for metadata values. */
export const gguf = {
  u32: (value: number): GgufValueToWrite => ({ type: "u32", value }),
  i32: (value: number): GgufValueToWrite => ({ type: "i32", value }),
  f32: (value: number): GgufValueToWrite => ({ type: "f32", value }),
  bool: (value: boolean): GgufValueToWrite => ({ type: "bool", value }),
  str: (value: string): GgufValueToWrite => ({ type: "string", value }),
  array: (items: GgufScalarType, values: readonly Scalar[]): GgufValueToWrite => ({ type: "array", items, values }),
};

export interface GgufTensorToWrite {
  name: string;
  /** the GGML type's name ("F16", "Q4_K", ...) */
  type: string;
  /** GGML dims: ne[0] is the row length (a torch [rows, cols] weight is [cols, rows]) */
  ne: number[];
  /** the tensor's bytes, made when the writer reaches it */
  data: () => Uint8Array;
}

export interface GgufContent {
  metadata: ReadonlyArray<[string, GgufValueToWrite]>;
  tensors: readonly GgufTensorToWrite[];
}

const noInterrupt: Interrupt = async () => {};

const bits = (n: number, signed: boolean): [bigint, bigint] => (signed ? [-(2n ** BigInt(n - 1)), 2n ** BigInt(n - 1) - 1n] : [0n, 2n ** BigInt(n) - 1n]);
const INT_RANGE = {
  u8: bits(8, false), i8: bits(8, true), u16: bits(16, false), i16: bits(16, true),
  u32: bits(32, false), i32: bits(32, true), u64: bits(64, false), i64: bits(64, true),
};

/** A growable little-endian byte buffer for the header. */
class ByteSink {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  scalar(type: GgufScalarType, v: Scalar, key: string): void {
    if (type === "string") {
      if (typeof v !== "string") throw new LlavaError(`GGUF metadata ${key}: expected a string, got ${typeof v}`);
      const b = Buffer.from(v, "utf8");
      this.scalar("u64", b.length, key);
      this.bytes(b);
      return;
    }
    if (type === "bool") {
      if (typeof v !== "boolean") throw new LlavaError(`GGUF metadata ${key}: expected a boolean, got ${typeof v}`);
      this.scalar("u8", v ? 1 : 0, key);
      return;
    }
    const wide = type === "u64" || type === "i64";
    if (wide ? typeof v !== "number" && typeof v !== "bigint" : typeof v !== "number") throw new LlavaError(`GGUF metadata ${key}: expected a number for ${type}, got ${typeof v}`);
    if (type !== "f32" && type !== "f64") {
      if (typeof v === "number" && !Number.isInteger(v)) throw new LlavaError(`GGUF metadata ${key}: ${String(v)} is not an integer (${type})`);
      const [lo, hi] = INT_RANGE[type];
      if (BigInt(v as number | bigint) < lo || BigInt(v as number | bigint) > hi) throw new LlavaError(`GGUF metadata ${key}: ${String(v)} does not fit ${type}`);
    }
    const size = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, u64: 8, i64: 8, f64: 8 }[type];
    this.room(size);
    const o = this.length;
    const n = v as number;
    const set = {
      u8: () => this.view.setUint8(o, n), i8: () => this.view.setInt8(o, n), u16: () => this.view.setUint16(o, n, true),
      i16: () => this.view.setInt16(o, n, true), u32: () => this.view.setUint32(o, n, true), i32: () => this.view.setInt32(o, n, true),
      f32: () => this.view.setFloat32(o, n, true), f64: () => this.view.setFloat64(o, n, true),
      u64: () => this.view.setBigUint64(o, BigInt(v as number | bigint), true), i64: () => this.view.setBigInt64(o, BigInt(v as number | bigint), true),
    }[type];
    set();
    this.length += size;
  }

  /** A value with its type tag; items of an array of arrays carry none (as gguf-py writes them). */
  value(v: GgufValueToWrite, key: string, tagged = true): void {
    if (tagged) this.scalar("u32", GGUF_VALUE_TYPE[v.type], key);
    if (v.type !== "array") return this.scalar(v.type, v.value, key);
    this.scalar("u32", GGUF_VALUE_TYPE[v.items], key);
    this.scalar("u64", v.values.length, key);
    if (v.items !== "array") {
      for (const x of v.values as readonly Scalar[]) this.scalar(v.items, x, key);
      return;
    }
    for (const x of v.values as readonly GgufValueToWrite[]) {
      if (x.type !== "array") throw new LlavaError(`GGUF metadata ${key}: an array of arrays holds a ${x.type}`);
      this.value(x, key, false);
    }
  }

  done(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

function ggmlTypeNamed(name: string, tensor: string): GgmlType {
  const type = GGML_TYPES.find((t) => t.name === name);
  if (!type) throw new LlavaError(`GGUF tensor ${tensor}: unknown GGML type ${name}`);
  return type;
}

/** Bytes of a tensor's data: rows of ne[0] values in whole blocks of its type. */
export function tensorBytes(t: Pick<GgufTensorToWrite, "name" | "type" | "ne">): number {
  const type = ggmlTypeNamed(t.type, t.name);
  if (t.ne[0] % type.blockSize !== 0) throw new LlavaError(`GGUF tensor ${t.name}: ${type.name} rows are whole blocks of ${type.blockSize}, but a row has ${t.ne[0]} values`);
  return (t.ne[0] / type.blockSize) * type.blockBytes * t.ne.slice(1).reduce((a, b) => a * b, 1);
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** The alignment the metadata asks for (general.alignment, a power of two), else 32. */
function alignmentOf(metadata: GgufContent["metadata"]): number {
  const entry = metadata.find(([k]) => k === "general.alignment");
  if (!entry) return GGUF_DEFAULT_ALIGNMENT;
  const v = entry[1];
  const a = v.type === "u32" ? Number(v.value) : NaN;
  if (!(a > 0 && (a & (a - 1)) === 0)) throw new LlavaError(`GGUF metadata general.alignment must be a u32 power of two, got ${JSON.stringify(v)}`);
  return a;
}

/** Header bytes and each tensor's size and offset (relative to the data section). */
export function ggufLayout(content: GgufContent): { header: Uint8Array; alignment: number; tensors: Array<{ bytes: number; offset: number }> } {
  const alignment = alignmentOf(content.metadata);
  const keys = new Set<string>();
  const names = new Set<string>();
  const sink = new ByteSink();
  sink.bytes(Buffer.from(GGUF_MAGIC, "latin1"));
  sink.scalar("u32", GGUF_VERSION, "version");
  sink.scalar("u64", content.tensors.length, "tensor count");
  sink.scalar("u64", content.metadata.length, "metadata count");
  for (const [key, value] of content.metadata) {
    if (keys.has(key)) throw new LlavaError(`GGUF metadata key ${key} given twice`);
    keys.add(key);
    sink.scalar("string", key, key);
    sink.value(value, key);
  }
  let offset = 0;
  const tensors: Array<{ bytes: number; offset: number }> = [];
  for (const t of content.tensors) {
    if (names.has(t.name)) throw new LlavaError(`GGUF tensor ${t.name} given twice`);
    names.add(t.name);
    if (t.ne.length < 1 || t.ne.length > 4 || t.ne.some((d) => !Number.isSafeInteger(d) || d < 1)) throw new LlavaError(`GGUF tensor ${t.name}: bad dims [${t.ne.join(", ")}]`);
    const bytes = tensorBytes(t);
    const type = ggmlTypeNamed(t.type, t.name);
    sink.scalar("string", t.name, t.name);
    sink.scalar("u32", t.ne.length, t.name);
    for (const d of t.ne) sink.scalar("u64", d, t.name);
    sink.scalar("u32", type.id, t.name);
    sink.scalar("u64", offset, t.name);
    tensors.push({ bytes, offset });
    offset = alignUp(offset + bytes, alignment);
  }
  const header = sink.done();
  const padded = new Uint8Array(alignUp(header.length, alignment));
  padded.set(header);
  return { header: padded, alignment, tensors };
}

/**
 * Writes `content` to `file` (replacing it only once complete). Each tensor's bytes must be
 * exactly what its type and dims take. Returns the file's size.
 */
export async function writeGguf(file: string, content: GgufContent, interrupt: Interrupt = noInterrupt): Promise<number> {
  const { header, alignment, tensors } = ggufLayout(content);
  const partial = `${file}.partial`;
  let fd: number;
  try {
    fd = fs.openSync(partial, "w");
  } catch (err) {
    throw new LlavaError(`cannot write ${file}: ${describeFsError(err)}`);
  }
  let size = header.length;
  try {
    writeFully(fd, header);
    for (const [i, t] of content.tensors.entries()) {
      await interrupt();
      const bytes = t.data();
      if (bytes.length !== tensors[i].bytes) throw new LlavaError(`GGUF tensor ${t.name}: ${bytes.length} bytes given, ${t.type} [${t.ne.join(", ")}] takes ${tensors[i].bytes}`);
      writeFully(fd, bytes);
      const pad = alignUp(bytes.length, alignment) - bytes.length;
      if (pad) writeFully(fd, new Uint8Array(pad));
      size += bytes.length + pad;
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(partial, file);
  } catch (err) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
    fs.rmSync(partial, { force: true });
    if (err instanceof LlavaError) throw err;
    throw new LlavaError(`cannot write ${file}: ${describeFsError(err)}`);
  }
  return size;
}
