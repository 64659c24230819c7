/**
 * A `.npy` reader for the tests, written from the NumPy format description
 * (numpy/lib/format.py, "NPY format") and sharing nothing with src/io/npy.ts, so that a bug in
 * the project's reader or writer cannot hide in the comparison with the reference arrays.
 *
 * Layout: the magic "\x93NUMPY", major and minor version bytes, the header length (2 bytes
 * little-endian in version 1, 4 bytes in versions 2 and 3), an ASCII (v3: UTF-8) Python dict
 * literal {'descr': ..., 'fortran_order': ..., 'shape': (...), }, then the raw data.
 */
import fs from "node:fs";

export interface NpyData {
  /** the numpy type string, e.g. "<f4", "<i8", "|u1" */
  descr: string;
  shape: number[];
  /** the elements in C order, as doubles (64-bit integers must be exact in a double) */
  values: Float64Array;
}

const MAGIC = "\x93NUMPY";

/** Element readers by kind and byte size ("f4", "i8", ...), for either byte order. */
const GETTERS: Record<string, (v: DataView, offset: number, little: boolean) => number> = {
  f2: (v, o, le) => halfToNumber(v.getUint16(o, le)),
  f4: (v, o, le) => v.getFloat32(o, le),
  f8: (v, o, le) => v.getFloat64(o, le),
  i1: (v, o) => v.getInt8(o),
  u1: (v, o) => v.getUint8(o),
  b1: (v, o) => v.getUint8(o),
  i2: (v, o, le) => v.getInt16(o, le),
  u2: (v, o, le) => v.getUint16(o, le),
  i4: (v, o, le) => v.getInt32(o, le),
  u4: (v, o, le) => v.getUint32(o, le),
  i8: (v, o, le) => exact(v.getBigInt64(o, le)),
  u8: (v, o, le) => exact(v.getBigUint64(o, le)),
};

function exact(x: bigint): number {
  if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < BigInt(Number.MIN_SAFE_INTEGER)) throw new Error(`64-bit value ${x} does not fit a double exactly`);
  return Number(x);
}

function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function headerField(header: string, key: string, file: string): string {
  const m = new RegExp(`'${key}'\\s*:\\s*('[^']*'|True|False|\\([^)]*\\))`).exec(header);
  if (!m) throw new Error(`${file}: the .npy header has no '${key}': ${header}`);
  return m[1];
}

export function readNpyFile(file: string): NpyData {
  const bytes = fs.readFileSync(file);
  if (bytes.length < 10 || bytes.toString("latin1", 0, 6) !== MAGIC) throw new Error(`${file}: not a .npy file (no \\x93NUMPY magic)`);
  const major = bytes[6];
  if (major < 1 || major > 3) throw new Error(`${file}: .npy format version ${major} is unknown`);
  const [lengthSize, encoding] = major === 1 ? [2, "latin1" as const] : [4, major === 2 ? ("latin1" as const) : ("utf8" as const)];
  const headerLength = lengthSize === 2 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const dataStart = 8 + lengthSize + headerLength;
  if (dataStart > bytes.length) throw new Error(`${file}: the .npy header runs past the end of the file`);
  const header = bytes.toString(encoding, 8 + lengthSize, dataStart).trim();
  if (!header.startsWith("{") || !header.endsWith("}")) throw new Error(`${file}: the .npy header is not a dict: ${header}`);

  const descr = headerField(header, "descr", file).slice(1, -1);
  if (headerField(header, "fortran_order", file) !== "False") throw new Error(`${file}: Fortran-ordered arrays are not read`);
  const shape = headerField(header, "shape", file).slice(1, -1).split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => {
    if (!/^\d+$/.test(s)) throw new Error(`${file}: bad dimension "${s}" in the .npy shape`);
    return Number(s);
  });

  const m = /^([<>|=])([a-z])(\d+)$/.exec(descr);
  const get = m && GETTERS[m[2] + m[3]];
  if (!m || !get) throw new Error(`${file}: .npy dtype "${descr}" is not read`);
  // '=' is native order; every platform Node runs on here is little-endian
  const little = m[1] !== ">";
  const size = Number(m[3]);
  const count = shape.reduce((a, b) => a * b, 1);
  if (bytes.length - dataStart !== count * size) {
    throw new Error(`${file}: ${bytes.length - dataStart} data bytes for shape (${shape}) of ${descr}, expected ${count * size}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + dataStart, count * size);
  const values = new Float64Array(count);
  for (let i = 0; i < count; i++) values[i] = get(view, i * size, little);
  return { descr, shape, values };
}
