/**
 * Weight matrices stored in a compact format and multiplied without an f32 copy:
 * - `bf16`, `f16`: one 16-bit value per weight (as on disk);
 * - `q8_0`: blocks of 32 weights along a row: an f16 scale d, then 32 int8 q; w = d * q;
 * - `q4_0`: blocks of 32 weights: an f16 scale d, then 16 bytes of 4-bit q (weight j of the
 *   block in the low nibble of byte j for j < 16, the high nibble of byte j - 16 otherwise);
 *   w = d * (q - 8).
 * - `q4_1`, `q5_0`, `q5_1` (blocks of 32) and `q4_k`, `q5_k`, `q6_k` (super-blocks of 256):
 *   llama.cpp's Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, byte for byte (layouts and the rounding
 *   rules of their encoders in quant-blocks.ts).
 * The q formats are llama.cpp's block layouts, so rows are a whole number of blocks: the column
 * count must be a multiple of the block size (32, or 256 for the K formats).
 */
import { loadNativeAddon } from "./native-backend.js";
import { decode32, decodeK, encodeQ5_0, encodeQ6K, encodeQx1, encodeQxK } from "./quant-blocks.js";
import { bf16ToF32Array, f16BitsToF32Bits, f16ToF32Array, f32BitsToF16Bits, f32BitsToBf16Bits, bf16BitsToF32Bits, f32ToF16Array } from "./dtypes.js";

export type PackedFormat = "bf16" | "f16" | "q8_0" | "q4_0" | "q4_1" | "q5_0" | "q5_1" | "q4_k" | "q5_k" | "q6_k";

export const QUANT_BLOCK = 32;
/** Weights per block and bytes per block of each quantized format (llama.cpp's block structs). */
const BLOCKS: Record<Exclude<PackedFormat, "bf16" | "f16">, { size: number; bytes: number }> = {
  q8_0: { size: 32, bytes: 2 + 32 },
  q4_0: { size: 32, bytes: 2 + 16 },
  q4_1: { size: 32, bytes: 4 + 16 },
  q5_0: { size: 32, bytes: 2 + 4 + 16 },
  q5_1: { size: 32, bytes: 4 + 4 + 16 },
  q4_k: { size: 256, bytes: 4 + 12 + 128 },
  q5_k: { size: 256, bytes: 4 + 12 + 32 + 128 },
  q6_k: { size: 256, bytes: 128 + 64 + 16 + 2 },
};

/** Weights per block of a format (1 for bf16/f16). */
export function blockSize(format: PackedFormat): number {
  return format === "bf16" || format === "f16" ? 1 : BLOCKS[format].size;
}

/** A [rows, cols] matrix in a packed format (row-major; each row packed independently). */
export interface PackedMatrix {
  readonly format: PackedFormat;
  readonly rows: number;
  readonly cols: number;
  readonly data: Uint8Array;
  /** q8_0 / q4_0 only: whole panels of 16 rows are interleaved for the native kernels (NativeBackend.kernelLayout) */
  readonly interleaved?: boolean;
}

/**
 * The interleaved layout of q8_0 / q4_0 the native integer kernels read fastest: each whole
 * panel of ILV_ROWS rows keeps its bytes but orders them by block: for block b, the rows' f16
 * scales (2 bytes each), then, for each 4 bytes u of a block's quants, those 4 bytes of every
 * row ([u][row][4]). Rows after the last whole panel stay in row order. (native/kernels.h
 * reads and writes it the same way.)
 */
export const ILV_ROWS = 16;

/** Row `r` of `m` in row order: a view of its bytes, or the row gathered from its interleaved panel. */
function rowInOrder(m: PackedMatrix, r: number): Uint8Array {
  const rb = rowBytes(m.format, m.cols);
  if (!m.interleaved || r >= Math.floor(m.rows / ILV_ROWS) * ILV_ROWS) return m.data.subarray(r * rb, (r + 1) * rb);
  const bb = BLOCKS[m.format as "q8_0" | "q4_0"].bytes, out = new Uint8Array(rb);
  const panel = Math.floor(r / ILV_ROWS) * ILV_ROWS * rb, p = r % ILV_ROWS;
  for (let b = 0; b < rb / bb; b++) {
    const block = panel + b * ILV_ROWS * bb, o = b * bb;
    out[o] = m.data[block + 2 * p];
    out[o + 1] = m.data[block + 2 * p + 1];
    // byte i >= 2 of the row's block: in the 4-byte group (i - 2) / 4, after the rows' scales
    for (let i = 2; i < bb; i++) out[o + i] = m.data[block + 2 * ILV_ROWS + 4 * ILV_ROWS * ((i - 2) >> 2) + 4 * p + ((i - 2) & 3)];
  }
  return out;
}

/** llama.cpp's fallback for a K format whose rows are not whole super-blocks (llama-quant.cpp). */
const K_FALLBACK: Partial<Record<PackedFormat, PackedFormat>> = { q4_k: "q5_0", q5_k: "q5_1", q6_k: "q8_0" };

/**
 * The format a matrix with `cols` columns is kept in when `format` is asked: quantized rows must
 * be whole blocks; a K format falls back as llama.cpp's does (q4_k -> q5_0, q5_k -> q5_1,
 * q6_k -> q8_0); what still does not fit stays f32 (null).
 */
export function fittingFormat(format: PackedFormat | null, cols: number): PackedFormat | null {
  if (format === null || cols % blockSize(format) === 0) return format;
  const fallback = K_FALLBACK[format];
  return fallback && cols % blockSize(fallback) === 0 ? fallback : null;
}

export function rowBytes(format: PackedFormat, cols: number): number {
  if (format === "bf16" || format === "f16") return cols * 2;
  return (cols / BLOCKS[format].size) * BLOCKS[format].bytes;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

const halfToFloat = (bits: number, format: "bf16" | "f16") => {
  u32[0] = format === "bf16" ? bf16BitsToF32Bits(bits) : f16BitsToF32Bits(bits);
  return f32[0];
};

const floatToHalf = (x: number, format: "bf16" | "f16") => {
  f32[0] = x;
  return format === "bf16" ? f32BitsToBf16Bits(u32[0]) : f32BitsToF16Bits(u32[0]);
};

type NativeQuantize = (x: Float32Array | Uint16Array, format: PackedFormat, rows: number, cols: number, out: Uint8Array, source?: "bf16" | "f16") => void;
let nativeQuantize: NativeQuantize | null | undefined;

/** The addon's threaded quantizers (bit-identical to packPortable), or null without the addon. */
function nativeQuantizer(): NativeQuantize | null {
  if (nativeQuantize === undefined) {
    try {
      nativeQuantize = (loadNativeAddon() as unknown as { quantize: NativeQuantize }).quantize;
    } catch {
      nativeQuantize = null;
    }
  }
  return nativeQuantize;
}

/**
 * `src` rounded to f16 (to nearest even, as f32ToF16Array) into `out`, `rows` runs of
 * src.length / rows values: with the addon's vectorized, threaded conversion when it is built
 * (a 16-bit KV cache takes a prompt's keys and values so), else in TypeScript. The same bits.
 */
export function f32ToF16Into(src: Float32Array, out: Uint16Array, rows = 1): void {
  const quantize = nativeQuantizer();
  if (!quantize || src.length !== out.length || src.length % rows !== 0) {
    f32ToF16Array(src, out);
    return;
  }
  quantize(src, "f16", rows, src.length / rows, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
}

/**
 * Packs a row-major f32 matrix. q formats round exactly as llama.cpp's quantize_row_*_ref does
 * (q8_0: max |w| -> ±127; q4_0: the signed max -> -8; the others in quant-blocks.ts), bf16/f16
 * to nearest even (dtypes.ts), with the native addon's threaded, vectorized code when it is
 * built, else in TypeScript (packPortable): the same bytes.
 */
export function packMatrix(w: Float32Array, rows: number, cols: number, format: PackedFormat): PackedMatrix {
  checkPack(w, rows, cols, format);
  const quantize = nativeQuantizer();
  if (!quantize) return packPortable(w, rows, cols, format);
  const data = new Uint8Array(rows * rowBytes(format, cols));
  quantize(w, format, rows, cols, data);
  return { format, rows, cols, data };
}

/**
 * Packs a row-major matrix of bf16 or f16 values (their bits): the same bytes as packMatrix of
 * their f32 values, which the addon never makes (it widens a block at a time).
 */
export function packHalfMatrix(bits: Uint16Array, source: "bf16" | "f16", rows: number, cols: number, format: PackedFormat): PackedMatrix {
  const quantize = nativeQuantizer();
  if (!quantize) return packMatrix(source === "bf16" ? bf16ToF32Array(bits) : f16ToF32Array(bits), rows, cols, format);
  if (bits.length !== rows * cols) throw new Error(`packHalfMatrix: ${bits.length} values for [${rows}, ${cols}]`);
  checkPack(bits, rows, cols, format);
  const data = new Uint8Array(rows * rowBytes(format, cols));
  quantize(bits, format, rows, cols, data, source);
  return { format, rows, cols, data };
}

/**
 * packHalfMatrix of a tensor's stored little-endian BF16 or F16 bytes (copied only when they are
 * not 2-byte aligned, as a Uint16Array view needs).
 */
export function packStoredHalfMatrix(bytes: Uint8Array, dtype: "BF16" | "F16", rows: number, cols: number, format: PackedFormat): PackedMatrix {
  const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
  const bits = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
  return packHalfMatrix(bits, dtype === "BF16" ? "bf16" : "f16", rows, cols, format);
}

function checkPack(w: { length: number }, rows: number, cols: number, format: PackedFormat): void {
  if (w.length !== rows * cols) throw new Error(`packMatrix: ${w.length} values for [${rows}, ${cols}]`);
  if (cols % blockSize(format) !== 0) {
    throw new Error(`packMatrix: ${format} needs a column count that is a multiple of ${blockSize(format)}, got ${cols}`);
  }
}

const fr = Math.fround;
/** C's roundf: half away from zero. */
const roundf = (x: number) => Math.sign(x) * Math.round(Math.abs(x));

/** packMatrix in TypeScript alone: the oracle the native quantizers are tested against. */
export function packPortable(w: Float32Array, rows: number, cols: number, format: PackedFormat): PackedMatrix {
  checkPack(w, rows, cols, format);
  const rb = rowBytes(format, cols);
  const data = new Uint8Array(rows * rb);
  const view = new DataView(data.buffer);
  const signed = new Int8Array(data.buffer);
  for (let r = 0; r < rows; r++) {
    const o = r * rb;
    if (format === "bf16" || format === "f16") {
      for (let j = 0; j < cols; j++) view.setUint16(o + 2 * j, floatToHalf(w[r * cols + j], format), true);
      continue;
    }
    if (format !== "q8_0" && format !== "q4_0") {
      const { size, bytes } = BLOCKS[format];
      for (let b = 0; b < cols / size; b++) encodeBlock(format, w, r * cols + b * size, data, o + b * bytes);
      continue;
    }
    // plain index loops: this runs over every weight of a 7B model at load time
    const bb = BLOCKS[format].bytes;
    for (let b = 0; b < cols / QUANT_BLOCK; b++) {
      const x0 = r * cols + b * QUANT_BLOCK;
      const bo = o + b * bb;
      if (format === "q8_0") {
        let amax = 0;
        for (let j = 0; j < QUANT_BLOCK; j++) amax = Math.max(amax, Math.abs(w[x0 + j]));
        const d = fr(amax / 127);
        const id = d ? fr(1 / d) : 0;
        view.setUint16(bo, floatToHalf(d, "f16"), true);
        for (let j = 0; j < QUANT_BLOCK; j++) signed[bo + 2 + j] = roundf(fr(w[x0 + j] * id));
      } else {
        // the value of largest magnitude, kept with its sign (the first of equal magnitudes), maps to -8
        let max = 0;
        for (let j = 0; j < QUANT_BLOCK; j++) if (Math.abs(w[x0 + j]) > Math.abs(max)) max = w[x0 + j];
        const d = fr(max / -8);
        const id = d ? fr(1 / d) : 0;
        view.setUint16(bo, floatToHalf(d, "f16"), true);
        for (let j = 0; j < 16; j++) {
          const lo = Math.min(15, Math.trunc(fr(fr(w[x0 + j] * id) + 8.5)));
          const hi = Math.min(15, Math.trunc(fr(fr(w[x0 + j + 16] * id) + 8.5)));
          data[bo + 2 + j] = lo | (hi << 4);
        }
      }
    }
  }
  return { format, rows, cols, data };
}

function encodeBlock(format: "q4_1" | "q5_0" | "q5_1" | "q4_k" | "q5_k" | "q6_k", w: Float32Array, x: number, y: Uint8Array, p: number) {
  switch (format) {
    case "q4_1": return encodeQx1(4, w, x, y, p);
    case "q5_1": return encodeQx1(5, w, x, y, p);
    case "q5_0": return encodeQ5_0(w, x, y, p);
    case "q4_k": return encodeQxK(4, w, x, y, p);
    case "q5_k": return encodeQxK(5, w, x, y, p);
    case "q6_k": return encodeQ6K(w, x, y, p);
  }
}

/** Row `r` of a packed matrix as f32 values, into `out` (length cols). */
export function unpackRow(m: PackedMatrix, r: number, out: Float32Array): void {
  const row = rowInOrder(m, r);
  const view = new DataView(row.buffer, row.byteOffset, row.byteLength);
  if (m.format === "bf16" || m.format === "f16") {
    for (let j = 0; j < m.cols; j++) out[j] = halfToFloat(view.getUint16(2 * j, true), m.format);
    return;
  }
  if (m.format !== "q8_0" && m.format !== "q4_0") {
    const { size, bytes } = BLOCKS[m.format];
    for (let b = 0; b < m.cols / size; b++) {
      if (size === 32) decode32(m.format as "q4_1" | "q5_0" | "q5_1", row, b * bytes, out, b * size);
      else decodeK(m.format as "q4_k" | "q5_k" | "q6_k", row, b * bytes, out, b * size);
    }
    return;
  }
  const bb = BLOCKS[m.format].bytes;
  for (let b = 0; b < m.cols / QUANT_BLOCK; b++) {
    const bo = b * bb;
    const d = halfToFloat(view.getUint16(bo, true), "f16");
    const base = b * QUANT_BLOCK;
    if (m.format === "q8_0") {
      for (let j = 0; j < QUANT_BLOCK; j++) out[base + j] = d * view.getInt8(bo + 2 + j);
    } else {
      for (let j = 0; j < 16; j++) {
        const byte = row[bo + 2 + j];
        out[base + j] = d * ((byte & 15) - 8);
        out[base + j + 16] = d * ((byte >> 4) - 8);
      }
    }
  }
}

/** The whole matrix as f32 (for tests and conversions). */
export function unpackMatrix(m: PackedMatrix): Float32Array {
  const out = new Float32Array(m.rows * m.cols);
  for (let r = 0; r < m.rows; r++) unpackRow(m, r, out.subarray(r * m.cols, (r + 1) * m.cols));
  return out;
}
