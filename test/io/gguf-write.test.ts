/** The GGUF writer: what it writes, the project's reader (gguf.ts) reads back exactly. */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { GgufFile, GgufValueType } from "../../src/io/gguf.js";
import { gguf, type GgufTensorToWrite, writeGguf } from "../../src/io/gguf-write.js";
import { packMatrix } from "../../src/tensor/packed.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llava-gguf-write-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const f32Tensor = (name: string, values: number[], ne = [values.length]): GgufTensorToWrite => ({
  name, type: "F32", ne, data: () => new Uint8Array(Float32Array.from(values).buffer),
});

test("every metadata value type, nested arrays included, reads back with its type", async () => {
  const file = path.join(dir, "values.gguf");
  await writeGguf(file, {
    metadata: [
      ["u8", { type: "u8", value: 255 }], ["i8", { type: "i8", value: -128 }],
      ["u16", { type: "u16", value: 65535 }], ["i16", { type: "i16", value: -32768 }],
      ["u32", gguf.u32(4294967295)], ["i32", gguf.i32(-2147483648)],
      ["f32", gguf.f32(0.5)], ["f64", { type: "f64", value: 1 / 3 }],
      ["u64", { type: "u64", value: 2n ** 64n - 1n }], ["i64", { type: "i64", value: -(2n ** 63n) }],
      ["bool", gguf.bool(true)], ["string", gguf.str("héllo ▁world")],
      ["strings", gguf.array("string", ["a", "", "▁b"])], ["floats", gguf.array("f32", [1.5, -2])],
      ["nested", { type: "array", items: "array", values: [gguf.array("i32", [1, 2]), gguf.array("i32", [3])] }],
    ],
    tensors: [],
  });
  const g = GgufFile.open(file);
  try {
    const value = (k: string) => g.metadata.get(k)!.value;
    const type = (k: string) => g.metadata.get(k)!.type;
    assert.equal(g.version, 3);
    assert.deepEqual([value("u8"), value("i8"), value("u16"), value("i16"), value("u32"), value("i32")], [255, -128, 65535, -32768, 4294967295, -2147483648]);
    assert.deepEqual([type("u8"), type("i8"), type("u16"), type("i16"), type("u32"), type("i32")], [GgufValueType.UINT8, GgufValueType.INT8, GgufValueType.UINT16, GgufValueType.INT16, GgufValueType.UINT32, GgufValueType.INT32]);
    assert.equal(value("f32"), 0.5);
    assert.equal(value("f64"), 1 / 3);
    assert.equal(BigInt(value("u64") as bigint), 2n ** 64n - 1n);
    assert.equal(BigInt(value("i64") as bigint), -(2n ** 63n));
    assert.equal(value("bool"), true);
    assert.equal(value("string"), "héllo ▁world");
    assert.deepEqual(value("strings"), ["a", "", "▁b"]);
    assert.deepEqual(value("floats"), [1.5, -2]);
    assert.deepEqual(value("nested"), [[1, 2], [3]]);
  } finally {
    g.close();
  }
});

test("tensors land at aligned offsets with their bytes, in any alignment the metadata sets", async () => {
  for (const alignment of [32, 64]) {
    const file = path.join(dir, `tensors-${alignment}.gguf`);
    const w = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    const q = packMatrix(w, 2, 32, "q8_0");
    const size = await writeGguf(file, {
      metadata: alignment === 32 ? [] : [["general.alignment", gguf.u32(alignment)]],
      tensors: [
        f32Tensor("odd", [1, 2, 3]),
        { name: "q", type: "Q8_0", ne: [32, 2], data: () => q.data },
        f32Tensor("m", [1, 2, 3, 4, 5, 6], [3, 2]),
      ],
    });
    assert.equal(fs.statSync(file).size, size);
    const g = GgufFile.open(file);
    try {
      assert.equal(g.alignment, alignment);
      for (const t of g.tensors.values()) assert.equal(t.offset % alignment, 0);
      assert.deepEqual(g.tensor("q").shape, [2, 32]);
      assert.deepEqual(g.tensorBytes("q"), q.data);
      assert.deepEqual(Array.from(new Float32Array(g.tensorBytes("odd").slice().buffer)), [1, 2, 3]);
      assert.deepEqual(g.tensor("m").shape, [2, 3]);
    } finally {
      g.close();
    }
  }
});

test("a tensor whose bytes do not match its type and dims fails, leaving no file", async () => {
  const file = path.join(dir, "short.gguf");
  await assert.rejects(
    writeGguf(file, { metadata: [], tensors: [f32Tensor("a", [1, 2]), { name: "b", type: "F32", ne: [4], data: () => new Uint8Array(12) }] }),
    /GGUF tensor b: 12 bytes given, F32 \[4\] takes 16/,
  );
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith("short")), []);
});

test("bad content is refused before anything is written: duplicate keys or names, unknown types, partial blocks, wrong value kinds", async () => {
  const file = path.join(dir, "bad.gguf");
  const cases: Array<[Parameters<typeof writeGguf>[1], RegExp]> = [
    [{ metadata: [["k", gguf.u32(1)], ["k", gguf.u32(2)]], tensors: [] }, /key k given twice/],
    [{ metadata: [], tensors: [f32Tensor("t", [1]), f32Tensor("t", [2])] }, /tensor t given twice/],
    [{ metadata: [], tensors: [{ name: "t", type: "Q9_9", ne: [32], data: () => new Uint8Array(0) }] }, /unknown GGML type Q9_9/],
    [{ metadata: [], tensors: [{ name: "t", type: "Q8_0", ne: [33], data: () => new Uint8Array(0) }] }, /whole blocks of 32/],
    [{ metadata: [["k", gguf.u32(-1)]], tensors: [] }, /u32/],
    [{ metadata: [["k", gguf.u32(1.5)]], tensors: [] }, /not an integer/],
    [{ metadata: [["general.alignment", gguf.u32(48)]], tensors: [] }, /power of two/],
  ];
  for (const [content, message] of cases) await assert.rejects(writeGguf(file, content), message);
  assert.equal(fs.existsSync(file), false);
});
