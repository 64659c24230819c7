/**
 * The safetensors header: dtype table, validation of a parsed header, and the exact header bytes the
 * reference library (huggingface/safetensors, `tensor.rs` `prepare`) writes.
 *
 * File layout: u64 little-endian N, then N bytes of UTF-8 JSON
 * `{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}`
 * (padded with spaces to a multiple of 8), then the data section; offsets are relative to its start.
 */
import { LlavaError } from "../util/errors.js";

/** Every dtype the format defines that this project can read. */
export type SafetensorsDtype =
  | "BOOL"
  | "U8"
  | "I8"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "F64"
  | "I64"
  | "U64";

/**
 * Bytes per element, and the dtype's position in the library's `Dtype` enum, which is declared in
 * increasing alignment order; the writer sorts tensors by descending position, then by name.
 */
const DTYPES: Record<SafetensorsDtype, { size: number; order: number }> = {
  BOOL: { size: 1, order: 0 },
  U8: { size: 1, order: 1 },
  I8: { size: 1, order: 2 },
  I16: { size: 2, order: 5 },
  U16: { size: 2, order: 6 },
  F16: { size: 2, order: 7 },
  BF16: { size: 2, order: 8 },
  I32: { size: 4, order: 9 },
  U32: { size: 4, order: 10 },
  F32: { size: 4, order: 11 },
  F64: { size: 8, order: 12 },
  I64: { size: 8, order: 13 },
  U64: { size: 8, order: 14 },
};

/** Dtypes the format knows but this project cannot convert (named so the error can say so). */
const KNOWN_UNSUPPORTED = new Set(["F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"]);

/** The library refuses headers above 100 MB; so do we, before allocating anything. */
export const MAX_HEADER_BYTES = 100_000_000;

export function isSafetensorsDtype(s: string): s is SafetensorsDtype {
  return Object.prototype.hasOwnProperty.call(DTYPES, s);
}

export function dtypeSize(dtype: SafetensorsDtype): number {
  return DTYPES[dtype].size;
}

export function dtypeOrder(dtype: SafetensorsDtype): number {
  return DTYPES[dtype].order;
}

/** One tensor's header entry; offsets are relative to the data section. */
export interface HeaderEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

export interface ParsedHeader {
  metadata: Record<string, string>;
  /** Tensors in header order. */
  entries: Map<string, HeaderEntry>;
}

/** Number of elements of a shape (1 for a scalar). */
export function shapeNumel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isIndex(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/**
 * Validates a parsed header against the size of the data section that follows it.
 * `file` is only used in messages.
 */
export function validateHeader(json: unknown, dataLength: number, file: string): ParsedHeader {
  const fail = (msg: string): never => {
    throw new LlavaError(`safetensors file ${file}: ${msg}`);
  };
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    fail("header is not a JSON object");
  }
  const metadata: Record<string, string> = {};
  const entries = new Map<string, HeaderEntry>();
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        fail(`"__metadata__" must be an object of strings`);
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`"__metadata__" value for "${k}" is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    entries.set(name, validateEntry(name, value, dataLength, fail));
  }
  checkNoOverlap(entries, fail);
  return { metadata, entries };
}

function validateEntry(
  name: string,
  value: unknown,
  dataLength: number,
  fail: (msg: string) => never,
): HeaderEntry {
  const where = `tensor "${name}"`;
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail(`${where}: entry is not an object`);
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== "string") fail(`${where}: missing "dtype"`);
  const dt = dtype as string;
  if (!isSafetensorsDtype(dt)) {
    fail(
      KNOWN_UNSUPPORTED.has(dt)
        ? `${where}: dtype ${dt} is not supported (supported: ${Object.keys(DTYPES).join(", ")})`
        : `${where}: unknown dtype "${dt}" (supported: ${Object.keys(DTYPES).join(", ")})`,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isIndex)) fail(`${where}: "shape" must be a list of non-negative integers`);
  const dims = shape as number[];
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
    fail(`${where}: "data_offsets" must be [begin, end] with non-negative integers`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) fail(`${where}: data_offsets [${begin}, ${end}] end before they begin`);
  const size = dtypeSize(dt as SafetensorsDtype);
  const numel = shapeNumel(dims);
  const expected = numel * size;
  if (!Number.isSafeInteger(expected)) fail(`${where}: shape ${fmtShape(dims)} is too large`);
  if (expected !== end - begin) {
    fail(
      `${where}: shape ${fmtShape(dims)} of ${dt} needs ${expected} bytes ` +
        `but data_offsets [${begin}, ${end}] hold ${end - begin}`,
    );
  }
  if (end > dataLength) {
    fail(
      `${where}: data_offsets [${begin}, ${end}] run past the end of the data section ` +
        `(${dataLength} bytes): the file is truncated or corrupt`,
    );
  }
  return { dtype: dt as SafetensorsDtype, shape: dims, begin, end };
}

function checkNoOverlap(entries: Map<string, HeaderEntry>, fail: (msg: string) => never): void {
  const spans = [...entries].filter(([, e]) => e.end > e.begin).sort((a, b) => a[1].begin - b[1].begin);
  for (let i = 1; i < spans.length; i++) {
    const [prevName, prev] = spans[i - 1];
    const [name, cur] = spans[i];
    if (cur.begin < prev.end) {
      fail(
        `tensors "${prevName}" [${prev.begin}, ${prev.end}] and "${name}" [${cur.begin}, ${cur.end}] ` +
          `have overlapping data_offsets`,
      );
    }
  }
}

/** Compares strings by their UTF-8 bytes, like Rust's `String::cmp`. */
export function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

export interface HeaderInput {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
}

export interface LaidOutTensor<T extends HeaderInput> {
  tensor: T;
  begin: number;
  end: number;
}

/**
 * Lays tensors out as the library does (descending dtype alignment, then name) and returns the
 * padded header bytes plus each tensor's data span. Metadata keys are written sorted (the library
 * iterates a hash map, so its order is arbitrary; sorting keeps our output deterministic).
 */
export function buildHeader<T extends HeaderInput>(
  tensors: readonly T[],
  metadata: Record<string, string> | undefined,
): { header: Uint8Array; layout: LaidOutTensor<T>[]; dataLength: number } {
  const sorted = [...tensors].sort(
    (a, b) => dtypeOrder(b.dtype) - dtypeOrder(a.dtype) || compareUtf8(a.name, b.name),
  );
  const parts: string[] = [];
  if (metadata !== undefined) {
    const keys = Object.keys(metadata).sort(compareUtf8);
    const sortedMeta: Record<string, string> = {};
    for (const k of keys) sortedMeta[k] = metadata[k];
    parts.push(`"__metadata__":${JSON.stringify(sortedMeta)}`);
  }
  const layout: LaidOutTensor<T>[] = [];
  let offset = 0;
  for (const t of sorted) {
    const n = shapeNumel(t.shape) * dtypeSize(t.dtype);
    layout.push({ tensor: t, begin: offset, end: offset + n });
    const info = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + n] };
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify(info)}`);
    offset += n;
  }
  const json = Buffer.from(`{${parts.join(",")}}`, "utf8");
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  return { header: padded, layout, dataLength: offset };
}
