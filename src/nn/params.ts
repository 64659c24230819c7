/**
 * Reads named parameters out of a weight store into tensors, checking each shape, so that a
 * missing or mis-shaped tensor fails with the file and the name rather than deep in a kernel.
 */
import type { Backend } from "../tensor/backend.js";
import { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

/**
 * What a model needs from a checkpoint: f32 data of a named tensor and its shape. The weight
 * stores of src/io (safetensors, PyTorch .bin) have this shape.
 */
export interface TensorSource {
  /** where the tensors come from, for messages */
  readonly source: string;
  has(name: string): boolean;
  info(name: string): { shape: number[] };
  readF32(name: string): Float32Array;
}

/** Several sources as one: a name is read from the first source that has it. */
export function overlaySources(sources: TensorSource[]): TensorSource {
  const find = (name: string) => sources.find((s) => s.has(name));
  return {
    source: sources.map((s) => s.source).join(" + "),
    has: (name) => find(name) !== undefined,
    info: (name) => (find(name) ?? sources[0]).info(name),
    readF32: (name) => (find(name) ?? sources[0]).readF32(name),
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
  };
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
    if (!this.source.has(full)) throw new LlavaError(`${this.source.source}: missing tensor "${full}"`);
    const actual = this.source.info(full).shape;
    const fits = actual.length === shape.length && actual.every((d, i) => d === shape[i]);
    if (!fits) {
      throw new LlavaError(
        `${this.source.source}: tensor "${full}" has shape [${actual.join(", ")}], expected [${shape.join(", ")}]`,
      );
    }
    return new Tensor(this.source.readF32(full), shape, this.backend);
  }

  optional(name: string, shape: number[]): Tensor | null {
    return this.has(name) ? this.tensor(name, shape) : null;
  }
}
