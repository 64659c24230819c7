/**
 * Conformance of the native backend: every kernel against RefBackend (the oracle) on odd and
 * random shapes, for every kernel variant this CPU can run (avx512, avx2, portable), plus
 * thread-count determinism and argument checking. Skipped when the addon is not built.
 *
 * Tolerances: f32 sums versus the reference's float64 sums, so errors are relative to the
 * largest magnitude of each result (rtol/atol 1e-5 unless noted). These checks run the native
 * backend with exactQuant, where packedMatmul decodes the packed weights exactly and never
 * quantizes activations, so all four formats use the f32 tolerance against the reference's
 * packedMatmul on the same packed data. The default int8-activation products for q8_0/q4_0
 * are checked in qdot.test.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Activation, AdamWStep, AttentionParams, Backend } from "../../src/tensor/backend.js";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { bf16ToF32Array, f32ToBf16Array } from "../../src/tensor/dtypes.js";
import { packMatrix, type PackedFormat } from "../../src/tensor/packed.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { assertBitEqual, assertClose, tryLoadAddon, randInts, randn } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

const ref = new RefBackend();

// The reference results, computed once for all kernel variants (inputs are seeded, so a
// label names one computation).
const refCache = new Map<string, { want: Float32Array[]; wantValue: number | void }>();

/**
 * Runs the same call on both backends, each with its own copy of the outputs (which the call
 * may accumulate into); `label` identifies the call and its inputs.
 */
function both(label: string, outs: Float32Array[], call: (be: Backend, outs: Float32Array[]) => number | void, be: Backend) {
  let cached = refCache.get(label);
  if (!cached) {
    const want = outs.map((o) => o.slice());
    cached = { want, wantValue: call(ref, want) };
    refCache.set(label, cached);
  }
  const got = outs.map((o) => o.slice());
  const gotValue = call(be, got);
  return { want: cached.want, wantValue: cached.wantValue, got, gotValue };
}

function checkGemm(be: Backend) {
  const shapes = [[1, 1, 1], [3, 17, 33], [17, 3, 65], [65, 127, 17], [7, 33, 129], [130, 70, 300], [1, 257, 129], [4, 100, 513], [5, 64, 64], [13, 40, 600], [7, 2100, 8], [2, 5, 0], [6, 1, 700]];
  let seed = 1;
  for (const [m, n, k] of shapes) {
    for (const transA of [false, true]) for (const transB of [false, true]) for (const accumulate of [false, true]) {
      const a = randn(m * k, seed++);
      const b = randn(k * n, seed++);
      const p = { m, n, k, transA, transB, accumulate };
      const label = `gemm ${JSON.stringify(p)}`;
      const { want, got } = both(label, [randn(m * n, seed++)], (x, [c]) => x.gemm(a, b, c, p), be);
      assertClose(got[0], want[0], label);
    }
  }
}

function checkPacked(be: Backend) {
  const shapes: Array<[number, number]> = [[33, 64], [5, 32], [40, 544], [520, 96], [17, 96]];
  const oddShapes: Array<[number, number]> = [[3, 17], [20, 33], [9, 1], [70, 515]];
  let seed = 100;
  // the K formats take super-blocks of 256 columns
  const kShapes: Array<[number, number]> = [[9, 256], [33, 512], [130, 768]];
  for (const format of ["bf16", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"] as PackedFormat[]) {
    for (const [rows, cols] of format.endsWith("_k") ? kShapes : format[0] === "q" ? shapes : [...shapes, ...oddShapes]) {
      const w = packMatrix(randn(rows * cols, seed++), rows, cols, format);
      for (const m of [1, 3, 4, 5, 9]) for (const transposed of [false, true]) for (const accumulate of [false, true]) {
        const a = randn(m * (transposed ? rows : cols), seed++);
        if (transposed) a.fill(0, 0, Math.min(a.length, rows)); // a zero gradient row
        const label = `packedMatmul ${format} [${rows}, ${cols}] m=${m} transposed=${transposed} accumulate=${accumulate}`;
        const { want, got } = both(label, [randn(m * (transposed ? cols : rows), seed++)], (x, [c]) => x.packedMatmul(a, w, c, m, transposed, accumulate), be);
        assertClose(got[0], want[0], label);
      }
    }
  }
}

function checkElementwise(be: Backend) {
  let seed = 200;
  for (const n of [1, 3, 17, 33, 65, 127, 1000, 70001]) {
    const x = randn(n, seed++);
    const y = randn(n, seed++);
    for (const [name, call] of [
      ["add", (b: Backend, o: Float32Array) => b.add(x, y, o)],
      ["mul", (b: Backend, o: Float32Array) => b.mul(x, y, o)],
      ["scale", (b: Backend, o: Float32Array) => b.scale(x, -1.7, o)],
      ["addScaled", (b: Backend, o: Float32Array) => b.addScaled(x, y, -1.7, o)],
      ["accumulate", (b: Backend, o: Float32Array) => b.accumulate(o, x)],
    ] as const) {
      const { want, got } = both(`${name} n=${n}`, [randn(n, seed++)], (b, [o]) => call(b, o), be);
      assertClose(got[0], want[0], `${name} n=${n}`, 1e-7, 0);
    }
  }
  for (const rows of [1, 5, 80, 700]) for (const ny of [1, 3, 17, 100]) {
    const x = randn(rows * ny, seed++);
    const y = randn(ny, seed++);
    const { want, got } = both(`addBroadcast ${rows}x${ny}`, [new Float32Array(rows * ny)], (b, [o]) => b.addBroadcast(x, y, o), be);
    assertClose(got[0], want[0], `addBroadcast ${rows}x${ny}`, 1e-7, 0);
    // in place, as ops.linear calls it
    const { want: w2, got: g2 } = both(`addBroadcast in place ${rows}x${ny}`, [x], (b, [o]) => b.addBroadcast(o, y, o), be);
    assertClose(g2[0], w2[0], `addBroadcast in place ${rows}x${ny}`, 1e-7, 0);
  }
  for (const rows of [1, 7, 300, 600]) for (const len of [1, 3, 17, 300]) {
    const x = randn(rows * len, seed++);
    const { want, got } = both(`sumRows ${rows}x${len}`, [new Float32Array(len)], (b, [o]) => b.sumRows(x, len, o), be);
    assertClose(got[0], want[0], `sumRows ${rows}x${len}`, 1e-6, 1e-7);
  }
}

const ACTIVATIONS: Activation[] = ["gelu", "quick_gelu", "silu", "gelu_tanh", "relu"];
const SPECIAL = [0, -0, 1e-8, -1e-8, 1e-30, 0.5, -0.5, 1, -1, 3, -3, 5, -5, 10, -10, 30, -30, 88, -88, 100, -100];

function checkActivations(be: Backend) {
  let seed = 300;
  for (const n of [1, 7, 1000, 70001]) {
    const x = randn(n, seed++, 8);
    x.set(SPECIAL.slice(0, Math.min(n, SPECIAL.length)));
    for (const kind of ACTIVATIONS) {
      const { want, got } = both(`activation ${kind} n=${n}`, [new Float32Array(n)], (b, [o]) => b.activation(kind, x, o), be);
      // float32 evaluation: a few ulps, more where the backward's two terms cancel
      assertClose(got[0], want[0], `activation ${kind} n=${n}`, 3e-6, 1e-7);
      const dy = randn(n, seed++);
      const g = both(`activationBackward ${kind} n=${n}`, [randn(n, seed++)], (b, [dx]) => b.activationBackward(kind, x, dy, dx), be);
      assertClose(g.got[0], g.want[0], `activationBackward ${kind} n=${n}`, 3e-6, 2e-6);
    }
  }
}

function checkNorms(be: Backend) {
  let seed = 400;
  for (const dim of [1, 3, 17, 127, 1000]) for (const rows of [1, 4, 70]) {
    const x = randn(rows * dim, seed++, 3).map((v) => v + 2);
    const w = randn(dim, seed++);
    const b = randn(dim, seed++);
    const dy = randn(rows * dim, seed++);
    const eps = 1e-5;
    const label = `${rows}x${dim}`;
    const ln = both(`layerNorm ${label}`, [new Float32Array(rows * dim)], (be2, [o]) => be2.layerNorm(x, w, b, dim, eps, o), be);
    assertClose(ln.got[0], ln.want[0], `layerNorm ${label}`);
    const rn = both(`rmsNorm ${label}`, [new Float32Array(rows * dim)], (be2, [o]) => be2.rmsNorm(x, w, dim, 1e-6, o), be);
    assertClose(rn.got[0], rn.want[0], `rmsNorm ${label}`);
    for (const mask of [7, 1, 6, 2]) {
      const outs = [randn(rows * dim, seed++), randn(dim, seed++), randn(dim, seed++)];
      const pick = (o: Float32Array[], i: number) => (mask & (1 << i) ? o[i] : null);
      const lb = both(`layerNormBackward ${label} ${mask}`, outs, (be2, o) => be2.layerNormBackward(x, w, dy, dim, eps, pick(o, 0), pick(o, 1), pick(o, 2)), be);
      lb.got.forEach((g, i) => assertClose(g, lb.want[i], `layerNormBackward ${label} mask ${mask} output ${i}`, 1e-5, 1e-5));
      const rb = both(`rmsNormBackward ${label} ${mask}`, outs.slice(0, 2), (be2, o) => be2.rmsNormBackward(x, w, dy, dim, 1e-6, pick(o, 0), pick(o, 1)), be);
      rb.got.forEach((g, i) => assertClose(g, rb.want[i], `rmsNormBackward ${label} mask ${mask} output ${i}`, 1e-5, 1e-5));
    }
  }
}

function checkRope(be: Backend) {
  let seed = 500;
  for (const rows of [1, 5, 33]) for (const heads of [1, 3]) for (const headDim of [2, 6, 34, 64, 128]) {
    const half = headDim / 2;
    const invFreq = Float64Array.from({ length: half }, (_, i) => 1 / 10000 ** ((2 * i) / headDim));
    const positions = randInts(rows, seed++, 0, 5000);
    const x = randn(rows * heads * headDim, seed++);
    for (const inverse of [false, true]) {
      const { want, got } = both(`rope ${rows}x${heads}x${headDim} ${inverse}`, [new Float32Array(x.length)], (b, [o]) => b.rope(x, positions, heads, headDim, invFreq, inverse, o), be);
      assertClose(got[0], want[0], `rope ${rows}x${heads}x${headDim} inverse=${inverse}`, 1e-5, 1e-6);
    }
  }
}

interface AttnCase extends AttentionParams {
  cap: number;
}

const ATTENTION_CASES: AttnCase[] = [
  { batch: 2, tq: 3, tk: 5, heads: 4, kvHeads: 2, headDim: 8, scale: 1 / Math.sqrt(8), causalOffset: 2, cap: 7 },
  { batch: 1, tq: 5, tk: 5, heads: 2, kvHeads: 2, headDim: 17, scale: 0.3, causalOffset: 0, cap: 5 },
  { batch: 2, tq: 4, tk: 6, heads: 3, kvHeads: 1, headDim: 5, scale: 0.5, cap: 6 },
  { batch: 1, tq: 1, tk: 70, heads: 6, kvHeads: 2, headDim: 64, scale: 0.125, causalOffset: 69, cap: 80 },
  { batch: 2, tq: 2, tk: 75, heads: 4, kvHeads: 4, headDim: 32, scale: 0.17, causalOffset: 73, cap: 90 },
  { batch: 1, tq: 70, tk: 70, heads: 2, kvHeads: 1, headDim: 16, scale: 0.25, causalOffset: 0, cap: 70 },
  { batch: 1, tq: 6, tk: 4, heads: 2, kvHeads: 2, headDim: 4, scale: 0.5, causalOffset: -3, cap: 4 },
  { batch: 3, tq: 2, tk: 3, heads: 2, kvHeads: 2, headDim: 3, scale: 2, causalOffset: 1, cap: 3 },
  // decode over several key blocks, rows with different limits
  { batch: 2, tq: 1, tk: 600, heads: 4, kvHeads: 2, headDim: 16, scale: 0.25, causalOffset: 599, cap: 650 },
  { batch: 1, tq: 3, tk: 530, heads: 3, kvHeads: 3, headDim: 8, scale: 0.3, causalOffset: 527, cap: 530 },
  { batch: 1, tq: 2, tk: 300, heads: 2, kvHeads: 1, headDim: 8, scale: 0.3, cap: 300 },
  // sliding windows (Mistral): prefill, and decode whose window starts inside a key block
  { batch: 2, tq: 9, tk: 9, heads: 4, kvHeads: 2, headDim: 8, scale: 0.3, causalOffset: 0, window: 4, cap: 9 },
  { batch: 1, tq: 70, tk: 70, heads: 2, kvHeads: 1, headDim: 16, scale: 0.25, causalOffset: 0, window: 33, cap: 70 },
  { batch: 2, tq: 1, tk: 600, heads: 4, kvHeads: 2, headDim: 16, scale: 0.25, causalOffset: 599, window: 300, cap: 650 },
  { batch: 1, tq: 3, tk: 530, heads: 3, kvHeads: 3, headDim: 8, scale: 0.3, causalOffset: 527, window: 257, cap: 530 },
];

function attnInputs(c: AttnCase, seed: number) {
  const kvLen = c.batch * c.cap * c.kvHeads * c.headDim;
  const p: AttentionParams = { ...c, kvBatchStride: c.cap * c.kvHeads * c.headDim };
  return {
    p,
    q: randn(c.batch * c.tq * c.heads * c.headDim, seed, 2),
    k: randn(kvLen, seed + 1, 2),
    v: randn(kvLen, seed + 2),
    dout: randn(c.batch * c.tq * c.heads * c.headDim, seed + 3),
    kvLen,
  };
}

function checkAttention(be: Backend) {
  let seed = 600;
  for (const c of ATTENTION_CASES) {
    const { p, q, k, v, dout, kvLen } = attnInputs(c, (seed += 10));
    const label = JSON.stringify(p);
    const fwd = both(`attention ${label}`, [new Float32Array(q.length)], (b, [o]) => b.attention(q, k, v, o, p), be);
    assertClose(fwd.got[0], fwd.want[0], `attention ${label}`);
    for (const mask of [7, 1, 6]) {
      const outs = [randn(q.length, seed + 4), randn(kvLen, seed + 5), randn(kvLen, seed + 6)];
      const pick = (o: Float32Array[], i: number) => (mask & (1 << i) ? o[i] : null);
      const bwd = both(`attentionBackward ${label} ${mask}`, outs, (b, o) => b.attentionBackward(q, k, v, dout, pick(o, 0), pick(o, 1), pick(o, 2), p), be);
      bwd.got.forEach((g, i) => assertClose(g, bwd.want[i], `attentionBackward ${label} mask ${mask} output ${"qkv"[i]}`));
    }
  }
  // without kvBatchStride: k and v are exactly [B, tk, Hkv, D]
  const c = ATTENTION_CASES[0];
  const { q, k, v } = attnInputs({ ...c, cap: c.tk }, 700);
  const p: AttentionParams = { ...c };
  delete (p as Partial<AttnCase>).cap;
  const fwd = both("attention default stride", [new Float32Array(q.length)], (b, [o]) => b.attention(q, k, v, o, p), be);
  assertClose(fwd.got[0], fwd.want[0], "attention with the default kv stride");
}

function checkEmbedding(be: Backend) {
  let seed = 800;
  for (const dim of [1, 7, 300]) {
    const vocab = 50;
    const table = randn(vocab * dim, seed++);
    const ids = randInts(30, seed++, 0, 10); // many repeats
    const fwd = both(`embedding ${dim}`, [new Float32Array(ids.length * dim)], (b, [o]) => b.embedding(table, ids, dim, o), be);
    assertClose(fwd.got[0], fwd.want[0], `embedding dim=${dim}`, 0, 0);
    const dy = randn(ids.length * dim, seed++);
    const bwd = both(`embeddingBackward ${dim}`, [randn(vocab * dim, seed++)], (b, [d]) => b.embeddingBackward(ids, dy, dim, d), be);
    assertClose(bwd.got[0], bwd.want[0], `embeddingBackward dim=${dim}`, 1e-6, 1e-7);
  }
}

function checkCrossEntropy(be: Backend) {
  let seed = 900;
  for (const vocab of [1, 17, 1000, 32001]) {
    const rows = 6;
    const logits = randn(rows * vocab, seed++, 20);
    const targets = randInts(rows, seed++, 0, vocab);
    targets[1] = -100;
    targets[4] = -100;
    for (const withGrad of [true, false]) {
      const label = `crossEntropy vocab=${vocab} grad=${withGrad}`;
      const r = both(label, [randn(rows * vocab, seed++)], (b, [d]) => b.crossEntropy(logits, targets, vocab, -100, withGrad ? d : null), be);
      assertClose([r.gotValue as number], [r.wantValue as number], `${label} loss`, 1e-6, 0);
      assertClose(r.got[0], r.want[0], `${label} dlogits`, 1e-5, 1e-6);
    }
    // every row ignored: NaN and a zeroed gradient; an ignore index that is a valid class
    const none = new Int32Array(rows).fill(-100);
    const d = randn(rows * vocab, seed++);
    assert.ok(Number.isNaN(be.crossEntropy(logits, none, vocab, -100, d)));
    assert.ok(d.every((x) => x === 0), "dlogits zeroed when nothing is supervised");
    const zeroIgnored = both(`crossEntropy ignore 0 ${vocab}`, [new Float32Array(rows * vocab)], (b, [g]) => b.crossEntropy(logits, targets.map((t) => Math.max(0, t)), vocab, 0, g), be);
    assertClose(zeroIgnored.got[0], zeroIgnored.want[0], `crossEntropy ignoreIndex 0 vocab=${vocab}`, 1e-5, 1e-6);
  }
}

/** AdamW's numbers at `step` (what the optimizer computes per tensor), with or without weight decay. */
function adamwStep(step: number, weightDecay: number): AdamWStep {
  const [lr, beta1, beta2] = [1e-3, 0.9, 0.999];
  return { decay: 1 - lr * weightDecay, beta1, beta2, stepSize: lr / (1 - beta1 ** step), biasCorrection2Sqrt: Math.sqrt(1 - beta2 ** step), eps: 1e-8 };
}

function checkOptimizer(be: Backend) {
  let seed = 1100;
  // sizes around the vector widths and the parallel chunks (32768 values)
  for (const n of [1, 7, 17, 33, 1000, 32769, 70001]) {
    const grad = randn(n, seed++);
    grad.fill(0, 0, Math.min(n, 5)); // untouched values (an embedding row no batch used)
    for (const [step, wd] of [[1, 0], [7, 0.1]]) {
      const h = adamwStep(step, wd);
      const m = randn(n, seed++, 0.1);
      const v = randn(n, seed++, 0.01).map(Math.abs);
      if (step === 1) [m, v].forEach((a) => a.fill(0));
      const label = `adamw n=${n} step=${step} wd=${wd}`;
      const r = both(label, [randn(n, seed++), m, v], (b, [p, em, ev]) => b.adamw(p, grad, em, ev, h), be);
      // float64 arithmetic rounded to float32 after each stored result, as the reference: bit for bit
      r.got.forEach((g, i) => assertBitEqual(g, r.want[i], `${label} output ${i}`));
    }
    const sq = both(`sumSquares ${n}`, [], (b) => b.sumSquares(grad), be);
    assert.ok(Math.abs((sq.gotValue as number) - (sq.wantValue as number)) <= 1e-13 * (sq.wantValue as number), `sumSquares n=${n}`);
    const z = randn(n, seed++);
    be.zero(z);
    assert.ok(z.every((x) => Object.is(x, 0)), `zero n=${n}`);
  }
}

const CHECKS: Array<[string, (be: Backend) => void]> = [
  ["gemm (transA/transB/accumulate, odd sizes)", checkGemm],
  ["packedMatmul (bf16, f16 and every q format; both directions)", checkPacked],
  ["elementwise, addBroadcast, sumRows", checkElementwise],
  ["activations and their backward", checkActivations],
  ["layerNorm, rmsNorm and backward", checkNorms],
  ["rope and its inverse", checkRope],
  ["attention (causal offsets, GQA, kv stride) and backward", checkAttention],
  ["embedding and scatter-add backward", checkEmbedding],
  ["crossEntropy with ignored rows", checkCrossEntropy],
  ["adamw, sumSquares and zero (the optimizer)", checkOptimizer],
];

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa} kernels match the reference backend`, { skip }, async (t) => {
    const native = addon!;
    const be = new NativeBackend(native, { exactQuant: true });
    native.configure({ isa });
    try {
      assert.equal(native.settings().isa, isa);
      for (const [name, check] of CHECKS) await t.test(name, () => check(be));
    } finally {
      native.configure({ isa: native.settings().isas[0] });
    }
  });
}

/** Every output of a fixed set of calls that cut work across threads. */
function threadedOutputs(be: NativeBackend): Float32Array[] {
  const exact = new NativeBackend(be.addon, { exactQuant: true });
  const out: Float32Array[] = [];
  const gemm = (m: number, n: number, k: number, transA: boolean, transB: boolean) => {
    const c = new Float32Array(m * n);
    be.gemm(randn(m * k, m + n), randn(k * n, k), c, { m, n, k, transA, transB });
    out.push(c);
  };
  gemm(200, 300, 700, false, true);
  gemm(150, 2100, 40, true, false);
  gemm(1, 5000, 300, false, true);
  gemm(3, 5000, 300, false, false);
  for (const format of ["bf16", "q8_0", "q4_0", "q5_1", "q4_k", "q5_k", "q6_k"] as PackedFormat[]) {
    const w = packMatrix(randn(300 * 512, 5), 300, 512, format);
    for (const m of [1, 2, 9]) {
      // integer activations (the default for these formats) and exact products
      for (const b of ["q8_0", "q4_0", "q4_k", "q5_k", "q6_k"].includes(format) ? [be, exact] : [be]) {
        const c = new Float32Array(m * 300);
        b.packedMatmul(randn(m * 512, 6), w, c, m, false, false);
        out.push(c);
      }
      const g = new Float32Array(m * 512);
      be.packedMatmul(randn(m * 300, 7), w, g, m, true, false);
      out.push(g);
    }
  }
  const c: AttnCase = { batch: 2, tq: 70, tk: 70, heads: 4, kvHeads: 2, headDim: 32, scale: 0.2, causalOffset: 0, cap: 70 };
  const { p, q, k, v, dout, kvLen } = attnInputs(c, 8);
  const o = new Float32Array(q.length);
  be.attention(q, k, v, o, p);
  const dq = new Float32Array(q.length);
  const dk = new Float32Array(kvLen);
  const dv = new Float32Array(kvLen);
  be.attentionBackward(q, k, v, dout, dq, dk, dv, p);
  out.push(o, dq, dk, dv);
  const dec = attnInputs({ batch: 2, tq: 1, tk: 700, heads: 8, kvHeads: 4, headDim: 64, scale: 0.1, causalOffset: 699, cap: 700 }, 15);
  const od = new Float32Array(dec.q.length);
  be.attention(dec.q, dec.k, dec.v, od, dec.p);
  out.push(od);
  const x = randn(100 * 700, 9);
  const w = randn(700, 10);
  const dx = new Float32Array(x.length);
  const dw = new Float32Array(700);
  const db = new Float32Array(700);
  be.layerNormBackward(x, w, randn(x.length, 11), 700, 1e-5, dx, dw, db);
  const s = new Float32Array(700);
  be.sumRows(x, 700, s);
  const act = new Float32Array(x.length);
  be.activation("gelu", x, act);
  const logits = randn(8 * 10000, 12, 10);
  const dl = new Float32Array(logits.length);
  const loss = be.crossEntropy(logits, randInts(8, 13, 0, 10000), 10000, -100, dl);
  const table = new Float32Array(40 * 700);
  be.embeddingBackward(randInts(100, 14, 0, 40), x, 700, table);
  out.push(dx, dw, db, s, act, dl, Float32Array.of(loss), table);
  const param = randn(x.length, 16);
  const [expAvg, expAvgSq] = [randn(param.length, 17, 0.1), randn(param.length, 18, 0.01).map(Math.abs)];
  be.adamw(param, x, expAvg, expAvgSq, adamwStep(3, 0.1));
  const zeroed = randn(100003, 19);
  be.zero(zeroed);
  // the float64 sum's bits as two floats
  out.push(param, expAvg, expAvgSq, new Float32Array(Float64Array.of(be.sumSquares(x)).buffer), zeroed);
  return out;
}

test("native results do not depend on the thread count", { skip }, () => {
  const native = addon!;
  const be = new NativeBackend(native);
  const before = native.settings().threads;
  try {
    native.configure({ threads: 1 });
    const one = threadedOutputs(be);
    const again = threadedOutputs(be);
    native.configure({ threads: 2 });
    assert.equal(be.settings.threads, 2);
    const two = threadedOutputs(be);
    one.forEach((o, i) => {
      assertBitEqual(again[i], o, `output ${i}, 1 thread, run to run`);
      assertBitEqual(two[i], o, `output ${i}, 1 vs 2 threads`);
    });
  } finally {
    native.configure({ threads: before });
  }
});

test("opt-in bf16 dot products equal the reference on bf16-rounded activations", { skip }, (t) => {
  const be = new NativeBackend(addon!, { bf16Dot: true });
  if (!be.settings.bf16DotSupported) {
    t.skip("no bf16 dot-product path here (needs AVX512-BF16 and the x86 build)");
    return;
  }
  let seed = 1000;
  for (const [rows, cols] of [[40, 64], [70, 1100], [33, 34], [5, 2]]) {
    const w = packMatrix(randn(rows * cols, seed++), rows, cols, "bf16");
    for (const m of [5, 9, 70]) for (const accumulate of [false, true]) {
      const a = randn(m * cols, seed++);
      const c0 = randn(m * rows, seed++);
      const got = c0.slice();
      be.packedMatmul(a, w, got, m, false, accumulate);
      // what the fast path computes: the activations rounded to bf16, exact products, f32 sums
      const want = c0.slice();
      ref.packedMatmul(bf16ToF32Array(f32ToBf16Array(a)), w, want, m, false, accumulate);
      assertClose(got, want, `bf16 dot [${rows}, ${cols}] m=${m} accumulate=${accumulate}`);
      // and it is not the exact path
      const exact = c0.slice();
      ref.packedMatmul(a, w, exact, m, false, accumulate);
      assert.ok(got.some((x, i) => x !== exact[i]));
    }
  }
});

test("native kernels reject bad arguments with JavaScript errors", { skip }, () => {
  const be = new NativeBackend(addon!);
  const a = new Float32Array(6);
  assert.throws(() => be.gemm(a, a, new Float32Array(3), { m: 2, n: 2, k: 3 }), (e: Error) => e instanceof RangeError && /native gemm: c has 3 values, needs m\*n = 4/.test(e.message));
  assert.throws(() => be.add(a, new Int32Array(6) as unknown as Float32Array, a), TypeError);
  assert.throws(() => be.embedding(a, Int32Array.of(0, 3), 2, new Float32Array(4)), /id 3 at index 1 is outside \[0, 3\)/);
  assert.throws(() => be.crossEntropy(a, Int32Array.of(7), 6, -100, null), /target 7/);
  assert.throws(() => be.packedMatmul(a, { format: "q4_0", rows: 1, cols: 6, data: new Uint8Array(18) }, a, 1, false, false), /multiple of 32/);
  assert.throws(() => be.packedMatmul(a, { format: "q4_k", rows: 1, cols: 32, data: new Uint8Array(144) }, a, 1, false, false), /multiple of 256/);
  assert.throws(() => be.attention(a, a, a, a, { batch: 1, tq: 1, tk: 1, heads: 3, kvHeads: 2, headDim: 2, scale: 1 }), /not a multiple of kvHeads/);
  assert.throws(() => addon!.configure({ isa: "sparc" }), /not available/);
  assert.throws(() => be.adamw(a, new Float32Array(5), a, a, { decay: 1, beta1: 0.9, beta2: 0.999, stepSize: 1e-3, biasCorrection2Sqrt: 1, eps: 1e-8 }), /native adamw: param has 6 values, grad 5/);
  assert.throws(() => addon!.adamw(a, a, a, a, { decay: 1 } as AdamWStep), /native adamw: beta1 must be a number/);
  // parameter objects: present, with known names and numbers
  assert.throws(() => addon!.gemm(a, a, a, undefined as unknown as { m: number; n: number; k: number }), (e: Error) => e instanceof TypeError && /native gemm: params must be an object/.test(e.message));
  assert.throws(() => be.packedMatmul(a, { format: "q2_k" as "q4_0", rows: 1, cols: 6, data: new Uint8Array(18) }, a, 1, false, false), /native packedMatmul: unknown format "q2_k"/);
  assert.throws(() => be.activation("tanh" as "gelu", a, a), /native activation: unknown activation "tanh"/);
  assert.throws(() => be.attention(a, a, a, a, { batch: 1, tq: 1, tk: 1, kvHeads: 1, headDim: 2, scale: 1 } as AttentionParams), /native attention: heads must be a number/);
});
