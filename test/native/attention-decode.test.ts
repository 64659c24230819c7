/**
 * Decode attention (few query rows) sums the scores of several heads with one vectorized lane
 * sum, and the heads of a kv head share its key and value rows (2, 4 or 8 of them; other group
 * sizes take the per-key path); each head must still get, bit for bit, what it gets as the only
 * head, for every kernel variant, head count, group size, head size and key count.
 */
import { test } from "node:test";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { assertBitEqual, randn, tryLoadAddon } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa}: decode attention gives each head its result alone`, { skip }, () => {
    const native = addon!;
    const before = native.settings();
    try {
      native.configure({ isa, threads: 1 });
      const be = new NativeBackend(native);
      for (const [heads, kvHeads, headDim, tk] of [[16, 4, 64, 300], [32, 8, 128, 40], [20, 5, 37, 9], [8, 8, 16, 600], [16, 8, 64, 77], [16, 2, 32, 263], [9, 3, 24, 50]]) {
        for (const tq of [1, 2]) {
          const q = randn(tq * heads * headDim, heads + tk);
          const k = randn(tk * kvHeads * headDim, tk);
          const v = randn(tk * kvHeads * headDim, tk + 1);
          const scale = 1 / Math.sqrt(headDim);
          const out = new Float32Array(q.length);
          be.attention(q, k, v, out, { batch: 1, tq, tk, heads, kvHeads, headDim, scale, causalOffset: tk - tq });
          const group = heads / kvHeads;
          for (const h of [0, 1, heads - 1]) {
            // head h alone: its query rows, and its kv head's keys and values
            const pick = (x: Float32Array, rows: number, width: number, col: number) => {
              const r = new Float32Array(rows * headDim);
              for (let i = 0; i < rows; i++) r.set(x.subarray((i * width + col) * headDim, (i * width + col + 1) * headDim), i * headDim);
              return r;
            };
            const alone = new Float32Array(tq * headDim);
            be.attention(pick(q, tq, heads, h), pick(k, tk, kvHeads, Math.floor(h / group)), pick(v, tk, kvHeads, Math.floor(h / group)), alone,
              { batch: 1, tq, tk, heads: 1, kvHeads: 1, headDim, scale, causalOffset: tk - tq });
            assertBitEqual(pick(out, tq, heads, h), alone, `${heads}/${kvHeads} heads of ${headDim}, ${tk} keys, ${tq} rows: head ${h}`);
          }
        }
      }
    } finally {
      native.configure({ isa: before.isa, threads: before.threads });
    }
  });
}
