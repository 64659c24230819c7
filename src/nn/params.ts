/**
 * Reads named parameters out of a weight store into tensors, checking each shape, so that a
 * missing or mis-shaped tensor fails with the file and the name rather than deep in a kernel.
 */
import type { Backend } from "../tensor/backend.js";
import { fittingFormat, type PackedFormat, type PackedMatrix, packMatrix, packStoredHalfMatrix } from "../tensor/packed.js";
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
  readRaw?(name: string, into?: Uint8Array): { bytes: Uint8Array };
  /** the name as the files spell it, for messages (a source may rename) */
  storedName?(name: string): string;
}

/** The format a weight is kept in, chosen by its full name and shape (null: f32). */
export type FormatPolicy = (name: string, shape: number[]) => PackedFormat | null;

const allF32: FormatPolicy = () => null;

/** A tensor a model reads: its full name and shape (null: one it knows of but skips, any shape), and whether it may be absent. */
export interface TensorDeclaration {
  name: string;
  shape: number[] | null;
  optional: boolean;
}

/**
 * Zeros of any length without touching memory: views of one zero-filled buffer, grown as needed.
 * The pages of a fresh ArrayBuffer are not resident until written, and a dry run never writes.
 */
let zeroBuffer = new ArrayBuffer(0);
function zeros(n: number): Float32Array {
  if (zeroBuffer.byteLength < 4 * n) zeroBuffer = new ArrayBuffer(4 * n);
  return new Float32Array(zeroBuffer, 0, n);
}

/** A source with no tensors, for dry runs. */
const NOTHING: TensorSource = {
  source: "(dry run)",
  has: () => false,
  info: (name) => {
    throw new LlavaError(`dry run: no tensor "${name}"`);
  },
  readF32: (name) => {
    throw new LlavaError(`dry run: no tensor "${name}"`);
  },
};

export class ParamLoader {
  constructor(
    readonly source: TensorSource,
    readonly backend: Backend,
    readonly prefix = "",
    /** the format each 2-D weight read with `matrix` is kept in */
    readonly policy: FormatPolicy = allF32,
    /** in a dry run: every tensor asked for, shared by every sub-loader (and no data is read) */
    readonly declared: Map<string, TensorDeclaration> | null = null,
    /** one buffer, shared by the sub-loaders, that 16-bit weights are read into before packing */
    private readonly staging = { bytes: new Uint8Array(0) },
  ) {}

  /**
   * A loader that reads no data: building a model with it records the tensors the model reads
   * (`declared`) and gives it zero-valued tensors that take no memory. `present` answers `has`
   * (for choices like tied embeddings), as a real load would.
   */
  static dryRun(backend: Backend, present: TensorSource = NOTHING): ParamLoader {
    return new ParamLoader(present, backend, "", allF32, new Map());
  }

  private full(name: string): string {
    return this.prefix + name;
  }

  /** A loader for names under `prefix` (appended to this one's). */
  sub(prefix: string): ParamLoader {
    return new ParamLoader(this.source, this.backend, this.prefix + prefix, this.policy, this.declared, this.staging);
  }

  has(name: string): boolean {
    return this.source.has(this.full(name));
  }

  /** The tensor `name`, which must have `shape`. */
  tensor(name: string, shape: number[]): Tensor {
    if (this.declared) return this.declare(name, shape, false);
    return new Tensor(this.source.readF32(this.checked(name, shape)), shape, this.backend);
  }

  private declare(name: string, shape: number[], optional: boolean): Tensor {
    this.declared!.set(this.full(name), { name: this.full(name), shape: [...shape], optional });
    return new Tensor(zeros(shape.reduce((a, b) => a * b, 1)), shape, this.backend);
  }

  /**
   * A 2-D weight [rows, cols] (a Linear layer's or an embedding table), kept in the format the
   * policy gives its name. bf16/f16 weights stored in that very format are taken as stored;
   * quantized formats need `cols` to be a whole number of blocks, else the weight stays f32.
   * Packed matrices are kept in the layout the backend reads fastest (kernelLayout).
   */
  matrix(name: string, shape: [number, number]): Tensor | PackedTensor {
    if (this.declared) return this.declare(name, shape, false);
    const full = this.checked(name, shape);
    const format = fittingFormat(this.policy(full, shape), shape[1]);
    if (!format) {
      return new Tensor(this.source.readF32(full), shape, this.backend);
    }
    return new PackedTensor(this.backend.kernelLayout(this.packed(full, shape, format)), this.backend);
  }

  private packed(full: string, shape: [number, number], format: PackedFormat): PackedMatrix {
    const stored = this.source.info(full).dtype;
    if (this.source.readRaw && stored === format.toUpperCase()) {
      const { bytes } = this.source.readRaw(full);
      return { format, rows: shape[0], cols: shape[1], data: bytes };
    }
    if (this.source.readRaw && (stored === "BF16" || stored === "F16")) {
      // 16-bit weights packed from their stored bits, with no f32 copy of the matrix
      const n = 2 * shape[0] * shape[1];
      if (this.staging.bytes.length < n) this.staging.bytes = new Uint8Array(n);
      const { bytes } = this.source.readRaw(full, this.staging.bytes);
      return packStoredHalfMatrix(bytes, stored, shape[0], shape[1], format);
    }
    return packMatrix(this.source.readF32(full), shape[0], shape[1], format);
  }

  /** Marks tensors that checkpoints carry but the model does not use (e.g. CLIP's post_layernorm), so they count as known. */
  skip(...names: string[]): void {
    for (const n of names) this.declared?.set(this.full(n), { name: this.full(n), shape: null, optional: true });
  }

  /** The full name of `name` after checking that it exists with `shape`. */
  private checked(name: string, shape: number[]): string {
    const full = this.full(name);
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
    if (this.declared) return this.declare(name, shape, true);
    return this.has(name) ? this.tensor(name, shape) : null;
  }
}
