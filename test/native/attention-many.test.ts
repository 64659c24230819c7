/**
 * attentionMany: one new position of each of several sequences, each over its own cache (f32 or
 * the f16 bits of a 16-bit cache), of its own length, in one call. Each row must get, bit for
 * bit, what `attention` gives it alone, for every kernel variant, 1 and 2 threads, grouped kv
 * heads, a head size with a scalar tail, caches longer than the keys in use, lengths from one
 * key to several key blocks, and a sliding window; the reference backend agrees to rounding,
 * and a call that does not fit is refused with a clear message.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { AttentionParams } from "../../src/tensor/backend.js";
import { f32ToF16Array } from "../../src/tensor/dtypes.js";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { assertBitEqual, randn, tryLoadAddon, withVariant } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

/** [heads, kvHeads, headDim, cache capacity, window] with the sequences' lengths */
const SHAPES = [
  [16, 4, 64, 400, 0, [1, 300, 129, 77, 256, 333, 2, 128]],
  [20, 5, 37, 64, 0, [9, 64, 1]],
  [8, 8, 16, 300, 100, [290, 40, 101]],
] as const;

function cases(half: boolean) {
  return SHAPES.map(([heads, kvHeads, headDim, cap, window, lengths], c) => {
    const n = lengths.length, row = kvHeads * headDim;
    const q = randn(n * heads * headDim, c + 10);
    const kv = (seed: number) => lengths.map((_, b) => (half ? f32ToF16Array(randn(cap * row, seed + b)) : randn(cap * row, seed + b)));
    const ks = kv(100 * c), vs = kv(100 * c + 50);
    const tk = Math.max(...lengths);
    const p: AttentionParams = { batch: n, tq: 1, tk, heads, kvHeads, headDim, scale: 1 / Math.sqrt(headDim), causalOffset: tk - 1, window: window || undefined };
    const alone = (b: number): AttentionParams => ({ ...p, batch: 1, tk: lengths[b], causalOffset: lengths[b] - 1 });
    return { q, ks, vs, lengths: Int32Array.from(lengths), p, alone, n: heads * headDim, name: `${heads}/${kvHeads} heads of ${headDim}, window ${window}` };
  });
}

/** attentionMany, or one sequence's attention, on f32 or f16 caches */
function many(be: NativeBackend | RefBackend, half: boolean, c: ReturnType<typeof cases>[number], out: Float32Array) {
  if (half) be.attentionManyF16(c.q, c.ks as Uint16Array[], c.vs as Uint16Array[], c.lengths, out, c.p);
  else be.attentionMany(c.q, c.ks as Float32Array[], c.vs as Float32Array[], c.lengths, out, c.p);
}
function one(be: NativeBackend | RefBackend, half: boolean, c: ReturnType<typeof cases>[number], b: number, out: Float32Array) {
  const q = c.q.subarray(b * c.n, (b + 1) * c.n);
  if (half) be.attentionF16(q, c.ks[b] as Uint16Array, c.vs[b] as Uint16Array, out, c.alone(b));
  else be.attention(q, c.ks[b] as Float32Array, c.vs[b] as Float32Array, out, c.alone(b));
}

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa}: attentionMany gives each sequence its attention alone`, { skip }, () => {
    withVariant(addon!, isa, [1, 2], (be, threads) => {
      for (const half of [false, true]) {
        for (const c of cases(half)) {
          const out = new Float32Array(c.q.length);
          many(be, half, c, out);
          c.lengths.forEach((len, b) => {
            const alone = new Float32Array(c.n);
            one(be, half, c, b, alone);
            assertBitEqual(out.subarray(b * c.n, (b + 1) * c.n), alone, `${c.name}, ${half ? "f16" : "f32"}, ${threads} threads: sequence ${b} of ${len} keys`);
          });
        }
      }
    });
  });
}

test("native and reference backends agree on attentionMany", { skip }, () => {
  const be = new NativeBackend(addon!);
  const ref = new RefBackend();
  for (const half of [false, true]) {
    for (const c of cases(half)) {
      const a = new Float32Array(c.q.length);
      const b = new Float32Array(c.q.length);
      many(be, half, c, a);
      many(ref, half, c, b);
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      assert.ok(worst < 1e-4, `${c.name}: max difference ${worst}`);
    }
  }
});

test("attentionMany refuses what does not fit, with a clear message", { skip }, () => {
  const be = new NativeBackend(addon!);
  const [c] = cases(false);
  const out = new Float32Array(c.q.length);
  const call = (over: Partial<{ ks: Float32Array[]; lengths: Int32Array; p: AttentionParams }>) => () =>
    be.attentionMany(c.q, over.ks ?? (c.ks as Float32Array[]), c.vs as Float32Array[], over.lengths ?? c.lengths, out, over.p ?? c.p);
  assert.throws(call({ ks: (c.ks as Float32Array[]).slice(1) }), /ks has 7 arrays, needs 8/);
  assert.throws(call({ lengths: c.lengths.slice(1) }), /lengths has 7 values for 8 sequences/);
  assert.throws(call({ lengths: Int32Array.from(c.lengths, (l, b) => (b === 1 ? 334 : l)) }), /length 334 outside \[0, tk 333\]/);
  assert.throws(call({ lengths: Int32Array.from(c.lengths, (l, b) => (b === 1 ? 450 : l)), p: { ...c.p, tk: 500, causalOffset: 499 } }), /sequence 1: k or v holds fewer than 115200 values/);
  assert.throws(call({ p: { ...c.p, tq: 2 } }), /one causal query row per sequence/);
  assert.throws(() => be.attentionMany(c.q, [new Float32Array(4)] as unknown as Float32Array[], c.vs as Float32Array[], c.lengths, out, c.p), /ks has 1 arrays/);
  assert.throws(() => be.attentionManyF16(c.q, c.ks as unknown as Uint16Array[], c.vs as unknown as Uint16Array[], c.lengths, out, c.p), /ks must be a Uint16Array/);
});
