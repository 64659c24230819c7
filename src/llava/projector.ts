/**
 * The multimodal projector from vision features to the LLM's embedding space: `linear`,
 * `mlp{N}x_gelu` (Linear, then N-1 times GELU + Linear) or `identity`.
 */
import { childParameters, Linear, type Module, type NamedParameters } from "../nn/layers.js";
import type { ParamLoader } from "../nn/params.js";
import type { Activation } from "../tensor/backend.js";
import { activation } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

/** Number of linear layers of a projector type (0 for identity). */
export function projectorDepth(type: string): number {
  if (type === "identity") return 0;
  if (type === "linear") return 1;
  const m = /^mlp(\d+)x_gelu$/.exec(type);
  if (m && Number(m[1]) >= 1) return Number(m[1]);
  throw new LlavaError(`unknown mm_projector_type "${type}" (supported: linear, mlp{N}x_gelu, identity)`);
}

export class Projector implements Module {
  /**
   * `names[i]` is the checkpoint name of linear layer i (e.g. "0", "2" in the original format,
   * "linear_1", "linear_2" in the HF format).
   */
  constructor(
    readonly linears: Linear[],
    readonly names: string[],
    readonly act: Activation = "gelu",
  ) {}

  static load(p: ParamLoader, depth: number, names: string[], inDim: number, outDim: number, act: Activation = "gelu"): Projector {
    const linears = names.slice(0, depth).map((name, i) => {
      const prefix = name ? `${name}.` : "";
      const inp = i === 0 ? inDim : outDim;
      return new Linear(p.tensor(`${prefix}weight`, [outDim, inp]), p.optional(`${prefix}bias`, [outDim]));
    });
    if (depth === 0 && inDim !== outDim) {
      throw new LlavaError(`identity projector needs equal vision (${inDim}) and text (${outDim}) widths`);
    }
    return new Projector(linears, names.slice(0, depth), act);
  }

  forward(x: Tensor): Tensor {
    this.linears.forEach((l, i) => {
      if (i > 0) x = activation(x, this.act);
      x = l.forward(x);
    });
    return x;
  }

  namedParameters(prefix = ""): NamedParameters {
    return childParameters(prefix, this.linears.map((l, i) => [this.names[i], l]));
  }
}
