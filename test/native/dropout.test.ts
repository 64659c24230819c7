/**
 * Dropout's mask is drawn from the training run's Rng stream (util/random.ts, mulberry32, whose
 * state a checkpoint saves): the native kernel draws every element on its own from the stream's
 * closed form, and must give the reference backend's mask, which calls next() element by element,
 * bit for bit, for every kernel variant and thread count; Rng.skip(n) must leave the state where
 * n calls leave it, so training resumes on the same stream. The backward pass draws the mask again.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { dropout } from "../../src/tensor/ops.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { Rng } from "../../src/util/random.js";
import { assertBitEqual, randn, tryLoadAddon, withVariant } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

/** [state, p, elements]: a state near the top of 32 bits wraps; lengths past one kernel chunk, odd */
const CASES = [[1, 0.05, 1], [12345, 0.05, 70001], [0xfffffff0, 0.5, 1000], [0, 0.9, 333], [0x6d2b79f5, 0.1, 65536 * 2 + 7]] as const;

test("Rng.skip(n) leaves the state where n calls of next() leave it", () => {
  for (const [state, , n] of CASES) {
    const a = new Rng(state);
    for (let i = 0; i < n; i++) a.next();
    const b = new Rng(state);
    b.skip(n);
    assert.equal(b.state, a.state, `state ${state}, ${n} numbers`);
  }
});

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa}: the dropout mask is the Rng stream's, as the reference draws it`, { skip }, () => {
    const ref = new RefBackend();
    withVariant(addon!, isa, [1, 2], (be, threads) => {
      for (const [state, p, n] of CASES) {
        const want = new Float32Array(n);
        const got = new Float32Array(n);
        ref.dropout(state, p, new Float32Array(n).fill(1), want);
        be.dropout(state, p, new Float32Array(n).fill(1), got);
        assertBitEqual(got, want, `state ${state}, p ${p}, ${n} elements, ${threads} threads`);
        const dropped = want.filter((x) => x === 0).length / n;
        if (n > 10000) assert.ok(Math.abs(dropped - p) < 0.01, `about p of the elements dropped: ${dropped}`);
        const x = randn(n, state % 1000);
        ref.dropout(state, p, x, want);
        be.dropout(state, p, x, got);
        assertBitEqual(got, want, `x times the mask: state ${state}, p ${p}, ${n} elements, ${threads} threads`);
      }
    });
  });
}

test("dropout multiplies by the mask, its gradient by the same mask, and moves the Rng past it; bad arguments are refused", { skip }, () => {
  const be = new NativeBackend(addon!);
  const x = new Tensor(randn(1000, 3), [10, 100], be, true);
  const rng = new Rng(77);
  const y = dropout(x, 0.2, rng);
  const mask = new Float32Array(1000);
  new RefBackend().dropout(77, 0.2, new Float32Array(1000).fill(1), mask);
  assert.ok(mask.some((m) => m === 0) && mask.some((m) => m !== 0));
  assertBitEqual(y.data, x.data.map((v, i) => v * mask[i]), "x times the mask");
  const after = new Rng(77);
  after.skip(1000);
  assert.equal(rng.state, after.state);
  const g = randn(1000, 5);
  y.backward(g);
  assertBitEqual(x.grad!, g.map((v, i) => v * mask[i]), "the gradient times the mask");
  assert.throws(() => be.dropout(-1, 0.1, new Float32Array(4), new Float32Array(4)), /state must be a 32-bit unsigned integer/);
  assert.throws(() => be.dropout(1, 1, new Float32Array(4), new Float32Array(4)), /p must be in \[0, 1\)/);
  assert.throws(() => be.dropout(1, 0.1, new Float32Array(3), new Float32Array(4)), /x has 3 values for an output of 4/);
});
