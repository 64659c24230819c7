/**
 * The llama.cpp block formats q4_1, q5_0, q5_1, q4_k, q5_k, q6_k: blocks worked out by hand from
 * ggml-quants.c's layouts and rounding rules, the dequantize round trip, and the column rules.
 * (The encoders were also checked byte for byte against ggml-quants.c's quantize_row_*_ref on
 * 16k random weights of four distributions; these tests pin the results that check confirmed.)
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { blockSize, fittingFormat, packMatrix, type PackedFormat, rowBytes, unpackMatrix } from "../../src/tensor/packed.js";
import { nearestInt } from "../../src/tensor/quant-blocks.js";
import { randn } from "../native/helpers.js";

const NEW: PackedFormat[] = ["q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k"];
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("nearest_int rounds half to even, as llama.cpp's float trick does", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 7.5001].map(nearestInt), [0, 2, 2, 0, -2, 2, 8]);
});

test("q5_0 of -16..15: d = 1, levels j + 16, the fifth bits in qh", () => {
  const x = Float32Array.from({ length: 32 }, (_, j) => j - 16);
  const b = packMatrix(x, 1, 32, "q5_0").data;
  assert.equal(b.length, 22);
  assert.equal(hex(b.subarray(0, 2)), "003c"); // f16 1.0
  assert.equal(hex(b.subarray(2, 6)), "0000ffff"); // weights 16..31 have level >= 16
  for (let j = 0; j < 16; j++) assert.equal(b[6 + j], j | (j << 4), `byte ${j}`);
  assert.deepEqual(Array.from(unpackMatrix({ format: "q5_0", rows: 1, cols: 32, data: b })), Array.from(x));
});

test("q4_1 of 0..15 twice: d = 1, m = 0, exact", () => {
  const x = Float32Array.from({ length: 32 }, (_, j) => j % 16);
  const b = packMatrix(x, 1, 32, "q4_1").data;
  assert.equal(hex(b.subarray(0, 4)), "003c0000");
  for (let j = 0; j < 16; j++) assert.equal(b[4 + j], j | (j << 4));
  assert.deepEqual(Array.from(unpackMatrix({ format: "q4_1", rows: 1, cols: 32, data: b })), Array.from(x));
});

test("q5_1 of 1..32: m = 1, d = 1, the level 31 has its fifth bit", () => {
  const x = Float32Array.from({ length: 32 }, (_, j) => j + 1);
  const b = packMatrix(x, 1, 32, "q5_1").data;
  assert.equal(hex(b.subarray(0, 8)), "003c003c0000ffff");
  assert.deepEqual(Array.from(unpackMatrix({ format: "q5_1", rows: 1, cols: 32, data: b })), Array.from(x));
});

test("q4_k decodes w = d·sc·q − dmin·m with get_scale_min_k4's 6-bit packing", () => {
  const b = new Uint8Array(144);
  b.set([0x00, 0x3c, 0x00, 0x38]); // d = 1, dmin = 0.5
  b[4 + 0] = 2 | (1 << 6); // sc0 = 2; the top bits of sc4 = 1
  b[4 + 4] = 3; // m0 = 3
  b[4 + 8] = 0x21; // sc4 low bits 1, m4 = 2
  b[16 + 0] = 0x57; // weight 0: q 7; weight 32: q 5 (sub-block 1, sc1 = m1 = 0)
  b[16 + 64] = 0x03; // weight 128 (sub-block 4): q 3
  const w = unpackMatrix({ format: "q4_k", rows: 1, cols: 256, data: b });
  assert.equal(w[0], 1 * 2 * 7 - 0.5 * 3);
  assert.equal(w[1], -1.5);
  assert.equal(w[32], 0);
  assert.equal(w[128], 17 * 3 - 0.5 * 2);
});

test("q6_k decodes w = d·sc·(q − 32), q from ql's nibble and qh's 2 bits", () => {
  const b = new Uint8Array(210);
  b.set([0x00, 0x3c], 208); // d = 1
  b[192] = 0xfe; // sc0 = -2
  b[196] = 1; // sc4 (weights 64..79)
  b[0] = 0x0f; // weight 0 low nibble 15; weight 64 low nibble 0
  b[128] = 0x02; // weight 0 high bits 2
  const w = unpackMatrix({ format: "q6_k", rows: 1, cols: 256, data: b });
  assert.equal(w[0], -2 * (15 + 32 - 32));
  assert.equal(w[64], -32);
  assert.ok(w[16] === 0); // sc1 = 0 (-0 · 32)
});

test("all-zero rows encode to zero blocks and decode to zeros", () => {
  for (const f of NEW) {
    const m = packMatrix(new Float32Array(256), 1, 256, f);
    assert.ok(unpackMatrix(m).every((v) => v === 0), f);
  }
});

test("the dequantize round trip: error ordered by bits, K formats better than their 32-blocks", () => {
  const n = 256 * 32;
  const x = randn(n, 11, 0.02);
  const err: Record<string, number> = {};
  for (const f of [...NEW, "q4_0", "q8_0"] as PackedFormat[]) {
    const y = unpackMatrix(packMatrix(x, 4, n / 4, f));
    let e = 0, s = 0;
    for (let i = 0; i < n; i++) {
      e += (y[i] - x[i]) ** 2;
      s += x[i] ** 2;
    }
    err[f] = Math.sqrt(e / s);
  }
  assert.ok(err.q8_0 < err.q6_k && err.q6_k < err.q5_k && err.q5_k < err.q4_k && err.q4_k < err.q4_0, JSON.stringify(err));
  assert.ok(err.q5_1 < err.q4_1 && err.q5_0 < err.q4_0 && err.q4_1 < err.q4_0, JSON.stringify(err));
  assert.ok(err.q6_k < 0.02 && err.q4_k < 0.08, JSON.stringify(err));
  // a second pack of decoded weights reproduces them (the grid points are representable)
  for (const f of ["q5_0", "q4_1"] as PackedFormat[]) {
    const y = unpackMatrix(packMatrix(x, 4, n / 4, f));
    assert.deepEqual(unpackMatrix(packMatrix(y, 4, n / 4, f)), y, f);
  }
});

test("row sizes and the column rule: K formats need multiples of 256", () => {
  assert.deepEqual(NEW.map((f) => [blockSize(f), rowBytes(f, 512)]), [[32, 320], [32, 352], [32, 384], [256, 288], [256, 352], [256, 420]]);
  assert.equal(fittingFormat("q4_k", 1024), "q4_k");
  assert.equal(fittingFormat("q4_k", 96), "q5_0"); // llama.cpp's fallback
  assert.equal(fittingFormat("q4_1", 96), "q4_1");
  assert.throws(() => packMatrix(new Float32Array(96), 1, 96, "q6_k"), /multiple of 256/);
});

test("the GGML type table agrees with the packed formats' block sizes and bytes", async () => {
  const { GGML_TYPES, ggmlTypeById, ggmlTypeOf, ggmlBytes } = await import("../../src/tensor/ggml-types.js");
  for (const t of GGML_TYPES) {
    if (t.packed === null || t.packed === "f32") continue;
    assert.equal(blockSize(t.packed), t.blockSize, t.name);
    assert.equal(rowBytes(t.packed, 512), (512 / t.blockSize) * t.blockBytes, t.name);
  }
  assert.deepEqual([2, 3, 6, 7, 8, 12, 13, 14, 30].map((id) => ggmlTypeById(id)!.packed), ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "bf16"]);
  assert.equal(ggmlTypeOf("q6_k").id, 14);
  assert.equal(ggmlTypeById(10)!.packed, null); // Q2_K: known by name, not supported
  assert.equal(ggmlTypeById(4), undefined);
  assert.equal(ggmlBytes(ggmlTypeOf("q4_k"), 4096), 16 * 144);
  assert.throws(() => ggmlBytes(ggmlTypeOf("q4_k"), 100), /whole blocks of 256/);
});
