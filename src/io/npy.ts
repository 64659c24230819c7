/**
 * NumPy `.npy` files: reading versions 1.0 / 2.0 / 3.0 (C order), and writing version 1.0 exactly
 * as `numpy.save` does (numpy >= 1.23: header dict with keys sorted, 21-digit growth padding after
 * it, spaces and a newline so the data starts at a multiple of 64 bytes; version 2.0 only when the
 * header does not fit a 16-bit length).
 */
import fs from "node:fs";
import { LlavaError } from "../util/errors.js";
import { f16ToF32Array } from "../tensor/dtypes.js";
import { describeFsError, writeFileAtomic, writeFully } from "./files.js";

export type NpyDtype = "<f2" | "<f4" | "<f8" | "|i1" | "<i2" | "<i4" | "<i8" | "|u1" | "<u2" | "<u4" | "<u8" | "|b1";

/** `<f2` arrays hold raw half bits (see dtypes.ts); `|b1` holds 0/1 bytes. */
export type NpyData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  data: NpyData;
}

type Ctor = { new (length: number): NpyData; new (buffer: ArrayBuffer): NpyData };

const CTORS: Record<NpyDtype, Ctor> = {
  "<f2": Uint16Array,
  "<f4": Float32Array,
  "<f8": Float64Array,
  "|i1": Int8Array,
  "<i2": Int16Array,
  "<i4": Int32Array,
  "<i8": BigInt64Array,
  "|u1": Uint8Array,
  "<u2": Uint16Array,
  "<u4": Uint32Array,
  "<u8": BigUint64Array,
  "|b1": Uint8Array,
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const ARRAY_ALIGN = 64;
const GROWTH_AXIS_MAX_DIGITS = 21;

function itemSize(dtype: NpyDtype): number {
  return Number(dtype.slice(2));
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Reads an `.npy` file. */
export function readNpy(file: string): NpyArray {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new LlavaError(`npy file ${file}: ${describeFsError(err)}`);
  }
  return parseNpy(bytes, file);
}

/** Parses `.npy` bytes; `file` names the source in error messages. */
export function parseNpy(bytes: Uint8Array, file = "<npy bytes>"): NpyArray {
  const fail = (msg: string): never => {
    throw new LlavaError(`npy file ${file}: ${msg}`);
  };
  if (bytes.length < 10 || !MAGIC.every((b, i) => bytes[i] === b)) fail("not an .npy file (bad magic bytes)");
  const major = bytes[6];
  const minor = bytes[7];
  if (minor !== 0 || major < 1 || major > 3) fail(`unsupported .npy format version ${major}.${minor}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lenSize = major === 1 ? 2 : 4;
  if (bytes.length < 8 + lenSize) fail("truncated header");
  const headerLen = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const headerStart = 8 + lenSize;
  const dataStart = headerStart + headerLen;
  if (dataStart > bytes.length) fail(`header length ${headerLen} runs past the end of the file (truncated)`);
  const headerBytes = bytes.subarray(headerStart, dataStart);
  const header = major === 3 ? new TextDecoder("utf-8").decode(headerBytes) : latin1(headerBytes);

  let dict: unknown;
  try {
    dict = parsePythonLiteral(header);
  } catch (err) {
    return fail(`cannot parse header ${JSON.stringify(header.trim())}: ${(err as Error).message}`);
  }
  if (typeof dict !== "object" || dict === null || Array.isArray(dict)) return fail("header is not a dictionary");
  const d = dict as Record<string, unknown>;
  const keys = Object.keys(d).sort().join(",");
  if (keys !== "descr,fortran_order,shape") fail(`header keys are [${keys}], expected descr, fortran_order, shape`);
  if (typeof d.descr !== "string") return fail(`dtype ${JSON.stringify(d.descr)} is not supported (structured dtypes are not)`);
  if (typeof d.fortran_order !== "boolean") fail("fortran_order is not a bool");
  if (d.fortran_order) fail("Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
  if (!Array.isArray(d.shape) || !d.shape.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) {
    fail("shape is not a tuple of non-negative integers");
  }
  const shape = d.shape as number[];
  const { dtype, swap } = normaliseDescr(d.descr, fail);
  const size = itemSize(dtype);
  const count = numel(shape);
  const byteLength = count * size;
  if (dataStart + byteLength > bytes.length) {
    fail(`data needs ${byteLength} bytes for shape (${shape.join(", ")}) of ${dtype} but only ${bytes.length - dataStart} remain (truncated)`);
  }
  // Copy into a fresh buffer: the source may be unaligned for the element type.
  const copy = new Uint8Array(byteLength);
  copy.set(bytes.subarray(dataStart, dataStart + byteLength));
  if (swap) swapBytes(copy, size);
  return { dtype, shape, data: new CTORS[dtype](copy.buffer) };
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/** Maps a descr to the little-endian spelling this module uses; big-endian data gets byte-swapped. */
function normaliseDescr(descr: string, fail: (msg: string) => never): { dtype: NpyDtype; swap: boolean } {
  const m = /^([<>|=]?)([fiub])(\d+)$/.exec(descr);
  if (m === null) return fail(`dtype "${descr}" is not supported`);
  const [, order, kind, bytes] = m;
  const size = Number(bytes);
  const dtype = (size === 1 ? `|${kind}${size}` : `<${kind}${size}`) as NpyDtype;
  if (!(dtype in CTORS) || (kind === "b" && size !== 1)) fail(`dtype "${descr}" is not supported`);
  return { dtype, swap: order === ">" && size > 1 };
}

function swapBytes(bytes: Uint8Array, size: number): void {
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

/**
 * A tiny parser for the Python literal in an `.npy` header: dicts, tuples, lists, quoted strings,
 * ints, True/False/None.
 */
export function parsePythonLiteral(text: string): unknown {
  let i = 0;
  const skipSpace = (): void => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const expect = (c: string): void => {
    skipSpace();
    if (text[i] !== c) throw new Error(`expected "${c}" at position ${i}`);
    i++;
  };
  const peek = (): string => {
    skipSpace();
    return text[i] ?? "";
  };
  const sequence = (close: string): unknown[] => {
    const items: unknown[] = [];
    while (peek() !== close) {
      items.push(value());
      if (peek() === ",") i++;
      else if (peek() !== close) throw new Error(`expected "," or "${close}" at position ${i}`);
    }
    i++;
    return items;
  };
  const value = (): unknown => {
    const c = peek();
    if (c === "{") {
      i++;
      const obj: Record<string, unknown> = {};
      while (peek() !== "}") {
        const key = value();
        if (typeof key !== "string") throw new Error(`dictionary key at position ${i} is not a string`);
        expect(":");
        obj[key] = value();
        if (peek() === ",") i++;
        else if (peek() !== "}") throw new Error(`expected "," or "}" at position ${i}`);
      }
      i++;
      return obj;
    }
    if (c === "(") {
      i++;
      return sequence(")");
    }
    if (c === "[") {
      i++;
      return sequence("]");
    }
    if (c === "'" || c === '"') {
      const end = text.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unterminated string at position ${i}`);
      const s = text.slice(i + 1, end);
      i = end + 1;
      return s;
    }
    const m = /^(-?\d+)L?|^(True|False|None)/.exec(text.slice(i));
    if (m === null) throw new Error(`unexpected "${text.slice(i, i + 10)}" at position ${i}`);
    i += m[0].length;
    if (m[1] !== undefined) return Number(m[1]);
    return m[2] === "True" ? true : m[2] === "False" ? false : null;
  };
  const result = value();
  skipSpace();
  if (i !== text.length) throw new Error(`unexpected text after the literal at position ${i}`);
  return result;
}

/** The dtype numpy would give a typed array (Uint16Array means uint16; pass "<f2" for halves). */
export function npyDtypeOf(data: NpyData): NpyDtype {
  if (data instanceof Float32Array) return "<f4";
  if (data instanceof Float64Array) return "<f8";
  if (data instanceof Int8Array) return "|i1";
  if (data instanceof Int16Array) return "<i2";
  if (data instanceof Int32Array) return "<i4";
  if (data instanceof BigInt64Array) return "<i8";
  if (data instanceof Uint8Array) return "|u1";
  if (data instanceof Uint16Array) return "<u2";
  if (data instanceof Uint32Array) return "<u4";
  return "<u8";
}

function pythonTupleRepr(shape: readonly number[]): string {
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(", ")})`;
}

/** The bytes `numpy.save` writes for this array. */
export function encodeNpy(array: { dtype?: NpyDtype; shape: number[]; data: NpyData }, file = "<npy bytes>"): Uint8Array {
  const dtype = array.dtype ?? npyDtypeOf(array.data);
  const fail = (msg: string): never => {
    throw new LlavaError(`cannot write npy file ${file}: ${msg}`);
  };
  if (!(dtype in CTORS)) fail(`unsupported dtype "${dtype}"`);
  const expectedCtor = CTORS[dtype];
  if (!(array.data instanceof expectedCtor)) fail(`dtype ${dtype} needs a ${expectedCtor.name}, got ${array.data.constructor.name}`);
  if (!array.shape.every((x) => Number.isSafeInteger(x) && x >= 0)) fail("shape must be non-negative integers");
  if (numel(array.shape) !== array.data.length) {
    fail(`shape (${array.shape.join(", ")}) has ${numel(array.shape)} elements but data has ${array.data.length}`);
  }
  let header = `{'descr': '${dtype}', 'fortran_order': False, 'shape': ${pythonTupleRepr(array.shape)}, }`;
  if (array.shape.length > 0) header += " ".repeat(GROWTH_AXIS_MAX_DIGITS - String(array.shape[0]).length);
  // numpy picks the oldest version whose length field fits; the header here is plain ASCII.
  const hlen = header.length + 1;
  let lenSize = 2;
  let padlen = ARRAY_ALIGN - ((MAGIC.length + 2 + lenSize + hlen) % ARRAY_ALIGN);
  if (hlen + padlen >= 65536) {
    lenSize = 4;
    padlen = ARRAY_ALIGN - ((MAGIC.length + 2 + lenSize + hlen) % ARRAY_ALIGN);
  }
  const prefixLen = MAGIC.length + 2 + lenSize;
  const total = prefixLen + hlen + padlen;
  const data = new Uint8Array(array.data.buffer, array.data.byteOffset, array.data.byteLength);
  const out = new Uint8Array(total + data.length);
  out.set(MAGIC, 0);
  out[6] = lenSize === 2 ? 1 : 2;
  out[7] = 0;
  const view = new DataView(out.buffer);
  if (lenSize === 2) view.setUint16(8, hlen + padlen, true);
  else view.setUint32(8, hlen + padlen, true);
  for (let i = 0; i < header.length; i++) out[prefixLen + i] = header.charCodeAt(i);
  out.fill(0x20, prefixLen + header.length, total - 1);
  out[total - 1] = 0x0a;
  out.set(data, total);
  return out;
}

/** Writes an `.npy` file as `numpy.save` would, atomically. `dtype` defaults from the array type. */
export function writeNpy(file: string, array: { dtype?: NpyDtype; shape: number[]; data: NpyData }): void {
  const bytes = encodeNpy(array, file);
  writeFileAtomic(file, (fd) => writeFully(fd, bytes));
}

/**
 * Elements as JS numbers: `<f2` arrays are decoded from half bits; int64 values beyond 2^53 are an
 * error rather than silently rounded.
 */
export function npyToNumbers(array: NpyArray | NpyData): number[] {
  if (!ArrayBuffer.isView(array) && array.dtype === "<f2") return Array.from(f16ToF32Array(array.data as Uint16Array));
  const data = ArrayBuffer.isView(array) ? array : array.data;
  const out = new Array<number>(data.length);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) {
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new LlavaError(`npy value ${v} at index ${i} does not fit a JS number exactly`);
      }
      out[i] = Number(v);
    }
    return out;
  }
  for (let i = 0; i < data.length; i++) out[i] = (data as Float32Array)[i];
  return out;
}
