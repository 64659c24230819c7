import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { MODELS } from "../helpers/paths.js";
import { WeightStore, writeShardedSafetensors, type TensorToWrite } from "../../src/io/safetensors.js";
import { parseSize, planShards, pythonJsonDumps } from "../../src/io/safetensors-write.js";
import { tempDir } from "../helpers/tmp.js";

const u8 = (name: string, n: number): TensorToWrite => ({ name, dtype: "U8", shape: [n], data: new Uint8Array(n).fill(n) });

test("shard planning follows huggingface_hub's greedy split", () => {
  // huggingface_hub's own test: sizes 6, 10, 30, 2, 2 with max 10.
  const plan = planShards([u8("layer_1", 6), u8("layer_2", 10), u8("layer_3", 30), u8("layer_4", 2), u8("layer_5", 2)], 10);
  assert.deepEqual(
    plan.map((s) => s.map((t) => t.name)),
    [["layer_1"], ["layer_3"], ["layer_2"], ["layer_4", "layer_5"]],
  );
  // The docstring example: [6, 6, 2, 6, 2, 2] with max 10 -> [6], [6+2], [6+2+2].
  const sizes = planShards([6, 6, 2, 6, 2, 2].map((n, i) => u8(`t${i}`, n)), 10).map((s) =>
    s.map((t) => t.data.length),
  );
  assert.deepEqual(sizes, [[6], [6, 2], [6, 2, 2]]);
  // Byte sizes count the dtype: 3 F32 elements = 12 bytes > 10.
  const f32: TensorToWrite = { name: "f", dtype: "F32", shape: [3], data: new Float32Array(3) };
  assert.deepEqual(planShards([u8("a", 1), f32], 10).map((s) => s.length), [1, 1]);
});

test("sizes parse like huggingface_hub's parse_size_to_int", () => {
  assert.equal(parseSize("5GB"), 5_000_000_000);
  assert.equal(parseSize("2GiB"), 2 * 2 ** 30);
  assert.equal(parseSize("500MB"), 500_000_000);
  assert.equal(parseSize("1.5KB"), 1500);
  assert.equal(parseSize(1234), 1234);
  assert.throws(() => parseSize("lots"), /not a size/);
  assert.throws(() => parseSize(0), /positive/);
});

test("index JSON is formatted like json.dumps(indent=2, sort_keys=True)", () => {
  const text = pythonJsonDumps({
    weight_map: { "b.weight": "model-00002-of-00002.safetensors", "a.weight": "model-00001-of-00002.safetensors", "é\u007f": "x" },
    metadata: { total_size: 40 },
  });
  // Produced by Python's json.dumps for the same dict.
  assert.equal(
    text,
    '{\n  "metadata": {\n    "total_size": 40\n  },\n  "weight_map": {\n    "a.weight": "model-00001-of-00002.safetensors",\n' +
      '    "b.weight": "model-00002-of-00002.safetensors",\n    "\\u00e9\\u007f": "x"\n  }\n}',
  );
});

test("sharded write of a fixture model round-trips through WeightStore", () => {
  const dir = tempDir();
  const src = WeightStore.open(path.join(MODELS, "tiny-llava-1.5-mha"));
  // State-dict order, like save_pretrained iterates it.
  const tensors: TensorToWrite[] = src.names().map((name) => ({
    name,
    dtype: "F32",
    shape: src.info(name).shape,
    data: src.readF32(name),
  }));
  const result = writeShardedSafetensors(dir, tensors, { maxShardBytes: 3_000_000 });
  // embed_tokens and lm_head are 4 MB each: own shards; the rest fits in the others.
  assert.equal(result.files.length, 3);
  assert.deepEqual(
    result.files.map((f) => path.basename(f)),
    ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"],
  );
  assert.equal(result.indexFile, path.join(dir, "model.safetensors.index.json"));
  const totalSize = tensors.reduce((s, t) => s + t.data.length * 4, 0);
  assert.equal(result.totalSize, totalSize);

  const indexText = fs.readFileSync(result.indexFile!, "utf8");
  assert.ok(indexText.endsWith("}\n"));
  const index = JSON.parse(indexText) as { metadata: { total_size: number }; weight_map: Record<string, string> };
  assert.deepEqual(index.metadata, { total_size: totalSize });
  assert.deepEqual(Object.keys(index.weight_map), [...Object.keys(index.weight_map)].sort());
  assert.equal(index.weight_map["language_model.lm_head.weight"], "model-00001-of-00003.safetensors");
  assert.equal(index.weight_map["language_model.model.embed_tokens.weight"], "model-00002-of-00003.safetensors");
  assert.equal(pythonJsonDumps(index) + "\n", indexText);

  for (const target of [dir, result.indexFile!]) {
    const store = WeightStore.open(target);
    assert.deepEqual(store.names(), src.names());
    for (const name of src.names()) assert.deepEqual(store.readF32(name), src.readF32(name), name);
    assert.deepEqual(store.metadata(), { format: "pt" });
    assert.equal(store.filePaths().length, 3);
    assert.equal(path.basename(store.info("language_model.lm_head.weight").file), "model-00001-of-00003.safetensors");
    store.close();
  }
  src.close();
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith(".partial")), []);
});

test("a checkpoint that fits one shard is a plain model.safetensors; stale files of the other layout are removed", () => {
  const dir = tempDir();
  const tensors = [u8("a", 8), u8("b", 8), u8("c", 8)];
  const sharded = writeShardedSafetensors(dir, tensors, { maxShardBytes: 10 });
  assert.equal(sharded.files.length, 3);
  assert.ok(fs.existsSync(path.join(dir, "model.safetensors.index.json")));

  const single = writeShardedSafetensors(dir, tensors, { maxShardBytes: "1KB" });
  assert.equal(single.indexFile, null);
  assert.deepEqual(fs.readdirSync(dir).sort(), ["model.safetensors"]);

  fs.writeFileSync(path.join(dir, "notes.txt"), "keep me");
  writeShardedSafetensors(dir, tensors, { maxShardBytes: 16 });
  assert.deepEqual(fs.readdirSync(dir).sort(), [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "notes.txt",
  ]);
  const store = WeightStore.open(dir);
  assert.deepEqual(store.readInt("c"), new Uint8Array(8).fill(8));
  store.close();
});

test("custom base name, shard metadata and total_parameters", () => {
  const dir = tempDir();
  writeShardedSafetensors(dir, [u8("x", 4), u8("y", 4)], {
    maxShardBytes: 4,
    baseName: "adapter",
    metadata: { format: "pt", note: "hi" },
    totalParameters: 8,
  });
  assert.deepEqual(fs.readdirSync(dir).sort(), [
    "adapter-00001-of-00002.safetensors",
    "adapter-00002-of-00002.safetensors",
    "adapter.safetensors.index.json",
  ]);
  const index = JSON.parse(fs.readFileSync(path.join(dir, "adapter.safetensors.index.json"), "utf8"));
  assert.deepEqual(index.metadata, { total_parameters: 8, total_size: 8 });
  const store = WeightStore.open(dir); // the only index in the directory
  assert.deepEqual(store.metadata(), { format: "pt", note: "hi" });
  assert.deepEqual(store.names(), ["x", "y"]);
  store.close();
});
