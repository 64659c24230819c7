/**
 * The reference backend: plain TypeScript, written for clarity and exactness rather than
 * speed. Sums run in float64 (JavaScript numbers) and are stored as float32. It is the oracle
 * every other backend is checked against.
 */
import type { Activation, AdamWStep, AttentionParams, Backend, GemmParams } from "./backend.js";
import { f16ToF32Array } from "./dtypes.js";
import { erf } from "./math.js";
import { type PackedMatrix, unpackRow } from "./packed.js";
import { Rng } from "../util/random.js";

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const TANH_C = Math.sqrt(2 / Math.PI);

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

function activate(kind: Activation, x: number): number {
  switch (kind) {
    case "gelu":
      return 0.5 * x * (1 + erf(x * SQRT1_2));
    case "quick_gelu":
      return x * sigmoid(1.702 * x);
    case "silu":
      return x * sigmoid(x);
    case "gelu_tanh":
      return 0.5 * x * (1 + Math.tanh(TANH_C * (x + 0.044715 * x * x * x)));
    case "relu":
      return x > 0 ? x : 0;
  }
}

function activateGrad(kind: Activation, x: number): number {
  switch (kind) {
    case "gelu":
      return 0.5 * (1 + erf(x * SQRT1_2)) + x * Math.exp(-0.5 * x * x) * INV_SQRT_2PI;
    case "quick_gelu": {
      const s = sigmoid(1.702 * x);
      return s + 1.702 * x * s * (1 - s);
    }
    case "silu": {
      const s = sigmoid(x);
      return s * (1 + x * (1 - s));
    }
    case "gelu_tanh": {
      const u = TANH_C * (x + 0.044715 * x * x * x);
      const t = Math.tanh(u);
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * TANH_C * (1 + 3 * 0.044715 * x * x);
    }
    case "relu":
      return x > 0 ? 1 : 0;
  }
}

/** Mean and 1/sqrt(variance + eps) of the row x[r .. r + dim). */
function rowMoments(x: Float32Array, r: number, dim: number, eps: number): [number, number] {
  let mean = 0;
  for (let j = 0; j < dim; j++) mean += x[r + j];
  mean /= dim;
  let v = 0;
  for (let j = 0; j < dim; j++) v += (x[r + j] - mean) ** 2;
  return [mean, 1 / Math.sqrt(v / dim + eps)];
}

/** The keys [first, limit) that query i sees: all, causal, or causal within a sliding window. */
export function visibleKeys(p: AttentionParams, i: number): [number, number] {
  if (p.causalOffset === undefined) return [0, p.tk];
  const pos = i + p.causalOffset;
  return [p.window ? Math.max(0, pos - p.window + 1) : 0, Math.min(p.tk, pos + 1)];
}

export class RefBackend implements Backend {
  readonly name = "ref";

  gemm(a: Float32Array, b: Float32Array, c: Float32Array, p: GemmParams): void {
    const { m, n, k } = p;
    // element (i, l) of op(A) is a[i * ai + l * al]
    const ai = p.transA ? 1 : k;
    const al = p.transA ? m : 1;
    if (p.transB) {
      // op(B)(l, j) = b[j * k + l]: a dot product of two rows
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          const bj = j * k;
          for (let l = 0; l < k; l++) s += a[i * ai + l * al] * b[bj + l];
          c[i * n + j] = p.accumulate ? c[i * n + j] + s : s;
        }
      }
      return;
    }
    const row = new Float64Array(n);
    for (let i = 0; i < m; i++) {
      row.fill(0);
      for (let l = 0; l < k; l++) {
        const av = a[i * ai + l * al];
        if (av === 0) continue;
        const bl = l * n;
        for (let j = 0; j < n; j++) row[j] += av * b[bl + j];
      }
      const ci = i * n;
      for (let j = 0; j < n; j++) c[ci + j] = p.accumulate ? c[ci + j] + row[j] : row[j];
    }
  }

  kernelLayout(w: PackedMatrix): PackedMatrix {
    return w;
  }

  packedMatmul(a: Float32Array, w: PackedMatrix, c: Float32Array, m: number, transposed: boolean, accumulate: boolean): void {
    const { rows, cols } = w;
    const row = new Float32Array(cols);
    const outCols = transposed ? cols : rows;
    const acc = new Float64Array(m * outCols);
    for (let r = 0; r < rows; r++) {
      unpackRow(w, r, row);
      for (let i = 0; i < m; i++) {
        if (transposed) {
          const g = a[i * rows + r];
          if (g === 0) continue;
          const o = i * cols;
          for (let j = 0; j < cols; j++) acc[o + j] += g * row[j];
        } else {
          let s = 0;
          const o = i * cols;
          for (let j = 0; j < cols; j++) s += a[o + j] * row[j];
          acc[i * rows + r] = s;
        }
      }
    }
    for (let i = 0; i < acc.length; i++) c[i] = accumulate ? c[i] + acc[i] : acc[i];
  }

  add(x: Float32Array, y: Float32Array, out: Float32Array): void {
    for (let i = 0; i < out.length; i++) out[i] = x[i] + y[i];
  }

  addBroadcast(x: Float32Array, y: Float32Array, out: Float32Array): void {
    const n = y.length;
    for (let i = 0; i < out.length; i += n) {
      for (let j = 0; j < n; j++) out[i + j] = x[i + j] + y[j];
    }
  }

  mul(x: Float32Array, y: Float32Array, out: Float32Array): void {
    for (let i = 0; i < out.length; i++) out[i] = x[i] * y[i];
  }

  scale(x: Float32Array, s: number, out: Float32Array): void {
    for (let i = 0; i < out.length; i++) out[i] = x[i] * s;
  }

  addScaled(x: Float32Array, y: Float32Array, s: number, out: Float32Array): void {
    for (let i = 0; i < out.length; i++) out[i] = x[i] + Math.fround(y[i] * s);
  }

  accumulate(y: Float32Array, x: Float32Array): void {
    for (let i = 0; i < y.length; i++) y[i] += x[i];
  }

  sumRows(x: Float32Array, rowLength: number, out: Float32Array): void {
    const acc = new Float64Array(rowLength);
    for (let i = 0; i < x.length; i += rowLength) {
      for (let j = 0; j < rowLength; j++) acc[j] += x[i + j];
    }
    for (let j = 0; j < rowLength; j++) out[j] = acc[j];
  }

  activation(kind: Activation, x: Float32Array, out: Float32Array): void {
    for (let i = 0; i < out.length; i++) out[i] = activate(kind, x[i]);
  }

  activationBackward(kind: Activation, x: Float32Array, dy: Float32Array, dx: Float32Array): void {
    for (let i = 0; i < dx.length; i++) dx[i] += dy[i] * activateGrad(kind, x[i]);
  }

  layerNorm(x: Float32Array, w: Float32Array, b: Float32Array, dim: number, eps: number, out: Float32Array): void {
    for (let r = 0; r < x.length; r += dim) {
      const [mean, rstd] = rowMoments(x, r, dim, eps);
      for (let j = 0; j < dim; j++) out[r + j] = (x[r + j] - mean) * rstd * w[j] + b[j];
    }
  }

  layerNormBackward(
    x: Float32Array, w: Float32Array, dy: Float32Array, dim: number, eps: number,
    dx: Float32Array | null, dw: Float32Array | null, db: Float32Array | null,
  ): void {
    const xhat = new Float64Array(dim);
    for (let r = 0; r < x.length; r += dim) {
      const [mean, rstd] = rowMoments(x, r, dim, eps);
      let sumG = 0;
      let sumGX = 0;
      for (let j = 0; j < dim; j++) {
        xhat[j] = (x[r + j] - mean) * rstd;
        const g = dy[r + j] * w[j];
        sumG += g;
        sumGX += g * xhat[j];
        if (dw) dw[j] += dy[r + j] * xhat[j];
        if (db) db[j] += dy[r + j];
      }
      if (!dx) continue;
      for (let j = 0; j < dim; j++) {
        const g = dy[r + j] * w[j];
        dx[r + j] += rstd * (g - sumG / dim - xhat[j] * (sumGX / dim));
      }
    }
  }

  rmsNorm(x: Float32Array, w: Float32Array, dim: number, eps: number, out: Float32Array): void {
    for (let r = 0; r < x.length; r += dim) {
      let ms = 0;
      for (let j = 0; j < dim; j++) ms += x[r + j] * x[r + j];
      const rr = 1 / Math.sqrt(ms / dim + eps);
      for (let j = 0; j < dim; j++) out[r + j] = w[j] * (x[r + j] * rr);
    }
  }

  rmsNormBackward(
    x: Float32Array, w: Float32Array, dy: Float32Array, dim: number, eps: number,
    dx: Float32Array | null, dw: Float32Array | null,
  ): void {
    for (let r = 0; r < x.length; r += dim) {
      let ms = 0;
      for (let j = 0; j < dim; j++) ms += x[r + j] * x[r + j];
      const rr = 1 / Math.sqrt(ms / dim + eps);
      let dot = 0;
      for (let j = 0; j < dim; j++) {
        dot += w[j] * dy[r + j] * x[r + j];
        if (dw) dw[j] += dy[r + j] * x[r + j] * rr;
      }
      if (!dx) continue;
      const c = (rr * rr * rr * dot) / dim;
      for (let j = 0; j < dim; j++) dx[r + j] += rr * w[j] * dy[r + j] - c * x[r + j];
    }
  }

  rope(
    x: Float32Array, positions: Int32Array, heads: number, headDim: number,
    invFreq: Float64Array, inverse: boolean, out: Float32Array,
  ): void {
    const half = headDim / 2;
    const cos = new Float64Array(half);
    const sin = new Float64Array(half);
    const sign = inverse ? -1 : 1;
    for (let r = 0; r < positions.length; r++) {
      for (let i = 0; i < half; i++) {
        const angle = positions[r] * invFreq[i];
        cos[i] = Math.cos(angle);
        sin[i] = sign * Math.sin(angle);
      }
      for (let h = 0; h < heads; h++) {
        const o = (r * heads + h) * headDim;
        for (let i = 0; i < half; i++) {
          const x1 = x[o + i];
          const x2 = x[o + half + i];
          out[o + i] = x1 * cos[i] - x2 * sin[i];
          out[o + half + i] = x2 * cos[i] + x1 * sin[i];
        }
      }
    }
  }

  /**
   * Softmax attention weights of query (b, i, h) over its visible keys [first, limit), written
   * into probs[first..limit). Returns the range and the query and kv head offsets.
   */
  private attentionWeights(q: Float32Array, k: Float32Array, p: AttentionParams, b: number, i: number, h: number, probs: Float64Array) {
    const { tq, tk, heads, kvHeads, headDim: d, scale } = p;
    const kvStride = p.kvBatchStride ?? tk * kvHeads * d;
    const qo = ((b * tq + i) * heads + h) * d;
    const kvBase = b * kvStride + Math.floor(h / (heads / kvHeads)) * d;
    const [first, limit] = visibleKeys(p, i);
    let max = -Infinity;
    for (let j = first; j < limit; j++) {
      const ko = kvBase + j * kvHeads * d;
      let s = 0;
      for (let e = 0; e < d; e++) s += q[qo + e] * k[ko + e];
      probs[j] = s * scale;
      if (probs[j] > max) max = probs[j];
    }
    let sum = 0;
    for (let j = first; j < limit; j++) sum += probs[j] = Math.exp(probs[j] - max);
    for (let j = first; j < limit; j++) probs[j] /= sum;
    return { first, limit, qo, kvBase, kvRow: kvHeads * d };
  }

  attention(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, p: AttentionParams): void {
    const d = p.headDim;
    const probs = new Float64Array(p.tk);
    const acc = new Float64Array(d);
    for (let b = 0; b < p.batch; b++) {
      for (let i = 0; i < p.tq; i++) {
        for (let h = 0; h < p.heads; h++) {
          const { first, limit, qo, kvBase, kvRow } = this.attentionWeights(q, k, p, b, i, h, probs);
          acc.fill(0);
          for (let j = first; j < limit; j++) {
            const vo = kvBase + j * kvRow;
            for (let e = 0; e < d; e++) acc[e] += probs[j] * v[vo + e];
          }
          for (let e = 0; e < d; e++) out[qo + e] = acc[e];
        }
      }
    }
  }

  attentionF16(q: Float32Array, k: Uint16Array, v: Uint16Array, out: Float32Array, p: AttentionParams): void {
    this.attention(q, f16ToF32Array(k), f16ToF32Array(v), out, p);
  }

  attentionMany(q: Float32Array, ks: Float32Array[], vs: Float32Array[], lengths: Int32Array, out: Float32Array, p: AttentionParams): void {
    this.eachSequence(q, lengths, out, p, (b, qb, ob, one) => this.attention(qb, ks[b], vs[b], ob, one));
  }

  attentionManyF16(q: Float32Array, ks: Uint16Array[], vs: Uint16Array[], lengths: Int32Array, out: Float32Array, p: AttentionParams): void {
    this.eachSequence(q, lengths, out, p, (b, qb, ob, one) => this.attentionF16(qb, ks[b], vs[b], ob, one));
  }

  /** attentionMany's sequences one at a time: b, its query and output rows, its own params */
  private eachSequence(q: Float32Array, lengths: Int32Array, out: Float32Array, p: AttentionParams,
    run: (b: number, qb: Float32Array, ob: Float32Array, one: AttentionParams) => void): void {
    const n = p.heads * p.headDim;
    for (let b = 0; b < p.batch; b++) {
      const tk = lengths[b];
      run(b, q.subarray(b * n, (b + 1) * n), out.subarray(b * n, (b + 1) * n), { ...p, batch: 1, tq: 1, tk, causalOffset: tk - 1, kvBatchStride: undefined });
    }
  }

  attentionBackward(
    q: Float32Array, k: Float32Array, v: Float32Array, dout: Float32Array,
    dq: Float32Array | null, dk: Float32Array | null, dv: Float32Array | null, p: AttentionParams,
  ): void {
    const d = p.headDim;
    const probs = new Float64Array(p.tk);
    const dprobs = new Float64Array(p.tk);
    for (let b = 0; b < p.batch; b++) {
      for (let i = 0; i < p.tq; i++) {
        for (let h = 0; h < p.heads; h++) {
          const { first, limit, qo, kvBase, kvRow } = this.attentionWeights(q, k, p, b, i, h, probs);
          // dP_j = dout · v_j ; dS_j = P_j (dP_j - Σ P dP)
          let pdp = 0;
          for (let j = first; j < limit; j++) {
            const vo = kvBase + j * kvRow;
            let s = 0;
            for (let e = 0; e < d; e++) s += dout[qo + e] * v[vo + e];
            dprobs[j] = s;
            pdp += probs[j] * s;
          }
          for (let j = first; j < limit; j++) {
            const o = kvBase + j * kvRow;
            const ds = probs[j] * (dprobs[j] - pdp) * p.scale;
            for (let e = 0; e < d; e++) {
              if (dq) dq[qo + e] += ds * k[o + e];
              if (dk) dk[o + e] += ds * q[qo + e];
              if (dv) dv[o + e] += probs[j] * dout[qo + e];
            }
          }
        }
      }
    }
  }

  embedding(table: Float32Array, ids: Int32Array, dim: number, out: Float32Array): void {
    for (let i = 0; i < ids.length; i++) out.set(table.subarray(ids[i] * dim, (ids[i] + 1) * dim), i * dim);
  }

  embeddingBackward(ids: Int32Array, dy: Float32Array, dim: number, dtable: Float32Array): void {
    for (let i = 0; i < ids.length; i++) {
      const o = ids[i] * dim;
      for (let j = 0; j < dim; j++) dtable[o + j] += dy[i * dim + j];
    }
  }

  crossEntropy(
    logits: Float32Array, targets: Int32Array, vocab: number, ignoreIndex: number,
    dlogits: Float32Array | null,
  ): number {
    let count = 0;
    for (const t of targets) if (t !== ignoreIndex) count++;
    if (dlogits) dlogits.fill(0);
    if (count === 0) return NaN;
    let total = 0;
    for (let r = 0; r < targets.length; r++) {
      const t = targets[r];
      if (t === ignoreIndex) continue;
      const o = r * vocab;
      let max = -Infinity;
      for (let j = 0; j < vocab; j++) if (logits[o + j] > max) max = logits[o + j];
      let sum = 0;
      for (let j = 0; j < vocab; j++) sum += Math.exp(logits[o + j] - max);
      const lse = Math.log(sum) + max;
      total += lse - logits[o + t];
      if (!dlogits) continue;
      for (let j = 0; j < vocab; j++) dlogits[o + j] = Math.exp(logits[o + j] - lse) / count;
      dlogits[o + t] -= 1 / count;
    }
    return total / count;
  }

  adamw(param: Float32Array, grad: Float32Array, expAvg: Float32Array, expAvgSq: Float32Array, h: AdamWStep): void {
    const { decay, beta1, beta2, stepSize, biasCorrection2Sqrt, eps } = h;
    for (let j = 0; j < param.length; j++) {
      const g = grad[j];
      param[j] *= decay;
      expAvg[j] += (g - expAvg[j]) * (1 - beta1);
      expAvgSq[j] = expAvgSq[j] * beta2 + (1 - beta2) * g * g;
      param[j] -= (stepSize * expAvg[j]) / (Math.sqrt(expAvgSq[j]) / biasCorrection2Sqrt + eps);
    }
  }

  sumSquares(x: Float32Array): number {
    let s = 0;
    for (let j = 0; j < x.length; j++) s += x[j] * x[j];
    return s;
  }

  zero(x: Float32Array): void {
    x.fill(0);
  }

  argmaxFinite(x: Float32Array): number {
    let best = -1;
    for (let i = 0; i < x.length; i++) {
      if (!Number.isFinite(x[i])) return -1;
      if (best < 0 || x[i] > x[best]) best = i;
    }
    return best;
  }

  dropout(state: number, p: number, x: Float32Array, out: Float32Array): void {
    const rng = new Rng(state);
    const keep = Math.fround(1 / (1 - p));
    for (let i = 0; i < out.length; i++) out[i] = x[i] * (rng.next() < p ? 0 : keep);
  }
}
