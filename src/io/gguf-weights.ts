/**
 * A GGUF file's tensors as a WeightReader, under the names the file gives them and the shapes
 * PyTorch would give them (outermost dimension first). Tensors in a packed format the backend
 * multiplies (packed.ts) are handed over as their stored bytes, so a Q4_0 file stays Q4_0 in
 * memory; `readF32` dequantizes them for the few tensors read whole as f32.
 */
import type { GgufFile, GgufTensorInfo } from "./gguf.js";
import type { WeightDtype, WeightReader } from "./weights.js";
import { bf16ToF32Array, f16ToF32Array } from "../tensor/dtypes.js";
import { GGML_TYPES } from "../tensor/ggml-types.js";
import { type PackedFormat, unpackRow } from "../tensor/packed.js";
import { LlavaError } from "../util/errors.js";

/** The GGML types kept packed, as the packed formats that have the same block layout. */
const PACKED: Record<string, PackedFormat> = Object.fromEntries(
  GGML_TYPES.flatMap((t) => (t.packed !== null && t.packed !== "f32" ? [[t.name, t.packed]] : [])),
);

/** The GGML types this project can load: f32 and the packed formats. */
export const LOADABLE_GGML_TYPES = ["F32", ...Object.keys(PACKED)];

/** The packed format a GGML type is kept in; null for F32 (and types that cannot be loaded). */
export function packedFormatOfGgml(typeName: string): PackedFormat | null {
  return PACKED[typeName] ?? null;
}

const INTS: Record<string, { new (buffer: ArrayBuffer): Int8Array | Int16Array | Int32Array | BigInt64Array }> = {
  I8: Int8Array,
  I16: Int16Array,
  I32: Int32Array,
  I64: BigInt64Array,
};

export function ggufWeightReader(file: GgufFile): WeightReader<WeightDtype> {
  const info = (name: string): GgufTensorInfo => {
    const t = file.tensors.get(name);
    if (!t) throw new LlavaError(`${file.source}: no tensor "${name}"`);
    return t;
  };
  const loadable = (t: GgufTensorInfo) => {
    if (!LOADABLE_GGML_TYPES.includes(t.type.name) && !(t.type.name in INTS)) {
      throw new LlavaError(`${file.source}: tensor "${t.name}" is of type ${t.type.name}, which this project cannot load (supported: ${LOADABLE_GGML_TYPES.join(", ")})`);
    }
    return t;
  };
  /** the bytes in a buffer of their own (aligned for any typed view) */
  const ownBytes = (name: string) => {
    const b = file.tensorBytes(name);
    return b.byteOffset % 8 === 0 && b.buffer.byteLength === b.length ? b : b.slice();
  };
  return {
    source: file.source,
    names: () => [...file.tensors.keys()].sort(),
    has: (name) => file.tensors.has(name),
    info: (name) => {
      const t = info(name);
      return { dtype: t.type.name as WeightDtype, shape: [...t.shape] };
    },
    readRaw: (name) => {
      const t = loadable(info(name));
      return { dtype: t.type.name as WeightDtype, shape: [...t.shape], bytes: ownBytes(name) };
    },
    readF32: (name) => {
      const t = loadable(info(name));
      const bytes = ownBytes(name);
      const numel = t.ne.reduce((a, b) => a * b, 1);
      switch (t.type.name) {
        case "F32":
          return new Float32Array(bytes.buffer, bytes.byteOffset, numel);
        case "F16":
          return f16ToF32Array(new Uint16Array(bytes.buffer, bytes.byteOffset, numel));
        case "BF16":
          return bf16ToF32Array(new Uint16Array(bytes.buffer, bytes.byteOffset, numel));
      }
      const format = packedFormatOfGgml(t.type.name);
      if (!format) throw new LlavaError(`${file.source}: tensor "${name}" has integer type ${t.type.name}; read it with readInt, not readF32`);
      const cols = t.ne[0];
      const rows = numel / cols;
      const out = new Float32Array(numel);
      const m = { format, rows, cols, data: bytes };
      for (let r = 0; r < rows; r++) unpackRow(m, r, out.subarray(r * cols, (r + 1) * cols));
      return out;
    },
    readInt: (name) => {
      const t = loadable(info(name));
      const ctor = INTS[t.type.name];
      if (!ctor) throw new LlavaError(`${file.source}: tensor "${name}" has floating-point type ${t.type.name}; read it with readF32, not readInt`);
      return new ctor(ownBytes(name).slice().buffer);
    },
    filePaths: () => [file.source],
    close: () => file.close(),
  };
}
