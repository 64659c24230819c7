/**
 * Lazy reader for PyTorch `torch.save` checkpoints, as LLaVA ships them: `pytorch_model.bin`,
 * sharded `pytorch_model-0000N-of-0000M.bin` + `pytorch_model.bin.index.json`, `mm_projector.bin`,
 * `non_lora_trainables.bin`, `adapter_model.bin`. Same read API as `WeightStore` (safetensors.ts).
 *
 * Opening parses the zip directory (torch-zip.ts) and the pickle (pickle.ts, with the allowlist of
 * torch-unpickle.ts — nothing in the file is ever executed) and validates every tensor against its
 * storage; tensor bytes are read from disk by offset only when asked for. The legacy (pre-1.6,
 * non-zip) format is read too: a sequence of pickles followed by the raw storages.
 */
import fs from "node:fs";
import { LlavaError } from "../util/errors.js";
import { bf16ToF32Array, f16ToF32Array, f64ToF32Array } from "../tensor/dtypes.js";
import { openForRead, readFully } from "./files.js";
import { CONVERT_CHUNK_ELEMENTS, DataFileStore, type OpenDataFile, type OpenedDataFile, openDataFiles } from "./checkpoint-files.js";
import { BufferSource, FileSource, PyDict, unpickle } from "./pickle.js";
import { dtypeSize, type SafetensorsDtype } from "./safetensors-header.js";
import { INT_ARRAYS, type IntArray, type RawTensor } from "./safetensors.js";
import { collectTensors, describe, TensorRef, TorchPickleHooks, type StorageRef } from "./torch-unpickle.js";
import { ZipArchive, type ZipEntry } from "./torch-zip.js";

/** Where one tensor lives and how it is laid out. */
export interface TorchTensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute path of the file holding the tensor. */
  file: string;
  /** Strides in elements, as saved. */
  stride: number[];
  /** Offset of element 0 in its storage, in elements. */
  storageOffset: number;
  /** Row-major with no gaps: the bytes are one run in the file. */
  contiguous: boolean;
  /** Absolute byte offset of element 0 in `file`; null when the storage is compressed. */
  byteOffset: number | null;
  /** numel * element size: the length of `readRaw(name).bytes`. */
  byteLength: number;
  /** The storage record: a zip entry name ("pytorch_model/data/3") or a legacy storage key. */
  storage: string;
}

interface OpenFile extends OpenDataFile {
  /** Storages were saved big-endian (a `byteorder` record of "big"); bytes are swapped on read. */
  bigEndian: boolean;
}

/** Where a storage's bytes are. */
interface StorageLocation {
  name: string;
  /** Bytes available in the file for this storage. */
  size: number;
  /** Absolute file offset of byte 0, when the bytes sit uncompressed in the file. */
  offset: number | null;
  readInto(start: number, target: Uint8Array): void;
}

interface Located {
  file: OpenFile;
  tensor: TensorRef;
  storage: StorageLocation;
  dtype: SafetensorsDtype;
  elementSize: number;
  numel: number;
  contiguous: boolean;
}

type OpenedFile = OpenedDataFile<Located>;


export class TorchBinStore extends DataFileStore<Located> {
  /**
   * Opens a torch.save file (`.bin`, `.pt`, `.pth`), a `*.bin.index.json` shard index, or a directory
   * holding `pytorch_model.bin`, a shard index, or exactly one other `.bin` file.
   */
  static open(pathOrDir: string): TorchBinStore {
    const { file, files, tensors } = openDataFiles(pathOrDir, "bin", openTorchFile);
    return new TorchBinStore(file, files, tensors);
  }

  info(name: string): TorchTensorInfo {
    const t = this.locate(name);
    const start = t.storage.offset === null ? null : t.storage.offset + t.tensor.storageOffset * t.elementSize;
    return {
      dtype: t.dtype,
      shape: [...t.tensor.shape],
      file: t.file.path,
      stride: [...t.tensor.stride],
      storageOffset: t.tensor.storageOffset,
      contiguous: t.contiguous,
      byteOffset: start,
      byteLength: t.numel * t.elementSize,
      storage: t.storage.name,
    };
  }

  /** The tensor's bytes in row-major order (a strided view is gathered), little-endian. */
  readRaw(name: string, into?: Uint8Array): RawTensor {
    const t = this.locate(name);
    return { dtype: t.dtype, shape: [...t.tensor.shape], bytes: readTensorBytes(t, into) };
  }

  /** A floating-point tensor as float32 (F16 and BF16 exactly, F64 rounded to nearest). */
  readF32(name: string): Float32Array {
    const t = this.locate(name);
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16" && t.dtype !== "F64") {
      throw new LlavaError(`${t.file.path}: tensor "${name}" has integer dtype ${t.dtype}; read it with readInt, not readF32`);
    }
    if (t.contiguous && !t.file.bigEndian && t.storage.offset !== null) return readContiguousF32(t);
    const bytes = readTensorBytes(t);
    return widenToF32(t.dtype, bytes.buffer as ArrayBuffer, t.numel, new Float32Array(t.numel));
  }

  /** An integer or bool tensor as the matching typed array (BOOL and U8 -> Uint8Array). */
  readInt(name: string): IntArray {
    const t = this.locate(name);
    const ctor = INT_ARRAYS[t.dtype];
    if (ctor === undefined) {
      throw new LlavaError(`${t.file.path}: tensor "${name}" has floating-point dtype ${t.dtype}; read it with readF32, not readInt`);
    }
    return new ctor(readTensorBytes(t).buffer as ArrayBuffer);
  }

}

// ---------------------------------------------------------------------------------------------
// Opening one file

/** Opens one checkpoint file, detecting the zip or legacy format from its first bytes. */
function openTorchFile(file: string): OpenedFile {
  const fd = openForRead(file, "PyTorch checkpoint");
  try {
    const size = fs.fstatSync(fd).size;
    const head = new Uint8Array(Math.min(size, 512));
    readFully(fd, head, 0, file);
    const ascii = (from: number, to: number) => String.fromCharCode(...head.subarray(from, to));
    if (ascii(0, 4) === "PK\x03\x04") return openZipCheckpoint(fd, file, size);
    if (ascii(0, 4) === "PK\x05\x06") throw new LlavaError(`${file}: an empty zip archive, not a torch.save checkpoint`);
    if (head[0] === 0x80 && head.length >= 2 && head[1] >= 2 && head[1] <= 5) return openLegacyCheckpoint(fd, file, size);
    throw new LlavaError(`${file}: ${describeUnknownFormat(head, size)}`);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

function describeUnknownFormat(head: Uint8Array, size: number): string {
  const ascii = String.fromCharCode(...head.subarray(0, 8));
  if (size === 0) return "the file is empty";
  if (ascii === "PYTORCH1") return "uses the preview-release PyTorch archive format, which is not supported";
  if (head.length >= 262 && String.fromCharCode(...head.subarray(257, 262)) === "ustar") {
    return "is a tar archive (the torch.save format of PyTorch < 0.4), which is not supported";
  }
  if (head.length >= 9 && head[8] === 0x7b && head[6] === 0 && head[7] === 0) {
    return "looks like a safetensors file, not a torch.save checkpoint; open it as safetensors";
  }
  return "not a PyTorch checkpoint: it starts with neither a zip header (torch.save >= 1.6) nor a pickle (older torch.save)";
}

function openZipCheckpoint(fd: number, file: string, size: number): OpenedFile {
  const zip = ZipArchive.read(fd, file, size);
  const prefix = archivePrefix(zip, file);
  const pickleEntry = zip.entries.get(`${prefix}/data.pkl`)!;
  let bigEndian = false;
  const byteorder = zip.entries.get(`${prefix}/byteorder`);
  if (byteorder !== undefined) {
    const text = byteorder.size <= 16 ? new TextDecoder().decode(zip.readAll(byteorder, true)) : "";
    if (text !== "little" && text !== "big") throw new LlavaError(`${file}: byteorder record says "${text}", expected "little" or "big"`);
    bigEndian = text === "big";
  }
  const hooks = new TorchPickleHooks(file, "zip");
  const root = unpickle(new BufferSource(zip.readAll(pickleEntry, true)), hooks, `${file} (${pickleEntry.name})`);
  const opened: OpenFile = { path: file, fd, bigEndian };
  const locations = new Map<string, StorageLocation>();
  for (const [key, ref] of hooks.referencedStorages()) {
    const entry = zip.entries.get(`${prefix}/data/${key}`);
    if (entry === undefined) {
      throw new LlavaError(`${file}: the pickle refers to storage "${key}" but there is no ${prefix}/data/${key} record (truncated or corrupt file)`);
    }
    locations.set(key, zipStorage(zip, entry, ref, file));
  }
  return { file: opened, tensors: locateTensors(opened, root, locations) };
}

/** The archive's top folder (named after the file torch saved to, or "archive"), which holds data.pkl. */
function archivePrefix(zip: ZipArchive, file: string): string {
  const names = [...zip.entries.keys()];
  // TorchScript archives (torch.jit.save) also hold a data.pkl, of module objects; torch.load
  // tells them apart by constants.pkl.
  if (names.some((n) => /^[^/]+\/constants\.pkl$/.test(n))) {
    throw new LlavaError(`${file}: is a TorchScript archive (torch.jit.save), not a torch.save checkpoint of weights`);
  }
  const pickles = names.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pickles.length === 1) return pickles[0].slice(0, -"/data.pkl".length);
  if (pickles.length > 1) {
    // torch itself uses the folder of the first entry.
    const first = names[0].split("/")[0];
    if (pickles.includes(`${first}/data.pkl`)) return first;
    throw new LlavaError(`${file}: the zip holds several data.pkl records (${pickles.join(", ")}); refusing an ambiguous archive`);
  }
  throw new LlavaError(`${file}: a zip archive without a <folder>/data.pkl record: not a torch.save checkpoint`);
}

function zipStorage(zip: ZipArchive, entry: ZipEntry, ref: StorageRef, file: string): StorageLocation {
  if (entry.size < ref.nbytes) {
    throw new LlavaError(
      `${file}: storage record ${entry.name} holds ${entry.size} bytes but the pickle declares ${ref.nbytes} ` +
        `(${ref.type.torchName}): truncated or corrupt file`,
    );
  }
  return {
    name: entry.name,
    size: entry.size,
    offset: entry.method === 0 ? entry.dataOffset : null,
    readInto: (start, target) => zip.readInto(entry, start, target),
  };
}

/** torch's legacy magic number, pickled first in a pre-1.6 checkpoint. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

/**
 * Pre-1.6 layout: pickles of the magic number, the protocol version, system info, the object, and
 * the sorted storage keys; then each storage as an int64 element count followed by its bytes.
 */
function openLegacyCheckpoint(fd: number, file: string, size: number): OpenedFile {
  const src = new FileSource(fd, file, 0, size);
  const header = new TorchPickleHooks(file, "legacy");
  const magic = unpickle(src, header, file);
  if (magic !== LEGACY_MAGIC) throw new LlavaError(`${file}: a pickle, but not a torch.save checkpoint (no torch magic number)`);
  const protocol = unpickle(src, header, file);
  if (protocol !== LEGACY_PROTOCOL) throw new LlavaError(`${file}: legacy torch.save protocol ${String(protocol)} is not supported (expected ${LEGACY_PROTOCOL})`);
  const sysInfo = unpickle(src, header, file);
  if (!(sysInfo instanceof PyDict)) throw new LlavaError(`${file}: legacy checkpoint has no system-info dict`);
  if (sysInfo.map.get("little_endian") !== true) {
    throw new LlavaError(`${file}: a legacy checkpoint saved on a big-endian machine, which is not supported`);
  }
  const hooks = new TorchPickleHooks(file, "legacy");
  const root = unpickle(src, hooks, file);
  const keys = unpickle(src, header, file);
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string")) {
    throw new LlavaError(`${file}: legacy checkpoint's storage key list is a ${describe(keys)}, not a list of strings`);
  }
  const storages = hooks.referencedStorages();
  const locations = new Map<string, StorageLocation>();
  let pos = src.filePosition;
  const countBytes = new Uint8Array(8);
  for (const key of keys as string[]) {
    const ref = storages.get(key);
    if (ref === undefined) throw new LlavaError(`${file}: legacy checkpoint stores "${key}", which no tensor refers to; cannot tell its size`);
    if (pos + 8 > size) throw new LlavaError(`${file}: file ends before storage "${key}" (truncated)`);
    readFully(fd, countBytes, pos, file);
    const count = new DataView(countBytes.buffer).getBigInt64(0, true);
    const nbytes = Number(count) * ref.type.elementSize;
    if (count < 0n || nbytes !== ref.nbytes) {
      throw new LlavaError(`${file}: storage "${key}" has ${count} elements on disk but the pickle declares ${ref.nbytes / ref.type.elementSize}`);
    }
    const offset = pos + 8;
    if (offset + nbytes > size) {
      throw new LlavaError(`${file}: storage "${key}" (${nbytes} bytes at offset ${offset}) runs past the end of the ${size}-byte file (truncated)`);
    }
    locations.set(key, {
      name: key,
      size: nbytes,
      offset,
      readInto: (start, target) => readFully(fd, target, offset + start, file),
    });
    pos = offset + nbytes;
  }
  for (const key of storages.keys()) {
    if (!locations.has(key)) throw new LlavaError(`${file}: the pickle refers to storage "${key}", which the file does not contain`);
  }
  const opened: OpenFile = { path: file, fd, bigEndian: false };
  return { file: opened, tensors: locateTensors(opened, root, locations) };
}

/** Names each tensor and checks it fits its storage, before any tensor data is read. */
function locateTensors(file: OpenFile, root: unknown, locations: Map<string, StorageLocation>): Map<string, Located> {
  const out = new Map<string, Located>();
  for (const [name, tensor] of collectTensors(root, file.path)) {
    const fail = (msg: string): never => {
      throw new LlavaError(`${file.path}: tensor "${name}" ${msg}`);
    };
    const dtype = tensor.type.dtype;
    if (dtype === null) fail(`has dtype ${tensor.type.torchName}, which this project cannot read`);
    const elementSize = dtypeSize(dtype!);
    let numel = 1;
    for (const d of tensor.shape) numel *= d;
    if (!Number.isSafeInteger(numel * elementSize)) fail(`has an impossible shape [${tensor.shape.join(", ")}]`);
    const storage = locations.get(tensor.storage.key)!;
    if (numel > 0) {
      let last = tensor.storageOffset;
      tensor.shape.forEach((d, i) => (last += (d - 1) * tensor.stride[i]));
      const needed = (last + 1) * elementSize;
      const available = Math.min(tensor.storage.nbytes, storage.size);
      if (!Number.isSafeInteger(needed) || needed > available) {
        fail(
          `(shape [${tensor.shape.join(", ")}], stride [${tensor.stride.join(", ")}], offset ${tensor.storageOffset}) ` +
            `needs ${needed} bytes of storage ${storage.name}, which holds only ${available}: corrupt file`,
        );
      }
    }
    out.set(name, { file, tensor, storage, dtype: dtype!, elementSize, numel, contiguous: isContiguous(tensor.shape, tensor.stride) });
  }
  return out;
}

/** Row-major without gaps; strides of size-1 dimensions do not matter (as in torch's is_contiguous). */
function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] === 0) return true;
    if (shape[i] !== 1 && stride[i] !== expected) return false;
    expected *= shape[i];
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Reading tensor data

/** The tensor's elements in row-major order, in a fresh buffer, little-endian. */
function readTensorBytes(t: Located, into?: Uint8Array): Uint8Array {
  const n = t.numel * t.elementSize;
  const out = into && into.length >= n && into.byteOffset === 0 ? into.subarray(0, n) : new Uint8Array(n); // gatherStrided writes from the buffer's start
  if (t.numel === 0) return out;
  if (t.contiguous) t.storage.readInto(t.tensor.storageOffset * t.elementSize, out);
  else gatherStrided(t, out);
  if (t.file.bigEndian && t.elementSize > 1) swapBytes(out, t.elementSize);
  return out;
}

/**
 * Materialises a strided view (a transpose, a permute, an expand): reads the span of the storage it
 * covers once, then copies element by element, row by row when the last dimension is unit-stride.
 */
function gatherStrided(t: Located, out: Uint8Array): void {
  const { shape, stride, storageOffset } = t.tensor;
  const size = t.elementSize;
  let last = storageOffset;
  shape.forEach((d, i) => (last += (d - 1) * stride[i]));
  const span = new Uint8Array((last - storageOffset + 1) * size);
  t.storage.readInto(storageOffset * size, span);
  // Copy whole elements as 1-, 2- or 4-byte words (8-byte elements as two words); both buffers are fresh, so aligned.
  const words = size === 8 ? 2 : 1;
  const Words = size === 1 ? Uint8Array : size === 2 ? Uint16Array : Uint32Array;
  const src = new Words(span.buffer as ArrayBuffer);
  const dst = new Words(out.buffer as ArrayBuffer);
  const rank = shape.length;
  const inner = shape[rank - 1];
  const innerStride = stride[rank - 1];
  const index = new Array<number>(rank - 1).fill(0);
  let base = 0; // element offset into `span` of the current row
  for (let o = 0; o < t.numel; o += inner) {
    if (innerStride === 1) {
      dst.set(src.subarray(base * words, (base + inner) * words), o * words);
    } else {
      for (let j = 0; j < inner; j++) {
        const from = (base + j * innerStride) * words;
        const to = (o + j) * words;
        for (let w = 0; w < words; w++) dst[to + w] = src[from + w];
      }
    }
    // Odometer step over the outer dimensions.
    for (let d = rank - 2; d >= 0; d--) {
      index[d]++;
      base += stride[d];
      if (index[d] < shape[d]) break;
      base -= stride[d] * shape[d];
      index[d] = 0;
    }
  }
}

function swapBytes(bytes: Uint8Array, size: number): void {
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const tmp = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = tmp;
    }
  }
}

/** Contiguous, uncompressed, little-endian: converts in bounded chunks straight from the file. */
function readContiguousF32(t: Located): Float32Array {
  const out = new Float32Array(t.numel);
  const start = t.tensor.storageOffset * t.elementSize;
  if (t.dtype === "F32") {
    t.storage.readInto(start, new Uint8Array(out.buffer));
    return out;
  }
  const chunkElements = Math.min(t.numel, CONVERT_CHUNK_ELEMENTS);
  const chunk = new ArrayBuffer(chunkElements * t.elementSize);
  for (let i = 0; i < t.numel; i += chunkElements) {
    const n = Math.min(chunkElements, t.numel - i);
    t.storage.readInto(start + i * t.elementSize, new Uint8Array(chunk, 0, n * t.elementSize));
    widenToF32(t.dtype, chunk, n, out.subarray(i, i + n));
  }
  return out;
}

/** Converts the first `n` elements of a float buffer to float32 into `out`. */
function widenToF32(dtype: SafetensorsDtype, buffer: ArrayBuffer, n: number, out: Float32Array): Float32Array {
  switch (dtype) {
    case "F32":
      out.set(new Float32Array(buffer, 0, n));
      return out;
    case "F16":
      return f16ToF32Array(new Uint16Array(buffer, 0, n), out);
    case "BF16":
      return bf16ToF32Array(new Uint16Array(buffer, 0, n), out);
    case "F64":
      return f64ToF32Array(new Float64Array(buffer, 0, n), out);
    default:
      throw new LlavaError(`internal: widenToF32 called for ${dtype}`);
  }
}
