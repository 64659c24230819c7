/**
 * Writes a `.bin` file as `torch.save(state_dict, file)` writes it (PyTorch >= 1.6 zip format),
 * for the files the reference's training saves with torch: `mm_projector.bin` and
 * `non_lora_trainables.bin`. Both are plain dicts of tensors there (built by a dict
 * comprehension in `get_mm_adapter_state_maybe_zero_3` / `get_peft_state_non_lora_maybe_zero_3`),
 * each tensor a fresh contiguous CPU copy with its own storage, so that is what is written:
 *
 * - `<stem>/data.pkl`: the pickle CPython's C pickler writes at protocol 2 (torch's
 *   DEFAULT_PROTOCOL): an EMPTY_DICT filled by SETITEM(S), each tensor as
 *   `torch._utils._rebuild_tensor_v2(pid, 0, size, stride, False, OrderedDict())` with the
 *   persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`, keys "0", "1", ... in
 *   order, every str / tuple / global / reduce result memoized (BINPUT) and reused (BINGET);
 * - `.format_version`, `.storage_alignment`, `byteorder` ("little"), `data/<key>` (the raw
 *   little-endian storage, keys in string order), `version` ("3"), `.data/serialization_id`;
 * - as PyTorchStreamWriter (miniz) lays the zip out: STORED entries, sizes in a data descriptor
 *   after each entry, an "FB" extra field padding every record's data to a 64-byte boundary,
 *   zip64 end records. `<stem>` is the file name without its extension, as torch names it.
 *
 * Sources: torch/serialization.py (`_save`), caffe2/serialize/inline_container.cc and CPython
 * Modules/_pickle.c. The file is written atomically; records past 4 GiB are refused (these
 * files are small; models go to safetensors).
 */
import path from "node:path";
import { f32ToBf16Array, f32ToF16Array } from "../tensor/dtypes.js";
import { LlavaError } from "../util/errors.js";
import { writeFileAtomic, writeFully } from "./files.js";
import { crc32 } from "./torch-zip.js";

export interface TorchTensorToWrite {
  name: string;
  dtype: "F32" | "F16" | "BF16";
  shape: number[];
  /** F32: a Float32Array; F16/BF16: a Float32Array (rounded to nearest even) or a Uint16Array of raw bits */
  data: Float32Array | Uint16Array;
}

const STORAGE_CLASS = { F32: "FloatStorage", F16: "HalfStorage", BF16: "BFloat16Storage" } as const;

/** The storage bytes of one tensor, little-endian. */
function storageBytes(t: TorchTensorToWrite, file: string): Uint8Array {
  const numel = t.shape.reduce((a, b) => a * b, 1);
  if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || t.data.length !== numel) {
    throw new LlavaError(`cannot write ${file}: tensor "${t.name}" has shape [${t.shape.join(", ")}] but ${t.data.length} values`);
  }
  let data: Float32Array | Uint16Array = t.data;
  if (t.dtype === "F32" && !(data instanceof Float32Array)) throw new LlavaError(`cannot write ${file}: tensor "${t.name}": F32 needs a Float32Array`);
  if (t.dtype !== "F32" && data instanceof Float32Array) data = (t.dtype === "F16" ? f32ToF16Array : f32ToBf16Array)(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

const text = (s: string) => new TextEncoder().encode(s);
const u16 = (n: number) => [n & 0xff, (n >>> 8) & 0xff];
const u32 = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const u64 = (n: number) => [...u32(n % 0x100000000), ...u32(Math.floor(n / 0x100000000))];

/** CPython's protocol-2 pickler, as far as a dict of tensors needs it. */
class Pickler {
  readonly out: number[] = [0x80, 2];
  private readonly memo = new Map<string, number>();

  /** Emits a memoizable object once (then BINPUT), or BINGET of its first copy when `id` was seen. */
  private memoized(id: string | null, emit: () => void): void {
    const known = id === null ? undefined : this.memo.get(id);
    if (known !== undefined) {
      this.out.push(...(known < 256 ? [0x68, known] : [0x6a, ...u32(known)])); // BINGET / LONG_BINGET
      return;
    }
    emit();
    const index = this.puts++;
    if (id !== null) this.memo.set(id, index);
    this.out.push(...(index < 256 ? [0x71, index] : [0x72, ...u32(index)])); // BINPUT / LONG_BINPUT
  }
  private puts = 0;

  /** A str object: `shared` names a Python object reused across calls (torch's literals), null a fresh one. */
  str(s: string, shared: string | null = null): void {
    this.memoized(shared, () => {
      const bytes = text(s);
      this.out.push(0x58, ...u32(bytes.length), ...bytes); // BINUNICODE
    });
  }

  int(n: number): void {
    if (n >= 0 && n < 256) this.out.push(0x4b, n); // BININT1
    else if (n >= 0 && n < 65536) this.out.push(0x4d, ...u16(n)); // BININT2
    else if (n < 2 ** 31) this.out.push(0x4a, ...u32(n)); // BININT
    else {
      // LONG1: minimal little-endian two's complement of a positive number
      const bytes: number[] = [];
      for (let x = BigInt(n); x > 0n; x >>= 8n) bytes.push(Number(x & 0xffn));
      if (bytes[bytes.length - 1] & 0x80) bytes.push(0);
      this.out.push(0x8a, bytes.length, ...bytes);
    }
  }

  global(module: string, name: string): void {
    this.memoized(`global:${module}.${name}`, () => this.out.push(0x63, ...text(`${module}\n${name}\n`)));
  }

  /** A fresh tuple of ints (a tensor's size or stride). */
  intTuple(items: number[]): void {
    if (items.length === 0) return void this.out.push(0x29); // EMPTY_TUPLE, a singleton never memoized
    this.tuple(() => items.forEach((x) => this.int(x)), items.length);
  }

  tuple(emitItems: () => void, n: number): void {
    this.memoized(null, () => {
      if (n <= 3) {
        emitItems();
        this.out.push([0x85, 0x86, 0x87][n - 1]); // TUPLE1..3
      } else {
        this.out.push(0x28); // MARK
        emitItems();
        this.out.push(0x74); // TUPLE
      }
    });
  }

  /** Tensor.__reduce_ex__ of a contiguous tensor alone in its storage. */
  tensor(dtype: keyof typeof STORAGE_CLASS, key: string, shape: number[]): void {
    const numel = shape.reduce((a, b) => a * b, 1);
    const stride = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    this.global("torch._utils", "_rebuild_tensor_v2");
    this.tuple(() => {
      this.tuple(() => {
        this.str("storage", "storage");
        this.global("torch", STORAGE_CLASS[dtype]);
        this.str(key);
        this.str("cpu", "cpu");
        this.int(numel);
      }, 5);
      this.out.push(0x51); // BINPERSID
      this.int(0);
      this.intTuple(shape);
      this.intTuple(stride);
      this.out.push(0x89); // NEWFALSE: requires_grad
      // OrderedDict() of backward hooks
      this.memoized(null, () => {
        this.global("collections", "OrderedDict");
        this.out.push(0x29, 0x52); // EMPTY_TUPLE, REDUCE
      });
    }, 6);
    this.out.push(0x52); // REDUCE
  }

  /** A dict of tensors: EMPTY_DICT, then SETITEM for one entry or MARK ... SETITEMS per 1000. */
  dict(entries: Array<{ name: string; dtype: keyof typeof STORAGE_CLASS; shape: number[] }>): Uint8Array {
    this.memoized(null, () => this.out.push(0x7d));
    const item = (e: (typeof entries)[number], i: number) => {
      this.str(e.name);
      this.memoized(null, () => this.tensor(e.dtype, String(i), e.shape));
    };
    if (entries.length === 1) {
      item(entries[0], 0);
      this.out.push(0x73); // SETITEM
    }
    for (let start = 0; entries.length > 1 && start < entries.length; start += 1000) {
      this.out.push(0x28);
      entries.slice(start, start + 1000).forEach((e, j) => item(e, start + j));
      this.out.push(0x75); // SETITEMS
    }
    this.out.push(0x2e); // STOP
    return Uint8Array.from(this.out);
  }
}

const ALIGNMENT = 64;
const ZIP32_LIMIT = 0xffffffff;

/** Streams zip records as PyTorchStreamWriter does, keeping the central directory for the end. */
class ZipWriter {
  private offset = 0;
  private readonly central: number[] = [];
  private count = 0;

  constructor(private readonly fd: number, private readonly folder: string, private readonly file: string) {}

  private write(bytes: ArrayLike<number>): void {
    const b = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes);
    writeFully(this.fd, b);
    this.offset += b.length;
  }

  record(name: string, data: Uint8Array): void {
    if (data.length > ZIP32_LIMIT || this.offset > ZIP32_LIMIT) throw new LlavaError(`cannot write ${this.file}: over 4 GiB; save large weights as safetensors`);
    const fullName = text(`${this.folder}/${name}`);
    const offset = this.offset;
    const crc = crc32(data);
    const start = offset + 30 + fullName.length + 4;
    const padding = (ALIGNMENT - (start % ALIGNMENT)) % ALIGNMENT;
    const extra = [0x46, 0x42, ...u16(padding), ...new Array<number>(padding).fill(0x5a)];
    const flags = (data.length > 0 ? 0x0008 : 0) | 0x0800;
    this.write([...u32(0x04034b50), ...u16(0), ...u16(flags), ...u16(0), 0, 0, 0, 0, ...new Array<number>(12).fill(0), ...u16(fullName.length), ...u16(extra.length)]);
    this.write(fullName);
    this.write(extra);
    this.write(data);
    if (flags & 0x0008) this.write([...u32(0x08074b50), ...u32(crc), ...u32(data.length), ...u32(data.length)]);
    this.central.push(
      ...u32(0x02014b50), ...u16(0), ...u16(0), ...u16(flags), ...u16(0), 0, 0, 0, 0, ...u32(crc), ...u32(data.length), ...u32(data.length),
      ...u16(fullName.length), ...u16(0), ...u16(0), ...u16(0), ...u16(0), ...u32(0), ...u32(offset), ...fullName,
    );
    this.count++;
  }

  finish(): void {
    const cdOffset = this.offset;
    const size = this.central.length;
    this.write(this.central);
    const zip64Record = this.offset;
    const n = this.count;
    this.write([...u32(0x06064b50), ...u64(44), ...u16(0x031e), ...u16(0x002d), ...u32(0), ...u32(0), ...u64(n), ...u64(n), ...u64(size), ...u64(cdOffset)]);
    this.write([...u32(0x07064b50), ...u32(0), ...u64(zip64Record), ...u32(1)]);
    this.write([...u32(0x06054b50), ...u16(0), ...u16(0), ...u16(n), ...u16(n), ...u32(size), ...u32(cdOffset), ...u16(0)]);
  }
}

/** torch's serialization id is a 40-digit number; ours derives from the contents, so equal saves give equal files. */
function serializationId(crcs: number[]): string {
  let h = 1469598103934665603n;
  for (const c of crcs) h = BigInt.asUintN(64, (h ^ BigInt(c)) * 1099511628211n);
  return (h.toString().padStart(20, "0") + BigInt.asUintN(64, h * 31n + 7n).toString().padStart(20, "0")).slice(0, 40);
}

/** Writes `tensors` as a dict `{name: tensor}` saved by `torch.save`, atomically. */
export function writeTorchBin(file: string, tensors: readonly TorchTensorToWrite[]): void {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new LlavaError(`cannot write ${file}: tensor "${t.name}" appears twice`);
    if (!(t.dtype in STORAGE_CLASS)) throw new LlavaError(`cannot write ${file}: tensor "${t.name}": dtype ${String(t.dtype)} is not F32, F16 or BF16`);
    seen.add(t.name);
  }
  const storages = tensors.map((t) => storageBytes(t, file));
  const pickle = new Pickler().dict(tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })));
  const base = path.basename(file);
  const folder = base.includes(".") ? base.slice(0, base.lastIndexOf(".")) : base;
  const keys = storages.map((_, i) => String(i)).sort();
  writeFileAtomic(file, (fd) => {
    const zip = new ZipWriter(fd, folder, file);
    zip.record("data.pkl", pickle);
    zip.record(".format_version", text("1"));
    zip.record(".storage_alignment", text(String(ALIGNMENT)));
    zip.record("byteorder", text("little"));
    for (const key of keys) zip.record(`data/${key}`, storages[Number(key)]);
    zip.record("version", text("3\n"));
    zip.record(".data/serialization_id", text(serializationId(storages.map((s) => crc32(s)))));
    zip.finish();
  });
}
