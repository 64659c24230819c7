/**
 * Attention over a 16-bit KV cache (the f16 bits of its keys and values) is attention over their
 * f32 values: bit for bit the f32 kernel's result on the widened cache, for every kernel
 * variant, decode (1-2 query rows read the f16 rows directly) and prompts (widened first), with
 * grouped kv heads, head sizes with a scalar tail, and a cache longer than the keys in use. The
 * reference backend agrees to rounding.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { AttentionParams } from "../../src/tensor/backend.js";
import { f16ToF32Array, f32ToF16Array } from "../../src/tensor/dtypes.js";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { assertBitEqual, randn, tryLoadAddon, withVariant } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

/** [heads, kvHeads, headDim, keys in use, cache capacity, query rows] */
const SHAPES = [[16, 4, 64, 300, 320, 1], [32, 8, 128, 40, 40, 2], [20, 5, 37, 9, 16, 1], [16, 2, 32, 263, 300, 7], [9, 3, 24, 50, 64, 70]] as const;

function cases() {
  return SHAPES.map(([heads, kvHeads, headDim, tk, cap, tq], c) => {
    const batch = 2;
    const q = randn(batch * tq * heads * headDim, c + 1);
    const k = f32ToF16Array(randn(batch * cap * kvHeads * headDim, c + 2));
    const v = f32ToF16Array(randn(batch * cap * kvHeads * headDim, c + 3));
    const p: AttentionParams = { batch, tq, tk, heads, kvHeads, headDim, scale: 1 / Math.sqrt(headDim), causalOffset: tk - tq, kvBatchStride: cap * kvHeads * headDim };
    return { q, k, v, p, name: `${heads}/${kvHeads} heads of ${headDim}, ${tk} of ${cap} keys, ${tq} rows` };
  });
}

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa}: attention over an f16 cache equals attention over its f32 values`, { skip }, () => {
    withVariant(addon!, isa, [1, 2], (be, threads) => {
      for (const { q, k, v, p, name } of cases()) {
        const half = new Float32Array(q.length);
        const widened = new Float32Array(q.length);
        be.attentionF16(q, k, v, half, p);
        be.attention(q, f16ToF32Array(k), f16ToF32Array(v), widened, p);
        assertBitEqual(half, widened, `${name}, ${threads} threads`);
      }
    });
  });
}

test("reference backend: attention over an f16 cache is attention over its f32 values", () => {
  const ref = new RefBackend();
  for (const { q, k, v, p, name } of cases()) {
    const half = new Float32Array(q.length);
    const widened = new Float32Array(q.length);
    ref.attentionF16(q, k, v, half, p);
    ref.attention(q, f16ToF32Array(k), f16ToF32Array(v), widened, p);
    assert.deepEqual(half, widened, name);
  }
});

test("native and reference backends agree over an f16 cache", { skip }, () => {
  const be = new NativeBackend(addon!);
  const ref = new RefBackend();
  for (const { q, k, v, p, name } of cases()) {
    const a = new Float32Array(q.length);
    const b = new Float32Array(q.length);
    be.attentionF16(q, k, v, a, p);
    ref.attentionF16(q, k, v, b, p);
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    assert.ok(worst < 1e-4, `${name}: max difference ${worst}`);
  }
});
