/**
 * The kernel interface. A backend computes on flat Float32Arrays that the caller owns
 * (outputs are preallocated by the caller), so kernels never allocate large buffers and a
 * native backend can work on the same memory without copies.
 *
 * Layout conventions: row-major; a "row" is the last dimension. Attention tensors are
 * [B, T, H, D] (batch, time, heads, head dim); key/value tensors may live in a larger cache
 * buffer, so their batch stride is passed explicitly.
 */
import type { PackedMatrix } from "./packed.js";

export type Activation = "gelu" | "quick_gelu" | "silu" | "gelu_tanh" | "relu";

export interface GemmParams {
  /** rows of op(A) and C */
  m: number;
  /** columns of op(B) and C */
  n: number;
  /** inner dimension */
  k: number;
  /** A is stored [k, m] instead of [m, k] */
  transA?: boolean;
  /** B is stored [n, k] instead of [k, n] (the layout of a PyTorch Linear weight) */
  transB?: boolean;
  /** C += op(A) op(B) instead of C = op(A) op(B) */
  accumulate?: boolean;
  /** with transB: each row of C exactly as the product of that row alone would be (batched decode) */
  rowwise?: boolean;
}

export interface AttentionParams {
  batch: number;
  /** query positions per batch row */
  tq: number;
  /** key positions per batch row */
  tk: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  scale: number;
  /** query i may see key j only when j <= i + causalOffset; undefined = no mask */
  causalOffset?: number;
  /** with causalOffset: query i also may not see keys j <= i + causalOffset - window (Mistral's sliding window) */
  window?: number;
  /** distance between batch rows of k and v, in elements (default tk * kvHeads * headDim) */
  kvBatchStride?: number;
}

/** One AdamW update's numbers (torch.optim.AdamW): computed once per tensor by the optimizer. */
export interface AdamWStep {
  /** 1 - lr * weight decay, the decoupled decay factor */
  decay: number;
  beta1: number;
  beta2: number;
  /** lr / (1 - beta1^step) */
  stepSize: number;
  /** sqrt(1 - beta2^step) */
  biasCorrection2Sqrt: number;
  eps: number;
}

export interface Backend {
  readonly name: string;

  /** C[m,n] (+)= op(A)[m,k] · op(B)[k,n] */
  gemm(a: Float32Array, b: Float32Array, c: Float32Array, p: GemmParams): void;

  /**
   * With a packed W [rows, cols] (bf16, f16, q8_0, q4_0; see packed.ts):
   * transposed = false: C[m, rows] (+)= A[m, cols] · Wᵀ (a linear layer's forward);
   * transposed = true:  C[m, cols] (+)= A[m, rows] · W  (its input gradient).
   * `rowwise` (forward): each row of C exactly as the product of that row alone would be.
   */
  packedMatmul(a: Float32Array, w: PackedMatrix, c: Float32Array, m: number, transposed: boolean, accumulate: boolean, rowwise?: boolean): void;
  /**
   * `w` in the layout this backend's packedMatmul reads fastest (a loaded model keeps that), or
   * `w` itself. It may reorder w's bytes in place: use only the matrix it returns afterwards.
   */
  kernelLayout(w: PackedMatrix): PackedMatrix;

  /** out = x + y (same length) */
  add(x: Float32Array, y: Float32Array, out: Float32Array): void;
  /** out[i] = x[i] + y[i % y.length]: y broadcast over the leading dimensions of x */
  addBroadcast(x: Float32Array, y: Float32Array, out: Float32Array): void;
  /** out = x * y (same length) */
  mul(x: Float32Array, y: Float32Array, out: Float32Array): void;
  /** out = x * s */
  scale(x: Float32Array, s: number, out: Float32Array): void;
  /** out = x + y * s, y * s rounded as scale rounds it */
  addScaled(x: Float32Array, y: Float32Array, s: number, out: Float32Array): void;
  /** y += x */
  accumulate(y: Float32Array, x: Float32Array): void;
  /** out[j] = sum over rows of x[row, j]: the gradient of a broadcast add */
  sumRows(x: Float32Array, rowLength: number, out: Float32Array): void;

  activation(kind: Activation, x: Float32Array, out: Float32Array): void;
  /** dx (+)= dy * act'(x) */
  activationBackward(kind: Activation, x: Float32Array, dy: Float32Array, dx: Float32Array): void;

  layerNorm(x: Float32Array, w: Float32Array, b: Float32Array, dim: number, eps: number, out: Float32Array): void;
  /** dx += ..., dw += ..., db += ... (any of the three may be null when not needed) */
  layerNormBackward(
    x: Float32Array, w: Float32Array, dy: Float32Array, dim: number, eps: number,
    dx: Float32Array | null, dw: Float32Array | null, db: Float32Array | null,
  ): void;

  rmsNorm(x: Float32Array, w: Float32Array, dim: number, eps: number, out: Float32Array): void;
  rmsNormBackward(
    x: Float32Array, w: Float32Array, dy: Float32Array, dim: number, eps: number,
    dx: Float32Array | null, dw: Float32Array | null,
  ): void;

  /**
   * Rotary embedding in the rotate-half layout of HF LLaMA, on x [rows, heads, headDim] where
   * row r has position positions[r]. invFreq has headDim/2 entries. `inverse` rotates by the
   * negative angle (the backward pass).
   */
  rope(
    x: Float32Array, positions: Int32Array, heads: number, headDim: number,
    invFreq: Float64Array, inverse: boolean, out: Float32Array,
  ): void;

  /** out [B,tq,H,D] = softmax(q·kᵀ·scale + mask) · v, with grouped kv heads */
  attention(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, p: AttentionParams): void;
  /** attention with k and v the f16 bits of a 16-bit KV cache: attention over their f32 values */
  attentionF16(q: Float32Array, k: Uint16Array, v: Uint16Array, out: Float32Array, p: AttentionParams): void;
  /**
   * One causal query row of each of p.batch sequences (q, out [batch, 1, H, D]) over its own keys
   * and values: row b sees the first lengths[b] rows of ks[b] and vs[b] ([positions, Hkv, D]), its
   * own position last, and gets what `attention` gives it alone. p.tq is 1, p.tk the longest
   * length and p.causalOffset p.tk - 1; kvBatchStride is not used.
   */
  attentionMany(q: Float32Array, ks: Float32Array[], vs: Float32Array[], lengths: Int32Array, out: Float32Array, p: AttentionParams): void;
  /** attentionMany over the f16 bits of 16-bit KV caches */
  attentionManyF16(q: Float32Array, ks: Uint16Array[], vs: Uint16Array[], lengths: Int32Array, out: Float32Array, p: AttentionParams): void;
  /** accumulates dq, dk, dv (each may be null when not needed) */
  attentionBackward(
    q: Float32Array, k: Float32Array, v: Float32Array, dout: Float32Array,
    dq: Float32Array | null, dk: Float32Array | null, dv: Float32Array | null, p: AttentionParams,
  ): void;

  /** out[i] = table[ids[i]] (rows of length dim) */
  embedding(table: Float32Array, ids: Int32Array, dim: number, out: Float32Array): void;
  /** dtable[ids[i]] += dy[i] */
  embeddingBackward(ids: Int32Array, dy: Float32Array, dim: number, dtable: Float32Array): void;

  /**
   * Mean cross-entropy over rows whose target is not `ignoreIndex`; returns the loss and
   * writes d loss / d logits into dlogits when given. Returns NaN when no row is supervised.
   */
  crossEntropy(
    logits: Float32Array, targets: Int32Array, vocab: number, ignoreIndex: number,
    dlogits: Float32Array | null,
  ): number;

  /**
   * AdamW on one tensor, in place: param *= decay; m += (g - m)(1 - beta1);
   * v = v beta2 + (1 - beta2) g g; param -= stepSize m / (sqrt(v) / biasCorrection2Sqrt + eps),
   * each element in float64 with every result stored as float32 (all four arrays one length).
   */
  adamw(param: Float32Array, grad: Float32Array, expAvg: Float32Array, expAvgSq: Float32Array, step: AdamWStep): void;
  /** Σ x² in float64 (the gradient norm's sum) */
  sumSquares(x: Float32Array): number;
  /** x = 0 */
  zero(x: Float32Array): void;
  /** The index of x's first largest element, or -1 when x is empty or holds a NaN or an infinity. */
  argmaxFinite(x: Float32Array): number;
  /**
   * Dropout: out[i] = x[i] * mask[i], where mask[i] = 0 when the i-th number of the Rng stream
   * after `state` (util/random.ts) is below p, else 1 / (1 - p) as float32. The same call on the
   * gradient is the backward pass; the caller's Rng then skips out.length.
   */
  dropout(state: number, p: number, x: Float32Array, out: Float32Array): void;
}
