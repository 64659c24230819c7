/**
 * Writes checkpoints the way `torch.save` does, for tests (no Python torch here):
 *
 * - the pickle as CPython's C pickler writes it at protocol 2 (torch's DEFAULT_PROTOCOL): memo
 *   BINPUT after every str/tuple/dict/global/reduce result, BINGET for objects seen before (by
 *   identity: torch reuses the 'storage' and 'cpu' literals, the storage key string, the classes),
 *   SETITEM for one-item dicts and MARK...SETITEMS otherwise, tensors as
 *   `torch._utils._rebuild_tensor_v2(storage_pid, offset, size, stride, requires_grad, OrderedDict())`
 *   with persistent ids `('storage', torch.FloatStorage, key, 'cpu', numel)`;
 * - the zip as PyTorchStreamWriter + miniz write it: STORED entries, local headers with zero sizes
 *   and bit 3 set, a data descriptor after each, "FB" padding so data starts on 64-byte boundaries,
 *   zip64 end records always (MZ_ZIP_FLAG_WRITE_ZIP64);
 * - the legacy (pre-1.6) stream: magic, protocol, sys_info, object, key list, raw storages.
 *
 * Sources: torch/serialization.py (`_save`, `_legacy_save`), caffe2/serialize/inline_container.cc
 * (`getPadding`, `writeRecord`), miniz `mz_zip_writer_add_mem_ex_v2` / `finalize_archive`, and
 * CPython Modules/_pickle.c. The test file checks this writer against pickles of real torch files.
 */
import zlib from "node:zlib";
import { crc32 } from "../../src/io/torch-zip.js";
import { f32ToBf16Array, f32ToF16Array } from "../../src/tensor/dtypes.js";

export type SaveDtype = "F32" | "F64" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const STORAGE_CLASS: Record<SaveDtype, string> = {
  F32: "FloatStorage",
  F64: "DoubleStorage",
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  I64: "LongStorage",
  I32: "IntStorage",
  I16: "ShortStorage",
  I8: "CharStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
};

export const ELEMENT_SIZE: Record<SaveDtype, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** A Python object reference: pickling the same Ref twice memoizes it (BINGET), like the same Python object. */
export class Ref<T> {
  constructor(readonly value: T) {}
}

/** A Python global (class or function), pickled as GLOBAL module\nname\n. */
export class Global {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
}

/** An arbitrary REDUCE: `callable(*args)`, then optional BUILD state. */
export class Reduce {
  constructor(
    readonly callable: unknown,
    readonly args: Tuple,
    readonly state?: unknown,
  ) {}
}

export class Tuple {
  constructor(readonly items: unknown[]) {}
}

/** collections.OrderedDict (with instance attributes, e.g. a state dict's `_metadata`). */
export class OrderedDict {
  constructor(
    readonly entries: [unknown, unknown][],
    readonly attributes: [string, unknown][] = [],
  ) {}
}

/** A plain dict. */
export class Dict {
  constructor(readonly entries: [unknown, unknown][]) {}
}

/** Python bytes (protocol 2 spells it `_codecs.encode(latin1_text, 'latin1')`). */
export class Bytes {
  constructor(readonly bytes: Uint8Array) {}
}

/** A bare persistent id tuple, for hand-made pickles. */
export class Persistent {
  constructor(readonly pid: unknown) {}
}

export class Storage {
  /** Set when the storage is first pickled: its key string, one object reused for every tensor that views it. */
  key: Ref<string> | null = null;
  constructor(
    readonly dtype: SaveDtype,
    /** Little-endian element bytes. */
    readonly bytes: Uint8Array,
    readonly location = "cpu",
  ) {}
  get numel(): number {
    return this.bytes.length / ELEMENT_SIZE[this.dtype];
  }
}

/** A strided view of a storage, like a torch tensor. */
export class Tensor {
  constructor(
    readonly storage: Storage,
    readonly storageOffset: number,
    readonly shape: number[],
    readonly stride: number[],
    readonly requiresGrad = false,
    /** Pickle as nn.Parameter (`_rebuild_parameter`), as `torch.save(model.state_dict(keep_vars=True))` does. */
    readonly parameter = false,
  ) {}
}

/** Row-major strides for `shape`. */
export function contiguousStride(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= shape[i];
  }
  return stride;
}

/** Little-endian bytes of `values` in `dtype` (floats rounded like torch's .half()/.bfloat16()). */
export function encodeValues(dtype: SaveDtype, values: readonly (number | bigint)[]): Uint8Array {
  const n = values.length;
  const nums = () => Float32Array.from(values as number[]);
  switch (dtype) {
    case "F32":
      return new Uint8Array(nums().buffer);
    case "F64":
      return new Uint8Array(Float64Array.from(values as number[]).buffer);
    case "F16":
      return new Uint8Array(f32ToF16Array(nums()).buffer);
    case "BF16":
      return new Uint8Array(f32ToBf16Array(nums()).buffer);
    case "I64":
      return new Uint8Array(BigInt64Array.from(values.map((v) => BigInt(v))).buffer);
    case "I32":
      return new Uint8Array(Int32Array.from(values as number[]).buffer);
    case "I16":
      return new Uint8Array(Int16Array.from(values as number[]).buffer);
    case "I8":
      return new Uint8Array(Int8Array.from(values as number[]).buffer);
    case "U8":
    case "BOOL":
      return Uint8Array.from(values as number[]).subarray(0, n);
  }
}

/** A fresh contiguous tensor holding `values`. */
export function tensor(dtype: SaveDtype, values: readonly (number | bigint)[], shape: number[]): Tensor {
  return new Tensor(new Storage(dtype, encodeValues(dtype, values)), 0, shape, contiguousStride(shape));
}

const TORCH_REBUILD = new Global("torch._utils", "_rebuild_tensor_v2");
const TORCH_REBUILD_PARAMETER = new Global("torch._utils", "_rebuild_parameter");
const ORDERED_DICT = new Global("collections", "OrderedDict");
const CODECS_ENCODE = new Global("_codecs", "encode");

/** Classes are singletons in Python: one Global object per name so the memo finds them again. */
class Globals {
  private readonly byName = new Map<string, Global>();
  get(g: Global): Global {
    const key = `${g.module}\n${g.name}`;
    const known = this.byName.get(key);
    if (known !== undefined) return known;
    this.byName.set(key, g);
    return g;
  }
}

/** CPython's C pickler, protocol 2, for the value model above. */
export class Pickler {
  private readonly out: number[] = [];
  private readonly memo = new Map<unknown, number>();
  private readonly globals = new Globals();
  /** Python literals shared by every call of torch's persistent_id. */
  private readonly storageLiteral = new Ref("storage");
  private readonly locations = new Map<string, Ref<string>>();
  private readonly latin1Literal = new Ref("latin1");

  constructor(
    /** Storage key for a storage seen first: zip torch uses "0", "1", ...; legacy uses str(pointer). */
    private readonly storageKey: (index: number) => string = (i) => String(i),
    private readonly legacy = false,
  ) {}

  /** Storages in the order their keys were assigned. */
  readonly storages: Storage[] = [];

  dump(value: unknown): Uint8Array {
    this.out.push(0x80, 2);
    this.save(value);
    this.out.push(0x2e);
    return Uint8Array.from(this.out);
  }

  private save(v: unknown): void {
    if (v instanceof Tensor) return this.saveTensor(v);
    if (v instanceof Persistent) {
      this.save(v.pid);
      this.out.push(0x51); // BINPERSID
      return;
    }
    // Atomic values are never memoized.
    if (v === null || v === undefined) return void this.out.push(0x4e);
    if (v === true) return void this.out.push(0x88);
    if (v === false) return void this.out.push(0x89);
    if (typeof v === "number" && Number.isInteger(v)) return this.saveInt(BigInt(v));
    if (typeof v === "bigint") return this.saveInt(v);
    if (typeof v === "number") {
      const b = new DataView(new ArrayBuffer(8));
      b.setFloat64(0, v, false);
      this.out.push(0x47, ...new Uint8Array(b.buffer));
      return;
    }
    const identity = v instanceof Global ? this.globals.get(v) : v;
    if (typeof identity === "object" && this.memo.has(identity)) return this.get(this.memo.get(identity)!);
    if (typeof v === "string") return this.saveStr(v, null);
    if (v instanceof Ref) {
      if (typeof v.value === "string") return this.saveStr(v.value, v);
      throw new Error("Ref of a non-string");
    }
    if (v instanceof Global) return this.saveGlobal(identity as Global);
    if (v instanceof Tuple) return this.saveTuple(v);
    if (Array.isArray(v)) return this.saveList(v);
    if (v instanceof Dict) return this.saveDict(v);
    if (v instanceof OrderedDict) return this.saveOrderedDict(v);
    if (v instanceof Bytes) {
      const latin = String.fromCharCode(...v.bytes);
      return this.saveReduce(CODECS_ENCODE, new Tuple([latin, this.latin1Literal]), v);
    }
    if (v instanceof Reduce) {
      this.saveReduce(v.callable, v.args, v);
      if (v.state !== undefined) {
        this.save(v.state);
        this.out.push(0x62); // BUILD
      }
      return;
    }
    throw new Error(`cannot pickle ${String(v)}`);
  }

  private saveInt(x: bigint): void {
    if (x >= -(2n ** 31n) && x < 2n ** 31n) {
      const n = Number(x);
      if (n >= 0 && n < 256) this.out.push(0x4b, n);
      else if (n >= 0 && n < 65536) this.out.push(0x4d, n & 0xff, n >> 8);
      else this.out.push(0x4a, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff);
      return;
    }
    // LONG1: minimal little-endian two's complement, as _PyLong_AsByteArray + pickle's trimming.
    const bits = (x < 0n ? -x : x).toString(2).length;
    let nbytes = (bits >> 3) + 1;
    const bytes: number[] = [];
    let y = BigInt.asUintN(nbytes * 8, x);
    for (let i = 0; i < nbytes; i++, y >>= 8n) bytes.push(Number(y & 0xffn));
    if (x < 0n && nbytes > 1 && bytes[nbytes - 1] === 0xff && (bytes[nbytes - 2] & 0x80) !== 0) {
      bytes.pop();
      nbytes--;
    }
    this.out.push(0x8a, nbytes, ...bytes);
  }

  private saveStr(s: string, identity: object | null): void {
    const bytes = new TextEncoder().encode(s);
    this.out.push(0x58, ...u32(bytes.length), ...bytes);
    this.put(identity ?? {});
  }

  private saveGlobal(g: Global): void {
    this.out.push(0x63, ...new TextEncoder().encode(`${g.module}\n${g.name}\n`));
    this.put(g);
  }

  private saveTuple(t: Tuple): void {
    const n = t.items.length;
    if (n === 0) return void this.out.push(0x29); // EMPTY_TUPLE: a singleton, never memoized
    if (n <= 3) {
      for (const item of t.items) this.save(item);
      this.out.push([0x85, 0x86, 0x87][n - 1]);
    } else {
      this.out.push(0x28);
      for (const item of t.items) this.save(item);
      this.out.push(0x74);
    }
    this.put(t);
  }

  private saveList(list: unknown[]): void {
    this.out.push(0x5d);
    this.put(list);
    if (list.length === 1) {
      this.save(list[0]);
      this.out.push(0x61); // APPEND
    } else if (list.length > 1) {
      for (let i = 0; i < list.length; i += 1000) {
        this.out.push(0x28);
        for (const item of list.slice(i, i + 1000)) this.save(item);
        this.out.push(0x65); // APPENDS
      }
    }
  }

  private saveDict(d: Dict): void {
    this.out.push(0x7d);
    this.put(d);
    this.setItems(d.entries);
  }

  /** OrderedDict.__reduce__ = (OrderedDict, (), vars(self) or None, None, iter(items)). */
  private saveOrderedDict(d: OrderedDict): void {
    this.saveReduce(ORDERED_DICT, new Tuple([]), d);
    this.setItems(d.entries);
    if (d.attributes.length > 0) {
      this.save(new Dict(d.attributes));
      this.out.push(0x62); // BUILD
    }
  }

  /** Batches of up to 1000; a single item is SETITEM without a MARK. */
  private setItems(entries: [unknown, unknown][]): void {
    if (entries.length === 1) {
      this.save(entries[0][0]);
      this.save(entries[0][1]);
      this.out.push(0x73);
      return;
    }
    for (let i = 0; i < entries.length; i += 1000) {
      this.out.push(0x28);
      for (const [k, v] of entries.slice(i, i + 1000)) {
        this.save(k);
        this.save(v);
      }
      this.out.push(0x75);
    }
  }

  private saveReduce(callable: unknown, args: Tuple, obj: object): void {
    this.save(callable);
    this.save(args);
    this.out.push(0x52); // REDUCE
    this.put(obj);
  }

  /** Tensor.__reduce_ex__: _rebuild_tensor_v2(typed_storage, offset, tuple(size), stride, requires_grad, OrderedDict()). */
  private saveTensor(t: Tensor): void {
    if (this.memo.has(t)) return this.get(this.memo.get(t)!);
    const args = new Tuple([
      new Persistent(this.persistentId(t.storage)),
      t.storageOffset,
      new Tuple(t.shape),
      new Tuple(t.stride),
      t.requiresGrad,
      new OrderedDict([]),
    ]);
    if (!t.parameter) return this.saveReduce(TORCH_REBUILD, args, t);
    // Parameter.__reduce_ex__: _rebuild_parameter(self.data, self.requires_grad, OrderedDict()),
    // where self.data is a new plain tensor over the same storage.
    const data = new Tensor(t.storage, t.storageOffset, t.shape, t.stride);
    this.saveReduce(TORCH_REBUILD_PARAMETER, new Tuple([data, t.requiresGrad, new OrderedDict([])]), t);
  }

  /** torch's persistent_id: ('storage', torch.XStorage, key, location, numel[, view_metadata]). */
  private persistentId(s: Storage): Tuple {
    if (s.key === null) {
      s.key = new Ref(this.storageKey(this.storages.length));
      this.storages.push(s);
    }
    let location = this.locations.get(s.location);
    if (location === undefined) {
      location = new Ref(s.location);
      this.locations.set(s.location, location);
    }
    const items: unknown[] = [this.storageLiteral, new Global("torch", STORAGE_CLASS[s.dtype]), s.key, location, s.numel];
    if (this.legacy) items.push(null);
    return new Tuple(items);
  }

  private put(obj: object): void {
    const index = this.memo.size;
    this.memo.set(obj, index);
    if (index < 256) this.out.push(0x71, index);
    else this.out.push(0x72, ...u32(index));
  }

  private get(index: number): void {
    if (index < 256) this.out.push(0x68, index);
    else this.out.push(0x6a, ...u32(index));
  }
}

function u16(n: number): number[] {
  return [n & 0xff, (n >> 8) & 0xff];
}

function u32(n: number): number[] {
  return [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff];
}

function u64(n: number): number[] {
  return [...u32(n % 0x100000000), ...u32(Math.floor(n / 0x100000000))];
}

/** Pickles `value` as torch.save's pickler would (storages get keys "0", "1", ... in first-seen order). */
export function torchPickle(value: unknown): { pickle: Uint8Array; storages: Storage[] } {
  resetKeys(value);
  const pickler = new Pickler();
  const pickle = pickler.dump(value);
  return { pickle, storages: pickler.storages };
}

/** Storage keys are per save; clear any left from pickling the same objects before. */
function resetKeys(value: unknown, seen = new Set<unknown>()): void {
  if (typeof value !== "object" || value === null || seen.has(value)) return;
  seen.add(value);
  if (value instanceof Tensor) value.storage.key = null;
  const children =
    value instanceof Dict || value instanceof OrderedDict
      ? value.entries.flat()
      : value instanceof Tuple
        ? value.items
        : Array.isArray(value)
          ? value
          : value instanceof Reduce
            ? [value.args, value.state]
            : [];
  for (const c of children) resetKeys(c, seen);
}

export interface ZipOptions {
  /** The archive's top folder: torch uses the file name without extension ("pytorch_model"), or "archive". */
  folder?: string;
  /** Write a `byteorder` record (torch >= 1.10). */
  byteorder?: "little" | "big" | null;
  /** Write every central-directory size and offset through zip64 extra fields, as a general zip tool may. */
  zip64Entries?: boolean;
  /** DEFLATE every record (a re-zipped archive; torch itself never compresses). */
  deflate?: boolean;
}

/** One record of a PyTorchStreamWriter archive. */
export interface ZipRecord {
  name: string;
  data: Uint8Array;
}

const FIELD_ALIGNMENT = 64;

/** A torch.save (>= 1.6) zip: data.pkl, metadata records, data/<key> per storage, version. */
export function torchSaveZip(value: unknown, options: ZipOptions = {}): Uint8Array {
  const { pickle, storages } = torchPickle(value);
  const text = (s: string) => new TextEncoder().encode(s);
  const records: ZipRecord[] = [
    { name: "data.pkl", data: pickle },
    { name: ".format_version", data: text("1") },
    { name: ".storage_alignment", data: text("64") },
  ];
  const byteorder = options.byteorder === undefined ? "little" : options.byteorder;
  if (byteorder !== null) records.push({ name: "byteorder", data: text(byteorder) });
  const keyed = storages.map((s) => ({ key: s.key!.value, s })).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const { key, s } of keyed) {
    const data = byteorder === "big" ? swapped(s.bytes, ELEMENT_SIZE[s.dtype]) : s.bytes;
    records.push({ name: `data/${key}`, data });
  }
  records.push({ name: "version", data: text("3\n") });
  records.push({ name: ".data/serialization_id", data: text("1234567890123456789012345678901234567890") });
  return writeTorchZip(records, options);
}

function swapped(bytes: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += size) for (let j = 0; j < size; j++) out[i + j] = bytes[i + size - 1 - j];
  return out;
}

/** Writes records as PyTorchStreamWriter (miniz, zip64 mode, 64-byte aligned data) does. */
export function writeTorchZip(records: ZipRecord[], options: ZipOptions = {}): Uint8Array {
  const folder = options.folder ?? "archive";
  const out: number[] = [];
  const central: number[] = [];
  const push = (target: number[], bytes: ArrayLike<number>) => {
    for (let i = 0; i < bytes.length; i++) target.push(bytes[i]);
  };
  for (const record of records) {
    const name = new TextEncoder().encode(`${folder}/${record.name}`);
    const offset = out.length;
    const crc = crc32(record.data);
    const deflate = options.deflate === true && record.data.length > 3;
    const payload = deflate ? new Uint8Array(zlib.deflateRawSync(record.data)) : record.data;
    // getPadding: data starts at a multiple of 64 after header + name + "FB" field header.
    const start = offset + 30 + name.length + 4;
    const padding = (FIELD_ALIGNMENT - (start % FIELD_ALIGNMENT)) % FIELD_ALIGNMENT;
    const extra = [0x46, 0x42, ...u16(padding), ...new Array<number>(padding).fill(0x5a)];
    const flags = (record.data.length > 0 && !deflate ? 0x0008 : 0) | 0x0800;
    const method = deflate ? 8 : 0;
    // Local header: miniz leaves crc and sizes zero and writes them in the data descriptor.
    const sizesInHeader = deflate ? [...u32(crc), ...u32(payload.length), ...u32(record.data.length)] : new Array<number>(12).fill(0);
    push(out, [...u32(0x04034b50), ...u16(deflate ? 20 : 0), ...u16(flags), ...u16(method), 0, 0, 0, 0, ...sizesInHeader, ...u16(name.length), ...u16(extra.length)]);
    push(out, name);
    push(out, extra);
    push(out, payload);
    if (flags & 0x0008) push(out, [...u32(0x08074b50), ...u32(crc), ...u32(payload.length), ...u32(record.data.length)]);
    const zip64 = options.zip64Entries === true;
    const centralExtra = zip64 ? [...u16(0x0001), ...u16(24), ...u64(record.data.length), ...u64(payload.length), ...u64(offset)] : [];
    push(central, [
      ...u32(0x02014b50),
      ...u16(0),
      ...u16(deflate ? 20 : 0),
      ...u16(flags),
      ...u16(method),
      0,
      0,
      0,
      0,
      ...u32(crc),
      ...u32(zip64 ? 0xffffffff : payload.length),
      ...u32(zip64 ? 0xffffffff : record.data.length),
      ...u16(name.length),
      ...u16(centralExtra.length),
      ...u16(0),
      ...u16(0),
      ...u16(0),
      ...u32(0),
      ...u32(zip64 ? 0xffffffff : offset),
    ]);
    push(central, name);
    push(central, centralExtra);
  }
  const cdOffset = out.length;
  push(out, central);
  const zip64Record = out.length;
  const n = records.length;
  push(out, [...u32(0x06064b50), ...u64(44), ...u16(0x031e), ...u16(0x002d), ...u32(0), ...u32(0), ...u64(n), ...u64(n), ...u64(central.length), ...u64(cdOffset)]);
  push(out, [...u32(0x07064b50), ...u32(0), ...u64(zip64Record), ...u32(1)]);
  push(out, [...u32(0x06054b50), ...u16(0), ...u16(0), ...u16(n), ...u16(n), ...u32(central.length), ...u32(cdOffset), ...u16(0)]);
  return Uint8Array.from(out);
}

export interface LegacyOptions {
  /** sizeof(long) recorded in sys_info: 8 on Linux/macOS, 4 on Windows. */
  longSize?: number;
  /** Storage keys are str(storage._cdata), a pointer value. */
  storageKey?: (index: number) => string;
}

/** torch.save(..., _use_new_zipfile_serialization=False): the pre-1.6 stream. */
export function torchSaveLegacy(value: unknown, options: LegacyOptions = {}): Uint8Array {
  resetKeys(value);
  const magic = new Pickler().dump(0x1950a86a20f9469cfc6cn);
  const protocol = new Pickler().dump(1001);
  const sysInfo = new Pickler().dump(
    new Dict([
      ["protocol_version", 1001],
      ["little_endian", true],
      ["type_sizes", new Dict([["short", 2], ["int", 4], ["long", options.longSize ?? 8]])],
    ]),
  );
  const main = new Pickler(options.storageKey ?? ((i) => String(94_000_000_000_000 + i * 4096)), true);
  const body = main.dump(value);
  const keys = main.storages.map((s) => s.key!.value).sort();
  const keyList = new Pickler().dump(keys.map((k) => k));
  const parts: Uint8Array[] = [magic, protocol, sysInfo, body, keyList];
  for (const key of keys) {
    const s = main.storages.find((x) => x.key!.value === key)!;
    const count = new Uint8Array(8);
    new DataView(count.buffer).setBigInt64(0, BigInt(s.numel), true);
    parts.push(count, s.bytes);
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Bytes from a Python-style byte string literal body written with \xNN, \n, \t, \r escapes. */
export function pyBytes(literal: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < literal.length; i++) {
    const c = literal[i];
    if (c !== "\\") {
      out.push(c.charCodeAt(0));
      continue;
    }
    const e = literal[++i];
    if (e === "x") {
      out.push(parseInt(literal.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push({ n: 10, t: 9, r: 13, "\\": 92, "'": 39, '"': 34 }[e as "n"] ?? e.charCodeAt(0));
  }
  return Uint8Array.from(out);
}
