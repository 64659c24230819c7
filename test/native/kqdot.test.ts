/**
 * The native backend's default products with q4_k/q5_k/q6_k weights (packedMatmul, transposed
 * = false, up to 16 rows or rowwise): activations quantized to int8 per 256 values and integer
 * super-block dot products (native/impl/kqdot.h). They must equal an independent TypeScript
 * model of that arithmetic (kqdot-reference.ts) bit for bit on every kernel variant, for odd
 * weight-row counts and decode- and batch-sized row counts; not depend on the thread count; stay
 * within the error that quantizing the activations predicts of the exact product; and be left
 * out where they must not be used (exactQuant, the transposed product of training, prompts).
 * Skipped when the addon is not built.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { packMatrix } from "../../src/tensor/packed.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { assertBitEqual, assertClose, tryLoadAddon, randn, relativeRms } from "./helpers.js";
import { kqdotMatmul, type KFormat } from "./kqdot-reference.js";
import { assertErrorAsPredicted, predictedRelativeRms } from "./qdot-reference.js";

const { addon, skip } = tryLoadAddon();
const ref = new RefBackend();
const FORMATS: KFormat[] = ["q4_k", "q5_k", "q6_k"];

// [rows, cols]: one super-block, several, odd row counts (a partial task of 16 rows)
const SHAPES: Array<[number, number]> = [[5, 256], [33, 512], [17, 768], [9, 1280]];
const ROW_COUNTS = [1, 2, 3, 4, 5, 7, 9, 16, 21]; // 21: more than 16, so rowwise

const modelCache = new Map<string, Float32Array>();

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa}: K-quant integer-activation products equal the TypeScript model bit for bit`, { skip }, () => {
    const native = addon!;
    const be = new NativeBackend(native);
    native.configure({ isa });
    try {
      let seed = 7000;
      for (const format of FORMATS) {
        for (const [rows, cols] of SHAPES) {
          const w = packMatrix(randn(rows * cols, seed++), rows, cols, format);
          for (const m of ROW_COUNTS) for (const accumulate of [false, true]) {
            const a = randn(m * cols, seed++, 3);
            const c0 = randn(m * rows, seed++);
            const label = `${format} [${rows}, ${cols}] m=${m} accumulate=${accumulate}`;
            let want = modelCache.get(label);
            if (!want) {
              want = c0.slice();
              kqdotMatmul(a, w, want, m, accumulate);
              modelCache.set(label, want);
            }
            const got = c0.slice();
            be.packedMatmul(a, w, got, m, false, accumulate, m > 16);
            assertBitEqual(got, want, `${isa} ${label}`);
          }
        }
      }
    } finally {
      native.configure({ isa: native.settings().isas[0] });
    }
  });
}

test("K-quant integer products: 1 and 2 threads give the same bits on every variant", { skip }, () => {
  const native = addon!;
  const be = new NativeBackend(native);
  const before = native.settings();
  try {
    for (const isa of before.isas) {
      native.configure({ isa });
      for (const format of FORMATS) {
        const [rows, cols] = [71, 1280];
        const w = packMatrix(randn(rows * cols, 7500), rows, cols, format);
        for (const m of [1, 3, 13, 30]) {
          const a = randn(m * cols, 7501 + m);
          const outs = [1, 2].map((threads) => {
            native.configure({ threads });
            const c = new Float32Array(m * rows);
            be.packedMatmul(a, w, c, m, false, false, true);
            return c;
          });
          assertBitEqual(outs[1], outs[0], `${isa} ${format} m=${m}: 1 vs 2 threads`);
        }
      }
    }
  } finally {
    native.configure({ isa: before.isa, threads: before.threads });
  }
});

test("K-quant integer activations: halves round away from zero, zero blocks, non-finite blocks give NaN", { skip }, () => {
  const native = addon!;
  const be = new NativeBackend(native);
  const cols = 4 * 256;
  const m = 4;
  const d = 1; // amax 127: d = 1, so these quotients are exact halves
  const a = randn(m * cols, 7600);
  a.set([127, 2.5, -2.5, 0.5, -0.5, 126.5, -126.5, 1.5, -1.5].map((h) => h * d), 0);
  a.fill(0, 256, 512); // a zero super-block: d = 0
  for (let j = 512; j < 768; j++) a[j] = (j - 600) * 1e-42; // subnormal: d underflows, Q clamps
  a[cols + 300] = NaN; // row 1
  a[3 * cols + 900] = Infinity; // row 3
  for (const format of FORMATS) {
    const rows = 19;
    const w = packMatrix(randn(rows * cols, 7601), rows, cols, format);
    const want = new Float32Array(m * rows);
    kqdotMatmul(a, w, want, m, false);
    for (const isa of native.settings().isas) {
      native.configure({ isa });
      try {
        const got = new Float32Array(m * rows);
        be.packedMatmul(a, w, got, m, false, false);
        for (let i = 0; i < m; i++) {
          const row = (x: Float32Array) => x.subarray(i * rows, (i + 1) * rows);
          if (i === 1 || i === 3) assert.ok(row(got).every(Number.isNaN), `${isa} ${format} row ${i}: NaN expected`);
          else assertBitEqual(row(got), row(want), `${isa} ${format} row ${i}`);
        }
      } finally {
        native.configure({ isa: native.settings().isas[0] });
      }
    }
  }
});

/**
 * Versus the exact product: each activation x becomes d·Q with an error uniform on ±d/2 (d =
 * amax/127 of its 256 values), independent of the weights, so the product's relative RMS error
 * is about sqrt(mean(d²/12) / mean(x²)) (predictedRelativeRms with blocks of 256: ~0.7% for
 * normal activations). Over n·m ≥ 2000 outputs the measured figure lies within a few percent of
 * that; the bounds [0.7, 1.3] x predicted catch a wrong scale, sign, min or rounding rule.
 */
test("K-quant integer activations: error against the exact product as quantization predicts", { skip }, () => {
  const be = new NativeBackend(addon!);
  // rowwise: the integer path for any row count (m = 40 included)
  FORMATS.forEach((format, i) => assertErrorAsPredicted(be, format, { seed: 7700 + 6 * i, levels: 127, block: 256, rowwise: true }));
});

test("K-quant: exactQuant, transposed products and prompts (more than 16 rows, not rowwise) stay exact", { skip }, () => {
  const native = addon!;
  const fast = new NativeBackend(native);
  const exact = new NativeBackend(native, { exactQuant: true });
  let seed = 7800;
  for (const format of FORMATS) {
    const [rows, cols] = [96, 512];
    const w = packMatrix(randn(rows * cols, seed++), rows, cols, format);
    for (const m of [1, 6, 17]) {
      const a = randn(m * cols, seed++);
      const want = new Float32Array(m * rows);
      ref.packedMatmul(a, w, want, m, false, false);
      const got = new Float32Array(m * rows);
      exact.packedMatmul(a, w, got, m, false, false);
      assertClose(got, want, `${format} exactQuant m=${m}`);
      if (m > 16) {
        fast.packedMatmul(a, w, got, m, false, false);
        assertClose(got, want, `${format} prompt m=${m}`);
      }
      fast.packedMatmul(a, w, got, m, false, false, true); // rowwise: the integer path for any m
      const predicted = predictedRelativeRms(a, m, cols, 127, 256);
      assert.ok(relativeRms(got, want) > 0.5 * predicted, `${format} m=${m}: the default path quantizes`);
      const g = randn(m * rows, seed++);
      const dxWant = new Float32Array(m * cols);
      ref.packedMatmul(g, w, dxWant, m, true, false);
      const dx = new Float32Array(m * cols);
      fast.packedMatmul(g, w, dx, m, true, false);
      assertClose(dx, dxWant, `${format} transposed m=${m}`);
    }
  }
});
