/** The tests' own .npy reader: the fixtures as the README describes them, and hand-made files. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { npyToNumbers, readNpy } from "../../src/io/npy.js";
import { readNpyFile } from "./npy-reader.js";
import { CASES } from "./paths.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-npy-reader-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

/** A .npy file of the given version with a hand-written header and raw data bytes. */
function npyFile(name: string, version: 1 | 2 | 3, header: string, data: Buffer): string {
  const lengthSize = version === 1 ? 2 : 4;
  const length = Buffer.alloc(lengthSize);
  if (version === 1) length.writeUInt16LE(header.length);
  else length.writeUInt32LE(Buffer.byteLength(header));
  const file = path.join(tmp, name);
  fs.writeFileSync(file, Buffer.concat([Buffer.from("\x93NUMPY", "latin1"), Buffer.from([version, 0]), length, Buffer.from(header, version === 3 ? "utf8" : "latin1"), data]));
  return file;
}

test("fixture arrays have the dtypes, shapes and values the fixtures README gives", () => {
  const gradient = path.join(CASES, "tiny-llava-1.5-mha", "gradient");
  const ids = readNpyFile(path.join(gradient, "input_ids.npy"));
  assert.deepEqual([ids.descr, ids.shape], ["<i8", [47]]);
  assert.equal(ids.values[0], 1, "BOS first");
  assert.equal(ids.values.filter((id) => id === 32000).length, 1, "one <image> token");
  const pixels = readNpyFile(path.join(gradient, "pixel_values.npy"));
  assert.deepEqual([pixels.descr, pixels.shape], ["<f4", [1, 3, 56, 56]]);
  const loss = readNpyFile(path.join(CASES, "tiny-llava-1.5-mha", "train_grad", "loss.npy"));
  assert.deepEqual([loss.shape, loss.values.length], [[], 1]);
  assert.ok(loss.values[0] > 0 && loss.values[0] < 20, `loss ${loss.values[0]}`);
  const sizes = readNpyFile(path.join(CASES, "tiny-llava-next", "gradient", "image_sizes.npy"));
  assert.deepEqual([sizes.shape, Array.from(sizes.values)], [[1, 2], [480, 640]]);
});

test("agrees with the project's own reader on every fixture array", () => {
  let files = 0;
  for (const model of fs.readdirSync(CASES)) {
    for (const name of fs.readdirSync(path.join(CASES, model))) {
      const dir = path.join(CASES, model, name);
      for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".npy"))) {
        const ours = readNpyFile(path.join(dir, f));
        const theirs = readNpy(path.join(dir, f));
        assert.deepEqual(ours.shape, theirs.shape, f);
        assert.deepEqual(Array.from(ours.values), npyToNumbers(theirs), `${model}/${name}/${f}`);
        files++;
      }
    }
  }
  assert.ok(files >= 60, `${files} files`);
});

test("versions 2 and 3, big-endian and half-precision data, unsigned bytes", () => {
  const be = Buffer.alloc(16);
  be.writeDoubleBE(1.5, 0);
  be.writeDoubleBE(-2.25, 8);
  const v2 = readNpyFile(npyFile("be.npy", 2, "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }\n", be));
  assert.deepEqual([v2.shape, Array.from(v2.values)], [[2], [1.5, -2.25]]);
  const half = Buffer.alloc(8);
  [0x3c00, 0xc000, 0x0001, 0x7c00].forEach((h, i) => half.writeUInt16LE(h, 2 * i)); // 1, -2, 2^-24, inf
  const v3 = readNpyFile(npyFile("half.npy", 3, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }\n", half));
  assert.deepEqual([v3.shape, Array.from(v3.values)], [[2, 2], [1, -2, 2 ** -24, Infinity]]);
  const bytes = readNpyFile(npyFile("u1.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }\n", Buffer.from([0, 128, 255])));
  assert.deepEqual(Array.from(bytes.values), [0, 128, 255]);
});

test("refuses what it cannot read exactly", () => {
  const f4 = (n: number) => Buffer.alloc(4 * n);
  const header = (descr: string, shape: string, fortran = "False") => `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }\n`;
  const cases: Array<[string, string, RegExp]> = [
    [npyFile("short.npy", 1, header("<f4", "(3,)"), f4(2)), "truncated data", /8 data bytes for shape \(3\) of <f4, expected 12/],
    [npyFile("long.npy", 1, header("<f4", "(1,)"), f4(2)), "trailing bytes", /expected 4/],
    [npyFile("fortran.npy", 1, header("<f4", "(2, 2)", "True"), f4(4)), "Fortran order", /Fortran/],
    [npyFile("object.npy", 1, header("|O", "(1,)"), f4(2)), "object arrays", /dtype "\|O"/],
    [npyFile("noshape.npy", 1, "{'descr': '<f4', 'fortran_order': False, }\n", f4(1)), "no shape", /no 'shape'/],
  ];
  for (const [file, what, message] of cases) assert.throws(() => readNpyFile(file), message, what);
  const big = Buffer.alloc(8);
  big.writeBigInt64LE(2n ** 60n);
  assert.throws(() => readNpyFile(npyFile("big.npy", 1, header("<i8", "(1,)"), big)), /does not fit a double/);
  const notNpy = path.join(tmp, "plain.txt");
  fs.writeFileSync(notNpy, "just some text, not an array");
  assert.throws(() => readNpyFile(notNpy), /not a \.npy file/);
});
