/**
 * Reader for the zip archives `torch.save` writes (PyTorch >= 1.6): the central directory is parsed
 * here (zip64 included, since torch's miniz writer always emits zip64 end records and multi-GiB
 * shards need 64-bit offsets) and entries are read by offset on demand, so a checkpoint never has to
 * be in memory as a whole. STORED entries (all torch writes) are read in place; DEFLATE entries
 * (a re-zipped archive) are inflated with node:zlib when read.
 */
import zlib from "node:zlib";
import { LlavaError } from "../util/errors.js";
import { readFully } from "./files.js";

export interface ZipEntry {
  name: string;
  /** 0 = STORED, 8 = DEFLATE; anything else fails when the entry is read. */
  method: number;
  /** Uncompressed size in bytes. */
  size: number;
  compressedSize: number;
  crc32: number;
  /** Absolute offset of the entry's (possibly compressed) bytes in the archive file. */
  dataOffset: number;
}

const EOCD_SIG = 0x06054b50;
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_LOCATOR_SIZE = 20;
const ZIP64_EOCD_SIG = 0x06064b50;
const ZIP64_EOCD_SIZE = 56;
const CENTRAL_SIG = 0x02014b50;
const CENTRAL_SIZE = 46;
const LOCAL_SIG = 0x04034b50;
const LOCAL_SIZE = 30;
const ZIP64_EXTRA_ID = 0x0001;
const MAX_COMMENT = 0xffff;

/** A central directory this large would describe millions of entries: refuse before allocating. */
const MAX_CENTRAL_DIRECTORY_BYTES = 256 * 1024 * 1024;
/** Largest entry `readAll` inflates or loads whole (the pickle, small records). */
export const MAX_WHOLE_ENTRY_BYTES = 1024 * 1024 * 1024;

function u16(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}

function u32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

/** A little-endian u64 as a number; `null` when it does not fit a safe integer. */
function u64(b: Uint8Array, at: number): number | null {
  const lo = u32(b, at);
  const hi = u32(b, at + 4);
  if (hi >= 0x200000) return null;
  return hi * 0x100000000 + lo;
}

const CRC_TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (the zip/zlib polynomial) of `bytes`. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export class ZipArchive {
  private constructor(
    readonly file: string,
    private readonly fd: number,
    readonly fileSize: number,
    /** Entries by name, in central-directory order. */
    readonly entries: Map<string, ZipEntry>,
  ) {}

  /** Parses the central directory of the open file `fd` (which the caller owns and closes). */
  static read(fd: number, file: string, fileSize: number): ZipArchive {
    const fail = (msg: string): never => {
      throw new LlavaError(`${file}: ${msg}`);
    };
    const dir = locateCentralDirectory(fd, file, fileSize, fail);
    const central = new Uint8Array(dir.size);
    readFully(fd, central, dir.offset, file);
    const entries = new Map<string, ZipEntry>();
    let at = 0;
    for (let i = 0; i < dir.count; i++) {
      if (at + CENTRAL_SIZE > central.length || u32(central, at) !== CENTRAL_SIG) {
        fail(`zip central directory entry ${i} of ${dir.count} is damaged (the file is corrupt or truncated)`);
      }
      const flags = u16(central, at + 8);
      const method = u16(central, at + 10);
      const crc = u32(central, at + 16);
      let compressedSize: number | null = u32(central, at + 20);
      let size: number | null = u32(central, at + 24);
      const nameLen = u16(central, at + 28);
      const extraLen = u16(central, at + 30);
      const commentLen = u16(central, at + 32);
      let localOffset: number | null = u32(central, at + 42);
      const end = at + CENTRAL_SIZE + nameLen + extraLen + commentLen;
      if (end > central.length) fail(`zip central directory entry ${i} runs past the directory's end (corrupt file)`);
      const nameBytes = central.subarray(at + CENTRAL_SIZE, at + CENTRAL_SIZE + nameLen);
      const name = decodeName(nameBytes, (flags & 0x800) !== 0);
      // Zip64: a 32-bit field of all ones means the real value is in the 0x0001 extra field,
      // which lists only the fields that overflowed, in this order.
      const needSize = size === 0xffffffff;
      const needComp = compressedSize === 0xffffffff;
      const needOffset = localOffset === 0xffffffff;
      if (needSize || needComp || needOffset) {
        const extra = findExtra(central.subarray(at + CENTRAL_SIZE + nameLen, at + CENTRAL_SIZE + nameLen + extraLen), ZIP64_EXTRA_ID);
        if (extra === null) fail(`zip entry "${name}" has 32-bit overflow markers but no zip64 extra field (corrupt file)`);
        let p = 0;
        const next = (): number | null => {
          if (p + 8 > extra!.length) fail(`zip entry "${name}": zip64 extra field is too short (corrupt file)`);
          const v = u64(extra!, p);
          p += 8;
          return v;
        };
        if (needSize) size = next();
        if (needComp) compressedSize = next();
        if (needOffset) localOffset = next();
      }
      if (size === null || compressedSize === null || localOffset === null) {
        fail(`zip entry "${name}" has a size or offset beyond 2^53 bytes (corrupt file)`);
      }
      if (flags & 0x1) fail(`zip entry "${name}" is encrypted; encrypted archives are not supported`);
      if (entries.has(name)) fail(`zip archive holds two entries named "${name}"; refusing an ambiguous archive`);
      const dataOffset = localDataOffset(fd, file, name, localOffset!, dir.offset, fail);
      if (dataOffset + compressedSize! > dir.offset) {
        fail(
          `zip entry "${name}" (${compressedSize} bytes at offset ${dataOffset}) runs past the end of the data ` +
            `area (${dir.offset} bytes): the file is truncated or corrupt`,
        );
      }
      if (method === 0 && compressedSize !== size) {
        fail(`zip entry "${name}" is stored uncompressed but its sizes differ (${compressedSize} vs ${size}): corrupt file`);
      }
      entries.set(name, { name, method, size: size!, compressedSize: compressedSize!, crc32: crc, dataOffset });
      at = end;
    }
    return new ZipArchive(file, fd, fileSize, entries);
  }

  /** Fills `target` with the entry's uncompressed bytes starting at byte `start` of the entry. */
  readInto(entry: ZipEntry, start: number, target: Uint8Array): void {
    if (start < 0 || start + target.length > entry.size) {
      throw new LlavaError(
        `${this.file}: read of bytes [${start}, ${start + target.length}) is outside zip entry "${entry.name}" (${entry.size} bytes)`,
      );
    }
    if (entry.method === 0) {
      readFully(this.fd, target, entry.dataOffset + start, this.file);
      return;
    }
    const whole = this.inflate(entry);
    target.set(whole.subarray(start, start + target.length));
  }

  /** The whole entry, uncompressed; `checkCrc` verifies it against the directory's CRC-32. */
  readAll(entry: ZipEntry, checkCrc: boolean): Uint8Array {
    if (entry.size > MAX_WHOLE_ENTRY_BYTES) {
      throw new LlavaError(`${this.file}: zip entry "${entry.name}" is ${entry.size} bytes, too large to load whole`);
    }
    let bytes: Uint8Array;
    if (entry.method === 0) {
      bytes = new Uint8Array(entry.size);
      readFully(this.fd, bytes, entry.dataOffset, this.file);
    } else {
      bytes = this.inflate(entry);
    }
    // torch >= 2.6 can skip checksums (config.save.compute_crc32=False) and then writes 0.
    if (checkCrc && entry.crc32 !== 0 && crc32(bytes) !== entry.crc32) {
      throw new LlavaError(`${this.file}: zip entry "${entry.name}" fails its CRC-32 check: the file is corrupt`);
    }
    return bytes;
  }

  private inflate(entry: ZipEntry): Uint8Array {
    if (entry.method !== 8) {
      throw new LlavaError(
        `${this.file}: zip entry "${entry.name}" uses compression method ${entry.method}; only stored and deflated entries are supported`,
      );
    }
    if (entry.size > MAX_WHOLE_ENTRY_BYTES) {
      throw new LlavaError(`${this.file}: compressed zip entry "${entry.name}" is ${entry.size} bytes, too large to inflate`);
    }
    const packed = new Uint8Array(entry.compressedSize);
    readFully(this.fd, packed, entry.dataOffset, this.file);
    let out: Buffer;
    try {
      out = zlib.inflateRawSync(packed, { maxOutputLength: Math.max(1, entry.size) });
    } catch (err) {
      throw new LlavaError(
        `${this.file}: zip entry "${entry.name}" does not inflate (${err instanceof Error ? err.message : String(err)}): corrupt file`,
      );
    }
    if (out.length !== entry.size) {
      throw new LlavaError(`${this.file}: zip entry "${entry.name}" inflates to ${out.length} bytes, expected ${entry.size}: corrupt file`);
    }
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }
}

interface CentralDirectory {
  offset: number;
  size: number;
  count: number;
}

/** Finds the end-of-central-directory record (and its zip64 counterpart) and checks its bounds. */
function locateCentralDirectory(fd: number, file: string, fileSize: number, fail: (msg: string) => never): CentralDirectory {
  if (fileSize < EOCD_SIZE) fail(`only ${fileSize} bytes long: too short to be a zip archive (truncated?)`);
  const tailLen = Math.min(fileSize, EOCD_SIZE + MAX_COMMENT + ZIP64_LOCATOR_SIZE);
  const tailStart = fileSize - tailLen;
  const tail = new Uint8Array(tailLen);
  readFully(fd, tail, tailStart, file);
  // The record ends the file (after its comment); failing that, accept one followed by stray bytes.
  let eocd = -1;
  let loose = -1;
  for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
    if (u32(tail, i) !== EOCD_SIG) continue;
    const end = i + EOCD_SIZE + u16(tail, i + 20);
    if (end === tailLen) {
      eocd = i;
      break;
    }
    if (end < tailLen && loose < 0) loose = i;
  }
  if (eocd < 0) eocd = loose;
  if (eocd < 0) {
    fail("no zip end-of-central-directory record: the file is truncated (an interrupted download?) or not a zip archive");
  }
  const diskNo = u16(tail, eocd + 4);
  const cdDisk = u16(tail, eocd + 6);
  let count = u16(tail, eocd + 10);
  let size: number | null = u32(tail, eocd + 12);
  let offset: number | null = u32(tail, eocd + 16);
  const eocdAbs = tailStart + eocd;
  let dataEnd = eocdAbs;
  const locatorAbs = eocdAbs - ZIP64_LOCATOR_SIZE;
  const locator = locatorAbs >= tailStart ? tail.subarray(eocd - ZIP64_LOCATOR_SIZE, eocd) : null;
  if (locator !== null && u32(locator, 0) === ZIP64_LOCATOR_SIG) {
    const recordAt = u64(locator, 8);
    if (recordAt === null || recordAt + ZIP64_EOCD_SIZE > locatorAbs) {
      fail("zip64 end-of-central-directory locator points outside the file (corrupt or truncated)");
    }
    const record = new Uint8Array(ZIP64_EOCD_SIZE);
    readFully(fd, record, recordAt!, file);
    if (u32(record, 0) !== ZIP64_EOCD_SIG) fail("zip64 end-of-central-directory record is missing (corrupt or truncated)");
    if (u32(record, 16) !== 0 || u32(record, 20) !== 0) fail("multi-disk zip archives are not supported");
    const total = u64(record, 32);
    size = u64(record, 40);
    offset = u64(record, 48);
    if (total === null || size === null || offset === null) fail("zip64 end record has values beyond 2^53 (corrupt file)");
    count = total!;
    dataEnd = recordAt!;
  } else {
    if (diskNo !== 0 || cdDisk !== 0) fail("multi-disk zip archives are not supported");
    if (count === 0xffff || size === 0xffffffff || offset === 0xffffffff) {
      fail("zip end record says zip64 but there is no zip64 locator (corrupt or truncated)");
    }
  }
  if (count === 0) fail("the zip archive is empty: not a torch.save checkpoint");
  if (offset! + size! > dataEnd) {
    fail(`zip central directory (${size} bytes at offset ${offset}) runs past its end record: the file is truncated or corrupt`);
  }
  if (size! > MAX_CENTRAL_DIRECTORY_BYTES) fail(`zip central directory is ${size} bytes, over the ${MAX_CENTRAL_DIRECTORY_BYTES}-byte limit`);
  if (count * CENTRAL_SIZE > size!) fail(`zip end record claims ${count} entries in a ${size}-byte directory (corrupt file)`);
  return { offset: offset!, size: size!, count };
}

/** Offset of an entry's data: after its local header, whose name and extra lengths may differ from the directory's. */
function localDataOffset(fd: number, file: string, name: string, localOffset: number, limit: number, fail: (msg: string) => never): number {
  if (localOffset + LOCAL_SIZE > limit) fail(`zip entry "${name}" has its local header outside the data area (corrupt or truncated)`);
  const header = new Uint8Array(LOCAL_SIZE);
  readFully(fd, header, localOffset, file);
  if (u32(header, 0) !== LOCAL_SIG) fail(`zip entry "${name}" has no local header at offset ${localOffset} (corrupt file)`);
  return localOffset + LOCAL_SIZE + u16(header, 26) + u16(header, 28);
}

function findExtra(extra: Uint8Array, id: number): Uint8Array | null {
  let p = 0;
  while (p + 4 <= extra.length) {
    const fieldId = u16(extra, p);
    const len = u16(extra, p + 2);
    if (p + 4 + len > extra.length) return null;
    if (fieldId === id) return extra.subarray(p + 4, p + 4 + len);
    p += 4 + len;
  }
  return null;
}

/** Entry names are UTF-8 when flag bit 11 is set, else CP437; torch only writes ASCII. */
function decodeName(bytes: Uint8Array, utf8: boolean): string {
  if (utf8) return new TextDecoder("utf-8").decode(bytes);
  return String.fromCharCode(...bytes);
}
