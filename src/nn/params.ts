/**
 * Reads named parameters out of a weight store into tensors, checking each shape, so that a
 * missing or mis-shaped tensor fails with the file and the name rather than deep in a kernel.
 */
import type { Backend } from "../tensor/backend.js";
import { type PackedFormat, packMatrix, QUANT_BLOCK } from "../tensor/packed.js";
import { PackedTensor, Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

/**
 * What a model needs from a checkpoint: f32 data of a named tensor and its shape. The weight
 * stores of src/io (safetensors, PyTorch .bin) have this shape.
 */
export interface TensorSource {
  /** where the tensors come from, for messages */
  readonly source: string;
  has(name: string): boolean;
  info(name: string): { shape: number[]; dtype?: string };
  readF32(name: string): Float32Array;
  /** the stored bytes, when the source can give them (lets bf16/f16 weights stay as stored) */
  readRaw?(name: string): { bytes: Uint8Array };
}

/** Several sources as one: a name is read from the first source that has it. */
export function overlaySources(sources: TensorSource[]): TensorSource {
  const find = (name: string) => sources.find((s) => s.has(name));
  return {
    source: sources.map((s) => s.source).join(" + "),
    has: (name) => find(name) !== undefined,
    info: (name) => (find(name) ?? sources[0]).info(name),
    readF32: (name) => (find(name) ?? sources[0]).readF32(name),
    readRaw: (name) => {
      const s = find(name) ?? sources[0];
      if (!s.readRaw) throw new Error(`${s.source}: raw reads are not supported`);
      return s.readRaw(name);
    },
  };
}

/** A source whose tensors are known under other names: `rename` maps a stored name to the new one (or null to hide it). */
export function renamedSource(src: TensorSource & { names(): string[] }, rename: (name: string) => string | null): TensorSource {
  const map = new Map<string, string>();
  for (const n of src.names()) {
    const r = rename(n);
    if (r !== null) map.set(r, n);
  }
  return {
    source: src.source,
    has: (name) => map.has(name),
    info: (name) => src.info(map.get(name) ?? name),
    readF32: (name) => src.readF32(map.get(name) ?? name),
    readRaw: src.readRaw && ((name) => src.readRaw!(map.get(name) ?? name)),
  };
}

export class ParamLoader {
  constructor(
    readonly source: TensorSource,
    readonly backend: Backend,
    readonly prefix = "",
    /** the format Linear weights are kept in (null: f32) */
    readonly linearFormat: PackedFormat | null = null,
  ) {}

  /** The same loader, keeping Linear weights in `format`. */
  packing(format: PackedFormat | null): ParamLoader {
    return new ParamLoader(this.source, this.backend, this.prefix, format);
  }

  private full(name: string): string {
    return this.prefix + name;
  }

  /** A loader for names under `prefix` (appended to this one's). */
  sub(prefix: string): ParamLoader {
    return new ParamLoader(this.source, this.backend, this.prefix + prefix, this.linearFormat);
  }

  has(name: string): boolean {
    return this.source.has(this.full(name));
  }

  /** The tensor `name`, which must have `shape`. */
  tensor(name: string, shape: number[]): Tensor {
    return new Tensor(this.source.readF32(this.checked(name, shape)), shape, this.backend);
  }

  /**
   * A Linear weight [out, in], packed in this loader's format when set. bf16/f16 weights
   * stored in that very format are taken as stored; quantized formats need `in` to be a
   * whole number of blocks, else the layer stays f32.
   */
  linearWeight(name: string, shape: [number, number]): Tensor | PackedTensor {
    return this.weightIn(name, shape, this.linearFormat);
  }

  /** A 2-D weight kept in `format` (null: f32), as `linearWeight` describes. */
  weightIn(name: string, shape: [number, number], format: PackedFormat | null): Tensor | PackedTensor {
    if (!format || ((format === "q8_0" || format === "q4_0") && shape[1] % QUANT_BLOCK !== 0)) return this.tensor(name, shape);
    const full = this.checked(name, shape);
    const stored = this.source.info(full).dtype;
    if (this.source.readRaw && stored === format.toUpperCase()) {
      const { bytes } = this.source.readRaw(full);
      return new PackedTensor({ format, rows: shape[0], cols: shape[1], data: bytes }, this.backend);
    }
    return new PackedTensor(packMatrix(this.source.readF32(full), shape[0], shape[1], format), this.backend);
  }

  /** The full name of `name` after checking that it exists with `shape`. */
  private checked(name: string, shape: number[]): string {
    const full = this.full(name);
    if (!this.source.has(full)) throw new LlavaError(`${this.source.source}: missing tensor "${full}"`);
    const actual = this.source.info(full).shape;
    const fits = actual.length === shape.length && actual.every((d, i) => d === shape[i]);
    if (!fits) {
      throw new LlavaError(
        `${this.source.source}: tensor "${full}" has shape [${actual.join(", ")}], expected [${shape.join(", ")}]`,
      );
    }
    return full;
  }

  optional(name: string, shape: number[]): Tensor | null {
    return this.has(name) ? this.tensor(name, shape) : null;
  }
}
