import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { GgufFile, GgufValueType } from "../../src/io/gguf.js";
import { ggufWeightReader } from "../../src/io/gguf-weights.js";
import { LlavaError } from "../../src/util/errors.js";
import { buildGguf, kv } from "../io/gguf-build.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir("llava-gguf-bad-");
let n = 0;
function put(bytes: Uint8Array): string {
  const file = path.join(dir, `case${n++}.gguf`);
  fs.writeFileSync(file, bytes);
  return file;
}

function expectError(bytes: Uint8Array, pattern: RegExp): void {
  const file = put(bytes);
  assert.throws(() => GgufFile.open(file), (e: Error) => {
    assert.ok(e instanceof LlavaError, `not a LlavaError: ${e.stack}`);
    assert.match(e.message, pattern);
    assert.ok(e.message.includes(file), `message does not name the file: ${e.message}`);
    assert.ok(!e.message.includes("\n"), "one line");
    return true;
  });
}

const tensor = (name: string, ne: number[], offset?: number) => ({ name, type: "F32", ne, data: new Uint8Array(4 * ne.reduce((a, b) => a * b, 1)), offset });
const good = () => buildGguf({ kv: [kv("general.architecture", "llama"), kv("tokens", ["a", "b"], GgufValueType.ARRAY, GgufValueType.STRING)], tensors: [tensor("a", [8, 2]), tensor("b", [8])] });

test("not GGUF, unknown versions, big-endian files", () => {
  expectError(Buffer.from("GGML0000"), /does not start with "GGUF"/);
  expectError(Buffer.from("GG"), /does not start with "GGUF"/);
  expectError(buildGguf({ version: 1 }), /version 1 is not supported/);
  expectError(buildGguf({ version: 4 }), /unknown GGUF version 4 \(versions 2 and 3 are supported\)/);
  expectError(buildGguf({ version: 3 * 2 ** 24 }), /big-endian/);
});

test("a GGUF truncated anywhere fails with one line", () => {
  const bytes = good();
  const file = GgufFile.fromBytes(bytes);
  const cuts = [6, 12, 20, 30, 40, 60, file.dataStart - 1, file.dataStart + 10, bytes.length - 4];
  for (const cut of cuts) expectError(bytes.subarray(0, cut), /truncated|run past the end|cannot fit/);
});

test("unknown value types and array item types", () => {
  const bad = buildGguf({ kv: [kv("x", 1)] });
  // the value type of the first entry sits after magic, version, two counts and the key
  const at = 4 + 4 + 8 + 8 + 8 + 1;
  bad.writeUInt32LE(13, at);
  expectError(bad, /metadata "x": unknown value type 13/);
  const arr = buildGguf({ kv: [kv("y", [1], GgufValueType.ARRAY, GgufValueType.INT32)] });
  arr.writeUInt32LE(99, at + 4);
  expectError(arr, /unknown array item type 99/);
  const b = buildGguf({ kv: [kv("z", true)] });
  b[at + 4] = 7;
  expectError(b, /bool value 7/);
});

test("absurd counts are refused before anything is allocated", () => {
  expectError(buildGguf({ tensorCount: 2n ** 62n }), /tensor count .* absurd|cannot fit/);
  expectError(buildGguf({ tensorCount: 1_000_000_000 }), /tensor count 1000000000 cannot fit/);
  const arr = buildGguf({ kv: [kv("y", [1, 2], GgufValueType.ARRAY, GgufValueType.INT32)] });
  arr.writeBigUInt64LE(2n ** 40n, 4 + 4 + 8 + 8 + 8 + 1 + 4 + 4);
  expectError(arr, /item count of metadata "y" 1099511627776 cannot fit/);
  const str = buildGguf({ kv: [kv("s", "abc")] });
  str.writeBigUInt64LE(2n ** 50n, 4 + 4 + 8 + 8 + 8 + 1 + 4);
  expectError(str, /length of metadata "s" .* cannot fit/);
  expectError(buildGguf({ tensors: [{ name: "w", type: "F32", ne: [2 ** 26, 2 ** 26, 2 ** 26], data: new Uint8Array(0) }] }), /absurdly large/);
});

test("tensor offsets out of range, misaligned or overlapping; bad shapes; duplicate names", () => {
  const far = buildGguf({ tensors: [tensor("a", [8]), tensor("b", [8])] });
  // b's offset: after its name, its dimension count, one dimension and its type
  far.writeBigUInt64LE(1n << 20n, far.lastIndexOf(Buffer.from("b")) + 1 + 4 + 8 + 4);
  expectError(far, /tensor "b": bytes \[1048576, 1048608\) run past the end/);
  expectError(buildGguf({ tensors: [tensor("a", [8]), tensor("b", [8], 16)] }), /tensor "b": offset 16 is not a multiple of the alignment 32/);
  expectError(buildGguf({ tensors: [tensor("a", [16]), tensor("b", [8], 32), tensor("c", [16], 0)] }), /overlap/);
  expectError(buildGguf({ tensors: [tensor("a", [8]), tensor("a", [8])] }), /tensor "a" appears twice/);
  expectError(buildGguf({ tensors: [{ name: "q", type: "Q4_0", ne: [20, 2], data: new Uint8Array(36) }] }), /rows of 20 are not whole Q4_0 blocks of 32/);
  expectError(buildGguf({ tensors: [{ name: "t", type: "F32", ne: [1, 1, 1, 1, 1], data: new Uint8Array(4) }] }), /5 dimensions/);
  const unknownType = buildGguf({ tensors: [tensor("a", [8])] });
  const typeAt = unknownType.indexOf(Buffer.from("a")) + 1 + 4 + 8;
  unknownType.writeUInt32LE(77, typeAt);
  expectError(unknownType, /tensor "a" has unknown GGML type id 77/);
  expectError(buildGguf({ kv: [kv("general.alignment", 24)] }), /general.alignment must be a u32 power of two/);
  expectError(buildGguf({ kv: [kv("k", 1), kv("k", 2)] }), /metadata key "k" appears twice/);
});

test("a weight type this project cannot load is named with the supported list", () => {
  const file = put(buildGguf({ tensors: [{ name: "w", type: "IQ2_XS", ne: [256, 1], data: new Uint8Array(74) }] }));
  const reader = ggufWeightReader(GgufFile.open(file));
  assert.throws(() => reader.readF32("w"), /tensor "w" is of type IQ2_XS, which this project cannot load \(supported: F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16\)/);
  reader.close();
});
