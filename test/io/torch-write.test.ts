import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { TorchBinStore } from "../../src/io/torch-bin.js";
import { type TorchTensorToWrite, writeTorchBin } from "../../src/io/torch-write.js";
import { bf16ToF32Array, f16ToF32Array, f32ToBf16Array, f32ToF16Array } from "../../src/tensor/dtypes.js";
import { LlavaError } from "../../src/util/errors.js";
import { tempDir } from "../helpers/tmp.js";
import { Dict, pyBytes, tensor, torchSaveZip, type Tensor } from "./torch-save.js";

const dir = tempDir("llava-torchwrite-");
const values = (n: number, step = 0.37) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * step) * 3);

/** A projector-like dict; the names in an order that is not sorted, as a state dict lists them. */
function sample(count = 4): TorchTensorToWrite[] {
  const out: TorchTensorToWrite[] = [];
  for (let i = 0; i < count; i++) {
    out.push({ name: `model.mm_projector.${2 * i}.weight`, dtype: (["F32", "F16", "BF16"] as const)[i % 3], shape: [5, 3 + i], data: values(5 * (3 + i), 0.1 * (i + 1)) });
    out.push({ name: `model.mm_projector.${2 * i}.bias`, dtype: "F32", shape: [5], data: values(5, 1.3) });
  }
  return out;
}

/** The bytes of the zip up to (not including) the record whose name ends with `suffix`. */
function before(bytes: Uint8Array, suffix: string): Uint8Array {
  const at = Buffer.from(bytes).indexOf(Buffer.from(suffix));
  assert.ok(at > 0, `no record ${suffix}`);
  const header = Buffer.from(bytes).subarray(0, at).lastIndexOf(Buffer.from([0x50, 0x4b, 0x03, 0x04]));
  return bytes.subarray(0, header);
}

test("writeTorchBin writes what torch.save writes for a dict of tensors, byte for byte up to the serialization id", () => {
  // 12 tensors: storage keys "0".."11" are stored in string order ("0", "1", "10", "11", "2", ...), as torch sorts them
  for (const count of [1, 6]) {
    const tensors = sample(count).slice(0, count === 1 ? 1 : undefined);
    const file = path.join(dir, `mm_projector-${count}.bin`);
    writeTorchBin(file, tensors);
    const expected = torchSaveZip(
      new Dict(tensors.map((t): [string, Tensor] => [t.name, tensor(t.dtype, [...t.data], t.shape)])),
      { folder: `mm_projector-${count}` },
    );
    const written = new Uint8Array(fs.readFileSync(file));
    assert.equal(written.length, expected.length);
    assert.deepEqual(before(written, ".data/serialization_id"), before(expected, ".data/serialization_id"));
  }
});

test("the pickle of a one-tensor dict is torch's own: a real torch.save pickle with the outer dict taken away", () => {
  // torch.save({'state_dict': {'positions': tensor([0., 1., 2.])}}) as quoted in torch-bin.test.ts, for
  // the inner dict alone: the same opcodes with memo indices counted from 0
  const expected = pyBytes(
    "\\x80\\x02}q\\x00X\\t\\x00\\x00\\x00positionsq\\x01ctorch._utils\\n_rebuild_tensor_v2\\nq\\x02((X\\x07\\x00\\x00\\x00storageq\\x03" +
      "ctorch\\nFloatStorage\\nq\\x04X\\x01\\x00\\x00\\x000q\\x05X\\x03\\x00\\x00\\x00cpuq\\x06K\\x03tq\\x07QK\\x00K\\x03\\x85q\\x08" +
      "K\\x01\\x85q\\t\\x89ccollections\\nOrderedDict\\nq\\n)Rq\\x0btq\\x0cRq\\rs.",
  );
  const file = path.join(dir, "positions.bin");
  writeTorchBin(file, [{ name: "positions", dtype: "F32", shape: [3], data: Float32Array.from([0, 1, 2]) }]);
  const bytes = new Uint8Array(fs.readFileSync(file));
  // the first record's data starts at byte 64 (the local header, "positions/data.pkl" and the "FB" padding before it)
  assert.deepEqual(bytes.subarray(64, 64 + expected.length), expected);
  assert.deepEqual([...bytes.subarray(64 + expected.length, 68 + expected.length)], [0x50, 0x4b, 0x07, 0x08], "a data descriptor follows");
});

test("a written file reads back through the project's torch reader with the same names, dtypes, shapes and values", () => {
  const tensors = sample(3);
  const file = path.join(dir, "non_lora_trainables.bin");
  writeTorchBin(file, tensors);
  const store = TorchBinStore.open(file);
  try {
    assert.deepEqual(store.names(), tensors.map((t) => t.name).sort());
    for (const t of tensors) {
      const info = store.info(t.name);
      assert.equal(info.dtype, t.dtype);
      assert.deepEqual(info.shape, t.shape);
      assert.equal(info.byteOffset! % 64, 0, "storages start on 64-byte boundaries");
      const f32 = t.data as Float32Array;
      const expected = t.dtype === "F32" ? f32 : t.dtype === "F16" ? f16ToF32Array(f32ToF16Array(f32)) : bf16ToF32Array(f32ToBf16Array(f32));
      assert.deepEqual(store.readF32(t.name), expected);
    }
  } finally {
    store.close();
  }
  // raw 16-bit bits are stored as given
  const bits = Uint16Array.from([0x3c00, 0xc000, 0x0001]);
  writeTorchBin(file, [{ name: "h", dtype: "F16", shape: [3], data: bits }]);
  const again = TorchBinStore.open(file);
  assert.deepEqual(again.readRaw("h").bytes, new Uint8Array(bits.buffer));
  again.close();
  // saving the same tensors twice gives the same file
  writeTorchBin(file, tensors);
  const first = fs.readFileSync(file);
  writeTorchBin(file, tensors);
  assert.deepEqual(fs.readFileSync(file), first);
});

test("bad tensors are refused with the file and the tensor named, and nothing is left behind", () => {
  const file = path.join(dir, "bad.bin");
  const bad: Array<[TorchTensorToWrite[], RegExp]> = [
    [[{ name: "w", dtype: "F32", shape: [2, 2], data: new Float32Array(3) }], /bad\.bin: tensor "w" has shape \[2, 2\] but 3 values/],
    [[{ name: "w", dtype: "F32", shape: [1], data: new Float32Array(1) }, { name: "w", dtype: "F32", shape: [1], data: new Float32Array(1) }], /"w" appears twice/],
    [[{ name: "w", dtype: "I8" as "F32", shape: [1], data: new Float32Array(1) }], /dtype I8 is not F32, F16 or BF16/],
    [[{ name: "w", dtype: "F32", shape: [1], data: new Uint16Array(1) }], /F32 needs a Float32Array/],
  ];
  for (const [tensors, message] of bad) {
    assert.throws(() => writeTorchBin(file, tensors), (e: unknown) => e instanceof LlavaError && message.test(e.message));
    assert.equal(fs.existsSync(file), false);
    assert.equal(fs.existsSync(file + ".partial"), false);
  }
});
