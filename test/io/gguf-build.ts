/**
 * A small GGUF writer for tests: builds the bytes of a file from metadata entries and tensors,
 * with knobs to make it wrong (version, offsets, counts) for the bad-input tests.
 */
import { GgufValueType, type GgufValue } from "../../src/io/gguf.js";
import { GGML_TYPES, type GgmlType, ggmlTypeById } from "../../src/tensor/ggml-types.js";

const ggmlTypeByName = (name: string) => GGML_TYPES.find((t) => t.name === name);

export interface KvIn {
  key: string;
  type: GgufValueType;
  value: GgufValue;
  itemType?: GgufValueType;
}

export interface TensorIn {
  name: string;
  type: GgmlType | string;
  /** ggml order: innermost first */
  ne: number[];
  data: Uint8Array;
  /** overrides the offset the writer would give it */
  offset?: number;
}

/** A metadata entry, its type inferred: strings, bools, u32 for integers, f32 otherwise; arrays of one of these. */
export function kv(key: string, value: GgufValue, type?: GgufValueType, itemType?: GgufValueType): KvIn {
  const infer = (v: GgufValue): GgufValueType =>
    typeof v === "string" ? GgufValueType.STRING
    : typeof v === "boolean" ? GgufValueType.BOOL
    : typeof v === "bigint" ? GgufValueType.UINT64
    : Array.isArray(v) ? GgufValueType.ARRAY
    : Number.isInteger(v) && v >= 0 ? GgufValueType.UINT32
    : Number.isInteger(v) ? GgufValueType.INT32 : GgufValueType.FLOAT32;
  const t = type ?? infer(value);
  if (t !== GgufValueType.ARRAY) return { key, type: t, value };
  const items = value as GgufValue[];
  const it = itemType ?? (items.length ? (items.every((x) => typeof x === "number" && Number.isInteger(x)) ? GgufValueType.INT32 : infer(items[0])) : GgufValueType.INT32);
  return { key, type: t, value, itemType: it };
}

class Bytes {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer | Uint8Array): void {
    const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    this.parts.push(buf);
    this.length += buf.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  string(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.push(b);
  }
  value(type: GgufValueType, v: GgufValue, itemType?: GgufValueType): void {
    const b = Buffer.alloc(8);
    switch (type) {
      case GgufValueType.UINT8: b.writeUInt8(v as number); return this.push(b.subarray(0, 1));
      case GgufValueType.INT8: b.writeInt8(v as number); return this.push(b.subarray(0, 1));
      case GgufValueType.UINT16: b.writeUInt16LE(v as number); return this.push(b.subarray(0, 2));
      case GgufValueType.INT16: b.writeInt16LE(v as number); return this.push(b.subarray(0, 2));
      case GgufValueType.UINT32: b.writeUInt32LE(v as number); return this.push(b.subarray(0, 4));
      case GgufValueType.INT32: b.writeInt32LE(v as number); return this.push(b.subarray(0, 4));
      case GgufValueType.FLOAT32: b.writeFloatLE(v as number); return this.push(b.subarray(0, 4));
      case GgufValueType.FLOAT64: b.writeDoubleLE(v as number); return this.push(b);
      case GgufValueType.UINT64: b.writeBigUInt64LE(BigInt(v as number)); return this.push(b);
      case GgufValueType.INT64: b.writeBigInt64LE(BigInt(v as number)); return this.push(b);
      case GgufValueType.BOOL: return this.push(Buffer.from([v ? 1 : 0]));
      case GgufValueType.STRING: return this.string(v as string);
      case GgufValueType.ARRAY: {
        const items = v as GgufValue[];
        this.u32(itemType!);
        this.u64(items.length);
        for (const x of items) {
          // nested arrays: the inner item type is that of the first leaf
          const inner = Array.isArray(x) ? kv("", x).itemType : undefined;
          this.value(itemType!, x, inner);
        }
        return;
      }
    }
  }
  concat(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export interface BuildOptions {
  version?: number;
  alignment?: number;
  kv?: KvIn[];
  tensors?: TensorIn[];
  /** overrides the tensor count written */
  tensorCount?: number | bigint;
}

/** The bytes of a GGUF file. */
export function buildGguf(opts: BuildOptions): Buffer {
  const alignment = opts.alignment ?? 32;
  const tensors = opts.tensors ?? [];
  const out = new Bytes();
  out.push(Buffer.from("GGUF"));
  out.u32(opts.version ?? 3);
  out.u64(opts.tensorCount ?? tensors.length);
  const entries = [...(opts.kv ?? [])];
  if (alignment !== 32 && !entries.some((e) => e.key === "general.alignment")) entries.unshift(kv("general.alignment", alignment));
  out.u64(entries.length);
  for (const e of entries) {
    out.string(e.key);
    out.u32(e.type);
    out.value(e.type, e.value, e.itemType);
  }
  let offset = 0;
  const placed: number[] = [];
  for (const t of tensors) {
    const type = typeof t.type === "string" ? ggmlTypeByName(t.type)! : t.type;
    out.string(t.name);
    out.u32(t.ne.length);
    for (const d of t.ne) out.u64(d);
    out.u32(type.id);
    const at = t.offset ?? offset;
    out.u64(at);
    placed.push(at);
    offset = Math.ceil((at + t.data.length) / alignment) * alignment;
  }
  const header = out.concat();
  const dataStart = Math.ceil(header.length / alignment) * alignment;
  const end = Math.max(0, ...tensors.map((t, i) => placed[i] + t.data.length));
  const file = Buffer.alloc(dataStart + (tensors.length ? Math.ceil(end / alignment) * alignment : 0));
  header.copy(file);
  tensors.forEach((t, i) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(file, dataStart + placed[i]));
  return file;
}

export const F32 = ggmlTypeById(0)!;
