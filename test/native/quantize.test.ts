/**
 * The native quantizers (native/quantize.cc) against the TypeScript encoders (packPortable):
 * the same bytes for every q format and the 16-bit formats, on weights of several kinds (including ties, tiny values
 * whose scales are f16 subnormals, constant and zero blocks), for 1 and 2 threads.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16ToF32Array, f16ToF32Array, f32ToF16Array } from "../../src/tensor/dtypes.js";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { f32ToF16Into, packHalfMatrix, packMatrix, packPortable, type PackedFormat, unpackMatrix } from "../../src/tensor/packed.js";
import { randInts, randn, tryLoadAddon } from "./helpers.js";

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

/** Asserts that packing bf16/f16 `bits` natively writes the bytes packPortable writes from their f32 values. */
function assertHalfPacking(bits: Uint16Array, source: "bf16" | "f16", rows: number, cols: number, format: PackedFormat, label: string): void {
  const wide = source === "bf16" ? bf16ToF32Array(bits) : f16ToF32Array(bits);
  assert.ok(Buffer.from(packHalfMatrix(bits, source, rows, cols, format).data).equals(Buffer.from(packPortable(wide, rows, cols, format).data)), label);
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
  assert.throws(() => quantize(x, "f32", 1, 64, new Uint8Array(1000)), /unknown format "f32"/);
  assert.throws(() => quantize(x, "q8_0", 1, 64, new Uint8Array(10)), /out has 10 bytes, needs 68/);
  assert.throws(() => quantize(x, "q8_0", 2, 64, new Uint8Array(200)), /x has 64 values, needs 128/);
  assert.throws(() => quantize(new Uint16Array(64), "q8_0", 1, 64, new Uint8Array(68)), /source must be a string/);
  assert.throws(() => quantize(new Uint16Array(64), "q8_0", 1, 64, new Uint8Array(68), "f32"), /unknown source "f32"/);
  assert.throws(() => quantize(new Int32Array(64), "q8_0", 1, 64, new Uint8Array(68)), /x must be a Float32Array or a Uint16Array/);
});

test("every kernel variant decodes each block format to the reference backend's values, bit for bit", { skip }, () => {
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

/** Blocks that test the edges of q8_0/q4_0: signed ties of the largest magnitude, signed zeros, halves, huge and subnormal scales. */
function edgeBlocks(cols: number, rows: number, seed: number): Float32Array {
  const w = randn(rows * cols, seed);
  for (let b = 0; b < w.length / 32; b++) {
    const x = w.subarray(32 * b, 32 * b + 32);
    switch (b % 8) {
      case 0: x[5] = -1.5; x[20] = 1.5; break; // equal magnitudes: the first one's sign wins
      case 1: x.fill(0); x[3] = -0; break;
      case 2: for (let j = 0; j < 32; j++) x[j] = (j - 16) / 2; break; // exact halves after scaling
      case 3: for (let j = 0; j < 32; j++) x[j] *= 3e38; break;
      case 4: for (let j = 0; j < 32; j++) x[j] *= 1e-36; break; // d an f16 zero, 1/d finite
      case 5: for (let j = 0; j < 32; j++) x[j] = Math.round(x[j] * 127) / 127; break;
      default: break;
    }
  }
  return w;
}

/** bf16/f16 bits of random values of several scales (NaN and infinity only when `special`). */
function halfBits(n: number, seed: number, source: "bf16" | "f16", special: boolean): Uint16Array {
  const r = randInts(n, seed, 0, 65536);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    let h = r[i];
    const exp = source === "bf16" ? (h >> 7) & 0xff : (h >> 10) & 0x1f;
    const top = source === "bf16" ? 0xff : 0x1f;
    if (exp === top && !special) h ^= source === "bf16" ? 0x4000 : 0x2000; // a finite value instead
    if (source === "bf16" && !special) h = (h & 0x807f) | ((((h >> 7) & 0xff) % 40 + 100) << 7); // keep |x| near 1
    out[i] = h;
  }
  return out;
}

test("q8_0 and q4_0 vector quantizers of every kernel variant write the TypeScript encoders' bytes, from f32, bf16 and f16, for 1 and 2 threads", { skip }, () => {
  const before = addon!.settings();
  try {
    for (const isa of before.isas) {
      for (const threads of [1, 2]) {
        addon!.configure({ isa, threads });
        let seed = 11;
        for (const format of ["q8_0", "q4_0"] as PackedFormat[]) {
          for (const [rows, cols] of [[1, 32], [3, 96], [7, 160], [33, 64], [5, 4096]]) {
            const label = `${isa} ${threads} threads ${format} [${rows}, ${cols}]`;
            for (const w of [edgeBlocks(cols, rows, seed++), weights("ties", rows * cols, seed++), weights("tiny", rows * cols, seed++)]) {
              assert.ok(Buffer.from(packMatrix(w, rows, cols, format).data).equals(Buffer.from(packPortable(w, rows, cols, format).data)), `${label} f32`);
            }
            for (const source of ["bf16", "f16"] as const) assertHalfPacking(halfBits(rows * cols, seed++, source, false), source, rows, cols, format, `${label} ${source}`);
          }
        }
      }
    }
  } finally {
    addon!.configure({ isa: before.isa, threads: before.threads });
  }
});

// (where 1/d overflows, C converts infinities to integers, which it leaves undefined, so the
// TypeScript encoders are no oracle there: the scalar C code is)
test("the vector quantizers leave blocks with infinities, NaN or an overflowing 1/d to the scalar code: the portable variant's bytes", { skip }, () => {
  const before = addon!.settings();
  const [rows, cols] = [9, 256];
  const w = randn(rows * cols, 5);
  for (let i = 0; i < w.length; i += 37) w[i] = [Infinity, -Infinity, NaN][i % 3];
  for (let i = 64 * 32; i < 65 * 32; i++) w[i] *= 1e-40;
  const run = () => ["q8_0", "q4_0"].flatMap((format) => [
    packMatrix(w, rows, cols, format as PackedFormat).data,
    ...(["bf16", "f16"] as const).map((s) => packHalfMatrix(halfBits(rows * cols, 9, s, true), s, rows, cols, format as PackedFormat).data),
  ]);
  try {
    addon!.configure({ isa: "portable" });
    const want = run();
    for (const isa of before.isas) {
      addon!.configure({ isa });
      run().forEach((got, i) => assert.ok(Buffer.from(got).equals(Buffer.from(want[i])), `${isa} case ${i}`));
    }
  } finally {
    addon!.configure({ isa: before.isa });
  }
});

test("bf16 and f16 packing of every kernel variant writes the TypeScript conversions' bits, from f32, bf16 and f16 (NaN, infinities, subnormals, ties), for 1 and 2 threads", { skip }, () => {
  const before = addon!.settings();
  try {
    for (const isa of before.isas) {
      for (const threads of [1, 2]) {
        addon!.configure({ isa, threads });
        let seed = 40;
        for (const format of ["bf16", "f16"] as PackedFormat[]) {
          for (const [rows, cols] of [[1, 1], [3, 7], [5, 300], [2, 4099]]) {
            const label = `${isa} ${threads} threads ${format} [${rows}, ${cols}]`;
            const w = randn(rows * cols, seed++, 70000);
            const u = new Uint32Array(w.buffer);
            for (let i = 0; i < w.length; i += 5) {
              u[i] = [0x7fc00001, 0xff800000, 0x00000101, 0x33800000, 0x477ff000, 0x3f808000, 0x3f818000][(i / 5) % 7]; // NaN, -inf, subnormal, f16 ties
            }
            assert.ok(Buffer.from(packMatrix(w, rows, cols, format).data).equals(Buffer.from(packPortable(w, rows, cols, format).data)), `${label} f32`);
            for (const source of ["bf16", "f16"] as const) assertHalfPacking(halfBits(rows * cols, seed++, source, true), source, rows, cols, format, `${label} ${source}`);
          }
        }
      }
    }
  } finally {
    addon!.configure({ isa: before.isa, threads: before.threads });
  }
});

test("the other q formats from bf16 and f16 bits (widened a block at a time) write the TypeScript encoders' bytes on every variant", { skip }, () => {
  const before = addon!.settings();
  try {
    for (const isa of before.isas) {
      addon!.configure({ isa, threads: 2 });
      let seed = 70;
      for (const format of ["q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"] as PackedFormat[]) {
        for (const source of ["bf16", "f16"] as const) assertHalfPacking(halfBits(3 * 512, seed++, source, false), source, 3, 512, format, `${isa} ${format} ${source}`);
      }
    }
  } finally {
    addon!.configure({ isa: before.isa, threads: before.threads });
  }
});

test("f32ToF16Into (a 16-bit KV cache's writes) gives f32ToF16Array's bits into a view, in one run or several", { skip }, () => {
  const src = randn(6 * 96, 81, 70000);
  const u = new Uint32Array(src.buffer);
  for (let i = 0; i < src.length; i += 7) u[i] = [0x7fc00001, 0xff800000, 0x00000101, 0x33800000, 0x477ff000, 0x3f808000, 0x80000000][(i / 7) % 7];
  const want = f32ToF16Array(src);
  for (const rows of [1, 6]) {
    const cache = new Uint16Array(src.length + 10).fill(0xabcd);
    f32ToF16Into(src, cache.subarray(5, 5 + src.length), rows);
    assert.deepEqual(cache.subarray(5, 5 + src.length), want, `${rows} run(s)`);
    assert.ok(cache.subarray(0, 5).every((h) => h === 0xabcd) && cache.subarray(5 + src.length).every((h) => h === 0xabcd), "nothing outside the view");
  }
});
