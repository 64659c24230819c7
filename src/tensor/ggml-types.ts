/**
 * The GGML tensor types (ggml.h's `enum ggml_type` and ggml.c's type traits): the id stored in
 * a GGUF file, the name, how many weights one block holds and how many bytes it takes. The
 * types this project can read, pack and multiply are the ones with a `packed` format (or f32);
 * the others are listed by name so a file holding them is refused with a clear message.
 */
import type { PackedFormat } from "./packed.js";

export interface GgmlType {
  readonly id: number;
  readonly name: string;
  /** weights per block (1 for the plain float types) */
  readonly blockSize: number;
  /** bytes per block */
  readonly blockBytes: number;
  /** the packed format that holds it, "f32" for F32, null when unsupported */
  readonly packed: PackedFormat | "f32" | null;
}

const type = (id: number, name: string, blockSize: number, blockBytes: number, packed: GgmlType["packed"]): GgmlType =>
  ({ id, name, blockSize, blockBytes, packed });

/** Every GGML type, by id (ids 4 and 5, the removed Q4_2/Q4_3, are absent). */
export const GGML_TYPES: readonly GgmlType[] = [
  type(0, "F32", 1, 4, "f32"),
  type(1, "F16", 1, 2, "f16"),
  type(2, "Q4_0", 32, 18, "q4_0"),
  type(3, "Q4_1", 32, 20, "q4_1"),
  type(6, "Q5_0", 32, 22, "q5_0"),
  type(7, "Q5_1", 32, 24, "q5_1"),
  type(8, "Q8_0", 32, 34, "q8_0"),
  type(9, "Q8_1", 32, 36, null),
  type(10, "Q2_K", 256, 84, null),
  type(11, "Q3_K", 256, 110, null),
  type(12, "Q4_K", 256, 144, "q4_k"),
  type(13, "Q5_K", 256, 176, "q5_k"),
  type(14, "Q6_K", 256, 210, "q6_k"),
  type(15, "Q8_K", 256, 292, null),
  type(16, "IQ2_XXS", 256, 66, null),
  type(17, "IQ2_XS", 256, 74, null),
  type(18, "IQ3_XXS", 256, 98, null),
  type(19, "IQ1_S", 256, 50, null),
  type(20, "IQ4_NL", 32, 18, null),
  type(21, "IQ3_S", 256, 110, null),
  type(22, "IQ2_S", 256, 82, null),
  type(23, "IQ4_XS", 256, 136, null),
  type(24, "I8", 1, 1, null),
  type(25, "I16", 1, 2, null),
  type(26, "I32", 1, 4, null),
  type(27, "I64", 1, 8, null),
  type(28, "F64", 1, 8, null),
  type(29, "IQ1_M", 256, 56, null),
  type(30, "BF16", 1, 2, "bf16"),
  type(34, "TQ1_0", 256, 54, null),
  type(35, "TQ2_0", 256, 66, null),
  type(39, "MXFP4", 32, 17, null),
];

const BY_ID = new Map(GGML_TYPES.map((t) => [t.id, t]));
const BY_PACKED = new Map(GGML_TYPES.filter((t) => t.packed !== null).map((t) => [t.packed, t]));

/** The type with GGUF id `id`, or undefined for an id GGML never defined. */
export function ggmlTypeById(id: number): GgmlType | undefined {
  return BY_ID.get(id);
}

/** The GGML type that stores a packed format (or f32) byte for byte. */
export function ggmlTypeOf(format: PackedFormat | "f32"): GgmlType {
  const t = BY_PACKED.get(format);
  if (!t) throw new Error(`no GGML type stores ${format}`);
  return t;
}

/** Bytes of `count` weights of a type (count must be whole blocks). */
export function ggmlBytes(t: GgmlType, count: number): number {
  if (count % t.blockSize !== 0) throw new Error(`${t.name} holds whole blocks of ${t.blockSize}, got ${count} values`);
  return (count / t.blockSize) * t.blockBytes;
}
