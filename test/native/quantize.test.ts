/**
 * The native quantizers (native/quantize.cc) against the TypeScript encoders (packPortable):
 * the same bytes for every q format, on weights of several kinds (including ties, tiny values
 * whose scales are f16 subnormals, constant and zero blocks), for 1 and 2 threads.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { packMatrix, packPortable, type PackedFormat } from "../../src/tensor/packed.js";
import { randn, tryLoadAddon } from "./helpers.js";

const { addon, skip } = tryLoadAddon();
const Q: PackedFormat[] = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"];

function weights(kind: string, n: number, seed: number): Float32Array {
  const g = randn(n, seed);
  switch (kind) {
    case "normal": return g.map((v) => v * 0.02);
    case "ties": return g.map((v) => Math.round(v * 8) / 2); // many exact halves of the grid
    case "tiny": return g.map((v) => v * 1e-6); // scales below f16's normal range
    case "skewed": return g.map((v) => Math.abs(v) + 0.5);
    default: return g.map((v, i) => (i % 256 < 64 ? 0 : i % 256 < 128 ? 0.25 : v)); // zero and constant blocks
  }
}

test("native quantizers write the TypeScript encoders' bytes, for any thread count", { skip }, () => {
  const before = addon!.settings();
  try {
    for (const threads of [1, 2]) {
      addon!.configure({ threads });
      let seed = 1;
      for (const kind of ["normal", "ties", "tiny", "skewed", "blocks"]) {
        for (const format of Q) {
          const [rows, cols] = [7, 512];
          const w = weights(kind, rows * cols, seed++);
          const got = packMatrix(w, rows, cols, format);
          const want = packPortable(w, rows, cols, format);
          assert.ok(Buffer.from(got.data).equals(Buffer.from(want.data)), `${format} ${kind} (${threads} threads)`);
        }
      }
    }
  } finally {
    addon!.configure({ threads: before.threads });
  }
});

test("native quantize refuses bad arguments with one-line errors", { skip }, () => {
  const x = new Float32Array(64);
  const quantize = (addon as unknown as { quantize: (...a: unknown[]) => void }).quantize;
  assert.throws(() => quantize(x, "q4_k", 1, 64, new Uint8Array(1000)), /multiple of 256/);
  assert.throws(() => quantize(x, "bf16", 1, 64, new Uint8Array(1000)), /must be a q format/);
  assert.throws(() => quantize(x, "q8_0", 1, 64, new Uint8Array(10)), /out has 10 bytes, needs 68/);
  assert.throws(() => quantize(x, "q8_0", 2, 64, new Uint8Array(200)), /x has 64 values, needs 128/);
});

test("every kernel variant decodes each block format to the reference backend's values, bit for bit", { skip }, async () => {
  const { NativeBackend } = await import("../../src/tensor/native-backend.js");
  const { unpackMatrix } = await import("../../src/tensor/packed.js");
  const before = addon!.settings();
  try {
    for (const isa of before.isas) {
      addon!.configure({ isa });
      const be = new NativeBackend(addon!, { exactQuant: true });
      for (const format of ["q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"] as PackedFormat[]) {
        const [rows, cols] = [5, 512];
        const w = packMatrix(weights("normal", rows * cols, 3), rows, cols, format);
        // one-hot activations: C[i, r] = W[r, i] exactly, through the decode and prefill paths
        for (const m of [1, cols]) {
          const a = new Float32Array(m * cols);
          for (let i = 0; i < m; i++) a[i * cols + i] = 1;
          const c = new Float32Array(m * rows);
          be.packedMatmul(a, w, c, m, false, false);
          const want = unpackMatrix(w);
          for (let i = 0; i < m; i++)
            for (let r = 0; r < rows; r++) assert.ok(c[i * rows + r] === want[r * cols + i], `${isa} ${format} m=${m} [${r}, ${i}]: ${c[i * rows + r]} vs ${want[r * cols + i]}`);
        }
      }
    }
  } finally {
    addon!.configure({ isa: before.isa });
  }
});
