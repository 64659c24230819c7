import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { MODELS } from "../helpers/paths.js";
import { f32ToBf16Array, f32ToF16Array } from "../../src/tensor/dtypes.js";
import { WeightStore, writeSafetensors, type TensorToWrite } from "../../src/io/safetensors.js";
import { LlavaError } from "../../src/util/errors.js";
import { tempDir } from "../helpers/tmp.js";

const FIXTURE_COUNTS: Record<string, number> = {
  "tiny-clip-vit-56": 55,
  "tiny-llava-1.5-mha": 80,
  "tiny-llava-1.5-orig": 25,
  "tiny-llava-next": 81,
};

function headerOf(file: string): { json: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>; raw: string } {
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const raw = bytes.subarray(8, 8 + n).toString("utf8");
  return { json: JSON.parse(raw), raw };
}

test("opens every fixture checkpoint and lists names, shapes and dtypes", () => {
  for (const [model, count] of Object.entries(FIXTURE_COUNTS)) {
    const store = WeightStore.open(path.join(MODELS, model)); // directory -> model.safetensors
    try {
      const names = store.names();
      assert.equal(names.length, count, model);
      assert.deepEqual(names, [...names].sort());
      assert.deepEqual(store.metadata(), { format: "pt" });
      for (const name of names) {
        const info = store.info(name);
        assert.equal(info.dtype, "F32");
        assert.equal(info.byteLength, info.shape.reduce((a, b) => a * b, 1) * 4);
        assert.equal(info.file, path.join(MODELS, model, "model.safetensors"));
      }
    } finally {
      store.close();
    }
  }
  const mha = WeightStore.open(path.join(MODELS, "tiny-llava-1.5-mha", "model.safetensors"));
  assert.deepEqual(mha.info("multi_modal_projector.linear_1.weight").shape, [32, 48]);
  assert.deepEqual(mha.info("language_model.model.embed_tokens.weight").shape, [32001, 32]);
  assert.ok(mha.has("language_model.lm_head.weight"));
  assert.ok(!mha.has("lm_head.weight"));
  mha.close();
  const next = WeightStore.open(path.join(MODELS, "tiny-llava-next"));
  assert.deepEqual(next.info("image_newline").shape, [16]);
  next.close();
});

test("readF32 reads the right bytes at the right offset", () => {
  const store = WeightStore.open(path.join(MODELS, "tiny-llava-1.5-mha"));
  const bias = store.readF32("multi_modal_projector.linear_1.bias");
  assert.equal(bias.length, 32);
  // Values from numpy reading the same file.
  assert.deepEqual([...bias.subarray(0, 3)], [0.14631278812885284, -0.05106056481599808, -0.13520315289497375]);
  const sum = bias.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(sum - -0.37059178249910474) < 1e-6);
  // info() offsets are absolute: reading there by hand gives the same values.
  const info = store.info("multi_modal_projector.linear_1.bias");
  const fd = fs.openSync(info.file, "r");
  const buf = Buffer.alloc(info.byteLength);
  fs.readSync(fd, buf, 0, info.byteLength, info.byteOffset);
  fs.closeSync(fd);
  assert.deepEqual(new Float32Array(buf.buffer, buf.byteOffset, 32), bias);
  const raw = store.readRaw("multi_modal_projector.linear_1.bias");
  assert.deepEqual(raw.shape, [32]);
  assert.equal(raw.dtype, "F32");
  assert.deepEqual(new Float32Array(raw.bytes.buffer), bias);
  store.close();
  assert.throws(() => store.readF32("multi_modal_projector.linear_1.bias"), /already closed/);
  store.close(); // idempotent
});

test("rewriting a fixture gives a byte-identical file (same order, header and padding as the Python library)", () => {
  const dir = tempDir();
  for (const model of ["tiny-clip-vit-56", "tiny-llava-1.5-mha", "tiny-llava-next"]) {
    const src = path.join(MODELS, model, "model.safetensors");
    const store = WeightStore.open(src);
    // Feed tensors in reverse order: the writer must sort them itself.
    const tensors: TensorToWrite[] = store
      .names()
      .reverse()
      .map((name) => ({ name, dtype: "F32", shape: store.info(name).shape, data: store.readF32(name) }));
    store.close();
    const out = path.join(dir, `${model}.safetensors`);
    writeSafetensors(out, tensors, { format: "pt" });
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(src)), `${model} differs`);
  }
});

test("round-trips every dtype, sorted by descending alignment then name", () => {
  const dir = tempDir();
  const file = path.join(dir, "mixed.safetensors");
  const f32 = new Float32Array([1, -2.5, 3.14159, 65504, 1e-7, -0]);
  const tensors: TensorToWrite[] = [
    { name: "u8", dtype: "U8", shape: [3], data: new Uint8Array([0, 7, 255]) },
    { name: "bool", dtype: "BOOL", shape: [2], data: new Uint8Array([1, 0]) },
    { name: "b.f32", dtype: "F32", shape: [2, 3], data: f32 },
    { name: "a.f32", dtype: "F32", shape: [], data: new Float32Array([42]) },
    { name: "half_from_f32", dtype: "F16", shape: [6], data: f32 },
    { name: "half_bits", dtype: "F16", shape: [2], data: new Uint16Array([0x3c00, 0x7c00]) },
    { name: "bf16", dtype: "BF16", shape: [3, 2], data: f32 },
    { name: "f64", dtype: "F64", shape: [2], data: new Float64Array([0.1, -1e300]) },
    { name: "i64", dtype: "I64", shape: [3], data: new BigInt64Array([-200n, 32000n, 9007199254740993n]) },
    { name: "i32", dtype: "I32", shape: [2], data: new Int32Array([-1, 2 ** 31 - 1]) },
    { name: "i16", dtype: "I16", shape: [1], data: new Int16Array([-32768]) },
    { name: "i8", dtype: "I8", shape: [1], data: new Int8Array([-5]) },
    { name: "empty", dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
  ];
  writeSafetensors(file, tensors);
  assert.ok(!fs.existsSync(file + ".partial"));

  const { json, raw } = headerOf(file);
  assert.equal((raw.length + 0) % 8, 0);
  assert.ok(!("__metadata__" in json), "no metadata given, none written");
  // Order: I64 > F64 > F32 > I32 > BF16 > F16 > I16 > I8 > U8 > BOOL, names ascending within a dtype.
  assert.deepEqual(Object.keys(json), [
    "i64",
    "f64",
    "a.f32",
    "b.f32",
    "empty",
    "i32",
    "bf16",
    "half_bits",
    "half_from_f32",
    "i16",
    "i8",
    "u8",
    "bool",
  ]);
  let expectedBegin = 0;
  for (const entry of Object.values(json)) {
    assert.equal(entry.data_offsets[0], expectedBegin);
    expectedBegin = entry.data_offsets[1];
  }
  assert.equal(fs.statSync(file).size, 8 + Buffer.byteLength(raw) + expectedBegin);

  const store = WeightStore.open(file);
  assert.deepEqual(store.readF32("b.f32"), f32);
  assert.deepEqual(store.readF32("a.f32"), new Float32Array([42]));
  assert.deepEqual(store.info("a.f32").shape, []);
  assert.deepEqual(store.readF32("half_from_f32"), new Float32Array([1, -2.5, 3.140625, 65504, 1.1920928955078125e-7, -0]));
  assert.deepEqual(new Uint16Array(store.readRaw("half_from_f32").bytes.buffer), f32ToF16Array(f32));
  assert.deepEqual(store.readF32("half_bits"), new Float32Array([1, Infinity]));
  assert.deepEqual(new Uint16Array(store.readRaw("bf16").bytes.buffer), f32ToBf16Array(f32));
  assert.deepEqual(store.readF32("bf16")[2], 3.140625);
  assert.deepEqual(store.readF32("f64"), new Float32Array([0.1, -Infinity]));
  assert.deepEqual(store.readInt("i64"), new BigInt64Array([-200n, 32000n, 9007199254740993n]));
  assert.deepEqual(store.readInt("i32"), new Int32Array([-1, 2 ** 31 - 1]));
  assert.deepEqual(store.readInt("i16"), new Int16Array([-32768]));
  assert.deepEqual(store.readInt("i8"), new Int8Array([-5]));
  assert.deepEqual(store.readInt("u8"), new Uint8Array([0, 7, 255]));
  assert.deepEqual(store.readInt("bool"), new Uint8Array([1, 0]));
  assert.deepEqual(store.readF32("empty"), new Float32Array(0));
  assert.throws(() => store.readF32("i64"), (e: Error) => e instanceof LlavaError && /readInt/.test(e.message) && e.message.includes(file));
  assert.throws(() => store.readInt("b.f32"), /readF32/);
  store.close();
});

/** Value of a half bit pattern, straight from the IEEE 754 definition. */
function ieeeHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

test("large F16 / BF16 tensors convert in chunks without losing elements", () => {
  const dir = tempDir();
  const file = path.join(dir, "big.safetensors");
  const n = (1 << 20) * 2 + 123; // spans three conversion chunks
  const bits = new Uint16Array(n);
  for (let i = 0; i < n; i++) bits[i] = Math.imul(i, 2654435761) & 0x7bff;
  writeSafetensors(file, [
    { name: "h", dtype: "F16", shape: [n], data: bits },
    { name: "b", dtype: "BF16", shape: [n], data: bits },
  ]);
  const store = WeightStore.open(file);
  const h = store.readF32("h");
  const b = new Uint32Array(store.readF32("b").buffer);
  store.close();
  assert.equal(h.length, n);
  for (let i = 0; i < n; i += 997) {
    assert.equal(h[i], ieeeHalf(bits[i]), `f16 element ${i}`);
    assert.equal(b[i], (bits[i] << 16) >>> 0, `bf16 element ${i}`);
  }
  for (const i of [(1 << 20) - 1, 1 << 20, (1 << 20) + 1, n - 1]) {
    assert.equal(h[i], ieeeHalf(bits[i]), `f16 element ${i}`);
    assert.equal(b[i], (bits[i] << 16) >>> 0, `bf16 element ${i}`);
  }
});

test("a failed write leaves the previous file intact and no .partial behind", () => {
  const dir = tempDir();
  const file = path.join(dir, "w.safetensors");
  writeSafetensors(file, [{ name: "x", dtype: "F32", shape: [1], data: new Float32Array([1]) }]);
  const before = fs.readFileSync(file);
  class FailingArray extends Float32Array {
    override get buffer(): ArrayBuffer {
      throw new Error("disk on fire");
    }
  }
  assert.throws(
    () => writeSafetensors(file, [{ name: "x", dtype: "F32", shape: [2], data: new FailingArray(2) }]),
    (e: Error) => e instanceof LlavaError && e.message.includes(file) && /disk on fire/.test(e.message),
  );
  assert.ok(fs.readFileSync(file).equals(before));
  assert.ok(!fs.existsSync(file + ".partial"));
  assert.deepEqual(fs.readdirSync(dir), ["w.safetensors"]);
});

test("writer rejects bad input with messages naming the file", () => {
  const dir = tempDir();
  const file = path.join(dir, "bad.safetensors");
  const bad: Array<[TensorToWrite[], RegExp]> = [
    [[{ name: "a", dtype: "F32", shape: [3], data: new Float32Array(2) }], /3 elements but data has 2/],
    [[{ name: "a", dtype: "I64", shape: [1], data: new Int32Array(1) }], /needs a BigInt64Array/],
    [[{ name: "a", dtype: "F32", shape: [-1], data: new Float32Array(0) }], /non-negative integers/],
    [
      [
        { name: "a", dtype: "F32", shape: [1], data: new Float32Array(1) },
        { name: "a", dtype: "F32", shape: [1], data: new Float32Array(1) },
      ],
      /appears twice/,
    ],
    [[{ name: "__metadata__", dtype: "U8", shape: [1], data: new Uint8Array(1) }], /reserved/],
  ];
  for (const [tensors, pattern] of bad) {
    assert.throws(
      () => writeSafetensors(file, tensors),
      (e: Error) => e instanceof LlavaError && pattern.test(e.message) && e.message.includes(file),
    );
  }
  assert.throws(() => writeSafetensors(path.join(dir, "no", "such", "dir.safetensors"), []), /cannot write .*dir\.safetensors/);
  assert.equal(fs.readdirSync(dir).length, 0);
});

test("empty checkpoint and metadata-only headers match the library's bytes", () => {
  const dir = tempDir();
  const empty = path.join(dir, "empty.safetensors");
  writeSafetensors(empty, []);
  // From safetensors' own test_empty.
  assert.deepEqual([...fs.readFileSync(empty)], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
  writeSafetensors(empty, [], { framework: "pt" });
  assert.equal(fs.readFileSync(empty).subarray(8).toString(), '{"__metadata__":{"framework":"pt"}}     ');
  // From safetensors' test_serialization: one F32 tensor [1,2,3] named "attn.0".
  const one = path.join(dir, "one.safetensors");
  writeSafetensors(one, [{ name: "attn.0", dtype: "F32", shape: [1, 2, 3], data: new Float32Array([0, 1, 2, 3, 4, 5]) }]);
  const bytes = fs.readFileSync(one);
  assert.equal(bytes.readBigUInt64LE(0), 64n);
  assert.equal(bytes.subarray(8, 72).toString(), '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'.padEnd(64, " "));
  assert.equal(bytes.length, 8 + 64 + 24);
  const store = WeightStore.open(empty);
  assert.deepEqual(store.names(), []);
  assert.deepEqual(store.metadata(), { framework: "pt" });
  store.close();
});
