/**
 * An independent TypeScript model of the native backend's integer-activation products for
 * q4_k, q5_k and q6_k weights (native/impl/kqdot.h), written from the rule in native/README.md:
 *  1. activations in super-blocks of 256: d = fl32(amax / 127), Q = clamp(roundHalfAway(
 *     fl32(x / d)), -127, 127); Q = 0 when d = 0; d = NaN, Q = 0 when the block holds an
 *     infinity or NaN;
 *  2. per weight super-block, exact integers isum = Σ_g sc_g · Σ_{v in g} Q_v·q_v and (q4_k,
 *     q5_k) msum = Σ_g m_g · Σ_{v in g} Q_v, from the integer weights, scales and mins in its
 *     bytes (llama.cpp's block_q4_K / block_q5_K / block_q6_K);
 *  3. acc = fma(fl32(d·dw), fl32(isum), acc), then (q4_k, q5_k) acc = fma(fl32(d·dmin),
 *     fl32(-msum), acc), over the super-blocks in order from 0.
 */
import type { PackedMatrix } from "../../src/tensor/packed.js";
import { f16ToNumber } from "../../src/tensor/dtypes.js";
import { fma32, quantizeRows } from "./qdot-reference.js";

const QKK = 256;
export type KFormat = "q4_k" | "q5_k" | "q6_k";
const BLOCK_BYTES: Record<KFormat, number> = { q4_k: 144, q5_k: 176, q6_k: 210 };

/** One super-block's integers: q per value, scale and min per value (the group's). */
interface KBlock {
  q: Int8Array;
  sc: Int16Array;
  mn: Int16Array;
  d: number;
  dmin: number;
}

function scaleMin(s: Uint8Array, j: number): [number, number] {
  if (j < 4) return [s[j] & 63, s[j + 4] & 63];
  return [(s[j + 4] & 15) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)];
}

function readBlock(format: KFormat, b: Uint8Array): KBlock {
  const q = new Int8Array(QKK);
  const sc = new Int16Array(QKK);
  const mn = new Int16Array(QKK);
  const f16 = (o: number) => f16ToNumber(b[o] | (b[o + 1] << 8));
  if (format === "q6_k") {
    // value v: low 4 bits from ql, high 2 bits from qh, minus 32; scale int8 per 16 values
    for (let v = 0; v < QKK; v++) {
      const half = v >> 7;
      const r = v & 127;
      const l = r & 31;
      const quarter = r >> 5; // 0..3
      const qlByte = b[64 * half + l + (quarter & 1) * 32];
      const low = quarter < 2 ? qlByte & 15 : qlByte >> 4;
      const high = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
      q[v] = (low | (high << 4)) - 32;
      sc[v] = (b[192 + (v >> 4)] << 24) >> 24;
    }
    return { q, sc, mn, d: f16(208), dmin: 0 };
  }
  const five = format === "q5_k";
  const qs = b.subarray(five ? 48 : 16);
  for (let v = 0; v < QKK; v++) {
    const g = v >> 5; // the group of 32
    const byte = qs[32 * (g >> 1) + (v & 31)];
    const nibble = g & 1 ? byte >> 4 : byte & 15;
    const high = five ? (b[16 + (v & 31)] >> g) & 1 : 0;
    q[v] = nibble | (high << 4);
    [sc[v], mn[v]] = scaleMin(b.subarray(4, 16), g);
  }
  return { q, sc, mn, d: f16(0), dmin: f16(2) };
}

/** c[m, rows] (+)= a[m, cols] · Wᵀ in the K-quant integer-activation arithmetic. */
export function kqdotMatmul(a: Float32Array, w: PackedMatrix, c: Float32Array, m: number, accumulate: boolean): void {
  const format = w.format as KFormat;
  const k = w.cols;
  const nsb = k / QKK;
  const x = quantizeRows(a, m, k, 127, QKK);
  const bb = BLOCK_BYTES[format];
  const blocks: KBlock[] = [];
  for (let r = 0; r < w.rows; r++)
    for (let b = 0; b < nsb; b++) blocks.push(readBlock(format, w.data.subarray((r * nsb + b) * bb, (r * nsb + b + 1) * bb)));
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < w.rows; j++) {
      let acc = 0;
      for (let b = 0; b < nsb; b++) {
        const blk = blocks[j * nsb + b];
        const xo = i * k + b * QKK;
        let isum = 0;
        let msum = 0;
        for (let v = 0; v < QKK; v++) {
          isum += blk.sc[v] * x.q[xo + v] * blk.q[v];
          msum += blk.mn[v] * x.q[xo + v];
        }
        const da = x.d[i * nsb + b];
        acc = fma32(Math.fround(da * blk.d), Math.fround(isum), acc);
        if (format !== "q6_k") acc = fma32(Math.fround(da * blk.dmin), Math.fround(-msum), acc);
      }
      c[i * w.rows + j] = accumulate ? Math.fround(c[i * w.rows + j] + acc) : acc;
    }
  }
}
