import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { TorchBinStore } from "../../src/io/torch-bin.js";
import { LlavaError } from "../../src/util/errors.js";
import { tempDir } from "../helpers/tmp.js";
import {
  Dict,
  Global,
  OrderedDict,
  Persistent,
  Pickler,
  Reduce,
  Storage,
  Tensor,
  Tuple,
  encodeValues,
  pyBytes,
  tensor,
  torchSaveLegacy,
  torchSaveZip,
  writeTorchZip,
  type ZipRecord,
} from "./torch-save.js";

const dir = tempDir("llava-torchbin-err-");
let counter = 0;

function put(bytes: Uint8Array, name = `case${counter++}.bin`, folder = dir): string {
  const file = path.join(folder, name);
  fs.writeFileSync(file, bytes);
  return file;
}

/** Asserts opening `target` fails with a LlavaError that names `mentions` and matches every pattern. */
function expectOpenError(target: string, patterns: RegExp[], mentions: string = target): void {
  assert.throws(
    () => TorchBinStore.open(target),
    (e: Error) => {
      assert.ok(e instanceof LlavaError, `not a LlavaError: ${e.stack}`);
      for (const p of patterns) assert.match(e.message, p);
      assert.ok(e.message.includes(mentions), `message does not name ${mentions}: ${e.message}`);
      return true;
    },
  );
}

/** A torch-style zip whose data.pkl is `pickle` (plus optional records). */
function zipWithPickle(pickle: Uint8Array, extra: ZipRecord[] = []): Uint8Array {
  return writeTorchZip([{ name: "data.pkl", data: pickle }, ...extra, { name: "version", data: new TextEncoder().encode("3\n") }]);
}

const pickle2 = (value: unknown) => new Pickler().dump(value);
const latin = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const refused = (global: string) => [new RegExp(`refusing to load .*: .*${global.replace(/\./g, "\\.")}.*; only tensor data is accepted`)];

// --- Malicious pickles: refused by name, nothing executed ---------------------------------------

test("GLOBAL os.system / posix.system + REDUCE is refused and nothing runs", () => {
  const marker = path.join(dir, "pwned");
  for (const module of ["os", "posix", "nt"]) {
    // What pickle.dumps(obj, protocol=2) writes for an object whose __reduce__ returns (os.system, (cmd,)).
    const evil = pickle2(new Reduce(new Global(module, "system"), new Tuple([`touch ${marker}`])));
    assert.deepEqual(evil.subarray(0, 3 + module.length + 8), latin(`\x80\x02c${module}\nsystem\n`));
    expectOpenError(put(zipWithPickle(evil)), refused(`it imports ${module}.system`));
  }
  assert.equal(fs.existsSync(marker), false);
});

test("STACK_GLOBAL builtins.eval (protocol 4, framed, memoized) is refused", () => {
  const str = (s: string) => [0x8c, s.length, ...latin(s)];
  const body = [...str("builtins"), 0x94, ...str("eval"), 0x94, 0x93, 0x94, ...str("__import__('os').system('true')"), 0x94, 0x85, 0x94, 0x52, 0x94, 0x2e];
  const frame = [0x95, body.length, 0, 0, 0, 0, 0, 0, 0];
  const evil = Uint8Array.from([0x80, 0x04, ...frame, ...body]);
  expectOpenError(put(zipWithPickle(evil)), refused("it imports builtins.eval"));
});

test("a custom class instance via NEWOBJ is refused at its import; NEWOBJ of an allowed function too", () => {
  expectOpenError(put(zipWithPickle(latin("\x80\x02c__main__\nEvil\nq\x00)\x81q\x01."))), refused("it imports __main__.Evil"));
  expectOpenError(
    put(zipWithPickle(latin("\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00)\x81q\x01."))),
    refused("it creates an instance of torch._utils._rebuild_tensor_v2"),
  );
  // A whole pickled model (torch.save(model)) names its module classes.
  expectOpenError(put(zipWithPickle(latin("\x80\x02ctorch.nn.modules.linear\nLinear\nq\x00)\x81q\x01}b."))), refused("torch.nn.modules.linear.Linear"));
});

test("other escape routes are refused: __builtin__.getattr, INST, REDUCE on data, BUILD on a set, _load_from_bytes, subprocess", () => {
  expectOpenError(put(zipWithPickle(pickle2(new Reduce(new Global("__builtin__", "getattr"), new Tuple([1, "x"]))))), refused("it imports __builtin__.getattr"));
  // INST: the protocol-0 way to call a class with marked arguments.
  expectOpenError(put(zipWithPickle(latin("(X\x02\x00\x00\x00idios\nsystem\n."))), refused("it imports os.system"));
  // REDUCE with a plain value in the callable position.
  expectOpenError(put(zipWithPickle(latin("\x80\x02X\x01\x00\x00\x00a)R."))), refused("it calls a str, which is not a function"));
  // BUILD would call __setstate__ on anything but a dict or tensor.
  expectOpenError(put(zipWithPickle(latin("\x80\x02c__builtin__\nset\n]\x85R}b."))), refused("it sets the state of a set"));
  expectOpenError(put(zipWithPickle(pickle2(new Reduce(new Global("torch.storage", "_load_from_bytes"), new Tuple(["x"]))))), refused("it imports torch.storage._load_from_bytes"));
  // A malicious value beside genuine tensors still stops the load.
  const mixed = new Dict([
    ["model.mm_projector.0.weight", tensor("F32", [1, 2], [2])],
    ["hook", new Reduce(new Global("subprocess", "Popen"), new Tuple([["id"]]))],
  ]);
  expectOpenError(put(torchSaveZip(mixed)), refused("it imports subprocess.Popen"));
  // Extension-registry opcodes have no use in weights.
  expectOpenError(put(zipWithPickle(latin("\x80\x02\x82\x01."))), [/malformed pickle .*opcode EXT1 is not supported/]);
});

test("legacy-format streams are screened the same way, from their first pickle", () => {
  const evil = pickle2(new Reduce(new Global("posix", "system"), new Tuple(["true"])));
  expectOpenError(put(evil), refused("it imports posix.system"));
  const legacy = torchSaveLegacy(new Dict([["w", tensor("F32", [1], [1])]]));
  // Replace the state dict pickle's storage class with a class torch never writes.
  const patched = Buffer.from(legacy).toString("latin1").replace("ctorch\nFloatStorage\n", "cmymod\nFloatStorage\n");
  expectOpenError(put(latin(patched)), refused("it imports mymod.FloatStorage"));
});

test("storage classes and dtypes outside the allowlist, and pickled modules, are refused", () => {
  const pid = (type: Global) => new Persistent(new Tuple(["storage", type, "0", "cpu", 2]));
  const rebuild = (type: Global) =>
    new Dict([["w", new Reduce(new Global("torch._utils", "_rebuild_tensor_v2"), new Tuple([pid(type), 0, new Tuple([2]), new Tuple([1]), false, new OrderedDict([])]))]]);
  const data = [{ name: "data/0", data: new Uint8Array(32) }];
  expectOpenError(put(zipWithPickle(pickle2(rebuild(new Global("torch", "FooStorage"))), data)), refused("it imports torch.FooStorage"));
  // Known but unreadable: clear message at open, naming the tensor.
  expectOpenError(put(zipWithPickle(pickle2(rebuild(new Global("torch", "ComplexFloatStorage"))), data)), [/tensor "w" has dtype torch\.ComplexFloatStorage, which this project cannot read/]);
  expectOpenError(put(zipWithPickle(pickle2(new Dict([["m", new Persistent(new Tuple(["module", 1, "f.py", "src"]))]])))), refused("pickled Python module"));
});

// --- Truncated and corrupt files ------------------------------------------------------------------

const good = () =>
  torchSaveZip(
    new Dict([
      ["model.mm_projector.0.weight", tensor("F32", Array.from({ length: 64 }, (_, i) => i), [8, 8])],
      ["model.mm_projector.0.bias", tensor("F32", [1, 2, 3, 4, 5, 6, 7, 8], [8])],
    ]),
  );

test("a truncated download (end of the zip missing) says so", () => {
  const bytes = good();
  for (const keep of [bytes.length - 10, Math.floor(bytes.length / 2), 100]) {
    expectOpenError(put(bytes.subarray(0, keep)), [/truncated/]);
  }
});

test("entries pointing outside the file, missing or short storage records, and a damaged pickle are caught", () => {
  // A central-directory size that runs past the data area.
  const bytes = Buffer.from(good());
  const at = bytes.lastIndexOf("archive/data/0") - 46;
  assert.equal(bytes.readUInt32LE(at), 0x02014b50);
  bytes.writeUInt32LE(0x7fffffff, at + 20);
  bytes.writeUInt32LE(0x7fffffff, at + 24);
  expectOpenError(put(bytes), [/zip entry "archive\/data\/0" .* runs past the end of the data area/, /truncated or corrupt/]);

  // The storage record is missing, or shorter than the pickle declares.
  const value = new Dict([["w", tensor("F32", [1, 2, 3, 4], [4])]]);
  const pickle = pickle2(value);
  expectOpenError(put(zipWithPickle(pickle)), [/refers to storage "0" but there is no archive\/data\/0 record/]);
  expectOpenError(put(zipWithPickle(pickle, [{ name: "data/0", data: new Uint8Array(12) }])), [/storage record archive\/data\/0 holds 12 bytes but the pickle declares 16/]);

  // data.pkl cut short inside an intact zip.
  expectOpenError(put(zipWithPickle(pickle.subarray(0, pickle.length - 30), [{ name: "data/0", data: new Uint8Array(16) }])), [/malformed pickle at byte \d+/]);

  // A flipped byte in data.pkl fails its CRC-32.
  const flipped = Buffer.from(torchSaveZip(value));
  const key = flipped.indexOf("X\x01\x00\x00\x00w", 0, "latin1");
  flipped[key + 5] = "v".charCodeAt(0);
  expectOpenError(put(flipped), [/zip entry "archive\/data\.pkl" fails its CRC-32 check/]);
});

test("a tensor that reaches past its storage, or with mismatched strides, is rejected before reading", () => {
  const s = new Storage("F32", encodeValues("F32", [1, 2, 3, 4]));
  expectOpenError(put(torchSaveZip(new Dict([["w", new Tensor(s, 2, [4], [1])]]))), [/tensor "w" \(shape \[4\], stride \[1\], offset 2\) needs 24 bytes of storage archive\/data\/0, which holds only 16/]);
  expectOpenError(put(torchSaveZip(new Dict([["w", new Tensor(s, 0, [2, 2], [4, 1])]]))), [/needs 24 bytes/]);
  expectOpenError(put(torchSaveZip(new Dict([["w", new Tensor(s, 0, [2, 2], [1])]]))), [/2 dimensions but 1 strides/]);
  // The same storage key declared with two dtypes.
  const view = (storageClass: string, numel: number) =>
    new Reduce(
      new Global("torch._utils", "_rebuild_tensor_v2"),
      new Tuple([new Persistent(new Tuple(["storage", new Global("torch", storageClass), "0", "cpu", numel])), 0, new Tuple([numel]), new Tuple([1]), false, new OrderedDict([])]),
    );
  const twice = pickle2(new Dict([["a", view("FloatStorage", 4)], ["b", view("HalfStorage", 8)]]));
  expectOpenError(put(zipWithPickle(twice, [{ name: "data/0", data: new Uint8Array(16) }])), [/storage "0" is declared twice/]);
});

test("a truncated legacy file is caught at the storage it cuts", () => {
  const legacy = torchSaveLegacy(new Dict([["w", tensor("F32", [1, 2, 3, 4], [4])]]));
  expectOpenError(put(legacy.subarray(0, legacy.length - 3)), [/storage "\d+" \(16 bytes at offset \d+\) runs past the end .* \(truncated\)/]);
  expectOpenError(put(legacy.subarray(0, 40)), [/malformed pickle .*truncated/]);
});

test("files that are not torch.save checkpoints get a message saying what they are", () => {
  expectOpenError(put(new Uint8Array(0)), [/the file is empty/]);
  expectOpenError(put(latin("hello, world, this is text")), [/not a PyTorch checkpoint/]);
  const header = Buffer.from('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  expectOpenError(put(Buffer.concat([len, header, Buffer.alloc(4)])), [/looks like a safetensors file/]);
  const script = writeTorchZip([
    { name: "data.pkl", data: latin("\x80\x02c__torch__\nModel\n)\x81.") },
    { name: "constants.pkl", data: latin("\x80\x02).") },
    { name: "version", data: latin("3\n") },
  ]);
  expectOpenError(put(script), [/TorchScript archive/]);
  expectOpenError(put(writeTorchZip([{ name: "weights.txt", data: latin("0") }])), [/without a <folder>\/data\.pkl record/]);
  // A pickle stream that is not torch's (no magic number first).
  expectOpenError(put(pickle2(new Dict([["a", 1]]))), [/a pickle, but not a torch\.save checkpoint/]);
  // A state dict must be a dict.
  expectOpenError(put(torchSaveZip([tensor("F32", [1], [1])])), [/holds a list, not a dict of named tensors/]);
});

test("folders and shard indexes: missing, ambiguous, or inconsistent weights are explained", () => {
  const empty = tempDir("llava-torchbin-empty-");
  expectOpenError(empty, [/no model weights \(pytorch_model\.bin, pytorch_model\.bin\.index\.json or other \*\.bin file\)/]);

  const lora = tempDir("llava-torchbin-lora-");
  put(good(), "adapter_model.bin", lora);
  put(good(), "non_lora_trainables.bin", lora);
  expectOpenError(lora, [/several candidates \(adapter_model\.bin, non_lora_trainables\.bin\); pass the file to use/]);
  const adapter = TorchBinStore.open(path.join(lora, "adapter_model.bin"));
  assert.equal(adapter.names().length, 2);
  adapter.close();

  const shards = tempDir("llava-torchbin-badindex-");
  const index = path.join(shards, "pytorch_model.bin.index.json");
  fs.writeFileSync(index, JSON.stringify({ weight_map: { "a.weight": "pytorch_model-00001-of-00002.bin" } }));
  expectOpenError(shards, [/names shard file "pytorch_model-00001-of-00002\.bin" .* does not exist/], index);
  put(good(), "pytorch_model-00001-of-00002.bin", shards);
  expectOpenError(index, [/says tensor "a\.weight" is in pytorch_model-00001-of-00002\.bin, but that file has no such tensor/]);
  fs.writeFileSync(index, JSON.stringify({ weight_map: { "a.weight": "../escape.bin" } }));
  expectOpenError(index, [/leaves the checkpoint directory/]);
  fs.writeFileSync(index, "{ not json");
  expectOpenError(index, [/not valid JSON/]);
  expectOpenError(path.join(shards, "missing.bin"), [/file not found/]);
});

test("malformed pickles: huge lengths are checked before allocating; bad memo, stack and protocol", () => {
  // BINUNICODE claiming 4 GiB in a 20-byte pickle.
  const huge = Uint8Array.from([0x80, 0x02, 0x58, 0xff, 0xff, 0xff, 0xff, 0x61, 0x2e]);
  expectOpenError(put(zipWithPickle(huge)), [/malformed pickle .*4294967295-byte item runs past the end/]);
  // Memo lookups of undefined entries, stack underflow, a bad protocol.
  expectOpenError(put(zipWithPickle(latin("\x80\x02h\x05."))), [/memo entry 5 is used before it is defined/]);
  expectOpenError(put(zipWithPickle(latin("\x80\x02R."))), [/stack underflow/]);
  expectOpenError(put(zipWithPickle(latin("\x80\x09N."))), [/unsupported pickle protocol 9/]);
  assert.deepEqual(pyBytes("a\\x00\\n"), Uint8Array.from([0x61, 0, 10]));
});
