import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { CASES } from "../helpers/paths.js";
import { encodeNpy, npyToNumbers, parseNpy, parsePythonLiteral, readNpy, writeNpy, type NpyArray } from "../../src/io/npy.js";
import { LlavaError } from "../../src/util/errors.js";
import { tempDir } from "../helpers/tmp.js";

const GRADIENT = path.join(CASES, "tiny-llava-1.5-mha", "gradient");

/** The header numpy.save writes: dict, growth padding, spaces, newline; data at a multiple of 64. */
function numpyHeader(dict: string, total: number, major = 1): string {
  const prefix = `\x93NUMPY${String.fromCharCode(major)}\x00`;
  const lenBytes = major === 1 ? 2 : 4;
  const hlen = total - prefix.length - lenBytes;
  const len = String.fromCharCode(hlen & 0xff, (hlen >> 8) & 0xff) + (lenBytes === 4 ? "\x00\x00" : "");
  return prefix + len + dict.padEnd(hlen - 1, " ") + "\n";
}

function latin1(bytes: Uint8Array, n: number): string {
  return Buffer.from(bytes.subarray(0, n)).toString("latin1");
}

test("reads fixture arrays: int64 ids and float32 pixels", () => {
  const ids = readNpy(path.join(GRADIENT, "input_ids.npy"));
  assert.equal(ids.dtype, "<i8");
  assert.deepEqual(ids.shape, [47]);
  assert.ok(ids.data instanceof BigInt64Array);
  const numbers = npyToNumbers(ids);
  assert.equal(numbers[0], 1); // BOS
  assert.equal(numbers.filter((t) => t === 32000).length, 1); // one <image> token (HF format)

  const pixels = readNpy(path.join(GRADIENT, "pixel_values.npy"));
  assert.equal(pixels.dtype, "<f4");
  assert.deepEqual(pixels.shape, [1, 3, 56, 56]);
  assert.ok(pixels.data instanceof Float32Array);
  assert.equal(pixels.data.length, 3 * 56 * 56);
  assert.ok([...pixels.data].every((v) => Number.isFinite(v) && Math.abs(v) < 3));

  const hidden = readNpy(path.join(GRADIENT, "hidden_states.npy"));
  assert.deepEqual(hidden.shape, [3, 62, 32]);
});

test("re-encoding every fixture .npy (all written by numpy.save) reproduces its bytes", () => {
  let count = 0;
  for (const model of fs.readdirSync(CASES)) {
    for (const kase of fs.readdirSync(path.join(CASES, model))) {
      const caseDir = path.join(CASES, model, kase);
      for (const name of fs.readdirSync(caseDir).filter((f) => f.endsWith(".npy"))) {
        const file = path.join(caseDir, name);
        const bytes = fs.readFileSync(file);
        const arr = parseNpy(bytes, file);
        assert.ok(Buffer.from(encodeNpy(arr)).equals(bytes), `${file} re-encodes differently`);
        count++;
      }
    }
  }
  assert.ok(count > 40, `only ${count} fixture files found`);
});

test("writes exactly numpy.save's header for common shapes", () => {
  const cases: Array<[NpyArray, string, number]> = [
    [{ dtype: "<f4", shape: [3, 4], data: new Float32Array(12) }, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 128],
    [{ dtype: "<i8", shape: [5], data: new BigInt64Array(5) }, "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }", 128],
    [{ dtype: "<f8", shape: [], data: new Float64Array(1) }, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 128],
    [{ dtype: "|b1", shape: [2, 3, 4], data: new Uint8Array(24) }, "{'descr': '|b1', 'fortran_order': False, 'shape': (2, 3, 4), }", 128],
    [{ dtype: "|u1", shape: [1234567890123, 0], data: new Uint8Array(0) }, "{'descr': '|u1', 'fortran_order': False, 'shape': (1234567890123, 0), }", 128],
  ];
  for (const [arr, dict, headerLen] of cases) {
    const bytes = encodeNpy(arr);
    assert.equal(latin1(bytes, headerLen), numpyHeader(dict, headerLen), dict);
    assert.equal(bytes.length, headerLen + arr.data.byteLength);
  }
});

test("round-trips every dtype through a file, atomically", () => {
  const dir = tempDir();
  const arrays: NpyArray[] = [
    { dtype: "<f4", shape: [2, 3], data: new Float32Array([1, -2, 3.5, NaN, Infinity, -0]) },
    { dtype: "<f8", shape: [2], data: new Float64Array([0.1, -1e300]) },
    { dtype: "<f2", shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
    { dtype: "<i8", shape: [3], data: new BigInt64Array([-200n, 32000n, -(2n ** 63n)]) },
    { dtype: "<u8", shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) },
    { dtype: "<i4", shape: [2, 1], data: new Int32Array([-1, 7]) },
    { dtype: "<u4", shape: [1], data: new Uint32Array([4294967295]) },
    { dtype: "<i2", shape: [1], data: new Int16Array([-32768]) },
    { dtype: "<u2", shape: [1], data: new Uint16Array([65535]) },
    { dtype: "|i1", shape: [2], data: new Int8Array([-128, 127]) },
    { dtype: "|u1", shape: [2], data: new Uint8Array([0, 255]) },
    { dtype: "|b1", shape: [3], data: new Uint8Array([1, 0, 1]) },
    { dtype: "<f4", shape: [0, 5], data: new Float32Array(0) },
  ];
  for (const [i, arr] of arrays.entries()) {
    const file = path.join(dir, `a${i}.npy`);
    writeNpy(file, arr);
    const back = readNpy(file);
    assert.equal(back.dtype, arr.dtype);
    assert.deepEqual(back.shape, arr.shape);
    assert.deepEqual(back.data, arr.data);
  }
  assert.deepEqual(npyToNumbers(readNpy(path.join(dir, "a2.npy"))), [1, -2]); // halves decoded
  assert.equal(fs.readdirSync(dir).filter((f) => f.endsWith(".partial")).length, 0);
  // dtype inferred from the array type when omitted
  writeNpy(path.join(dir, "infer.npy"), { shape: [2], data: new Int32Array([5, 6]) });
  assert.equal(readNpy(path.join(dir, "infer.npy")).dtype, "<i4");
});

test("reads version 2.0 and 3.0 headers and big-endian data", () => {
  const payload = new Float32Array([0, 1, 2, 3, 4, 5]);
  const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  for (const major of [2, 3]) {
    const header = Buffer.from(numpyHeader(dict, 128, major), "latin1");
    const arr = parseNpy(Buffer.concat([header, Buffer.from(payload.buffer)]));
    assert.deepEqual(arr.shape, [2, 3]);
    assert.deepEqual(arr.data, payload);
  }
  const be = Buffer.alloc(24);
  for (let i = 0; i < 6; i++) be.writeInt32BE(i - 3, i * 4);
  const header = Buffer.from(numpyHeader("{'descr': '>i4', 'fortran_order': False, 'shape': (2, 3), }", 128), "latin1");
  const arr = parseNpy(Buffer.concat([header, be]));
  assert.equal(arr.dtype, "<i4");
  assert.deepEqual(arr.data, new Int32Array([-3, -2, -1, 0, 1, 2]));
  // An unaligned source buffer still parses (data is copied).
  const shifted = Buffer.concat([Buffer.alloc(1), Buffer.from(encodeNpy({ shape: [2], data: new Float64Array([1.5, 2.5]) }))]);
  assert.deepEqual(parseNpy(shifted.subarray(1)).data, new Float64Array([1.5, 2.5]));
});

test("rejects bad files with messages naming the file", () => {
  const dir = tempDir();
  const good = Buffer.from(encodeNpy({ shape: [4], data: new Float32Array(4) }));
  const bad: Array<[Buffer, RegExp]> = [
    [Buffer.from("not numpy at all"), /bad magic/],
    [Buffer.concat([Buffer.from("\x93NUMPY\x04\x00", "latin1"), good.subarray(8)]), /unsupported \.npy format version 4\.0/],
    [good.subarray(0, good.length - 1), /data needs 16 bytes .* only 15 remain \(truncated\)/],
    [good.subarray(0, 60), /runs past the end of the file/],
    [
      Buffer.from(numpyHeader("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 128) + "\0".repeat(16), "latin1"),
      /Fortran-ordered/,
    ],
    [Buffer.from(numpyHeader("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", 128) + "\0".repeat(8), "latin1"), /dtype "<c8" is not supported/],
    [Buffer.from(numpyHeader("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 128), "latin1"), /structured dtypes/],
    [Buffer.from(numpyHeader("{'descr': '<f4', 'shape': (1,), }", 128), "latin1"), /header keys/],
    [Buffer.from(numpyHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (1,) ", 128), "latin1"), /cannot parse header/],
  ];
  for (const [i, [bytes, pattern]] of bad.entries()) {
    const file = path.join(dir, `bad${i}.npy`);
    fs.writeFileSync(file, bytes);
    assert.throws(
      () => readNpy(file),
      (e: Error) => e instanceof LlavaError && pattern.test(e.message) && e.message.includes(file),
      `case ${i}`,
    );
  }
  assert.throws(() => readNpy(path.join(dir, "missing.npy")), /npy file .*missing\.npy: file not found/);
  assert.throws(() => writeNpy(path.join(dir, "x.npy"), { dtype: "<f4", shape: [3], data: new Float32Array(2) }), /3 elements but data has 2/);
  assert.throws(() => writeNpy(path.join(dir, "x.npy"), { dtype: "<i8", shape: [1], data: new Int32Array(1) }), /needs a BigInt64Array/);
});

test("python literal parser handles the header grammar", () => {
  assert.deepEqual(parsePythonLiteral("{'a': (1, 2,), \"b\": [True, False, None], 'c': ()}"), {
    a: [1, 2],
    b: [true, false, null],
    c: [],
  });
  assert.deepEqual(parsePythonLiteral("(3L, 4L)"), [3, 4]); // Python 2 longs
  assert.throws(() => parsePythonLiteral("{'a': 1} extra"));
  assert.throws(() => npyToNumbers(new BigInt64Array([2n ** 60n])), /does not fit/);
});
