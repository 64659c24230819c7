/**
 * LLaVA: CLIP vision tower + projector + LLaMA-family decoder. Images become feature rows that
 * are spliced into the token embeddings where the prompt has an image marker.
 */
import { type AnyresLayout, mergeAnyresFeatures, type PatchMergeType } from "./anyres.js";
import { ClipVisionModel } from "./clip.js";
import { PREFIX } from "./keys.js";
import { LlamaForCausalLM } from "./llama.js";
import { Projector } from "./projector.js";
import { type ModelSpec, requireTower } from "./spec.js";
import type { ParamLoader } from "../nn/params.js";
import type { Module, NamedParameters } from "../nn/layers.js";
import { concat, reshape, slice } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

/** How images are turned into pixels: plain CLIP (resize + center crop), LLaVA pad, or AnyRes. */
export type ImageAspectMode = "square" | "pad" | "anyres";

export interface LlavaSettings {
  /** hidden-state index of the vision tower whose output feeds the projector (e.g. -2) */
  visionSelectLayer: number;
  /** drop the CLS position ("patch") or keep it ("cls_patch") */
  visionSelectFeature: "patch" | "cls_patch";
  /** the id that marks an image in prompt ids: -200 (original LLaVA) or the <image> token (HF) */
  imageTokenId: number;
  /** HF format: the prompt repeats the image token once per feature row */
  expandImageTokens: boolean;
  imageAspectMode: ImageAspectMode;
  /** the original format truncates the spliced sequence to this length (tokenizer_model_max_length) */
  maxSequenceLength: number | null;
  /** LLaVA-NeXT: candidate resolutions, their (height, width) "hf" or (width, height) "llava" order, the merge */
  anyres: { pinpoints: number[][]; convention: "hf" | "llava"; mergeType: PatchMergeType } | null;
  /** the original format's mm_use_im_start_end: each image is wrapped as `<im_start><image><im_end>` in the prompt */
  imageStartEnd: boolean;
}

export interface EncodedImages {
  /** all computed vision hidden states (index 0 = after pre_layrnorm) */
  visionHiddenStates: Tensor[];
  /** selected layer, CLS dropped or kept [n, N, Dv] */
  features: Tensor;
  /** projector output [n, N, D] */
  projected: Tensor;
}

export class LlavaModel implements Module {
  constructor(
    readonly vision: ClipVisionModel,
    readonly projector: Projector,
    readonly llm: LlamaForCausalLM,
    readonly settings: LlavaSettings,
    /** LLaVA-NeXT's learned end-of-row vector [D] (spatial_unpad), else null */
    readonly imageNewline: Tensor | null = null,
  ) {}

  /** The model `spec` describes, read from `p` under canonical names (keys.ts), each part where LLaVA's state dict puts it. */
  static load(p: ParamLoader, spec: ModelSpec): LlavaModel {
    const vision = requireTower(spec);
    const d = spec.text.hiddenSize;
    const newline = spec.settings.anyres?.mergeType === "spatial_unpad" ? p.tensor(PREFIX.newline, [d]) : null;
    return new LlavaModel(
      new ClipVisionModel(p.sub(PREFIX.tower), vision),
      Projector.load(p.sub(PREFIX.projector), spec.projector.type, vision.hiddenSize, d, spec.projector.activation),
      new LlamaForCausalLM(p, spec.text),
      spec.settings,
      newline,
    );
  }

  get backend() {
    return this.llm.backend;
  }

  /** Index into the vision hidden states of the selected layer. */
  private selectIndex(): number {
    const count = this.vision.layers.length + 1;
    const i = this.settings.visionSelectLayer < 0 ? count + this.settings.visionSelectLayer : this.settings.visionSelectLayer;
    if (i < 0 || i >= count) {
      throw new LlavaError(`vision select layer ${this.settings.visionSelectLayer} is outside the tower's ${count} hidden states`);
    }
    return i;
  }

  /**
   * Vision tower + projector on pixels [n, 3, S, S]. With `allLayers` every tower layer runs
   * (for inspection); otherwise the tower stops at the selected layer. `checkpointed`: gradient
   * checkpointing of the tower's layers (when it trains).
   */
  encodeImages(pixels: Tensor, allLayers = false, checkpointed = false): EncodedImages {
    const index = this.selectIndex();
    const states = this.vision.forward(pixels, allLayers ? this.vision.layers.length : index, checkpointed);
    const selected = states[index];
    const features = this.settings.visionSelectFeature === "patch" ? slice(selected, 1, 1, selected.dim(1)) : selected;
    return { visionHiddenStates: states, features, projected: this.projector.forward(features) };
  }

  /**
   * Feature rows [M_i, D] of each image from the projected tiles [tiles, n, D]: one tile per
   * image, or for AnyRes `1 + rows*cols` consecutive tiles per image, merged by its layout.
   */
  imageFeatures(projected: Tensor, layouts: Array<AnyresLayout | null>): Tensor[] {
    const anyres = this.settings.anyres;
    const [, n, d] = projected.shape;
    let tile = 0;
    return layouts.map((layout) => {
      const count = layout ? 1 + layout.rows * layout.cols : 1;
      const tiles = slice(projected, 0, tile, tile + count);
      tile += count;
      if (!layout || !anyres) return reshape(tiles, [n, d]);
      return mergeAnyresFeatures(tiles, layout, anyres.mergeType, this.imageNewline, anyres.convention === "hf");
    });
  }

  /**
   * Embeds prompt ids that carry one image marker per image, replacing each marker with that
   * image's feature rows [N_i, D]. Returns [1, T, D] truncated to `maxLength` (default the
   * config's maxSequenceLength; training truncates to its own model_max_length).
   */
  embedPrompt(ids: number[], imageFeatures: Tensor[], maxLength = this.settings.maxSequenceLength): Tensor {
    const marker = this.settings.imageTokenId;
    const markers = ids.filter((id) => id === marker).length;
    if (markers !== imageFeatures.length) {
      throw new LlavaError(`the prompt has ${markers} image marker(s) but ${imageFeatures.length} image(s) were given`);
    }
    const pieces: Tensor[] = [];
    let text: number[] = [];
    const flush = () => {
      if (text.length) pieces.push(this.llm.embedTokens.forward(Int32Array.from(text)));
      text = [];
    };
    let image = 0;
    for (const id of ids) {
      if (id !== marker) {
        text.push(id);
        continue;
      }
      flush();
      pieces.push(imageFeatures[image++]);
    }
    flush();
    if (!pieces.length) throw new LlavaError("empty prompt");
    let embeds = pieces.length === 1 ? pieces[0] : concat(pieces, 0);
    if (maxLength !== null && embeds.dim(0) > maxLength) embeds = slice(embeds, 0, 0, maxLength);
    return reshape(embeds, [1, embeds.dim(0), embeds.dim(1)]);
  }

  /** Parameters under canonical names (the original LLaVA state dict's), as `load` reads them. */
  namedParameters(): NamedParameters {
    const own: NamedParameters = this.imageNewline ? [[PREFIX.newline, this.imageNewline]] : [];
    const under = (prefix: string) => prefix.slice(0, -1);
    return [
      ...this.llm.namedParameters(), ...this.projector.namedParameters(under(PREFIX.projector)),
      ...this.vision.namedParameters(under(PREFIX.tower)), ...own,
    ];
  }
}

