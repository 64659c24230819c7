/**
 * The native backend's default products with q8_0/q4_0 weights (packedMatmul, transposed =
 * false): activations quantized to integers per block (int8 for q4_0, 16 bits for q8_0) and
 * integer block dot products (native/impl/qdot.h).
 * They must equal an independent TypeScript model of that arithmetic (qdot-reference.ts) bit
 * for bit on every kernel variant at 1 and 2 threads, for decode-sized and prefill-sized row
 * counts, weight row counts that leave a partial panel, short rows; stay within the error that quantizing the
 * activations predicts of the exact product; and be left out where they must not be used
 * (exactQuant, the transposed product of training). The same holds, bit for bit, for the
 * weights in the interleaved layout the kernels read fastest. Skipped when the addon is not built.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { packMatrix, type PackedMatrix, unpackMatrix } from "../../src/tensor/packed.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { assertBitEqual, assertClose, tryLoadAddon, randn, relativeRms, rng } from "./helpers.js";
import { activationLevels, assertErrorAsPredicted, predictedRelativeRms, qdotMatmul } from "./qdot-reference.js";

const { addon, skip } = tryLoadAddon();

const ref = new RefBackend();
type QFormat = "q8_0" | "q4_0";

/** A copy of `w` (kernelLayout reorders the bytes it is given). */
const copyOf = (w: PackedMatrix): PackedMatrix => ({ ...w, data: w.data.slice() });

/** Packed random weights; q8_0 also gets -128 bytes, which its quantizer never writes. */
function weights(format: QFormat, rows: number, cols: number, seed: number): PackedMatrix {
  const w = packMatrix(randn(rows * cols, seed), rows, cols, format);
  if (format === "q8_0") {
    const r = rng(seed + 1);
    for (let i = 0; i < w.data.length; i += 34) w.data[i + 2 + Math.floor(((r() + 1) / 2) * 32)] = 0x80;
  }
  return w;
}

// [rows, cols]: one block, a weight row count that leaves a partial panel of 8 or 16 rows, long rows
const SHAPES: Array<[number, number]> = [[5, 32], [33, 64], [70, 256], [40, 544], [17, 224], [520, 96], [9, 1024]];
const ROW_COUNTS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13];

// The TypeScript model's results, computed once for all kernel variants.
const modelCache = new Map<string, Float32Array>();

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa}: integer-activation products equal the TypeScript model bit for bit`, { skip }, () => {
    const native = addon!;
    const be = new NativeBackend(native);
    const { threads } = native.settings();
    native.configure({ isa });
    try {
      let seed = 2000;
      for (const format of ["q8_0", "q4_0"] as QFormat[]) {
        for (const [rows, cols] of SHAPES) {
          const w = weights(format, rows, cols, seed++);
          for (const m of [...ROW_COUNTS, ...(rows === 33 ? [70] : [])]) for (const accumulate of [false, true]) {
            const a = randn(m * cols, seed++, 3);
            const c0 = randn(m * rows, seed++);
            const label = `${format} [${rows}, ${cols}] m=${m} accumulate=${accumulate}`;
            let want = modelCache.get(label);
            if (!want) {
              want = c0.slice();
              qdotMatmul(a, w, want, m, accumulate);
              modelCache.set(label, want);
            }
            for (const threads of [1, 2])
              for (const layout of [w, be.kernelLayout(copyOf(w))]) {
                native.configure({ threads });
                const got = c0.slice();
                be.packedMatmul(a, layout, got, m, false, accumulate);
                assertBitEqual(got, want, `${isa} ${threads} thread(s) ${label}${layout.interleaved ? " interleaved" : ""}`);
              }
          }
        }
      }
    } finally {
      native.configure({ isa: native.settings().isas[0], threads });
    }
  });
}

test("integer activations: halves round away from zero, zero and tiny blocks, non-finite blocks give NaN", { skip }, () => {
  const native = addon!;
  const be = new NativeBackend(native);
  const cols = 6 * 32;
  const m = 5;
  for (const format of ["q8_0", "q4_0"] as QFormat[]) {
    // row 0, block 0: amax 127 makes d = 127 / R a power of two, so these quotients are exact halves
    const d = 127 / activationLevels(format);
    const a = randn(m * cols, 3000);
    a.set([127, ...[2.5, -2.5, 0.5, -0.5, 126.5, -126.5, 1.5, -1.5, 3.5, -3.5].map((h) => h * d)], 0);
    a.fill(0, 32, 64); // a zero block: d = 0
    for (let j = 64; j < 96; j++) a[j] = (j - 80) * 1e-42; // subnormal: d underflows, Q clamps
    for (let j = 96; j < 128; j++) a[j] *= 1e30;
    a[cols + 40] = NaN; // row 1
    a[3 * cols + 100] = -Infinity; // row 3
    const rows = 20;
    const w = weights(format, rows, cols, 3001);
    for (const isa of native.settings().isas) {
      native.configure({ isa });
      try {
        const got = new Float32Array(m * rows);
        be.packedMatmul(a, w, got, m, false, false);
        const want = new Float32Array(m * rows);
        qdotMatmul(a, w, want, m, false);
        for (let i = 0; i < m; i++) {
          const row = (x: Float32Array) => x.subarray(i * rows, (i + 1) * rows);
          if (i === 1 || i === 3) assert.ok(row(got).every(Number.isNaN), `${isa} ${format} row ${i}: NaN expected`);
          else assertBitEqual(row(got), row(want), `${isa} ${format} row ${i}`);
        }
      } finally {
        native.configure({ isa: native.settings().isas[0] });
      }
    }
    // the rule itself: half away from zero, not to even (2.5 -> 3, -2.5 -> -3)
    const one = { format, rows: 1, cols: 32, data: new Uint8Array(format === "q8_0" ? 34 : 18) } as PackedMatrix;
    one.data.set([0x00, 0x3c]); // scale 1.0
    if (format === "q8_0") one.data.fill(1, 2);
    else one.data.fill(0x99, 2); // every weight 9 - 8 = 1
    const x = new Float32Array(32);
    x.set([127, 2.5 * d, -2.5 * d, 0.5 * d]);
    const expected = d * (activationLevels(format) + 3 - 3 + 1);
    const model = new Float32Array(1);
    qdotMatmul(x, one, model, 1, false);
    const native1 = new Float32Array(1);
    be.packedMatmul(x, one, native1, 1, false, false);
    assert.deepEqual([model[0], native1[0]], [expected, expected], format);
  }
});

/**
 * Versus the exact product: each activation x becomes d·Q with an error uniform on ±d/2
 * (d = amax/R of its block), independent of the weights, so the product's error is Σ w·e with
 * variance Σ w²·d²/12 against Σ w²·x² for the product: its relative RMS is
 * sqrt(mean(d²/12) / mean(x²)) (predictedRelativeRms: 0.38% for uniform activations with
 * R = 127, 1.5e-5 with R = 32512). Over n·m ≥ 2000 outputs the measured figure lies within a
 * few percent of that, so the bounds [0.7, 1.3] x predicted catch a wrong scale, sign or
 * rounding rule while leaving room for the sampling error; the f32 sums add ~1e-7.
 */
test("integer activations: error against the exact product as quantization predicts", { skip }, () => {
  const be = new NativeBackend(addon!);
  (["q8_0", "q4_0"] as QFormat[]).forEach((format, i) => assertErrorAsPredicted(be, format, { seed: 4000 + 6 * i, levels: activationLevels(format) }));
});

test("exactQuant and transposed products stay exact", { skip }, () => {
  const native = addon!;
  const fast = new NativeBackend(native);
  const exact = new NativeBackend(native, { exactQuant: true });
  assert.equal(fast.exactQuant, false);
  assert.equal(exact.exactQuant, true);
  let seed = 5000;
  for (const format of ["q8_0", "q4_0"] as QFormat[]) {
    const [rows, cols] = [96, 320];
    const w = packMatrix(randn(rows * cols, seed++), rows, cols, format);
    for (const m of [1, 6]) {
      const a = randn(m * cols, seed++);
      const want = new Float32Array(m * rows);
      ref.packedMatmul(a, w, want, m, false, false);
      const got = new Float32Array(m * rows);
      exact.packedMatmul(a, w, got, m, false, false);
      assertClose(got, want, `${format} exactQuant m=${m}`);
      fast.packedMatmul(a, w, got, m, false, false);
      const predicted = predictedRelativeRms(a, m, cols, activationLevels(format));
      assert.ok(relativeRms(got, want) > 0.5 * predicted, `${format} m=${m}: the default path quantizes`);
      // the input gradient: exact on the default backend too
      const g = randn(m * rows, seed++);
      const dxWant = new Float32Array(m * cols);
      ref.packedMatmul(g, w, dxWant, m, true, false);
      const dx = new Float32Array(m * cols);
      fast.packedMatmul(g, w, dx, m, true, false);
      assertClose(dx, dxWant, `${format} transposed m=${m}`);
    }
  }
});

test("interleaved weights: the same values and the same results on every path", { skip }, () => {
  const native = addon!;
  const fast = new NativeBackend(native);
  const exact = new NativeBackend(native, { exactQuant: true });
  let seed = 6000;
  for (const format of ["q8_0", "q4_0"] as QFormat[]) {
    for (const [rows, cols] of [[8, 64], [16, 32], [37, 96]] as Array<[number, number]>) {
      const w = weights(format, rows, cols, seed++);
      const given = copyOf(w);
      const ilv = fast.kernelLayout(given);
      if (rows < 16) {
        assert.equal(ilv, given, `${format} [${rows}, ${cols}]: no whole panel, nothing to interleave`);
      } else {
        assert.equal(ilv.interleaved, true);
        assert.equal(ilv.data, given.data, "in place");
        assert.notDeepEqual(ilv.data, w.data, "the bytes move");
        const tail = Math.floor(rows / 16) * 16 * (cols / 32) * (format === "q8_0" ? 34 : 18);
        assert.deepEqual(ilv.data.subarray(tail), w.data.subarray(tail), "rows after the last whole panel stay");
      }
      assertBitEqual(unpackMatrix(ilv), unpackMatrix(w), `${format} [${rows}, ${cols}] values`);
      for (const m of [1, 5, 20]) {
        const a = randn(m * cols, seed++);
        for (const [name, be] of [["exactQuant", exact], ["default", fast], ["reference", ref]] as const) {
          const want = new Float32Array(m * rows);
          be.packedMatmul(a, w, want, m, false, false);
          const got = new Float32Array(m * rows);
          be.packedMatmul(a, ilv, got, m, false, false);
          assertBitEqual(got, want, `${format} [${rows}, ${cols}] ${name} m=${m}`);
          if (be !== ref) {
            be.packedMatmul(a, w, want, m, false, false, true);
            be.packedMatmul(a, ilv, got, m, false, false, true);
            assertBitEqual(got, want, `${format} [${rows}, ${cols}] ${name} rowwise m=${m}`);
          }
          const g = randn(m * rows, seed++);
          const dxWant = new Float32Array(m * cols);
          be.packedMatmul(g, w, dxWant, m, true, false);
          const dx = new Float32Array(m * cols);
          be.packedMatmul(g, ilv, dx, m, true, false);
          assertBitEqual(dx, dxWant, `${format} [${rows}, ${cols}] ${name} transposed m=${m}`);
        }
      }
    }
  }
  const k = packMatrix(randn(16 * 256, seed), 16, 256, "q4_k");
  assert.equal(fast.kernelLayout(k), k, "other formats stay as they are");
  const q = weights("q4_0", 32, 64, seed);
  assert.equal(exact.kernelLayout(q), q, "the exact path keeps the row layout");
  assert.equal(ref.kernelLayout(q), q, "so does the reference backend");
  assert.throws(() => native.interleave(k.data, "q4_k", 16, 256), /only q8_0 and q4_0/);
  assert.throws(() => native.interleave(new Uint8Array(100), "q4_0", 16, 64), /needs 576/);
  assert.throws(() => fast.packedMatmul(new Float32Array(256), { ...k, interleaved: true }, new Float32Array(16), 1, false, false), /only q8_0 and q4_0/);
});
