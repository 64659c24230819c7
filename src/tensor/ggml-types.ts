/**
 * The GGML tensor types (ggml.h `enum ggml_type`, ggml.c `type_traits`): the id stored in GGUF
 * files, the name llama.cpp prints, and the block each row is cut into (weights per block,
 * bytes per block). A row of `cols` weights takes cols / blockSize blocks.
 */
import { LlavaError } from "../util/errors.js";

export interface GgmlType {
  readonly id: number;
  readonly name: string;
  readonly blockSize: number;
  readonly blockBytes: number;
}

const table = (rows: Array<[string, number, number, number]>) =>
  Object.fromEntries(rows.map(([name, id, blockSize, blockBytes]) => [name, { id, name, blockSize, blockBytes }])) as Record<string, GgmlType>;

/** By llama.cpp's name (upper case, as `gguf-dump` prints them). */
export const GGML_TYPES = table([
  ["F32", 0, 1, 4],
  ["F16", 1, 1, 2],
  ["Q4_0", 2, 32, 18],
  ["Q4_1", 3, 32, 20],
  ["Q5_0", 6, 32, 22],
  ["Q5_1", 7, 32, 24],
  ["Q8_0", 8, 32, 34],
  ["Q8_1", 9, 32, 36],
  ["Q2_K", 10, 256, 84],
  ["Q3_K", 11, 256, 110],
  ["Q4_K", 12, 256, 144],
  ["Q5_K", 13, 256, 176],
  ["Q6_K", 14, 256, 210],
  ["Q8_K", 15, 256, 292],
  ["I8", 24, 1, 1],
  ["I16", 25, 1, 2],
  ["I32", 26, 1, 4],
  ["I64", 27, 1, 8],
  ["F64", 28, 1, 8],
  ["BF16", 30, 1, 2],
]);

export type GgmlTypeName = keyof typeof GGML_TYPES & string;

const byId = new Map(Object.values(GGML_TYPES).map((t) => [t.id, t]));

/** The type with GGUF id `id`; an unknown id fails naming the ones known. */
export function ggmlTypeById(id: number, source: string): GgmlType {
  const t = byId.get(id);
  if (!t) throw new LlavaError(`${source}: unknown GGML tensor type ${id} (known: ${[...byId.values()].map((x) => `${x.name}=${x.id}`).join(", ")})`);
  return t;
}

/** Bytes of a row of `cols` weights; `cols` must be whole blocks. */
export function ggmlRowBytes(type: GgmlType, cols: number): number {
  if (cols % type.blockSize !== 0) throw new LlavaError(`${type.name} rows hold whole blocks of ${type.blockSize} values; ${cols} is not a multiple`);
  return (cols / type.blockSize) * type.blockBytes;
}

/** Bytes of a tensor with GGML dims `ne` (ne[0] = the row length). */
export function ggmlTensorBytes(type: GgmlType, ne: readonly number[]): number {
  return ggmlRowBytes(type, ne[0] ?? 1) * ne.slice(1).reduce((a, b) => a * b, 1);
}
