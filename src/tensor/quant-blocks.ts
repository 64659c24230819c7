/**
 * llama.cpp's block formats beyond Q8_0/Q4_0, one block at a time: the encoders are
 * `quantize_row_*_ref` of ggml-quants.c (with the K-quant scale searches `make_qkx2_quants` and
 * `make_qx_quants`), the decoders `dequantize_row_*`. Both compute in f32 exactly as the C code
 * does (every operation rounded with Math.fround, in the C order, no fused multiply-adds), so
 * the bytes and the decoded values are llama.cpp's, bit for bit.
 *
 * Layouts (little-endian, f16 = IEEE half; sizes in bytes):
 * - q4_1 (20 per 32): d f16, m f16, qs[16] (weight j in the low nibble of byte j, j + 16 in the
 *   high one); w = d·q + m.
 * - q5_0 (22 per 32): d f16, qh u32 (bit j = the fifth bit of weight j), qs[16] as q4_1;
 *   w = d·(q − 16).
 * - q5_1 (24 per 32): d, m f16, qh u32, qs[16]; w = d·q + m.
 * - q4_k (144 per 256): d, dmin f16, scales[12] (eight 6-bit scales and mins, get_scale_min_k4),
 *   qs[128] (per 64 weights: 32 bytes, the first 32 in low nibbles, the next 32 in high ones);
 *   w = d·sc·q − dmin·m per sub-block of 32.
 * - q5_k (176 per 256): d, dmin, scales[12], qh[32] (bit 2i / 2i+1 of byte l: fifth bit of weight
 *   l of sub-block 2i / 2i+1), qs[128] as q4_k.
 * - q6_k (210 per 256): ql[128], qh[64], scales[16] int8 (one per 16 weights), d f16;
 *   w = d·sc·(q − 32), q = 4 low bits from ql and 2 high bits from qh (per 128 weights: ql 64
 *   bytes, qh 32 bytes, weights l, l+32, l+64, l+96 share qh[l]).
 */
import { f16BitsToF32Bits, f32BitsToF16Bits } from "./dtypes.js";

const fr = Math.fround;
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** GGML_FP32_TO_FP16 (round to nearest even). */
export function toF16(x: number): number {
  f32[0] = x;
  return f32BitsToF16Bits(u32[0]);
}
/** GGML_FP16_TO_FP32. */
export function fromF16(h: number): number {
  u32[0] = f16BitsToF32Bits(h);
  return f32[0];
}
const rd16 = (b: Uint8Array, o: number) => b[o] | (b[o + 1] << 8);
const wr16 = (b: Uint8Array, o: number, v: number) => {
  b[o] = v & 255;
  b[o + 1] = v >> 8;
};

/** llama.cpp's nearest_int: round half to even through the 1.5·2^23 trick (valid for |x| < 2^22). */
export function nearestInt(x: number): number {
  return fr(x + 12582912) - 12582912;
}

const FLT_MAX = 3.4028234663852886e38;
const GROUP_MAX_EPS = fr(1e-15);

// ---------- 32-weight formats ----------

function minMax(x: Float32Array, o: number, n: number): [number, number] {
  let min = FLT_MAX, max = -FLT_MAX;
  for (let j = 0; j < n; j++) {
    const v = x[o + j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return [min, max];
}

function signedMax(x: Float32Array, o: number, n: number): number {
  let amax = 0, max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[o + j];
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

/** quantize_row_q4_1_ref / q5_1_ref for one block of 32 at x[o], into y[p]. */
export function encodeQx1(bits: 4 | 5, x: Float32Array, o: number, y: Uint8Array, p: number): void {
  const [min, max] = minMax(x, o, 32);
  const d = fr(fr(max - min) / ((1 << bits) - 1));
  const id = d ? fr(1 / d) : 0;
  wr16(y, p, toF16(d));
  wr16(y, p + 2, toF16(min));
  const qs = p + (bits === 4 ? 4 : 8);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const x0 = fr(fr(x[o + j] - min) * id);
    const x1 = fr(fr(x[o + j + 16] - min) * id);
    // q4_1 casts to int8 then clamps at 15; q5_1 casts to uint8 (no clamp)
    const xi0 = bits === 4 ? Math.min(15, Math.trunc(fr(x0 + 0.5))) : Math.trunc(fr(x0 + 0.5)) & 255;
    const xi1 = bits === 4 ? Math.min(15, Math.trunc(fr(x1 + 0.5))) : Math.trunc(fr(x1 + 0.5)) & 255;
    y[qs + j] = (xi0 & 15) | ((xi1 & 15) << 4);
    qh |= ((xi0 & 16) >> 4) << j;
    qh |= ((xi1 & 16) >> 4) << (j + 16);
  }
  if (bits === 5) new DataView(y.buffer, y.byteOffset).setUint32(p + 4, qh >>> 0, true);
}

/** quantize_row_q5_0_ref for one block of 32. */
export function encodeQ5_0(x: Float32Array, o: number, y: Uint8Array, p: number): void {
  const max = signedMax(x, o, 32);
  const d = fr(max / -16);
  const id = d ? fr(1 / d) : 0;
  wr16(y, p, toF16(d));
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const xi0 = Math.min(31, Math.trunc(fr(fr(x[o + j] * id) + 16.5)));
    const xi1 = Math.min(31, Math.trunc(fr(fr(x[o + j + 16] * id) + 16.5)));
    y[p + 6 + j] = (xi0 & 15) | ((xi1 & 15) << 4);
    qh |= ((xi0 & 16) >> 4) << j;
    qh |= ((xi1 & 16) >> 4) << (j + 16);
  }
  new DataView(y.buffer, y.byteOffset).setUint32(p + 2, qh >>> 0, true);
}

/** dequantize_row_q4_1 / q5_0 / q5_1 for one block at y[p], into out[o..o+32). */
export function decode32(format: "q4_1" | "q5_0" | "q5_1", y: Uint8Array, p: number, out: Float32Array, o: number): void {
  const d = fromF16(rd16(y, p));
  const m = format === "q5_0" ? 0 : fromF16(rd16(y, p + 2));
  const h = p + (format === "q5_1" ? 4 : 2);
  const qh = format === "q4_1" ? 0 : (y[h] | (y[h + 1] << 8) | (y[h + 2] << 16) | (y[h + 3] << 24)) >>> 0;
  const qs = p + (format === "q4_1" ? 4 : format === "q5_0" ? 6 : 8);
  for (let j = 0; j < 16; j++) {
    const lo = (y[qs + j] & 15) | (((qh >>> j) & 1) << 4);
    const hi = (y[qs + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4);
    if (format === "q5_0") {
      out[o + j] = fr((lo - 16) * d);
      out[o + j + 16] = fr((hi - 16) * d);
    } else {
      out[o + j] = fr(fr(lo * d) + m);
      out[o + j + 16] = fr(fr(hi * d) + m);
    }
  }
}

// ---------- K-quants (super-blocks of 256) ----------

/** make_qkx2_quants: scale and min for n values with levels 0..nmax; writes L; returns [scale, the_min]. */
function makeQkx2Quants(n: number, nmax: number, x: Float32Array, xo: number, weights: Float32Array, L: Uint8Array, lo: number,
  Laux: Uint8Array, rmin: number, rdelta: number, nstep: number): [number, number] {
  let min = x[xo], max = x[xo];
  let sumW = weights[0];
  let sumX = fr(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const xi = x[xo + i];
    if (xi < min) min = xi;
    if (xi > max) max = xi;
    const w = weights[i];
    sumW = fr(sumW + w);
    sumX = fr(sumX + fr(w * xi));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    return [0, -min];
  }
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = nearestInt(fr(iscale * fr(x[xo + i] - min)));
    L[lo + i] = Math.max(0, Math.min(nmax, l));
    const diff = fr(fr(fr(scale * L[lo + i]) + min) - x[xo + i]);
    bestError = fr(bestError + fr(weights[i] * fr(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / fr(max - min));
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * fr(x[xo + i] - min)))));
      Laux[i] = l;
      const w = weights[i];
      sumL = fr(sumL + fr(w * l));
      sumL2 = fr(sumL2 + fr(fr(w * l) * l));
      sumXL = fr(sumXL + fr(fr(w * l) * x[xo + i]));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fr(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        const diff = fr(fr(fr(thisScale * Laux[i]) + thisMin) - x[xo + i]);
        curError = fr(curError + fr(weights[i] * fr(diff * diff)));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = Laux[i];
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

/** make_qx_quants with rmse_type 1 and no importance weights (what Q6_K uses): L[i] in 0..2·nmax-1. */
function makeQxQuants(n: number, nmax: number, x: Float32Array, xo: number, L: Uint8Array, lo: number): number {
  let max = 0, amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + n);
    return 0;
  }
  const level = (iscale: number, i: number) => Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * x[xo + i]))));
  const sums = (iscale: number): [number, number] => {
    let sumlx = 0, suml2 = 0;
    for (let i = 0; i < n; i++) {
      const xi = x[xo + i];
      const l = level(iscale, i);
      const w = fr(xi * xi);
      sumlx = fr(sumlx + fr(fr(w * xi) * l));
      suml2 = fr(suml2 + fr(fr(w * l) * l));
    }
    return [sumlx, suml2];
  };
  let iscale = fr(-nmax / max);
  for (let i = 0; i < n; i++) L[lo + i] = level(iscale, i) + nmax;
  let [sumlx, suml2] = sums(iscale);
  let scale = suml2 ? fr(sumlx / suml2) : 0;
  let best = fr(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(0.1 * is)) / max);
    [sumlx, suml2] = sums(iscale);
    if (suml2 > 0 && fr(sumlx * sumlx) > fr(best * suml2)) {
      for (let i = 0; i < n; i++) L[lo + i] = level(iscale, i) + nmax;
      scale = fr(sumlx / suml2);
      best = fr(scale * sumlx);
    }
  }
  return scale;
}

/** get_scale_min_k4: the 6-bit scale and min of sub-block j from the 12 packed bytes at s. */
function scaleMinK4(j: number, y: Uint8Array, s: number): [number, number] {
  if (j < 4) return [y[s + j] & 63, y[s + j + 4] & 63];
  return [(y[s + j + 4] & 15) | ((y[s + j - 4] >> 6) << 4), (y[s + j + 4] >> 4) | ((y[s + j] >> 6) << 4)];
}

const L = new Uint8Array(256);
const Laux = new Uint8Array(32);
const weights = new Float32Array(32);
const scales = new Float32Array(16);
const mins = new Float32Array(8);

/** quantize_row_q4_K_ref / q5_K_ref for one super-block of 256 at x[o], into y[p]. */
export function encodeQxK(bits: 4 | 5, x: Float32Array, o: number, y: Uint8Array, p: number): void {
  const nmax = (1 << bits) - 1;
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) {
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(x[o + 32 * j + l] * x[o + 32 * j + l]));
    const avX = fr(Math.sqrt(fr(sumX2 / 32)));
    for (let l = 0; l < 32; l++) weights[l] = fr(avX + Math.abs(x[o + 32 * j + l]));
    const [scale, min] = bits === 4
      ? makeQkx2Quants(32, 15, x, o + 32 * j, weights, L, 32 * j, Laux, -1, fr(0.1), 20)
      : makeQkx2Quants(32, 31, x, o + 32 * j, weights, L, 32 * j, Laux, -0.5, fr(0.1), 15);
    scales[j] = scale;
    mins[j] = min;
    if (scale > maxScale) maxScale = scales[j];
    if (min > maxMin) maxMin = mins[j];
  }
  const s = p + 4;
  y.fill(0, s, s + 12);
  const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, nearestInt(fr(invScale * scales[j])) & 255);
    const lm = Math.min(63, nearestInt(fr(invMin * mins[j])) & 255);
    if (j < 4) {
      y[s + j] = ls;
      y[s + j + 4] = lm;
    } else {
      y[s + j + 4] = (ls & 15) | ((lm & 15) << 4);
      y[s + j - 4] |= (ls >> 4) << 6;
      y[s + j] |= (lm >> 4) << 6;
    }
  }
  wr16(y, p, toF16(fr(maxScale / 63)));
  wr16(y, p + 2, toF16(fr(maxMin / 63)));
  const dAll = fromF16(rd16(y, p)), mAll = fromF16(rd16(y, p + 2));
  for (let j = 0; j < 8; j++) {
    const [sc, m] = scaleMinK4(j, y, s);
    const d = fr(dAll * sc);
    if (!d) continue; // keeps the levels of the scale search
    const dm = fr(mAll * m);
    for (let ii = 0; ii < 32; ii++) L[32 * j + ii] = Math.max(0, Math.min(nmax, nearestInt(fr(fr(x[o + 32 * j + ii] + dm) / d))));
  }
  if (bits === 4) {
    for (let j = 0; j < 256; j += 64) for (let l = 0; l < 32; l++) y[p + 16 + j / 2 + l] = L[j + l] | (L[j + l + 32] << 4);
    return;
  }
  const qh = p + 16, ql = p + 48;
  y.fill(0, qh, qh + 32);
  let m1 = 1, m2 = 2;
  for (let n = 0; n < 256; n += 64) {
    for (let j = 0; j < 32; j++) {
      let l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        y[qh + j] |= m1;
      }
      if (l2 > 15) {
        l2 -= 16;
        y[qh + j] |= m2;
      }
      y[ql + n / 2 + j] = l1 | (l2 << 4);
    }
    m1 <<= 2;
    m2 <<= 2;
  }
}

/** quantize_row_q6_K_ref for one super-block of 256. */
export function encodeQ6K(x: Float32Array, o: number, y: Uint8Array, p: number): void {
  let maxScale = 0, maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const scale = makeQxQuants(16, 32, x, o + 16 * ib, L, 16 * ib);
    scales[ib] = scale;
    if (Math.abs(scale) > maxAbsScale) {
      maxAbsScale = Math.abs(scale);
      maxScale = scale;
    }
  }
  y.fill(0, p, p + 210);
  if (maxAbsScale < GROUP_MAX_EPS) return; // an all-zero block (d = +0)
  const iscale = fr(-128 / maxScale);
  wr16(y, p + 208, toF16(fr(1 / iscale)));
  const sc = p + 192;
  for (let ib = 0; ib < 16; ib++) y[sc + ib] = Math.min(127, nearestInt(fr(iscale * scales[ib]))) & 255;
  const dAll = fromF16(rd16(y, p + 208));
  for (let j = 0; j < 16; j++) {
    const d = fr(dAll * ((y[sc + j] << 24) >> 24));
    if (!d) continue;
    for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = Math.max(-32, Math.min(31, nearestInt(fr(x[o + 16 * j + ii] / d)))) + 32;
  }
  for (let j = 0; j < 256; j += 128) {
    const ql = p + j / 2, qh = p + 128 + j / 4;
    for (let l = 0; l < 32; l++) {
      y[ql + l] = (L[j + l] & 15) | ((L[j + l + 64] & 15) << 4);
      y[ql + l + 32] = (L[j + l + 32] & 15) | ((L[j + l + 96] & 15) << 4);
      y[qh + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6);
    }
  }
}

/** dequantize_row_q4_K / q5_K / q6_K for one super-block at y[p], into out[o..o+256). */
export function decodeK(format: "q4_k" | "q5_k" | "q6_k", y: Uint8Array, p: number, out: Float32Array, o: number): void {
  if (format === "q6_k") {
    const d = fromF16(rd16(y, p + 208));
    for (let n = 0; n < 256; n += 128) {
      const ql = p + n / 2, qh = p + 128 + n / 4, sc = p + 192 + n / 16;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = y[qh + l];
        const q1 = ((y[ql + l] & 15) | ((h & 3) << 4)) - 32;
        const q2 = ((y[ql + l + 32] & 15) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((y[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((y[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const s = (k: number) => fr(d * ((y[sc + is + k] << 24) >> 24));
        out[o + n + l] = fr(s(0) * q1);
        out[o + n + l + 32] = fr(s(2) * q2);
        out[o + n + l + 64] = fr(s(4) * q3);
        out[o + n + l + 96] = fr(s(6) * q4);
      }
    }
    return;
  }
  const d = fromF16(rd16(y, p)), min = fromF16(rd16(y, p + 2));
  const five = format === "q5_k";
  const qh = p + 16, ql = p + (five ? 48 : 16);
  for (let j = 0, is = 0; j < 256; j += 64, is += 2) {
    const [sc1, m1] = scaleMinK4(is, y, p + 4);
    const [sc2, m2] = scaleMinK4(is + 1, y, p + 4);
    const d1 = fr(d * sc1), dm1 = fr(min * m1), d2 = fr(d * sc2), dm2 = fr(min * m2);
    for (let l = 0; l < 32; l++) {
      const b = y[ql + j / 2 + l];
      const h = five ? y[qh + l] >> is : 0;
      out[o + j + l] = fr(fr(d1 * ((b & 15) + (h & 1 ? 16 : 0))) - dm1);
      out[o + j + l + 32] = fr(fr(d2 * ((b >> 4) + (h & 2 ? 16 : 0))) - dm2);
    }
  }
}
