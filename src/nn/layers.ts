/**
 * Parameterised building blocks shared by every model. Each holds its parameters as tensors
 * and lists them with PyTorch-style dotted names, so training, saving and LoRA can walk them.
 */
import { activation, addScaled, dropout, embedding, layerNorm, linear, rmsNorm } from "../tensor/ops.js";
import type { Activation } from "../tensor/backend.js";
import { unpackRow } from "../tensor/packed.js";
import { outputBuffer, PackedTensor, Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import type { Rng } from "../util/random.js";

export type NamedParameters = Array<[string, Tensor]>;

export interface Module {
  namedParameters(prefix?: string): NamedParameters;
}

/** A low-rank update y += scale · B(A x) of a Linear layer (LoRA), kept apart from its weight. */
export interface LoraAdapter {
  /** [r, in] */
  a: Tensor;
  /** [out, r] */
  b: Tensor;
  scale: number;
  /** PEFT's lora_dropout: applied to the adapter's input only, in training only */
  dropout?: number;
}

export interface LinearForwardOptions {
  /** each row of x gets exactly its result alone (see ops.linear) */
  rowwise?: boolean;
  /** training: the random stream of LoRA dropout (without it, dropout is off, as in eval mode) */
  rng?: Rng | null;
}

export const join = (prefix: string, name: string) => (prefix && name ? `${prefix}.${name}` : prefix || name);

/** Parameters of named child modules, in order. */
export function childParameters(prefix: string, children: Array<[string, Module | null | undefined]>): NamedParameters {
  return children.flatMap(([name, m]) => (m ? m.namedParameters(join(prefix, name)) : []));
}

export class Linear implements Module {
  /** an unmerged LoRA update, applied on top of the (possibly packed) weight */
  adapter: LoraAdapter | null = null;

  constructor(public weight: Tensor | PackedTensor, readonly bias: Tensor | null = null) {}

  get inFeatures(): number {
    return this.weight.shape[1];
  }

  get outFeatures(): number {
    return this.weight.shape[0];
  }

  forward(x: Tensor, opts: LinearForwardOptions = {}): Tensor {
    const y = linear(x, this.weight, this.bias, opts);
    if (!this.adapter) return y;
    const { a, b, scale: s, dropout: p = 0 } = this.adapter;
    const input = opts.rng && p > 0 ? dropout(x, p, opts.rng) : x;
    return addScaled(y, linear(linear(input, a, null, opts), b, null, opts), s);
  }

  namedParameters(prefix = ""): NamedParameters {
    const out: NamedParameters = this.weight instanceof Tensor ? [[join(prefix, "weight"), this.weight]] : [];
    if (this.bias) out.push([join(prefix, "bias"), this.bias]);
    if (this.adapter) out.push([join(prefix, "lora_A.weight"), this.adapter.a], [join(prefix, "lora_B.weight"), this.adapter.b]);
    return out;
  }
}

/** Modules that hold Linear layers by their PyTorch names (for LoRA and quantization). */
export interface HasLinears {
  namedLinears(prefix?: string): Array<[string, Linear]>;
}

export class Embedding implements Module {
  /** a packed (16-bit) table is frozen: its rows are widened on lookup */
  constructor(readonly weight: Tensor | PackedTensor) {}

  forward(ids: Int32Array, shape: number[] = [ids.length]): Tensor {
    if (this.weight instanceof Tensor) return embedding(this.weight, ids, shape);
    const { matrix, backend } = this.weight;
    const out = outputBuffer(ids.length * matrix.cols);
    ids.forEach((id, i) => {
      if (id < 0 || id >= matrix.rows) throw new LlavaError(`embedding: token id ${id} outside the vocabulary of ${matrix.rows}`);
      unpackRow(matrix, id, out.subarray(i * matrix.cols, (i + 1) * matrix.cols));
    });
    return new Tensor(out, [...shape, matrix.cols], backend);
  }

  namedParameters(prefix = ""): NamedParameters {
    return this.weight instanceof Tensor ? [[join(prefix, "weight"), this.weight]] : [];
  }
}

export class LayerNorm implements Module {
  constructor(readonly weight: Tensor, readonly bias: Tensor, readonly eps: number) {}

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }

  namedParameters(prefix = ""): NamedParameters {
    return [[join(prefix, "weight"), this.weight], [join(prefix, "bias"), this.bias]];
  }
}

export class RMSNorm implements Module {
  constructor(readonly weight: Tensor, readonly eps: number) {}

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }

  namedParameters(prefix = ""): NamedParameters {
    return [[join(prefix, "weight"), this.weight]];
  }
}

/** Maps a transformers `hidden_act` name to a kernel activation. */
export function activationByName(name: string): Activation {
  switch (name) {
    case "gelu":
      return "gelu";
    case "quick_gelu":
      return "quick_gelu";
    case "silu":
    case "swish":
      return "silu";
    case "gelu_new":
    case "gelu_pytorch_tanh":
    case "gelu_fast":
      return "gelu_tanh";
    case "relu":
      return "relu";
    default:
      throw new LlavaError(`unsupported activation "${name}" (supported: gelu, quick_gelu, silu, gelu_pytorch_tanh, relu)`);
  }
}

export const act = (x: Tensor, kind: Activation) => activation(x, kind);
