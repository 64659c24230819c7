import { test } from "node:test";
import assert from "node:assert/strict";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { Tensor } from "../../src/tensor/tensor.js";
import * as ops from "../../src/tensor/ops.js";
import { erf } from "../../src/tensor/math.js";
import { seededRandom } from "../../src/util/random.js";

const be = new RefBackend();

/** Deterministic pseudo-random numbers in [-1, 1). */
function rng(seed: number) {
  const r = seededRandom(seed);
  return () => 2 * r() - 1;
}

function rand(shape: number[], seed: number, requiresGrad = true): Tensor {
  const r = rng(seed);
  const t = Tensor.zeros(shape, be, requiresGrad);
  for (let i = 0; i < t.size; i++) t.data[i] = r();
  return t;
}

/**
 * Checks the gradient of sum(f(inputs) * seed) with respect to every input against central
 * finite differences.
 */
function gradCheck(name: string, inputs: Tensor[], f: (xs: Tensor[]) => Tensor, tol = 2e-3) {
  const out = f(inputs);
  const seed = rand([...out.shape], 99, false).data;
  out.backward(seed);
  const objective = () => {
    const o = f(inputs.map((t) => t.detach()));
    let s = 0;
    for (let i = 0; i < o.size; i++) s += o.data[i] * seed[i];
    return s;
  };
  inputs.forEach((x, which) => {
    const g = x.grad!;
    assert.ok(g, `${name}: input ${which} got no gradient`);
    for (let i = 0; i < x.size; i += Math.max(1, Math.floor(x.size / 23))) {
      const keep = x.data[i];
      const h = 1e-2;
      x.data[i] = keep + h;
      const up = objective();
      x.data[i] = keep - h;
      const down = objective();
      x.data[i] = keep;
      const numeric = (up - down) / (2 * h);
      const err = Math.abs(numeric - g[i]);
      assert.ok(err <= tol * (1 + Math.abs(numeric)), `${name}: input ${which}[${i}] analytic ${g[i]} numeric ${numeric}`);
    }
  });
}

test("linear backward (weight, bias, input)", () => {
  gradCheck("linear", [rand([2, 3, 5], 1), rand([4, 5], 2), rand([4], 3)], ([x, w, b]) => ops.linear(x, w, b));
});

test("add with broadcast, mul, scale backward", () => {
  gradCheck("add", [rand([3, 4], 1), rand([4], 2)], ([a, b]) => ops.add(a, b));
  gradCheck("mul", [rand([3, 4], 3), rand([3, 4], 4)], ([a, b]) => ops.mul(a, b));
  gradCheck("scale", [rand([5], 5)], ([a]) => ops.scale(a, -2.5));
  gradCheck("addScaled", [rand([3, 4], 6), rand([3, 4], 7)], ([a, b]) => ops.addScaled(a, b, 0.3));
});

test("addScaled(a, b, s) is add(a, scale(b, s)) bit for bit (LoRA's y + s * BAx)", () => {
  const a = rand([7, 9], 8, false), b = rand([7, 9], 9, false);
  for (const s of [2, 0.3, -1.7]) assert.deepEqual(ops.addScaled(a, b, s).data, ops.add(a, ops.scale(b, s)).data);
  assert.throws(() => ops.addScaled(a, rand([9], 1), 2), /addScaled: shapes \[7, 9\] and \[9\] differ/);
});

test("activations backward", () => {
  for (const kind of ["gelu", "quick_gelu", "silu", "gelu_tanh"] as const) {
    gradCheck(kind, [rand([17], 7)], ([x]) => ops.activation(ops.scale(x, 3), kind));
  }
});

test("layerNorm and rmsNorm backward", () => {
  gradCheck("layerNorm", [rand([3, 6], 1), rand([6], 2), rand([6], 3)], ([x, w, b]) => ops.layerNorm(x, w, b, 1e-5));
  gradCheck("rmsNorm", [rand([3, 6], 4), rand([6], 5)], ([x, w]) => ops.rmsNorm(x, w, 1e-6));
});

test("rope backward and rotation property", () => {
  const inv = Float64Array.from([1, 0.1, 0.01]);
  const pos = Int32Array.from([0, 3, 7, 2]);
  gradCheck("rope", [rand([2, 2, 2, 6], 1)], ([x]) => ops.rope(x, pos, inv));
  // rotation keeps each (i, i + half) pair's norm
  const x = rand([1, 1, 1, 6], 3, false);
  const y = ops.rope(x, Int32Array.from([5]), inv);
  for (let i = 0; i < 3; i++) {
    const a = x.data[i] ** 2 + x.data[i + 3] ** 2;
    const b = y.data[i] ** 2 + y.data[i + 3] ** 2;
    assert.ok(Math.abs(a - b) < 1e-6);
  }
});

test("attention backward: causal, grouped-query, cross-length", () => {
  gradCheck("attn", [rand([2, 3, 4, 2], 1), rand([2, 3, 2, 2], 2), rand([2, 3, 2, 2], 3)], ([q, k, v]) =>
    ops.attention(q, k, v, { causal: true }));
  gradCheck("attn-full", [rand([1, 2, 2, 3], 4), rand([1, 5, 1, 3], 5), rand([1, 5, 1, 3], 6)], ([q, k, v]) =>
    ops.attention(q, k, v, { causal: false }));
});

test("attention with a cache equals attention on the whole sequence", () => {
  const q = rand([1, 5, 2, 4], 1, false);
  const k = rand([1, 5, 2, 4], 2, false);
  const v = rand([1, 5, 2, 4], 3, false);
  const full = ops.attention(q, k, v, { causal: true });
  // the last query alone against a cache holding all 5 positions (capacity 8)
  const kc = Tensor.zeros([1, 8, 2, 4], be);
  const vc = Tensor.zeros([1, 8, 2, 4], be);
  kc.data.set(k.data);
  vc.data.set(v.data);
  const last = ops.slice(q, 1, 4, 5);
  const one = ops.attention(last, kc, vc, { causal: true, kvLength: 5 });
  const want = full.data.subarray(4 * 8);
  one.data.forEach((x, i) => assert.ok(Math.abs(x - want[i]) < 1e-6));
});

test("embedding scatter-add backward and cross-entropy", () => {
  const ids = Int32Array.from([1, 0, 1, 3]);
  gradCheck("embedding", [rand([4, 3], 1)], ([t]) => ops.embedding(t, ids));
  const targets = Int32Array.from([2, -100, 0]);
  gradCheck("crossEntropy", [rand([3, 5], 2)], ([l]) => ops.crossEntropy(ops.scale(l, 3), targets));
  const l = rand([1, 3], 3, false);
  const loss = ops.crossEntropy(l, Int32Array.from([1]));
  const lse = Math.log(l.toArray().reduce((s, x) => s + Math.exp(x), 0));
  assert.ok(Math.abs(loss.data[0] - (lse - l.data[1])) < 1e-6);
});

test("reshape, permute, slice, concat backward", () => {
  gradCheck("permute", [rand([2, 3, 4], 1)], ([x]) => ops.permute(x, [2, 0, 1]));
  gradCheck("slice", [rand([3, 5], 2)], ([x]) => ops.slice(x, 1, 1, 4));
  gradCheck("concat", [rand([2, 2], 3), rand([2, 3], 4)], ([a, b]) => ops.concat([a, b], 1));
  gradCheck("reshape", [rand([2, 6], 5)], ([x]) => ops.mul(ops.reshape(x, [3, 4]), ops.reshape(x, [3, -1])));
  const x = Tensor.zeros([2, 3, 4], be);
  x.data.forEach((_, i) => (x.data[i] = i));
  const p = ops.permute(x, [2, 0, 1]);
  assert.deepEqual(p.shape, [4, 2, 3]);
  assert.equal(p.data[1 * 6 + 1 * 3 + 2], x.data[1 * 12 + 2 * 4 + 1]);
});

test("a tensor used twice accumulates both gradients", () => {
  const x = rand([4], 1);
  const y = ops.add(ops.mul(x, x), x);
  y.backward(new Float32Array(4).fill(1));
  x.data.forEach((v, i) => assert.ok(Math.abs(x.grad![i] - (2 * v + 1)) < 1e-6));
});

test("inference on tensors without grad records no graph", () => {
  const w = rand([3, 2], 1, false);
  const y = ops.linear(rand([1, 2], 2, false), w);
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
});

test("erf matches known values", () => {
  const known: Array<[number, number]> = [
    [0, 0], [0.5, 0.5204998778130465], [1, 0.8427007929497149], [2, 0.9953222650189527],
    [3, 0.9999779095030014], [4.5, 0.9999999998033839], [-1.5, -0.9661051464753108],
  ];
  for (const [x, want] of known) assert.ok(Math.abs(erf(x) - want) < 1e-14, `erf(${x}) = ${erf(x)}`);
});

test("sliding-window attention sees only the last `window` keys, forward and backward", () => {
  gradCheck("attn-window", [rand([1, 5, 2, 3], 1), rand([1, 5, 1, 3], 2), rand([1, 5, 1, 3], 3)], ([q, k, v]) =>
    ops.attention(q, k, v, { causal: true, window: 2 }));
  const q = rand([1, 6, 1, 4], 4, false);
  const k = rand([1, 6, 1, 4], 5, false);
  const v = rand([1, 6, 1, 4], 6, false);
  const windowed = ops.attention(q, k, v, { causal: true, window: 3 });
  // the last query with window 3 equals plain attention over keys 3..5
  const last = ops.attention(ops.slice(q, 1, 5, 6), ops.slice(k, 1, 3, 6), ops.slice(v, 1, 3, 6), { causal: false });
  last.data.forEach((x, i) => assert.ok(Math.abs(x - windowed.data[5 * 4 + i]) < 1e-6));
});
