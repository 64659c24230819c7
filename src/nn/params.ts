/**
 * Reads named parameters out of a weight store into tensors, checking each shape, so that a
 * missing or mis-shaped tensor fails with the file and the name rather than deep in a kernel.
 */
import type { Backend } from "../tensor/backend.js";
import { fittingFormat, type PackedFormat, packMatrix } from "../tensor/packed.js";
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
  /** the name as the files spell it, for messages (a source may rename) */
  storedName?(name: string): string;
}

/** The format a weight is kept in, chosen by its full name and shape (null: f32). */
export type FormatPolicy = (name: string, shape: number[]) => PackedFormat | null;

const allF32: FormatPolicy = () => null;

export class ParamLoader {
  constructor(
    readonly source: TensorSource,
    readonly backend: Backend,
    readonly prefix = "",
    /** the format each 2-D weight read with `matrix` is kept in */
    readonly policy: FormatPolicy = allF32,
    /** full names read (or skipped) so far, shared by every sub-loader: what the model used */
    readonly used = new Set<string>(),
  ) {}

  private full(name: string): string {
    return this.prefix + name;
  }

  /** A loader for names under `prefix` (appended to this one's). */
  sub(prefix: string): ParamLoader {
    return new ParamLoader(this.source, this.backend, this.prefix + prefix, this.policy, this.used);
  }

  has(name: string): boolean {
    return this.source.has(this.full(name));
  }

  /** The tensor `name`, which must have `shape`. */
  tensor(name: string, shape: number[]): Tensor {
    return new Tensor(this.source.readF32(this.checked(name, shape)), shape, this.backend);
  }

  /**
   * A 2-D weight [rows, cols] (a Linear layer's or an embedding table), kept in the format the
   * policy gives its name. bf16/f16 weights stored in that very format are taken as stored;
   * quantized formats need `cols` to be a whole number of blocks, else the weight stays f32.
   */
  matrix(name: string, shape: [number, number]): Tensor | PackedTensor {
    const full = this.checked(name, shape);
    const format = fittingFormat(this.policy(full, shape), shape[1]);
    if (!format) {
      return new Tensor(this.source.readF32(full), shape, this.backend);
    }
    if (this.source.readRaw && this.source.info(full).dtype === format.toUpperCase()) {
      const { bytes } = this.source.readRaw(full);
      return new PackedTensor({ format, rows: shape[0], cols: shape[1], data: bytes }, this.backend);
    }
    return new PackedTensor(packMatrix(this.source.readF32(full), shape[0], shape[1], format), this.backend);
  }

  /** Marks tensors that checkpoints carry but the model does not use (e.g. CLIP's post_layernorm), so they count as known. */
  skip(...names: string[]): void {
    for (const n of names) if (this.has(n)) this.used.add(this.full(n));
  }

  /** The full name of `name` after checking that it exists with `shape`. */
  private checked(name: string, shape: number[]): string {
    const full = this.full(name);
    this.used.add(full);
    const shown = this.source.storedName?.(full) ?? full;
    if (!this.source.has(full)) throw new LlavaError(`${this.source.source}: missing tensor "${shown}"`);
    const actual = this.source.info(full).shape;
    const fits = actual.length === shape.length && actual.every((d, i) => d === shape[i]);
    if (!fits) {
      throw new LlavaError(
        `${this.source.source}: tensor "${shown}" has shape [${actual.join(", ")}], expected [${shape.join(", ")}]`,
      );
    }
    return full;
  }

  optional(name: string, shape: number[]): Tensor | null {
    return this.has(name) ? this.tensor(name, shape) : null;
  }
}
