/**
 * Differentiable tensor ops. Each op checks shapes, asks the backend to compute into a fresh
 * output buffer (or a reused one inside withScratch), and, when gradients are wanted, records how
 * to push gradients to its inputs.
 */
import type { Activation, AttentionParams } from "./backend.js";
import { numel, outputBuffer, PackedTensor, result, Tensor, uninitialized, type Shape } from "./tensor.js";
import type { Rng } from "../util/random.js";

function fail(op: string, message: string): never {
  throw new Error(`${op}: ${message}`);
}

const shapeStr = (s: Shape) => `[${s.join(", ")}]`;

/**
 * Adds what `compute` writes into x's gradient: straight into the gradient when x has none yet
 * (it would start as zeros), through a temporary otherwise.
 */
function addToGrad(x: Tensor, compute: (out: Float32Array) => void): void {
  if (!x.grad) {
    compute(x.gradBuffer());
    return;
  }
  const tmp = uninitialized(x.size);
  compute(tmp);
  x.backend.accumulate(x.gradBuffer(), tmp);
}

/** Same data, new shape (one dimension may be -1). */
export function reshape(x: Tensor, shape: number[]): Tensor {
  const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const resolved = shape.map((d) => (d === -1 ? x.size / known : d));
  if (numel(resolved) !== x.size) fail("reshape", `cannot view ${shapeStr(x.shape)} as ${shapeStr(shape)}`);
  return result(x.data, resolved, [x], (g) => {
    if (x.requiresGrad) x.backend.accumulate(x.gradBuffer(), g);
  });
}

function strides(shape: Shape): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/**
 * dst = src permuted (output dimension i is input dimension dims[i]); `inverse`: the gradient
 * of that, src (output-shaped) added back into dst (input-shaped). Trailing dimensions that stay
 * in place move as contiguous runs.
 */
function permuteCopy(src: Float32Array, shape: Shape, dims: number[], dst: Float32Array, inverse: boolean): void {
  // the dimensions before the trailing ones that stay in place (those move as one run)
  let moved = dims.length;
  while (moved > 0 && dims[moved - 1] === moved - 1) moved--;
  const run = numel(shape.slice(moved));
  const outShape = dims.slice(0, moved).map((d) => shape[d]);
  const inStrides = strides(shape);
  // stride in the source for each output dimension
  const srcStride = dims.slice(0, moved).map((d) => inStrides[d]);
  const n = outShape.length;
  const idx = new Array<number>(n).fill(0);
  const total = numel(shape);
  let srcOff = 0;
  for (let o = 0; o < total; o += run) {
    if (inverse) for (let r = 0; r < run; r++) dst[srcOff + r] += src[o + r];
    else for (let r = 0; r < run; r++) dst[o + r] = src[srcOff + r];
    for (let d = n - 1; d >= 0; d--) {
      idx[d]++;
      srcOff += srcStride[d];
      if (idx[d] < outShape[d]) break;
      srcOff -= srcStride[d] * outShape[d];
      idx[d] = 0;
    }
  }
}

/** Reorders dimensions: output dimension i is input dimension dims[i]. */
export function permute(x: Tensor, dims: number[]): Tensor {
  if (dims.length !== x.ndim || [...dims].sort().some((d, i) => d !== i)) {
    fail("permute", `bad dims ${shapeStr(dims)} for ${shapeStr(x.shape)}`);
  }
  const out = outputBuffer(x.size);
  permuteCopy(x.data, x.shape, dims, out, false);
  return result(out, dims.map((d) => x.shape[d]), [x], (g) => {
    if (x.requiresGrad) permuteCopy(g, x.shape, dims, x.gradBuffer(), true);
  });
}

/** Splits a shape around `axis` into (outer, axis length, inner). */
function around(shape: Shape, axis: number): [number, number, number] {
  const a = axis < 0 ? shape.length + axis : axis;
  return [numel(shape.slice(0, a)), shape[a], numel(shape.slice(a + 1))];
}

/** x[..., start:end, ...] along `axis` (a copy). */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const a = axis < 0 ? x.ndim + axis : axis;
  const [outer, len, inner] = around(x.shape, a);
  if (start < 0 || end > len || start > end) fail("slice", `range ${start}:${end} outside ${len} on axis ${a}`);
  const n = end - start;
  const out = outputBuffer(outer * n * inner);
  for (let o = 0; o < outer; o++) {
    out.set(x.data.subarray((o * len + start) * inner, (o * len + end) * inner), o * n * inner);
  }
  const shape = [...x.shape];
  shape[a] = n;
  return result(out, shape, [x], (g) => {
    if (!x.requiresGrad) return;
    const gx = x.gradBuffer();
    for (let o = 0; o < outer; o++) {
      x.backend.accumulate(gx.subarray((o * len + start) * inner, (o * len + end) * inner), g.subarray(o * n * inner, (o + 1) * n * inner));
    }
  });
}

/** Joins tensors along `axis`; every other dimension must agree. */
export function concat(xs: Tensor[], axis: number): Tensor {
  if (xs.length === 0) fail("concat", "no tensors");
  const a = axis < 0 ? xs[0].ndim + axis : axis;
  for (const t of xs) {
    if (t.ndim !== xs[0].ndim || t.shape.some((d, i) => i !== a && d !== xs[0].shape[i])) {
      fail("concat", `shapes ${xs.map((t) => shapeStr(t.shape)).join(", ")} differ off axis ${a}`);
    }
  }
  const [outer, , inner] = around(xs[0].shape, a);
  const total = xs.reduce((s, t) => s + t.shape[a], 0);
  const out = outputBuffer(outer * total * inner);
  let offset = 0;
  for (const t of xs) {
    const n = t.shape[a];
    for (let o = 0; o < outer; o++) {
      out.set(t.data.subarray(o * n * inner, (o + 1) * n * inner), (o * total + offset) * inner);
    }
    offset += n;
  }
  const shape = [...xs[0].shape];
  shape[a] = total;
  return result(out, shape, xs, (g) => {
    let off = 0;
    for (const t of xs) {
      const n = t.shape[a];
      if (t.requiresGrad) {
        const gt = t.gradBuffer();
        for (let o = 0; o < outer; o++) {
          t.backend.accumulate(gt.subarray(o * n * inner, (o + 1) * n * inner), g.subarray((o * total + off) * inner, (o * total + off + n) * inner));
        }
      }
      off += n;
    }
  });
}

/** a + b, where b has a's shape or a suffix of it (broadcast over the leading dimensions). */
export function add(a: Tensor, b: Tensor): Tensor {
  const suffix = a.shape.slice(a.ndim - b.ndim);
  if (b.ndim > a.ndim || suffix.some((d, i) => d !== b.shape[i])) {
    fail("add", `cannot broadcast ${shapeStr(b.shape)} onto ${shapeStr(a.shape)}`);
  }
  const be = a.backend;
  const out = outputBuffer(a.size);
  const same = a.size === b.size;
  if (same) be.add(a.data, b.data, out);
  else be.addBroadcast(a.data, b.data, out);
  return result(out, a.shape, [a, b], (g) => {
    if (a.requiresGrad) be.accumulate(a.gradBuffer(), g);
    if (!b.requiresGrad) return;
    if (same) {
      be.accumulate(b.gradBuffer(), g);
    } else {
      const s = new Float32Array(b.size);
      be.sumRows(g, b.size, s);
      be.accumulate(b.gradBuffer(), s);
    }
  });
}

/** Elementwise a * b (same shapes). */
export function mul(a: Tensor, b: Tensor): Tensor {
  if (a.size !== b.size) fail("mul", `shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} differ`);
  const be = a.backend;
  const out = outputBuffer(a.size);
  be.mul(a.data, b.data, out);
  return result(out, a.shape, [a, b], (g) => {
    if (a.requiresGrad) addToGrad(a, (out) => be.mul(g, b.data, out));
    if (b.requiresGrad) addToGrad(b, (out) => be.mul(g, a.data, out));
  });
}

/** x * s for a constant s. */
export function scale(x: Tensor, s: number): Tensor {
  const be = x.backend;
  const out = outputBuffer(x.size);
  be.scale(x.data, s, out);
  return result(out, x.shape, [x], (g) => {
    if (x.requiresGrad) addToGrad(x, (out) => be.scale(g, s, out));
  });
}

/** a + b * s (same shapes), b * s rounded as `scale` rounds it: add(a, scale(b, s)) in one pass. */
export function addScaled(a: Tensor, b: Tensor, s: number): Tensor {
  if (a.size !== b.size) fail("addScaled", `shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} differ`);
  const be = a.backend;
  const out = outputBuffer(a.size);
  be.addScaled(a.data, b.data, s, out);
  return result(out, a.shape, [a, b], (g) => {
    if (a.requiresGrad) be.accumulate(a.gradBuffer(), g);
    if (b.requiresGrad) addToGrad(b, (out) => be.scale(g, s, out));
  });
}

/**
 * y = x Wᵀ + b with x [..., in], W [out, in] (PyTorch Linear layout), b [out]. W may be packed
 * (bf16 / f16 / quantized), in which case it is frozen but gradients still reach x. `rowwise`:
 * each row of y exactly as x's row alone would give it (the rows of a batched decode step).
 */
export function linear(x: Tensor, w: Tensor | PackedTensor, b?: Tensor | null, opts: { rowwise?: boolean } = {}): Tensor {
  const [nOut, nIn] = w.shape;
  if (w.shape.length !== 2 || x.dim(-1) !== nIn) fail("linear", `input ${shapeStr(x.shape)} does not fit weight ${shapeStr(w.shape)}`);
  if (b && (b.ndim !== 1 || b.size !== nOut)) fail("linear", `bias ${shapeStr(b.shape)} does not fit weight ${shapeStr(w.shape)}`);
  const be = x.backend;
  const m = x.size / nIn;
  const out = outputBuffer(m * nOut);
  if (w instanceof PackedTensor) be.packedMatmul(x.data, w.matrix, out, m, false, false, opts.rowwise);
  else be.gemm(x.data, w.data, out, { m, n: nOut, k: nIn, transB: true, rowwise: opts.rowwise });
  if (b) be.addBroadcast(out, b.data, out);
  const inputs = [x, ...(w instanceof Tensor ? [w] : []), ...(b ? [b] : [])];
  return result(out, [...x.shape.slice(0, -1), nOut], inputs, (g) => {
    // dx = g W ; dW = gᵀ x ; db = Σ g
    if (x.requiresGrad) {
      if (w instanceof PackedTensor) be.packedMatmul(g, w.matrix, x.gradBuffer(), m, true, true);
      else be.gemm(g, w.data, x.gradBuffer(), { m, n: nIn, k: nOut, accumulate: true });
    }
    if (w instanceof Tensor && w.requiresGrad) be.gemm(g, x.data, w.gradBuffer(), { m: nOut, n: nIn, k: m, transA: true, accumulate: true });
    if (b?.requiresGrad) {
      const s = new Float32Array(nOut);
      be.sumRows(g, nOut, s);
      be.accumulate(b.gradBuffer(), s);
    }
  });
}

export function activation(x: Tensor, kind: Activation): Tensor {
  const be = x.backend;
  const out = outputBuffer(x.size);
  be.activation(kind, x.data, out);
  return result(out, x.shape, [x], (g) => {
    if (x.requiresGrad) be.activationBackward(kind, x.data, g, x.gradBuffer());
  });
}

export function layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
  const dim = x.dim(-1);
  if (w.size !== dim || b.size !== dim) fail("layerNorm", `weight ${shapeStr(w.shape)} does not fit ${shapeStr(x.shape)}`);
  const be = x.backend;
  const out = outputBuffer(x.size);
  be.layerNorm(x.data, w.data, b.data, dim, eps, out);
  return result(out, x.shape, [x, w, b], (g) => {
    be.layerNormBackward(
      x.data, w.data, g, dim, eps,
      x.requiresGrad ? x.gradBuffer() : null, w.requiresGrad ? w.gradBuffer() : null, b.requiresGrad ? b.gradBuffer() : null,
    );
  });
}

export function rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
  const dim = x.dim(-1);
  if (w.size !== dim) fail("rmsNorm", `weight ${shapeStr(w.shape)} does not fit ${shapeStr(x.shape)}`);
  const be = x.backend;
  const out = outputBuffer(x.size);
  be.rmsNorm(x.data, w.data, dim, eps, out);
  return result(out, x.shape, [x, w], (g) => {
    be.rmsNormBackward(x.data, w.data, g, dim, eps, x.requiresGrad ? x.gradBuffer() : null, w.requiresGrad ? w.gradBuffer() : null);
  });
}

/** Rotary position embedding on x [B, T, H, D]; positions has B*T entries. */
export function rope(x: Tensor, positions: Int32Array, invFreq: Float64Array): Tensor {
  const [b, t, h, d] = x.shape;
  if (x.ndim !== 4 || positions.length !== b * t || invFreq.length * 2 !== d) {
    fail("rope", `x ${shapeStr(x.shape)}, ${positions.length} positions, ${invFreq.length} frequencies`);
  }
  const be = x.backend;
  const out = outputBuffer(x.size);
  be.rope(x.data, positions, h, d, invFreq, false, out);
  return result(out, x.shape, [x], (g) => {
    if (x.requiresGrad) addToGrad(x, (out) => be.rope(g, positions, h, d, invFreq, true, out));
  });
}

export interface AttentionOptions {
  causal: boolean;
  /** causal only: a query sees at most the last `window` positions, itself included */
  window?: number | null;
  /** valid key positions when k/v are a larger preallocated cache (default: all) */
  kvLength?: number;
}

/** Keys or values [B, S, Hkv, D] as the f16 bits of a 16-bit KV cache (inference only). */
export interface HalfKV {
  readonly data: Uint16Array;
  readonly shape: Shape;
}

/**
 * Scaled dot-product attention: q [B, Tq, H, D], k and v [B, S, Hkv, D] with H a multiple of
 * Hkv (grouped-query attention). With `causal`, the queries are the last Tq of the keys'
 * positions. Returns [B, Tq, H, D]. k and v may be a 16-bit KV cache's (HalfKV): the result is
 * then attention over their f32 values, without a gradient.
 */
export function attention(q: Tensor, k: Tensor | HalfKV, v: Tensor | HalfKV, opts: AttentionOptions): Tensor {
  const [batch, tq, heads, headDim] = q.shape;
  const [kb, cap, kvHeads, kd] = k.shape;
  const tk = opts.kvLength ?? cap;
  if (q.ndim !== 4 || k.shape.length !== 4 || kb !== batch || kd !== headDim || heads % kvHeads !== 0 || tk > cap) {
    fail("attention", `q ${shapeStr(q.shape)} and k ${shapeStr(k.shape)} (length ${tk}) do not fit`);
  }
  if (v.shape.some((d, i) => d !== k.shape[i])) fail("attention", `v ${shapeStr(v.shape)} differs from k ${shapeStr(k.shape)}`);
  const p: AttentionParams = {
    batch, tq, tk, heads, kvHeads, headDim,
    scale: attentionScale(headDim),
    causalOffset: opts.causal ? tk - tq : undefined,
    window: opts.causal && opts.window ? opts.window : undefined,
    kvBatchStride: cap * kvHeads * headDim,
  };
  const be = q.backend;
  const out = outputBuffer(q.size);
  if (!(k instanceof Tensor && v instanceof Tensor)) {
    if (!(k.data instanceof Uint16Array && v.data instanceof Uint16Array)) fail("attention", "k and v must both be f32 tensors or both 16-bit");
    if (q.requiresGrad) fail("attention", "a 16-bit KV cache is for inference: no gradient flows through it");
    be.attentionF16(q.data, k.data, v.data, out, p);
    return result(out, q.shape, [q], () => {}); // q needs no gradient (checked above)
  }
  be.attention(q.data, k.data, v.data, out, p);
  return result(out, q.shape, [q, k, v], (g) => {
    be.attentionBackward(
      q.data, k.data, v.data, g,
      q.requiresGrad ? q.gradBuffer() : null, k.requiresGrad ? k.gradBuffer() : null, v.requiresGrad ? v.gradBuffer() : null, p,
    );
  });
}

/** The softmax scale of scaled dot-product attention over heads of `headDim`. */
function attentionScale(headDim: number): number {
  return 1 / Math.sqrt(headDim);
}

/** One sequence's cached keys and values for attentionMany: positions [0, length) of k and v [1, capacity, Hkv, D]. */
export interface CachedKV {
  k: Tensor | HalfKV;
  v: Tensor | HalfKV;
  length: number;
}

/**
 * One new position of each of N sequences (inference): q [N, 1, H, D], row i attending causally
 * to its own cache, caches[i] (its own position the last of caches[i].length), with an optional
 * sliding window. Row i gets what `attention` gives it alone; the rows run in one kernel call,
 * so sequences of any lengths share the threads. Returns [N, 1, H, D], without a gradient.
 */
export function attentionMany(q: Tensor, caches: CachedKV[], opts: { window?: number | null } = {}): Tensor {
  const [n, tq, heads, headDim] = q.shape;
  if (q.ndim !== 4 || tq !== 1 || n !== caches.length || n === 0) fail("attentionMany", `q ${shapeStr(q.shape)} for ${caches.length} caches`);
  if (q.requiresGrad) fail("attentionMany", "decode attention is for inference: no gradient flows through it");
  const kvHeads = caches[0].k.shape[2];
  const half = caches[0].k.data instanceof Uint16Array;
  for (const { k, v, length } of caches) {
    const [kb, cap, kh, kd] = k.shape;
    if (k.shape.length !== 4 || kb !== 1 || kh !== kvHeads || kd !== headDim || heads % kvHeads !== 0 || length < 1 || length > cap) {
      fail("attentionMany", `q ${shapeStr(q.shape)} and k ${shapeStr(k.shape)} (length ${length}) do not fit`);
    }
    if (v.shape.some((d, i) => d !== k.shape[i])) fail("attentionMany", `v ${shapeStr(v.shape)} differs from k ${shapeStr(k.shape)}`);
    if ((k.data instanceof Uint16Array) !== half || (v.data instanceof Uint16Array) !== half) fail("attentionMany", "the caches must all be f32 or all 16-bit");
  }
  const lengths = Int32Array.from(caches, (c) => c.length);
  const tk = Math.max(...lengths);
  const p: AttentionParams = { batch: n, tq: 1, tk, heads, kvHeads, headDim, scale: attentionScale(headDim), causalOffset: tk - 1, window: opts.window || undefined };
  const out = outputBuffer(q.size);
  if (half) q.backend.attentionManyF16(q.data, caches.map((c) => c.k.data as Uint16Array), caches.map((c) => c.v.data as Uint16Array), lengths, out, p);
  else q.backend.attentionMany(q.data, caches.map((c) => c.k.data as Float32Array), caches.map((c) => c.v.data as Float32Array), lengths, out, p);
  return result(out, q.shape, [q], () => {}); // q needs no gradient (checked above)
}

/** Rows of `table` [V, D] for each id; output shape [...shape, D]. */
export function embedding(table: Tensor, ids: Int32Array, shape: number[] = [ids.length]): Tensor {
  const [vocab, dim] = table.shape;
  for (const id of ids) if (id < 0 || id >= vocab) fail("embedding", `token id ${id} outside the vocabulary of ${vocab}`);
  const be = table.backend;
  const out = outputBuffer(ids.length * dim);
  be.embedding(table.data, ids, dim, out);
  return result(out, [...shape, dim], [table], (g) => {
    if (table.requiresGrad) be.embeddingBackward(ids, g, dim, table.gradRowsBuffer(ids));
  });
}

/** Mean cross-entropy of logits [..., V] against targets (one per row), skipping ignoreIndex. */
export function crossEntropy(logits: Tensor, targets: Int32Array, ignoreIndex = -100): Tensor {
  const vocab = logits.dim(-1);
  if (logits.size / vocab !== targets.length) fail("crossEntropy", `${targets.length} targets for ${logits.size / vocab} rows`);
  const be = logits.backend;
  const dlogits = logits.requiresGrad ? new Float32Array(logits.size) : null;
  const loss = be.crossEntropy(logits.data, targets, vocab, ignoreIndex, dlogits);
  return result(new Float32Array([loss]), [], [logits], (g) => {
    if (dlogits) addToGrad(logits, (out) => be.scale(dlogits, g[0], out));
  });
}

/** Rows of x [N, ...] at `rows` (a copy), as [rows.length, ...]; gradients scatter back. */
export function gatherRows(x: Tensor, rows: Int32Array): Tensor {
  const n = x.dim(0);
  const inner = x.size / n;
  for (const r of rows) if (r < 0 || r >= n) fail("gatherRows", `row ${r} outside ${n}`);
  const out = outputBuffer(rows.length * inner);
  rows.forEach((r, i) => out.set(x.data.subarray(r * inner, (r + 1) * inner), i * inner));
  return result(out, [rows.length, ...x.shape.slice(1)], [x], (g) => {
    if (!x.requiresGrad) return;
    const gx = x.gradBuffer();
    rows.forEach((r, i) => x.backend.accumulate(gx.subarray(r * inner, (r + 1) * inner), g.subarray(i * inner, (i + 1) * inner)));
  });
}

/**
 * Inverted dropout as torch's in training: each element is zeroed with probability p, the rest
 * scaled by 1/(1-p). The mask comes from `rng`, one draw per element in order, so a run that
 * restores the stream's state draws the same mask.
 */
export function dropout(x: Tensor, p: number, rng: Rng): Tensor {
  if (!(p >= 0 && p < 1)) fail("dropout", `probability ${p} outside [0, 1)`);
  if (p === 0) return x;
  const be = x.backend;
  const state = rng.state;
  const out = outputBuffer(x.size);
  be.dropout(state, p, x.data, out);
  rng.skip(x.size);
  // the mask is a constant factor, drawn again for the gradient rather than kept
  return result(out, x.shape, [x], (g) => {
    if (x.requiresGrad) addToGrad(x, (out) => be.dropout(state, p, g, out));
  });
}

export interface CheckpointOptions {
  /** a random stream `fn` draws from (dropout): its state is restored for the recomputation, as torch's preserve_rng_state */
  rng?: Rng | null;
}

/**
 * Gradient checkpointing (torch.utils.checkpoint): runs `fn` on `inputs` keeping only its
 * output; the backward pass runs `fn` again with a graph and back-propagates through that, so
 * the activations inside `fn` live only while one segment is differentiated. `fn` must be a
 * pure function of `inputs`, the parameters it closes over, and `rng`'s state: then the
 * recomputation repeats the forward exactly and the gradients are those without checkpointing.
 */
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: CheckpointOptions = {}): Tensor {
  const rng = opts.rng ?? null;
  const before = rng?.state;
  // the inner graph is dropped as soon as the output's data is taken
  const inner = fn(...inputs.map((x) => x.detach()));
  const out = new Tensor(inner.data, inner.shape, inner.backend, inner.requiresGrad || inputs.some((x) => x.requiresGrad));
  if (!out.requiresGrad) return out;
  out.node = {
    inputs,
    backward: (g) => {
      const after = rng?.state;
      if (rng) rng.state = before!;
      const leaves = inputs.map((x) => new Tensor(x.data, x.shape, x.backend, x.requiresGrad));
      try {
        const again = fn(...leaves);
        if (again.requiresGrad) again.backward(g);
      } finally {
        if (rng) rng.state = after!;
      }
      leaves.forEach((leaf, i) => {
        if (leaf.grad) inputs[i].backend.accumulate(inputs[i].gradBuffer(), leaf.grad);
      });
    },
  };
  return out;
}
