import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { MODELS } from "../helpers/paths.js";
import { WeightStore, writeSafetensors, writeShardedSafetensors } from "../../src/io/safetensors.js";
import { LlavaError } from "../../src/util/errors.js";
import { tempDir } from "../helpers/tmp.js";

const dir = tempDir();
let counter = 0;

/** Writes raw bytes to a new file in the temp dir. */
function put(bytes: Uint8Array, name = `case${counter++}.safetensors`): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, bytes);
  return file;
}

/** A safetensors file with the given header (object or raw text) and `dataBytes` zero bytes of data. */
function craft(header: object | string, dataBytes: number): string {
  const text = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  return put(Buffer.concat([len, text, Buffer.alloc(dataBytes)]));
}

/** Asserts opening `target` fails with a LlavaError naming `mentions` and matching `pattern`. */
function expectOpenError(target: string, pattern: RegExp, mentions: string = target): void {
  assert.throws(
    () => WeightStore.open(target),
    (e: Error) => {
      assert.ok(e instanceof LlavaError, `not a LlavaError: ${e.stack}`);
      assert.match(e.message, pattern);
      assert.ok(e.message.includes(mentions), `message does not name ${mentions}: ${e.message}`);
      return true;
    },
  );
}

test("missing file", () => {
  expectOpenError(path.join(dir, "nope.safetensors"), /file not found/);
});

test("file shorter than the 8-byte header length", () => {
  expectOpenError(put(new Uint8Array([1, 2, 3])), /only 3 bytes long/);
  expectOpenError(put(new Uint8Array(0)), /only 0 bytes long/);
});

test("header length larger than the file", () => {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(1000n);
  expectOpenError(put(Buffer.concat([len, Buffer.from("{}")])), /header length 1000 runs past the end of the 10-byte file/);
});

test("absurd header length (> 100 MB) is refused before allocating", () => {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(0xffffffffffffffffn);
  expectOpenError(put(Buffer.concat([len, Buffer.from("{}")])), /over the 100000000-byte limit/);
  len.writeBigUInt64LE(100_000_001n);
  expectOpenError(put(Buffer.concat([len, Buffer.from("{}")])), /over the 100000000-byte limit/);
});

test("header that is not JSON, not UTF-8, or not an object", () => {
  expectOpenError(craft('{"a": {"dtype": "F32",', 0), /header is not valid JSON/);
  expectOpenError(craft("[1, 2]", 0), /header is not a JSON object/);
  const bad = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(4n);
  expectOpenError(put(Buffer.concat([len, bad])), /not valid UTF-8/);
  expectOpenError(craft({ __metadata__: { format: 1 } }, 0), /"__metadata__" value for "format" is not a string/);
});

test("unknown or unsupported dtype", () => {
  expectOpenError(craft({ w: { dtype: "F17", shape: [1], data_offsets: [0, 4] } }, 4), /tensor "w": unknown dtype "F17"/);
  expectOpenError(craft({ w: { dtype: "F8_E4M3", shape: [1], data_offsets: [0, 1] } }, 1), /dtype F8_E4M3 is not supported/);
});

test("malformed entries", () => {
  expectOpenError(craft({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, 4), /"shape" must be a list of non-negative integers/);
  expectOpenError(craft({ w: { dtype: "F32", shape: [1], data_offsets: [0] } }, 4), /"data_offsets" must be \[begin, end\]/);
  expectOpenError(craft({ w: { dtype: "F32", shape: [1], data_offsets: [8, 4] } }, 8), /end before they begin/);
  expectOpenError(craft({ w: "F32" }, 0), /tensor "w": entry is not an object/);
});

test("shape and byte length disagree", () => {
  expectOpenError(
    craft({ w: { dtype: "F32", shape: [2, 3], data_offsets: [0, 20] } }, 20),
    /tensor "w": shape \[2, 3\] of F32 needs 24 bytes but data_offsets \[0, 20\] hold 20/,
  );
  expectOpenError(craft({ w: { dtype: "BF16", shape: [4], data_offsets: [0, 16] } }, 16), /needs 8 bytes/);
});

test("offsets past the end of the data section (truncated file)", () => {
  const good = path.join(dir, "good.safetensors");
  writeSafetensors(good, [
    { name: "a", dtype: "F32", shape: [4], data: new Float32Array(4) },
    { name: "b", dtype: "F32", shape: [4], data: new Float32Array(4) },
  ]);
  const bytes = fs.readFileSync(good);
  const truncated = put(bytes.subarray(0, bytes.length - 5));
  expectOpenError(truncated, /tensor "b": data_offsets \[16, 32\] run past the end of the data section \(27 bytes\): the file is truncated/);
});

test("overlapping offsets", () => {
  expectOpenError(
    craft(
      {
        a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
        b: { dtype: "F32", shape: [2], data_offsets: [8, 16] },
      },
      16,
    ),
    /tensors "a" \[0, 16\] and "b" \[8, 16\] have overlapping data_offsets/,
  );
  // Zero-size tensors may share an offset with anything.
  const ok = craft(
    {
      a: { dtype: "F32", shape: [4], data_offsets: [0, 16] },
      e: { dtype: "F32", shape: [0], data_offsets: [8, 8] },
    },
    16,
  );
  const store = WeightStore.open(ok);
  assert.deepEqual(store.readF32("e"), new Float32Array(0));
  store.close();
});

test("requested tensor that does not exist: message suggests similar names", () => {
  const store = WeightStore.open(path.join(MODELS, "tiny-llava-1.5-orig"));
  assert.throws(
    () => store.readF32("model.layers.0.self_attn.q_proj.wieght"),
    (e: Error) =>
      e instanceof LlavaError &&
      e.message.includes(path.join(MODELS, "tiny-llava-1.5-orig", "model.safetensors")) &&
      /no tensor named "model\.layers\.0\.self_attn\.q_proj\.wieght"/.test(e.message) &&
      /similar names: "model\.layers\.0\.self_attn\.q_proj\.weight"/.test(e.message),
  );
  assert.throws(() => store.info("vision_tower.x"), /no tensor named "vision_tower\.x" \(25 tensors\); similar names/);
  store.close();
});

test("shard index problems: missing shard, bad JSON, no weight_map, tensor absent from its shard, escaping path", () => {
  const ckpt = path.join(dir, "sharded");
  writeShardedSafetensors(
    ckpt,
    [
      { name: "a", dtype: "F32", shape: [4], data: new Float32Array(4) },
      { name: "b", dtype: "F32", shape: [4], data: new Float32Array(4) },
    ],
    { maxShardBytes: 16 },
  );
  const index = path.join(ckpt, "model.safetensors.index.json");
  const original = fs.readFileSync(index, "utf8");

  fs.renameSync(path.join(ckpt, "model-00002-of-00002.safetensors"), path.join(ckpt, "moved.bin"));
  expectOpenError(ckpt, /names shard file "model-00002-of-00002\.safetensors" \(for 1 tensors, e\.g\. "b"\) but .* does not exist/, index);
  fs.renameSync(path.join(ckpt, "moved.bin"), path.join(ckpt, "model-00002-of-00002.safetensors"));

  fs.writeFileSync(index, original.slice(0, 40));
  expectOpenError(ckpt, /shard index .*: not valid JSON/, index);
  fs.writeFileSync(index, JSON.stringify({ metadata: {} }));
  expectOpenError(index, /missing "weight_map" object/, index);
  fs.writeFileSync(index, JSON.stringify({ weight_map: { a: "model-00001-of-00002.safetensors", zz: "model-00001-of-00002.safetensors" } }));
  expectOpenError(index, /says tensor "zz" is in model-00001-of-00002\.safetensors, but that file has no such tensor/, index);
  fs.writeFileSync(index, JSON.stringify({ weight_map: { a: "../x.safetensors" } }));
  expectOpenError(index, /leaves the checkpoint directory/, index);

  fs.writeFileSync(index, original);
  const store = WeightStore.open(ckpt);
  assert.deepEqual(store.names(), ["a", "b"]);
  store.close();
});

test("a directory without weights, or with several candidates", () => {
  const empty = path.join(dir, "empty-dir");
  fs.mkdirSync(empty);
  expectOpenError(empty, /no model weights \(model\.safetensors, model\.safetensors\.index\.json or other \*\.safetensors file\)/);
  const two = path.join(dir, "two");
  fs.mkdirSync(two);
  for (const n of ["x.safetensors", "y.safetensors"]) {
    writeSafetensors(path.join(two, n), []);
  }
  expectOpenError(two, /several candidates \(x\.safetensors, y\.safetensors\)/);
});

test("a file that shrinks after opening gives a clear read error", () => {
  const file = path.join(dir, "shrinks.safetensors");
  writeSafetensors(file, [{ name: "w", dtype: "F32", shape: [1024], data: new Float32Array(1024) }]);
  const store = WeightStore.open(file);
  fs.truncateSync(file, 100);
  assert.throws(() => store.readF32("w"), (e: Error) => e instanceof LlavaError && e.message.includes(file) && /truncated/.test(e.message));
  store.close();
});
