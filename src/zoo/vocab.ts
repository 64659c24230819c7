/**
 * Resizing the vocabulary dimension of embed_tokens / lm_head without touching the rows that
 * stay: their bytes are copied as stored (f16 and bf16 included), only new rows are computed.
 */
import { dtypeSize } from "../io/safetensors-header.js";
import { bf16ToF32Array, f16ToF32Array, f32ToBf16Array, f32ToF16Array } from "../tensor/dtypes.js";
import { LlavaError } from "../util/errors.js";
import type { WeightReader } from "../io/weights.js";

/** The vocabulary size transformers pads to: old + added, rounded up to a multiple of `multiple`. */
export const paddedVocabSize = (oldVocab: number, added: number, multiple = 64) => Math.ceil((oldVocab + added) / multiple) * multiple;

/** f32 values as the bytes of a float dtype (F16 and BF16 rounded to nearest even, as PyTorch casts). */
export function encodeFloats(values: Float32Array, dtype: string, what: string): Uint8Array {
  switch (dtype) {
    case "F32":
      return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    case "F16":
      return new Uint8Array(f32ToF16Array(values).buffer);
    case "BF16":
      return new Uint8Array(f32ToBf16Array(values).buffer);
    default:
      throw new LlavaError(`${what}: cannot write computed values as ${dtype} (F32, F16 or BF16 only)`);
  }
}

/**
 * The bytes of a [V, D] matrix grown to [newRows, D]: the old rows as stored, every new row the
 * mean of the old rows (accumulated in f64). transformers' conversion scripts instead sample the
 * new rows from N(mean, 1e-5 * covariance); the mean is the deterministic centre of that.
 */
export function grownRows(reader: WeightReader, name: string, newRows: number): Uint8Array {
  const { dtype, shape } = reader.info(name);
  const what = `${reader.source}: tensor "${name}"`;
  if (shape.length !== 2 || shape[0] > newRows) throw new LlavaError(`${what}: cannot grow shape [${shape.join(", ")}] to ${newRows} rows`);
  const [rows, cols] = shape;
  const old = reader.readRaw(name).bytes;
  const row = encodeFloats(rowMean(old, dtype, rows, cols, what), dtype, what);
  const out = new Uint8Array(newRows * cols * dtypeSize(dtype));
  out.set(old);
  for (let r = rows; r < newRows; r++) out.set(row, r * row.length);
  return out;
}

/** Mean of the rows of raw [rows, cols] float bytes, widened a block of rows at a time (no f32 copy of the whole matrix). */
function rowMean(raw: Uint8Array, dtype: string, rows: number, cols: number, what: string): Float32Array {
  const sum = new Float64Array(cols);
  const size = dtype === "F32" ? 4 : 2;
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") throw new LlavaError(`${what}: cannot resize a ${dtype} tensor (F32, F16 or BF16 only)`);
  const blockRows = Math.max(1, Math.floor((1 << 20) / cols));
  const widened = new Float32Array(blockRows * cols);
  for (let r0 = 0; r0 < rows; r0 += blockRows) {
    const n = (Math.min(rows, r0 + blockRows) - r0) * cols;
    const start = raw.byteOffset + r0 * cols * size;
    const values = dtype === "F32"
      ? new Float32Array(raw.buffer, start, n)
      : (dtype === "F16" ? f16ToF32Array : bf16ToF32Array)(new Uint16Array(raw.buffer, start, n), widened.subarray(0, n));
    for (let i = 0; i < n; i++) sum[i % cols] += values[i];
  }
  return Float32Array.from(sum, (s) => s / rows);
}

/** The bytes of the first `keep` rows of a [V, D] matrix, as stored. */
export function firstRows(reader: WeightReader, name: string, keep: number): Uint8Array {
  const { dtype, shape } = reader.info(name);
  if (shape.length !== 2 || shape[0] < keep) {
    throw new LlavaError(`${reader.source}: tensor "${name}" of shape [${shape.join(", ")}] has fewer than ${keep} rows`);
  }
  return reader.readRaw(name).bytes.slice(0, keep * shape[1] * dtypeSize(dtype));
}
