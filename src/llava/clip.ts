/**
 * The CLIP vision transformer (HF CLIPVisionModel), as LLaVA uses it: patch + class + position
 * embeddings, pre_layrnorm, pre-LN encoder layers. post_layernorm is never applied by LLaVA.
 */
import type { ClipVisionConfig } from "../io/config.js";
import { activationByName, childParameters, LayerNorm, Linear, type Module, type NamedParameters } from "../nn/layers.js";
import type { ParamLoader } from "../nn/params.js";
import type { Activation } from "../tensor/backend.js";
import { activation, add, attention, concat, permute, reshape } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";

function loadLinear(p: ParamLoader, name: string, out: number, inp: number, bias = true): Linear {
  return new Linear(p.linearWeight(`${name}.weight`, [out, inp]), bias ? p.tensor(`${name}.bias`, [out]) : null);
}

function loadLayerNorm(p: ParamLoader, name: string, dim: number, eps: number): LayerNorm {
  return new LayerNorm(p.tensor(`${name}.weight`, [dim]), p.tensor(`${name}.bias`, [dim]), eps);
}

class ClipEncoderLayer implements Module {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly out: Linear;
  readonly ln1: LayerNorm;
  readonly ln2: LayerNorm;
  readonly fc1: Linear;
  readonly fc2: Linear;

  constructor(p: ParamLoader, readonly cfg: ClipVisionConfig, private readonly act: Activation) {
    const d = cfg.hiddenSize;
    this.q = loadLinear(p, "self_attn.q_proj", d, d);
    this.k = loadLinear(p, "self_attn.k_proj", d, d);
    this.v = loadLinear(p, "self_attn.v_proj", d, d);
    this.out = loadLinear(p, "self_attn.out_proj", d, d);
    this.ln1 = loadLayerNorm(p, "layer_norm1", d, cfg.layerNormEps);
    this.ln2 = loadLayerNorm(p, "layer_norm2", d, cfg.layerNormEps);
    this.fc1 = loadLinear(p, "mlp.fc1", cfg.intermediateSize, d);
    this.fc2 = loadLinear(p, "mlp.fc2", d, cfg.intermediateSize);
  }

  forward(x: Tensor): Tensor {
    const [n, t, d] = x.shape;
    const heads = this.cfg.numAttentionHeads;
    const h = this.ln1.forward(x);
    const split = (y: Tensor) => reshape(y, [n, t, heads, d / heads]);
    const a = attention(split(this.q.forward(h)), split(this.k.forward(h)), split(this.v.forward(h)), { causal: false });
    x = add(x, this.out.forward(reshape(a, [n, t, d])));
    const m = this.fc2.forward(activation(this.fc1.forward(this.ln2.forward(x)), this.act));
    return add(x, m);
  }

  namedParameters(prefix = ""): NamedParameters {
    return childParameters(prefix, [
      ["self_attn.q_proj", this.q], ["self_attn.k_proj", this.k], ["self_attn.v_proj", this.v],
      ["self_attn.out_proj", this.out], ["layer_norm1", this.ln1], ["mlp.fc1", this.fc1], ["mlp.fc2", this.fc2],
      ["layer_norm2", this.ln2],
    ]);
  }
}

export class ClipVisionModel implements Module {
  /** the conv weight [D, C, p, p], as stored */
  readonly patchConv: Tensor;
  readonly patchEmbedding: Linear;
  readonly classEmbedding: Tensor;
  readonly positionEmbedding: Tensor;
  readonly preLayernorm: LayerNorm;
  readonly layers: ClipEncoderLayer[];

  /** `p` points at the `vision_model.` prefix of a CLIP checkpoint. */
  constructor(p: ParamLoader, readonly cfg: ClipVisionConfig) {
    const d = cfg.hiddenSize;
    const patch = cfg.patchSize;
    const positions = (cfg.imageSize / patch) ** 2 + 1;
    this.patchConv = p.tensor("embeddings.patch_embedding.weight", [d, cfg.numChannels, patch, patch]);
    // a stride-patch convolution is a linear map of each flattened (channel, y, x) patch
    this.patchEmbedding = new Linear(reshape(this.patchConv, [d, cfg.numChannels * patch * patch]));
    this.classEmbedding = p.tensor("embeddings.class_embedding", [d]);
    this.positionEmbedding = p.tensor("embeddings.position_embedding.weight", [positions, d]);
    this.preLayernorm = loadLayerNorm(p, "pre_layrnorm", d, cfg.layerNormEps);
    const act = activationByName(cfg.hiddenAct);
    this.layers = Array.from({ length: cfg.numHiddenLayers }, (_, i) => new ClipEncoderLayer(p.sub(`encoder.layers.${i}.`), cfg, act));
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
   * pre_layrnorm, [i] after encoder layer i, for i up to `layers` (default all).
   */
  forward(pixels: Tensor, layers = this.layers.length): Tensor[] {
    const { imageSize, numChannels } = this.cfg;
    const [n, c, h, w] = pixels.shape;
    if (pixels.ndim !== 4 || c !== numChannels || h !== imageSize || w !== imageSize) {
      throw new Error(`vision tower expects pixels [n, ${numChannels}, ${imageSize}, ${imageSize}], got [${pixels.shape.join(", ")}]`);
    }
    const d = this.cfg.hiddenSize;
    const patches = this.patchEmbedding.forward(this.patchify(pixels));
    const cls = reshape(this.classEmbedding, [1, 1, d]);
    const tokens = concat([concat(Array(n).fill(cls), 0), patches], 1);
    let x = this.preLayernorm.forward(add(tokens, this.positionEmbedding));
    const states = [x];
    for (let i = 0; i < layers; i++) {
      x = this.layers[i].forward(x);
      states.push(x);
    }
    return states;
  }

  namedParameters(prefix = ""): NamedParameters {
    return [
      [`${prefix}.embeddings.class_embedding`, this.classEmbedding],
      [`${prefix}.embeddings.patch_embedding.weight`, this.patchConv],
      [`${prefix}.embeddings.position_embedding.weight`, this.positionEmbedding],
      ...this.preLayernorm.namedParameters(`${prefix}.pre_layrnorm`),
      ...this.layers.flatMap((l, i) => l.namedParameters(`${prefix}.encoder.layers.${i}`)),
    ];
  }
}
