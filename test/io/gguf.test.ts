import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { GgufFile, GgufValueType } from "../../src/io/gguf.js";
import { ggufWeightReader } from "../../src/io/gguf-weights.js";
import { packMatrix } from "../../src/tensor/packed.js";
import { buildGguf, kv } from "./gguf-build.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("llava-gguf-");

const f32 = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);

const EVERY_TYPE = [
  kv("u8", 200, GgufValueType.UINT8),
  kv("i8", -100, GgufValueType.INT8),
  kv("u16", 60000, GgufValueType.UINT16),
  kv("i16", -30000, GgufValueType.INT16),
  kv("u32", 4000000000, GgufValueType.UINT32),
  kv("i32", -2000000000, GgufValueType.INT32),
  kv("f32", 0.5, GgufValueType.FLOAT32),
  kv("bool", true),
  kv("string", "héllo ▁ 世界"),
  kv("u64", 2n ** 60n, GgufValueType.UINT64),
  kv("u64small", 12345, GgufValueType.UINT64),
  kv("i64", -5, GgufValueType.INT64),
  kv("f64", 1e-300, GgufValueType.FLOAT64),
  kv("strings", ["a", "", "<s>"], GgufValueType.ARRAY, GgufValueType.STRING),
  kv("floats", [0.25, -1.5], GgufValueType.ARRAY, GgufValueType.FLOAT32),
  kv("nested", [[1, 2], [3], []], GgufValueType.ARRAY, GgufValueType.ARRAY),
];

for (const version of [2, 3]) {
  test(`GGUF v${version}: every metadata value type reads back`, () => {
    const file = GgufFile.fromBytes(buildGguf({ version, kv: EVERY_TYPE }));
    assert.equal(file.version, version);
    const want: Record<string, unknown> = {
      u8: 200, i8: -100, u16: 60000, i16: -30000, u32: 4000000000, i32: -2000000000, f32: 0.5, bool: true,
      string: "héllo ▁ 世界", u64: 2n ** 60n, u64small: 12345, i64: -5, f64: 1e-300, strings: ["a", "", "<s>"],
      floats: [0.25, -1.5], nested: [[1, 2], [3], []],
    };
    for (const [k, v] of Object.entries(want)) assert.deepEqual(file.get(k), v, k);
    assert.equal(file.metadata.get("nested")!.itemType, GgufValueType.ARRAY);
    assert.equal(file.metadata.get("u64")!.type, GgufValueType.UINT64);
  });
}

test("tensors: shapes, alignment, data by offset; a buffer's tensors are views, a file's are read", () => {
  const q = packMatrix(new Float32Array(64).map((_, i) => Math.sin(i)), 2, 32, "q8_0");
  for (const alignment of [32, 64]) {
    const bytes = buildGguf({
      alignment,
      kv: [kv("general.architecture", "llama")],
      tensors: [
        { name: "a", type: "F32", ne: [3, 2], data: f32([1, 2, 3, 4, 5, 6]) },
        { name: "q", type: "Q8_0", ne: [32, 2], data: q.data },
        { name: "h", type: "F16", ne: [1], data: new Uint8Array([0, 0x3c]) },
      ],
    });
    const mem = GgufFile.fromBytes(bytes);
    assert.equal(mem.alignment, alignment);
    assert.equal(mem.dataStart % alignment, 0);
    assert.deepEqual(mem.tensor("a").shape, [2, 3]);
    assert.deepEqual(mem.tensor("q").ne, [32, 2]);
    assert.equal(mem.tensor("q").byteLength, 68);
    assert.equal(mem.tensorBytes("q").buffer, bytes.buffer, "a view of the buffer");
    assert.deepEqual([...mem.tensorBytes("q")], [...q.data]);
    const file = path.join(dir, `t${alignment}.gguf`);
    fs.writeFileSync(file, bytes);
    const reader = ggufWeightReader(GgufFile.open(file));
    assert.deepEqual(reader.names(), ["a", "h", "q"]);
    assert.deepEqual(reader.info("q"), { dtype: "Q8_0", shape: [2, 32] });
    assert.deepEqual([...reader.readF32("a")], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...reader.readF32("h")], [1]);
    assert.deepEqual([...reader.readRaw("q").bytes], [...q.data]);
    const deq = reader.readF32("q");
    for (let i = 0; i < 64; i++) assert.ok(Math.abs(deq[i] - Math.sin(i)) < 0.01);
    reader.close();
  }
});

test("typed metadata getters name the key when it is missing or of the wrong kind", () => {
  const file = GgufFile.fromBytes(buildGguf({ kv: [kv("n", 3), kv("s", "x"), kv("arr", [1.5], GgufValueType.ARRAY, GgufValueType.FLOAT32)] }), "m.gguf");
  assert.equal(file.uint("n"), 3);
  assert.equal(file.uint("missing", 7), 7);
  assert.equal(file.string("s"), "x");
  assert.deepEqual(file.numbers("arr"), [1.5]);
  assert.throws(() => file.uint("missing"), /m\.gguf: metadata "missing" is missing/);
  assert.throws(() => file.string("n"), /metadata "n" should be a string/);
  assert.throws(() => file.strings("arr"), /metadata "arr" should be an array of strings/);
});
