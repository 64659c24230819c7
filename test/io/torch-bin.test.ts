import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { MODELS } from "../helpers/paths.js";
import { TorchBinStore } from "../../src/io/torch-bin.js";
import { WeightStore } from "../../src/io/safetensors.js";
import { bf16ToF32Array, f16ToF32Array } from "../../src/tensor/dtypes.js";
import { LlavaError } from "../../src/util/errors.js";
import { tempDir } from "../helpers/tmp.js";
import {
  Bytes,
  Dict,
  Global,
  OrderedDict,
  Reduce,
  Tuple,
  Storage,
  Tensor,
  contiguousStride,
  encodeValues,
  pyBytes,
  tensor,
  torchPickle,
  torchSaveLegacy,
  torchSaveZip,
  writeTorchZip,
  type SaveDtype,
} from "./torch-save.js";

const dir = tempDir("llava-torchbin-");
let counter = 0;

function put(bytes: Uint8Array, name = `case${counter++}.bin`, folder = dir): string {
  const file = path.join(folder, name);
  fs.writeFileSync(file, bytes);
  return file;
}

function open(bytes: Uint8Array): TorchBinStore {
  return TorchBinStore.open(put(bytes));
}

const range = (n: number, scale = 1) => Array.from({ length: n }, (_, i) => (i - n / 3) * scale);

// --- The writer matches real torch.save output ---------------------------------------------------
// These pickles are data.pkl records of real torch.save files, as quoted byte for byte in public
// test code: two Kokoro voice packs (a [510, 1, 256] float tensor at offset 0, and one at offset 256
// of a longer storage) and torch.save({'state_dict': {'positions': tensor([0., 1., 2.])}}).

test("the test writer reproduces real torch.save pickles byte for byte", () => {
  const atStart = pyBytes(
    "\\x80\\x02ctorch._utils\\n_rebuild_tensor_v2\\nq\\x00((X\\x07\\x00\\x00\\x00storageq\\x01ctorch\\nFloatStorage\\n" +
      "q\\x02X\\x01\\x00\\x00\\x000q\\x03X\\x03\\x00\\x00\\x00cpuq\\x04J\\x00\\xfe\\x01\\x00tq\\x05QK\\x00M\\xfe\\x01K\\x01M\\x00" +
      "\\x01\\x87q\\x06M\\x00\\x01M\\x00\\x01K\\x01\\x87q\\x07\\x89ccollections\\nOrderedDict\\nq\\x08)Rq\\ttq\\nRq\\x0b.",
  );
  const voice = new Tensor(new Storage("F32", new Uint8Array(510 * 256 * 4)), 0, [510, 1, 256], [256, 256, 1]);
  assert.deepEqual(torchPickle(voice).pickle, atStart);

  const offset = pyBytes(
    "\\x80\\x02ctorch._utils\\n_rebuild_tensor_v2\\nq\\x00((X\\x07\\x00\\x00\\x00storageq\\x01ctorch\\nFloatStorage\\n" +
      "q\\x02X\\x01\\x00\\x00\\x000q\\x03X\\x03\\x00\\x00\\x00cpuq\\x04J\\x00\\xff\\x01\\x00tq\\x05QM\\x00\\x01M\\xfe\\x01K\\x01M" +
      "\\x00\\x01\\x87q\\x06M\\x00\\x01M\\x00\\x01K\\x01\\x87q\\x07\\x89ccollections\\nOrderedDict\\nq\\x08)Rq\\ttq\\nRq\\x0b.",
  );
  const view = new Tensor(new Storage("F32", new Uint8Array(511 * 256 * 4)), 256, [510, 1, 256], [256, 256, 1]);
  assert.deepEqual(torchPickle(view).pickle, offset);

  const nested = pyBytes(
    "\\x80\\x02}q\\x00X\\n\\x00\\x00\\x00state_dictq\\x01}q\\x02X\\t\\x00\\x00\\x00positionsq\\x03" +
      "ctorch._utils\\n_rebuild_tensor_v2\\nq\\x04((X\\x07\\x00\\x00\\x00storageq\\x05" +
      "ctorch\\nFloatStorage\\nq\\x06X\\x01\\x00\\x00\\x000q\\x07X\\x03\\x00\\x00\\x00cpuq\\x08" +
      "K\\x03tq\\tQK\\x00K\\x03\\x85q\\nK\\x01\\x85q\\x0b\\x89ccollections\\nOrderedDict\\n" +
      "q\\x0c)Rq\\rtq\\x0eRq\\x0fss.",
  );
  assert.deepEqual(torchPickle(new Dict([["state_dict", new Dict([["positions", tensor("F32", [0, 1, 2], [3])]])]])).pickle, nested);
});

/** A complete legacy-format file: torch.save(torch.tensor([4.2])) on Windows (sizeof(long) = 4). */
const REAL_LEGACY = pyBytes(
  "\\x80\\x02\\x8a\\nl\\xfc\\x9cF\\xf9 j\\xa8P\\x19.\\x80\\x02M\\xe9\\x03.\\x80\\x02}q\\x00(X\\x10\\x00\\x00\\x00protocol_versionq\\x01" +
    "M\\xe9\\x03X\\r\\x00\\x00\\x00little_endianq\\x02\\x88X\\n\\x00\\x00\\x00type_sizesq\\x03}q\\x04(X\\x05\\x00\\x00\\x00shortq\\x05" +
    "K\\x02X\\x03\\x00\\x00\\x00intq\\x06K\\x04X\\x04\\x00\\x00\\x00longq\\x07K\\x04uu.\\x80\\x02ctorch._utils\\n_rebuild_tensor_v2\\n" +
    "q\\x00((X\\x07\\x00\\x00\\x00storageq\\x01ctorch\\nFloatStorage\\nq\\x02X\\x0f\\x00\\x00\\x00140426915320352q\\x03X\\x03\\x00\\x00\\x00" +
    "cpuq\\x04K\\x01Ntq\\x05QK\\x00K\\x01\\x85q\\x06K\\x01\\x85q\\x07\\x89ccollections\\nOrderedDict\\nq\\x08)Rq\\ttq\\nRq\\x0b." +
    "\\x80\\x02]q\\x00X\\x0f\\x00\\x00\\x00140426915320352q\\x01a.\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00ff\\x86@",
);

test("the test writer reproduces a real legacy (pre-1.6) torch.save file byte for byte", () => {
  const written = torchSaveLegacy(tensor("F32", [4.2], [1]), { longSize: 4, storageKey: () => "140426915320352" });
  assert.deepEqual(written, REAL_LEGACY);
});

test("a real file holding a bare tensor is refused clearly: a checkpoint must be a dict of named tensors", () => {
  const file = put(REAL_LEGACY);
  assert.throws(() => TorchBinStore.open(file), (e: Error) => e instanceof LlavaError && e.message.includes(file) && /holds a tensor, not a dict/.test(e.message));
});

// --- Reading ------------------------------------------------------------------------------------

/** Values every dtype below represents exactly. */
const EXACT = [0.5, -1.25, 3, 0.125, 96, -7.5];

test("f32, f16, bf16, f64 and integer tensors read with the right dtype, shape and values", () => {
  const floats: SaveDtype[] = ["F32", "F16", "BF16", "F64"];
  const ints: [SaveDtype, number[] | bigint[]][] = [
    ["I64", [1n, -2n, 2n ** 40n, -(2n ** 62n), 0n, 7n]],
    ["I32", [1, -2, 2 ** 30, -(2 ** 31), 0, 7]],
    ["I16", [1, -2, 300, -32768, 0, 7]],
    ["I8", [1, -2, 100, -128, 0, 7]],
    ["U8", [1, 2, 200, 255, 0, 7]],
    ["BOOL", [1, 0, 1, 1, 0, 0]],
  ];
  const entries: [string, Tensor][] = [
    ...floats.map((d): [string, Tensor] => [`float.${d}`, tensor(d, EXACT, [2, 3])]),
    ...ints.map(([d, v]): [string, Tensor] => [`int.${d}`, tensor(d, v, [3, 2])]),
    ["scalar", tensor("F32", [2.5], [])],
    ["empty", tensor("F16", [], [0, 4])],
  ];
  // state_dict() returns an OrderedDict carrying `_metadata`, which torch pickles with BUILD.
  const metadata = new OrderedDict([["", new Dict([["version", 1]])]]);
  const file = put(torchSaveZip(new OrderedDict(entries, [["_metadata", metadata]])));
  const store = TorchBinStore.open(file);
  assert.deepEqual(store.names(), entries.map(([n]) => n).sort());
  for (const d of floats) {
    const info = store.info(`float.${d}`);
    assert.equal(info.dtype, d);
    assert.deepEqual(info.shape, [2, 3]);
    assert.deepEqual([...store.readF32(`float.${d}`)], EXACT);
    // info points at the bytes in the file, and readRaw returns exactly them.
    const raw = store.readRaw(`float.${d}`);
    const onDisk = fs.readFileSync(file).subarray(info.byteOffset!, info.byteOffset! + info.byteLength);
    assert.deepEqual(raw.bytes, new Uint8Array(onDisk));
    assert.deepEqual(raw.bytes, encodeValues(d, EXACT));
  }
  for (const [d, values] of ints) {
    assert.equal(store.info(`int.${d}`).dtype, d);
    const read = store.readInt(`int.${d}`);
    assert.deepEqual([...read].map(String), values.map(String));
    assert.throws(() => store.readF32(`int.${d}`), /integer dtype .* readInt/);
  }
  assert.throws(() => store.readInt("float.F32"), /floating-point dtype F32; read it with readF32/);
  assert.deepEqual(store.info("scalar").shape, []);
  assert.deepEqual([...store.readF32("scalar")], [2.5]);
  assert.equal(store.readF32("empty").length, 0);
  store.close();
});

test("f16 and bf16 widen exactly, including values they round", () => {
  const values = range(200, 0.377);
  const store = open(torchSaveZip(new Dict([["h", tensor("F16", values, [200])], ["b", tensor("BF16", values, [10, 20])]])));
  assert.deepEqual(store.readF32("h"), f16ToF32Array(new Uint16Array(encodeValues("F16", values).buffer)));
  assert.deepEqual(store.readF32("b"), bf16ToF32Array(new Uint16Array(encodeValues("BF16", values).buffer)));
  store.close();
});

test("tensors sharing one storage at different offsets read their own slices", () => {
  const storage = new Storage("F32", encodeValues("F32", range(24)));
  const all = range(24).map((v) => Math.fround(v));
  const views: [string, Tensor][] = [
    ["whole", new Tensor(storage, 0, [4, 6], [6, 1])],
    ["row2", new Tensor(storage, 12, [6], [1])],
    ["tail", new Tensor(storage, 18, [2, 3], [3, 1])],
    ["middle", new Tensor(storage, 5, [7], [1])],
  ];
  const bytes = torchSaveZip(new Dict(views));
  const store = open(bytes);
  assert.deepEqual([...store.readF32("whole")], all);
  assert.deepEqual([...store.readF32("row2")], all.slice(12, 18));
  assert.deepEqual([...store.readF32("tail")], all.slice(18, 24));
  assert.deepEqual([...store.readF32("middle")], all.slice(5, 12));
  // One storage record backs all four.
  const storages = new Set(views.map(([n]) => store.info(n).storage));
  assert.deepEqual([...storages], ["archive/data/0"]);
  assert.equal(store.info("row2").storageOffset, 12);
  store.close();
});

test("non-contiguous views (transpose, permute, expand, step) are gathered into row-major order", () => {
  const base = range(24, 0.5).map((v) => Math.fround(v));
  const s = new Storage("F32", encodeValues("F32", base));
  const bf = new Storage("BF16", encodeValues("BF16", base));
  const longs = new Storage("I64", encodeValues("I64", base.map((_, i) => BigInt(i * 1000 - 5))));
  const store = open(
    torchSaveZip(
      new Dict([
        // [4, 6] storage viewed as its transpose [6, 4].
        ["t", new Tensor(s, 0, [6, 4], [1, 6])],
        ["t_bf16", new Tensor(bf, 0, [6, 4], [1, 6])],
        ["t_long", new Tensor(longs, 0, [6, 4], [1, 6])],
        ["t_u8", new Tensor(new Storage("U8", Uint8Array.from(base.keys())), 0, [6, 4], [1, 6])],
        // [2, 3, 4] permuted to [4, 2, 3].
        ["perm", new Tensor(s, 0, [4, 2, 3], [1, 12, 4])],
        // a row broadcast to 3 rows (stride 0), from offset 6.
        ["expand", new Tensor(s, 6, [3, 6], [0, 1])],
        // every other element of row 1.
        ["step", new Tensor(s, 6, [3], [2])],
      ]),
    ),
  );
  const transposed: number[] = [];
  for (let j = 0; j < 6; j++) for (let i = 0; i < 4; i++) transposed.push(base[i * 6 + j]);
  assert.equal(store.info("t").contiguous, false);
  assert.deepEqual([...store.readF32("t")], transposed);
  assert.deepEqual(store.readF32("t_bf16"), bf16ToF32Array(new Uint16Array(encodeValues("BF16", transposed).buffer)));
  assert.deepEqual(
    [...store.readInt("t_long")].map(Number),
    transposed.map((v) => base.indexOf(v) * 1000 - 5),
  );
  assert.deepEqual([...store.readInt("t_u8")], transposed.map((v) => base.indexOf(v)));
  const perm: number[] = [];
  for (let k = 0; k < 4; k++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) perm.push(base[i * 12 + j * 4 + k]);
  assert.deepEqual([...store.readF32("perm")], perm);
  assert.deepEqual([...store.readF32("expand")], [...base.slice(6, 12), ...base.slice(6, 12), ...base.slice(6, 12)]);
  assert.deepEqual([...store.readF32("step")], [base[6], base[8], base[10]]);
  // readRaw gives the same gathered bytes.
  assert.deepEqual(store.readRaw("t").bytes, encodeValues("F32", transposed));
  store.close();
});

test("LLaVA's projector and LoRA side files: flat dotted names, plain dicts and nn.Parameters", () => {
  const w0 = tensor("F16", range(12, 0.25), [4, 3]);
  const projector = new Dict([
    ["model.mm_projector.0.weight", w0],
    ["model.mm_projector.0.bias", tensor("F16", range(4), [4])],
    ["model.mm_projector.2.weight", tensor("F16", range(16, 0.125), [4, 4])],
    ["model.mm_projector.2.bias", tensor("F16", range(4, 2), [4])],
  ]);
  const llava = tempDir("llava-torchbin-proj-");
  put(torchSaveZip(projector, { folder: "mm_projector" }), "mm_projector.bin", llava);
  put(new Uint8Array([0x80, 0x02, 0x4e, 0x2e]), "training_args.bin", llava); // never weights
  const store = TorchBinStore.open(llava);
  assert.deepEqual(store.names(), ["model.mm_projector.0.bias", "model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.mm_projector.2.weight"]);
  assert.deepEqual(store.info("model.mm_projector.0.weight").shape, [4, 3]);
  assert.deepEqual(store.readRaw("model.mm_projector.0.weight").bytes, w0.storage.bytes);
  store.close();

  // non_lora_trainables.bin: the projector under PEFT's prefix, saved as Parameters (keep_vars).
  const param = (t: Tensor) => new Tensor(t.storage, t.storageOffset, t.shape, t.stride, true, true);
  const lora = new Dict([
    ["base_model.model.model.mm_projector.0.weight", param(w0)],
    ["base_model.model.model.mm_projector.0.bias", param(tensor("F32", [1, 2, 3, 4], [4]))],
  ]);
  const nonLora = open(torchSaveZip(lora));
  assert.deepEqual([...nonLora.readF32("base_model.model.model.mm_projector.0.bias")], [1, 2, 3, 4]);
  assert.deepEqual(nonLora.readRaw("base_model.model.model.mm_projector.0.weight").bytes, w0.storage.bytes);
  nonLora.close();
});

test("nested dicts flatten with dots and non-tensor values are skipped", () => {
  const store = open(
    torchSaveZip(
      new Dict([
        ["epoch", 3],
        ["note", "trained"],
        // Protocol 2 spells bytes as _codecs.encode(..., 'latin1') and sets as __builtin__.set([...]).
        ["blob", new Bytes(Uint8Array.from([0, 200, 255]))],
        ["empty_blob", new Reduce(new Global("__builtin__", "bytes"), new Tuple([]))],
        ["tags", new Reduce(new Global("__builtin__", "set"), new Tuple([["a", "b"]]))],
        ["dtype", new Global("torch", "bfloat16")],
        ["state_dict", new OrderedDict([["model", new Dict([["mm_projector.0.weight", tensor("F32", [1, 2], [2])]])]])],
        ["layers", [tensor("I32", [5], [1]), tensor("I32", [6], [1])]],
      ]),
    ),
  );
  assert.deepEqual(store.names(), ["layers.0", "layers.1", "state_dict.model.mm_projector.0.weight"]);
  assert.deepEqual([...store.readInt("layers.1")], [6]);
  store.close();
});

test("hundreds of tensors (LONG_BINPUT/LONG_BINGET memo indexes) all read back", () => {
  const entries: [string, Tensor][] = [];
  const shared = new Storage("F32", encodeValues("F32", range(300)));
  for (let i = 0; i < 150; i++) entries.push([`model.layers.${i}.weight`, tensor("BF16", [i, -i], [2])]);
  for (let i = 0; i < 150; i++) entries.push([`model.view.${i}`, new Tensor(shared, i, [1], [1])]);
  const { pickle } = torchPickle(new Dict(entries));
  // torch.FloatStorage is first pickled after the 150 BF16 tensors, so it is memoized past index 255
  // (LONG_BINPUT) and every later mention is a LONG_BINGET of that index.
  const bytes = Buffer.from(pickle);
  const globalEnd = bytes.indexOf("ctorch\nFloatStorage\n") + "ctorch\nFloatStorage\n".length;
  assert.equal(bytes[globalEnd], 0x72, "LONG_BINPUT");
  const longGet = Buffer.concat([Buffer.from([0x6a]), bytes.subarray(globalEnd + 1, globalEnd + 5)]);
  assert.ok(bytes.indexOf(longGet) > globalEnd, "LONG_BINGET of the same index");
  const store = open(torchSaveZip(new Dict(entries)));
  assert.equal(store.names().length, 300);
  assert.deepEqual([...store.readF32("model.layers.149.weight")], [149, -149]);
  assert.deepEqual([...store.readF32("model.view.149")], [Math.fround(range(300)[149])]);
  store.close();
});

test("archive variants: folder named after the file, zip64 entry fields, DEFLATE records, big-endian storages", () => {
  const value = new Dict([
    ["a", tensor("F32", range(10), [2, 5])],
    ["b", tensor("I64", [1n, -1n, 2n ** 50n], [3])],
    ["c", new Tensor(new Storage("F16", encodeValues("F16", EXACT)), 0, [3, 2], [1, 3])],
  ]);
  const expectA = range(10).map((v) => Math.fround(v));
  const cT = [EXACT[0], EXACT[3], EXACT[1], EXACT[4], EXACT[2], EXACT[5]];
  for (const options of [{ folder: "pytorch_model" }, { zip64Entries: true }, { deflate: true }, { byteorder: "big" as const }, { byteorder: null }]) {
    const store = open(torchSaveZip(value, options));
    assert.deepEqual([...store.readF32("a")], expectA, JSON.stringify(options));
    assert.deepEqual([...store.readInt("b")], [1n, -1n, 2n ** 50n], JSON.stringify(options));
    assert.deepEqual([...store.readF32("c")], cT, JSON.stringify(options));
    if (options.deflate) assert.equal(store.info("a").byteOffset, null);
    store.close();
  }
});

test("legacy (pre-1.6) checkpoints: state dicts with shared and transposed storages", () => {
  const s = new Storage("F32", encodeValues("F32", range(6)));
  const all = range(6).map((v) => Math.fround(v));
  const store = open(
    torchSaveLegacy(
      new OrderedDict([
        ["w", new Tensor(s, 0, [2, 3], [3, 1])],
        ["wT", new Tensor(s, 0, [3, 2], [1, 3])],
        ["tail", new Tensor(s, 4, [2], [1])],
        ["ids", tensor("I64", [7n, 8n], [2])],
      ]),
    ),
  );
  assert.deepEqual([...store.readF32("w")], all);
  assert.deepEqual([...store.readF32("wT")], [all[0], all[3], all[1], all[4], all[2], all[5]]);
  assert.deepEqual([...store.readF32("tail")], all.slice(4));
  assert.deepEqual([...store.readInt("ids")], [7n, 8n]);
  assert.notEqual(store.info("w").byteOffset, null);
  store.close();
});

test("sharded pytorch_model-0000N-of-0000M.bin with an index, opened by folder or by index file", () => {
  const shards = tempDir("llava-torchbin-shards-");
  put(torchSaveZip(new Dict([["model.embed_tokens.weight", tensor("F16", range(8), [4, 2])], ["lm_head.weight", tensor("F16", range(8, 2), [4, 2])]]), { folder: "pytorch_model-00001-of-00002" }), "pytorch_model-00001-of-00002.bin", shards);
  put(torchSaveZip(new Dict([["model.mm_projector.0.weight", tensor("F32", [1, 2, 3], [3])]]), { folder: "pytorch_model-00002-of-00002" }), "pytorch_model-00002-of-00002.bin", shards);
  const index = {
    metadata: { total_size: 44 },
    weight_map: {
      "lm_head.weight": "pytorch_model-00001-of-00002.bin",
      "model.embed_tokens.weight": "pytorch_model-00001-of-00002.bin",
      "model.mm_projector.0.weight": "pytorch_model-00002-of-00002.bin",
    },
  };
  fs.writeFileSync(path.join(shards, "pytorch_model.bin.index.json"), JSON.stringify(index));
  for (const target of [shards, path.join(shards, "pytorch_model.bin.index.json")]) {
    const store = TorchBinStore.open(target);
    assert.equal(store.source, path.join(shards, "pytorch_model.bin.index.json"));
    assert.deepEqual(store.names(), ["lm_head.weight", "model.embed_tokens.weight", "model.mm_projector.0.weight"]);
    assert.equal(store.filePaths().length, 2);
    assert.deepEqual([...store.readF32("model.mm_projector.0.weight")], [1, 2, 3]);
    assert.deepEqual(store.readF32("lm_head.weight"), f16ToF32Array(new Uint16Array(encodeValues("F16", range(8, 2)).buffer)));
    assert.ok(store.info("model.mm_projector.0.weight").file.endsWith("pytorch_model-00002-of-00002.bin"));
    store.close();
  }
});

test("a fixture vision tower converted to sharded .bin reads identically to its safetensors", () => {
  const source = WeightStore.open(path.join(MODELS, "tiny-clip-vit-56"));
  const names = source.names();
  const out = tempDir("llava-torchbin-clip-");
  const half = Math.ceil(names.length / 2);
  const weightMap: Record<string, string> = {};
  [names.slice(0, half), names.slice(half)].forEach((part, i) => {
    const shard = `pytorch_model-0000${i + 1}-of-00002.bin`;
    const entries = part.map((n): [string, Tensor] => {
      const raw = source.readRaw(n);
      weightMap[n] = shard;
      return [n, new Tensor(new Storage(raw.dtype as SaveDtype, raw.bytes), 0, raw.shape, contiguousStride(raw.shape))];
    });
    put(torchSaveZip(new OrderedDict(entries), { folder: shard.slice(0, -4) }), shard, out);
  });
  fs.writeFileSync(path.join(out, "pytorch_model.bin.index.json"), JSON.stringify({ weight_map: weightMap }));
  const store = TorchBinStore.open(out);
  assert.deepEqual(store.names(), names);
  for (const n of names) {
    assert.deepEqual(store.info(n).shape, source.info(n).shape, n);
    assert.deepEqual(store.readF32(n), source.readF32(n), n);
  }
  store.close();
  source.close();
});

test("unknown names suggest similar ones; a closed store refuses reads", () => {
  const store = open(torchSaveZip(new Dict([["model.mm_projector.0.weight", tensor("F32", [1], [1])]])));
  assert.throws(() => store.readF32("model.mm_projector.0.weigth"), (e: Error) => e instanceof LlavaError && /no tensor named .*similar names: "model.mm_projector.0.weight"/.test(e.message));
  assert.equal(store.has("model.mm_projector.0.weight"), true);
  assert.equal(store.has("nope"), false);
  store.close();
  store.close();
  assert.throws(() => store.readF32("model.mm_projector.0.weight"), /already closed/);
});

test("protocol 4 pickles (torch.save(..., pickle_protocol=4)) read too", () => {
  // What CPython writes at protocol 4: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE.
  const str = (t: string) => [0x8c, t.length, ...Buffer.from(t, "latin1")];
  const global = (module: string, name: string) => [...str(module), 0x94, ...str(name), 0x94, 0x93, 0x94];
  const body = [
    0x7d, 0x94, ...str("model.mm_projector.0.weight"), 0x94,
    ...global("torch._utils", "_rebuild_tensor_v2"),
    0x28, 0x28, ...str("storage"), 0x94, ...global("torch", "HalfStorage"), ...str("0"), 0x94, ...str("cpu"), 0x94, 0x4b, 6, 0x74, 0x94, 0x51,
    0x4b, 0, 0x4b, 3, 0x4b, 2, 0x86, 0x94, 0x4b, 1, 0x4b, 3, 0x86, 0x94, 0x89,
    ...global("collections", "OrderedDict"), 0x29, 0x52, 0x94, 0x74, 0x94, 0x52, 0x94, 0x73, 0x2e,
  ];
  const pickle = Uint8Array.from([0x80, 0x04, 0x95, ...new Uint8Array(new BigUint64Array([BigInt(body.length)]).buffer), ...body]);
  const data = encodeValues("F16", EXACT);
  const file = put(
    writeTorchZip([
      { name: "data.pkl", data: pickle },
      { name: "data/0", data },
      { name: "version", data: new TextEncoder().encode("3\n") },
    ]),
  );
  const store = TorchBinStore.open(file);
  // A [3, 2] tensor with strides (1, 3): the transpose of a [2, 3] storage, data 64-byte aligned like torch's.
  const info = store.info("model.mm_projector.0.weight");
  assert.equal(info.byteOffset! % 64, 0);
  assert.deepEqual(
    { ...info, byteOffset: 0 },
    { dtype: "F16", shape: [3, 2], file, stride: [1, 3], storageOffset: 0, contiguous: false, byteOffset: 0, byteLength: 12, storage: "archive/data/0" },
  );
  assert.deepEqual([...store.readF32("model.mm_projector.0.weight")], [EXACT[0], EXACT[3], EXACT[1], EXACT[4], EXACT[2], EXACT[5]]);
  store.close();
});
