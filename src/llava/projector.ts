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

/**
 * The checkpoint names of a projector's Linear layers, as LLaVA's builder makes them: the bare
 * Linear of `linear`, else the nn.Sequential indices 0, 2, 4... (GELUs sit between them).
 */
export function projectorLinearNames(type: string): string[] {
  const depth = projectorDepth(type);
  return type === "linear" ? [""] : Array.from({ length: depth }, (_, i) => String(2 * i));
}

export class Projector implements Module {
  constructor(
    readonly linears: Linear[],
    readonly names: string[],
    readonly act: Activation = "gelu",
  ) {}

  /** `p` points at the projector's prefix (`model.mm_projector.`); its weights stay f32. Biases are optional (HF multimodal_projector_bias). */
  static load(p: ParamLoader, type: string, inDim: number, outDim: number, act: Activation = "gelu"): Projector {
    const names = projectorLinearNames(type);
    if (names.length === 0 && inDim !== outDim) {
      throw new LlavaError(`identity projector needs equal vision (${inDim}) and text (${outDim}) widths`);
    }
    const linears = names.map((name, i) => {
      const prefix = name ? `${name}.` : "";
      return new Linear(p.tensor(`${prefix}weight`, [outDim, i === 0 ? inDim : outDim]), p.optional(`${prefix}bias`, [outDim]));
    });
    return new Projector(linears, names, act);
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
