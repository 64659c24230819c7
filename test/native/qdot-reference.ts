/**
 * An independent TypeScript model of the native backend's integer-activation products for
 * q8_0 and q4_0 weights (native/impl/qdot.h), written from the rule in native/README.md:
 *  1. activations in blocks of 32: d = fl32(amax / R), Q = clamp(roundHalfAway(fl32(x / d)),
 *     -R, R) with R = 127 for q4_0 weights and 32512 for q8_0 weights; Q = 0 when d = 0;
 *     d = NaN, Q = 0 when the block holds an infinity or NaN;
 *  2. isum = Σ Q·w per block, exact (w: the block's integer weights, read from the raw bytes);
 *  3. acc = fma(s_b, fl32(isum_b), acc) over the blocks in order from 0, s_b = fl32(d_b·dw_b),
 *     fma an f32 fused multiply-add (one rounding).
 * JavaScript numbers are doubles, so a correctly rounded f32 operation is Math.fround of the
 * double one where that is exact or rounds innocuously (products of f32 values, a quotient);
 * the fused multiply-add rounds the double sum to odd first (fma32 below).
 */
import assert from "node:assert/strict";
import type { Backend } from "../../src/tensor/backend.js";
import { packMatrix, type PackedFormat, type PackedMatrix } from "../../src/tensor/packed.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { randn, relativeRms } from "./helpers.js";

const QK = 32;

/** The activation integers' range ±R for products with weights of a q format. */
export function activationLevels(format: "q8_0" | "q4_0"): number {
  return format === "q8_0" ? 127 * 256 : 127;
}

export interface QuantizedRows {
  q: Int16Array;
  d: Float32Array;
}

const roundHalfAway = (y: number) => Math.sign(y) * Math.floor(Math.abs(y) + 0.5);

/** Rows of activations quantized per block of `block` values (32; 256 for the K formats). */
export function quantizeRows(a: Float32Array, m: number, k: number, levels: number, block = QK): QuantizedRows {
  const nb = k / block;
  const q = new Int16Array(m * k);
  const d = new Float32Array(m * nb);
  for (let i = 0; i < m; i++) {
    for (let b = 0; b < nb; b++) {
      const o = i * k + b * block;
      let amax = 0;
      let finite = true;
      for (let j = 0; j < block; j++) {
        const v = Math.abs(a[o + j]);
        if (!Number.isFinite(v)) finite = false;
        else if (v > amax) amax = v;
      }
      const db = Math.fround(amax / levels);
      d[i * nb + b] = finite ? db : NaN;
      if (!finite || db === 0) continue;
      for (let j = 0; j < block; j++) q[o + j] = Math.max(-levels, Math.min(levels, roundHalfAway(Math.fround(a[o + j] / db))));
    }
  }
  return { q, d };
}

function f16ToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0x1f) return f ? NaN : sign * Infinity;
  return e === 0 ? sign * f * 2 ** -24 : sign * (1 + f / 1024) * 2 ** (e - 15);
}

/** A q matrix's integer weights [rows][cols] and block scales [rows][cols / 32], from its bytes. */
export function integerWeights(w: PackedMatrix): { w: Int8Array; dw: Float32Array } {
  if (w.format !== "q8_0" && w.format !== "q4_0") throw new Error(`integerWeights: ${w.format} is not a q format`);
  const nb = w.cols / QK;
  const bb = w.format === "q8_0" ? 34 : 18;
  const ints = new Int8Array(w.rows * w.cols);
  const dw = new Float32Array(w.rows * nb);
  for (let r = 0; r < w.rows; r++) {
    for (let b = 0; b < nb; b++) {
      const o = (r * nb + b) * bb;
      dw[r * nb + b] = f16ToNumber(w.data[o] | (w.data[o + 1] << 8));
      const out = r * w.cols + b * QK;
      for (let j = 0; j < 16; j++) {
        if (w.format === "q8_0") {
          ints[out + j] = w.data[o + 2 + j];
          ints[out + j + 16] = w.data[o + 2 + j + 16];
        } else {
          ints[out + j] = (w.data[o + 2 + j] & 15) - 8;
          ints[out + j + 16] = (w.data[o + 2 + j] >> 4) - 8;
        }
      }
    }
  }
  return { w: ints, dw };
}

const f64 = new Float64Array(1);
const u64 = new BigUint64Array(f64.buffer);

/**
 * fl32(a·b + c) with one rounding, for f32 values a, b, c: a·b is exact in double, the double
 * sum is rounded to odd (from its exact error, TwoSum), and rounding that to f32 is then
 * correct because double has at least 2 more bits than f32 (Boldo & Melquiond).
 */
export function fma32(a: number, b: number, c: number): number {
  const p = a * b;
  let s = p + c;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  if (err !== 0 && Number.isFinite(s)) {
    f64[0] = s;
    if ((u64[0] & 1n) === 0n) u64[0] += err > 0 === s > 0 ? 1n : -1n;
    s = f64[0];
  }
  return Math.fround(s);
}

/** c[m, rows] (+)= a[m, cols] · Wᵀ in the integer-activation arithmetic. */
export function qdotMatmul(a: Float32Array, w: PackedMatrix, c: Float32Array, m: number, accumulate: boolean): void {
  const k = w.cols;
  const n = w.rows;
  const nb = k / QK;
  const x = quantizeRows(a, m, k, activationLevels(w.format as "q8_0" | "q4_0"));
  const wi = integerWeights(w);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let b = 0; b < nb; b++) {
        const xo = i * k + b * QK;
        const wo = j * k + b * QK;
        let isum = 0;
        for (let l = 0; l < QK; l++) isum += x.q[xo + l] * wi.w[wo + l];
        acc = fma32(Math.fround(x.d[i * nb + b] * wi.dw[j * nb + b]), Math.fround(isum), acc);
      }
      const out = acc;
      c[i * n + j] = accumulate ? Math.fround(c[i * n + j] + out) : out;
    }
  }
}

/**
 * The relative RMS error that quantizing `a` alone predicts for a product with weights
 * independent of it: each q·d differs from x by a rounding error uniform on ±d/2 (variance
 * d²/12), and Σ w·e over independent errors has the variance Σ w²·d²/12, against Σ w²·x² for
 * the product itself. So the expected relative RMS is sqrt(mean d²/12 / mean x²): 0.38% for
 * uniform activations with 127 levels, 256 times less with 32512.
 */
export function predictedRelativeRms(a: Float32Array, m: number, k: number, levels: number, block = QK): number {
  const { d } = quantizeRows(a, m, k, levels, block);
  let e2 = 0;
  for (const db of d) e2 += (db * db) / 12;
  let x2 = 0;
  for (const v of a) x2 += v * v;
  return Math.sqrt((e2 * block) / x2);
}

/**
 * `be`'s products of random matrices of `format` (three shapes, n·m >= 2000 outputs each)
 * against the reference backend's exact ones: the relative RMS error lies within [0.7, 1.3] x
 * what quantizing the activations (`levels`, blocks of `block`) predicts, which catches a wrong
 * scale, sign or rounding rule while leaving room for the sampling error.
 */
export function assertErrorAsPredicted(be: Backend, format: PackedFormat, opts: { seed: number; levels: number; block?: number; rowwise?: boolean }): void {
  const exactBackend = new RefBackend();
  let seed = opts.seed;
  for (const [rows, cols, m] of [[256, 512, 9], [2048, 256, 1], [64, 2048, 40]]) {
    const w = packMatrix(randn(rows * cols, seed++), rows, cols, format);
    const a = randn(m * cols, seed++);
    const got = new Float32Array(m * rows);
    be.packedMatmul(a, w, got, m, false, false, opts.rowwise);
    const exact = new Float32Array(m * rows);
    exactBackend.packedMatmul(a, w, exact, m, false, false);
    const rel = relativeRms(got, exact);
    const predicted = predictedRelativeRms(a, m, cols, opts.levels, opts.block);
    const label = `${format} [${rows}, ${cols}] m=${m}: relative RMS ${rel.toExponential(3)}, predicted ${predicted.toExponential(3)}`;
    assert.ok(rel > 0.7 * predicted && rel < 1.3 * predicted, label);
  }
}
