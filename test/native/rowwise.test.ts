/**
 * The rowwise products of a batched decode step: each row of C equals, bit for bit, the product
 * of that row alone, for f32 and packed weights, every kernel variant and 1 or 2 threads.
 */
import { test } from "node:test";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { packMatrix, type PackedFormat } from "../../src/tensor/packed.js";
import { assertBitEqual, randn, tryLoadAddon } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa}: rowwise products equal one-row products`, { skip }, () => {
    const native = addon!;
    const before = native.settings();
    try {
      for (const threads of [1, 2]) {
        native.configure({ isa, threads });
        for (const exactQuant of [false, true]) {
          const be = new NativeBackend(native, { exactQuant });
          for (const [n, k] of [[70, 1024], [33, 1000], [40, 37], [300, 2816]]) {
            const w = randn(n * k, n + k);
            const formats: Array<PackedFormat | "f32"> = ["f32", "bf16", "f16", ...(k % 32 === 0 ? (["q8_0", "q4_0", "q5_0"] as const) : []), ...(k % 256 === 0 ? (["q4_k", "q5_k", "q6_k"] as const) : [])];
            for (const format of formats) {
              const packed = format === "f32" ? null : packMatrix(w, n, k, format);
              for (const m of [2, 3, 4, 5, 6, 7, 8, 17]) {
                const a = randn(m * k, m * 7 + k);
                const mul = (x: Float32Array, rows: number, c: Float32Array, rowwise: boolean) =>
                  packed ? be.packedMatmul(x, packed, c, rows, false, false, rowwise) : be.gemm(x, w, c, { m: rows, n, k, transB: true, rowwise });
                const got = new Float32Array(m * n);
                mul(a, m, got, true);
                for (let i = 0; i < m; i++) {
                  const alone = new Float32Array(n);
                  mul(a.subarray(i * k, (i + 1) * k), 1, alone, false);
                  assertBitEqual(got.subarray(i * n, (i + 1) * n), alone, `${format} ${n}x${k} m=${m} row ${i} (${threads} threads, exactQuant ${exactQuant})`);
                }
              }
            }
          }
        }
      }
    } finally {
      native.configure({ isa: before.isa, threads: before.threads });
    }
  });
}
