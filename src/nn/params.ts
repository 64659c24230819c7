/**
 * Reads named parameters out of a weight store into tensors, checking each shape, so that a
 * missing or mis-shaped tensor fails with the file and the name rather than deep in a kernel.
 */
import type { Backend } from "../tensor/backend.js";
import { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

/** What a model needs from a checkpoint: f32 data of a named tensor and its shape. */
export interface TensorSource {
  has(name: string): boolean;
  shape(name: string): number[];
  readF32(name: string): Float32Array;
  /** where the tensors come from, for messages */
  readonly description: string;
}

export class ParamLoader {
  constructor(
    readonly source: TensorSource,
    readonly backend: Backend,
    readonly prefix = "",
  ) {}

  private full(name: string): string {
    return this.prefix + name;
  }

  /** A loader for names under `prefix` (appended to this one's). */
  sub(prefix: string): ParamLoader {
    return new ParamLoader(this.source, this.backend, this.prefix + prefix);
  }

  has(name: string): boolean {
    return this.source.has(this.full(name));
  }

  /** The tensor `name`, which must have `shape`. */
  tensor(name: string, shape: number[]): Tensor {
    const full = this.full(name);
    if (!this.source.has(full)) throw new LlavaError(`${this.source.description}: missing tensor "${full}"`);
    const actual = this.source.shape(full);
    const fits = actual.length === shape.length && actual.every((d, i) => d === shape[i]);
    if (!fits) {
      throw new LlavaError(
        `${this.source.description}: tensor "${full}" has shape [${actual.join(", ")}], expected [${shape.join(", ")}]`,
      );
    }
    return new Tensor(this.source.readF32(full), shape, this.backend);
  }

  optional(name: string, shape: number[]): Tensor | null {
    return this.has(name) ? this.tensor(name, shape) : null;
  }
}
