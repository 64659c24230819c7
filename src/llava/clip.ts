/**
 * The CLIP vision transformer (HF CLIPVisionModel), as LLaVA uses it: patch + class + position
 * embeddings, pre_layrnorm, pre-LN encoder layers. post_layernorm is never applied by LLaVA.
 */
import type { ClipVisionConfig } from "../io/config.js";
import { activationByName, childParameters, LayerNorm, Linear, type Module, type NamedParameters } from "../nn/layers.js";
import type { ParamLoader } from "../nn/params.js";
import type { Activation } from "../tensor/backend.js";
import { activation, add, attention, checkpoint, concat, linear, permute, reshape } from "../tensor/ops.js";
import { Scratch, type Tensor, withScratch } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import { loadLinear } from "./llama.js";

function loadLayerNorm(p: ParamLoader, name: string, dim: number, eps: number): LayerNorm {
  return new LayerNorm(p.tensor(`${name}.weight`, [dim]), p.tensor(`${name}.bias`, [dim]), eps);
}

/** An encoder layer's Linear layers by their checkpoint names, with [out, in] shapes. */
function layerLinears(cfg: ClipVisionConfig) {
  const { hiddenSize: d, intermediateSize: inter } = cfg;
  return {
    q: ["self_attn.q_proj", d, d], k: ["self_attn.k_proj", d, d], v: ["self_attn.v_proj", d, d], out: ["self_attn.out_proj", d, d],
    fc1: ["mlp.fc1", inter, d], fc2: ["mlp.fc2", d, inter],
  } as const satisfies Record<string, readonly [string, number, number]>;
}
type LayerLinear = keyof ReturnType<typeof layerLinears>;
const NORMS = { ln1: "layer_norm1", ln2: "layer_norm2" } as const;

class ClipEncoderLayer implements Module {
  readonly linears: Record<LayerLinear, Linear>;
  readonly ln1: LayerNorm;
  readonly ln2: LayerNorm;

  constructor(p: ParamLoader, readonly cfg: ClipVisionConfig, private readonly act: Activation) {
    const specs = layerLinears(cfg);
    this.linears = Object.fromEntries(Object.entries(specs).map(([key, [name, out, inp]]) => [key, loadLinear(p, name, out, inp, true)])) as Record<LayerLinear, Linear>;
    this.ln1 = loadLayerNorm(p, NORMS.ln1, cfg.hiddenSize, cfg.layerNormEps);
    this.ln2 = loadLayerNorm(p, NORMS.ln2, cfg.hiddenSize, cfg.layerNormEps);
  }

  /** `scratch` (inference only): the layer's intermediates in that reused buffer, its output fresh. */
  forward(x: Tensor, scratch?: Scratch): Tensor {
    const [n, t, d] = x.shape;
    const heads = this.cfg.numAttentionHeads;
    const { q, k, v, out, fc1, fc2 } = this.linears;
    const body = (): [Tensor, Tensor] => {
      const h = this.ln1.forward(x);
      const split = (y: Tensor) => reshape(y, [n, t, heads, d / heads]);
      const a = attention(split(q.forward(h)), split(k.forward(h)), split(v.forward(h)), { causal: false });
      const x1 = add(x, out.forward(reshape(a, [n, t, d])));
      return [x1, fc2.forward(activation(fc1.forward(this.ln2.forward(x1)), this.act))];
    };
    const [x1, m] = scratch ? withScratch(scratch, body) : body();
    return add(x1, m);
  }

  namedParameters(prefix = ""): NamedParameters {
    const specs = layerLinears(this.cfg);
    const linears = (Object.keys(specs) as LayerLinear[]).map((key) => [specs[key][0], this.linears[key]] as [string, Module]);
    return childParameters(prefix, [...linears, [NORMS.ln1, this.ln1], [NORMS.ln2, this.ln2]]);
  }
}

export class ClipVisionModel implements Module {
  /** the conv weight [D, C, p, p], as stored */
  readonly patchConv: Tensor;
  readonly classEmbedding: Tensor;
  readonly positionEmbedding: Tensor;
  readonly preLayernorm: LayerNorm;
  readonly layers: ClipEncoderLayer[];
  /** each layer's intermediates when the tower runs for inference */
  private readonly scratch = new Scratch();

  /** `p` points at the root of a CLIPVisionModel state dict (`vision_model.*`). */
  constructor(root: ParamLoader, readonly cfg: ClipVisionConfig) {
    const p = root.sub("vision_model.");
    const d = cfg.hiddenSize;
    const patch = cfg.patchSize;
    const positions = (cfg.imageSize / patch) ** 2 + 1;
    this.patchConv = p.tensor("embeddings.patch_embedding.weight", [d, cfg.numChannels, patch, patch]);
    this.classEmbedding = p.tensor("embeddings.class_embedding", [d]);
    this.positionEmbedding = p.tensor("embeddings.position_embedding.weight", [positions, d]);
    this.preLayernorm = loadLayerNorm(p, "pre_layrnorm", d, cfg.layerNormEps);
    const act = activationByName(cfg.hiddenAct);
    this.layers = Array.from({ length: cfg.numHiddenLayers }, (_, i) => new ClipEncoderLayer(p.sub(`encoder.layers.${i}.`), cfg, act));
    // LLaVA reads hidden states, never the pooled output, so the final norm is not used
    p.skip("post_layernorm.weight", "post_layernorm.bias");
  }

  /** Patches as rows: pixels [n, C, S, S] -> [n, (S/p)^2, C*p*p] in (channel, y, x) order. */
  private patchify(pixels: Tensor): Tensor {
    const [n, c, s] = pixels.shape;
    const p = this.cfg.patchSize;
    const g = s / p;
    const grid = reshape(pixels, [n, c, g, p, g, p]);
    return reshape(permute(grid, [0, 2, 4, 1, 3, 5]), [n, g * g, c * p * p]);
  }

  /**
   * Runs the tower on pixels [n, C, S, S] and returns the hidden states: [0] after
   * pre_layrnorm, [i] after encoder layer i, for i up to `layers` (default all). With
   * `checkpointed`, each layer's activations are recomputed in the backward pass.
   */
  forward(pixels: Tensor, layers = this.layers.length, checkpointed = false): Tensor[] {
    const { imageSize, numChannels } = this.cfg;
    const [n, c, h, w] = pixels.shape;
    if (pixels.ndim !== 4 || c !== numChannels || h !== imageSize || w !== imageSize) {
      throw new LlavaError(`vision tower expects pixels [n, ${numChannels}, ${imageSize}, ${imageSize}], got [${pixels.shape.join(", ")}]`);
    }
    const d = this.cfg.hiddenSize;
    // a stride-patch convolution is a linear map of each flattened (channel, y, x) patch; the
    // view is taken per call so that gradients reach the conv weight when the tower trains
    const patches = linear(this.patchify(pixels), reshape(this.patchConv, [d, c * this.cfg.patchSize ** 2]));
    const cls = reshape(this.classEmbedding, [1, 1, d]);
    const tokens = concat([concat(Array(n).fill(cls), 0), patches], 1);
    let x = this.preLayernorm.forward(add(tokens, this.positionEmbedding));
    const states = [x];
    // inference reuses one buffer for each layer's intermediates: a few large allocations instead
    // of a dozen per layer, whose garbage collection took CPU from the kernels' threads
    const scratch = !checkpointed && !pixels.requiresGrad && this.namedParameters().every(([, p]) => !p.requiresGrad) ? this.scratch : undefined;
    try {
      for (let i = 0; i < layers; i++) {
        const layer = this.layers[i];
        x = checkpointed ? checkpoint((input) => layer.forward(input), [x]) : layer.forward(x, scratch);
        states.push(x);
      }
    } finally {
      this.scratch.trim();
    }
    return states;
  }

  namedParameters(prefix = ""): NamedParameters {
    const p = prefix ? `${prefix}.vision_model` : "vision_model";
    return [
      [`${p}.embeddings.class_embedding`, this.classEmbedding],
      [`${p}.embeddings.patch_embedding.weight`, this.patchConv],
      [`${p}.embeddings.position_embedding.weight`, this.positionEmbedding],
      ...this.preLayernorm.namedParameters(`${p}.pre_layrnorm`),
      ...this.layers.flatMap((l, i) => l.namedParameters(`${p}.encoder.layers.${i}`)),
    ];
  }
}
