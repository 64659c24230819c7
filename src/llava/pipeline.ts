/**
 * From a rendered prompt and images to model inputs and streamed answers: the glue every
 * command and server uses, so they all tokenize, preprocess and splice the same way.
 */
import type { LoadedLlava } from "./load.js";
import { IM_END, IM_START, IMAGE_TOKEN } from "./spec.js";
import type { AnyresLayout } from "./anyres.js";
import type { EncodedImages } from "./model.js";
import { Generation, type GenerationOptions } from "./generate.js";
import type { RgbImage } from "../image/decode.js";
import { anyresPreprocess, clipPreprocess, padPreprocess, type PixelTensor } from "../image/processor.js";
import { Tensor } from "../tensor/tensor.js";
import { expandImageTokens, tokenizerImageToken } from "../tokenizer/image-tokens.js";

/** Images as the model's pixel input: all tiles stacked, and each image's AnyRes layout. */
export interface PreparedImages {
  /** [tiles, 3, S, S]: one tile per image, or 1 + rows*cols per image for AnyRes */
  pixels: Tensor;
  layouts: Array<AnyresLayout | null>;
}

/** Preprocesses images as this model does: CLIP center crop, LLaVA pad, or AnyRes tiles. */
export function prepareImages(loaded: LoadedLlava, images: RgbImage[]): PreparedImages {
  const { imageAspectMode: mode, anyres } = loaded.model.settings;
  const cfg = loaded.imageProcessor;
  const parts: PixelTensor[] = [];
  const layouts: Array<AnyresLayout | null> = [];
  for (const img of images) {
    if (mode === "anyres" && anyres) {
      const r = anyresPreprocess(img, cfg, anyres.pinpoints, anyres.convention);
      parts.push(r);
      layouts.push({ rows: r.grid.rows, cols: r.grid.cols, width: img.width, height: img.height });
    } else {
      parts.push(mode === "pad" ? padPreprocess(img, cfg) : clipPreprocess(img, cfg));
      layouts.push(null);
    }
  }
  const tail = parts[0].shape.slice(-3);
  const per = tail.reduce((a, b) => a * b, 1);
  const data = new Float32Array(parts.reduce((n, p) => n + p.data.length, 0));
  let offset = 0;
  for (const p of parts) {
    data.set(p.data, offset);
    offset += p.data.length;
  }
  return { pixels: new Tensor(data, [data.length / per, ...tail], loaded.model.backend), layouts };
}

/**
 * Prompt ids with one image marker per `<image>`: the reference's chunk-wise
 * tokenizer_image_token (-200) for the original format, the tokenizer's own `<image>` token for HF.
 * A `mm_use_im_start_end` model sees each image as `<im_start><image><im_end>`, as the reference's
 * CLI, run_llava and evaluation scripts write it.
 */
export function promptIds(loaded: LoadedLlava, prompt: string): number[] {
  const { imageTokenId: marker, imageStartEnd } = loaded.model.settings;
  const text = imageStartEnd ? prompt.replace(UNWRAPPED_IMAGE, IM_START + IMAGE_TOKEN + IM_END) : prompt;
  return loaded.format === "original" ? tokenizerImageToken(loaded.tokenizer, text, marker) : loaded.tokenizer.encode(text);
}

const UNWRAPPED_IMAGE = new RegExp(`(?<!${IM_START})${IMAGE_TOKEN}(?!${IM_END})`, "g");

export interface PromptInputs {
  ids: number[];
  encoded: EncodedImages | null;
  /** feature rows [M_i, D] spliced in for each image */
  imageFeatures: Tensor[];
  /** [1, T, D] */
  embeds: Tensor;
}

/** Tokenizes, encodes the images and splices them in. */
export function buildInputs(loaded: LoadedLlava, prompt: string, images: PreparedImages | null, allVisionLayers = false): PromptInputs {
  const ids = promptIds(loaded, prompt);
  const encoded = images ? loaded.model.encodeImages(images.pixels, allVisionLayers) : null;
  const imageFeatures = encoded && images ? loaded.model.imageFeatures(encoded.projected, images.layouts) : [];
  return { ids, encoded, imageFeatures, embeds: loaded.model.embedPrompt(ids, imageFeatures) };
}

/** HF processor ids: each image token repeated once per feature row of its image. */
export function expandedIds(loaded: LoadedLlava, ids: number[], imageFeatures: Tensor[]): number[] {
  return expandImageTokens(ids, loaded.model.settings.imageTokenId, imageFeatures.map((f) => f.dim(0)));
}

/**
 * The generation of the answer to `prompt`: stops at EOS (the tokenizer's unless
 * `eosTokenIds` says otherwise), a stop string, `maxNewTokens` or the end of the context.
 */
export function answerGeneration(loaded: LoadedLlava, prompt: string, images: RgbImage[], opts: GenerationOptions): Generation {
  const { embeds } = buildInputs(loaded, prompt, images.length ? prepareImages(loaded, images) : null);
  return new Generation(loaded, embeds, opts);
}

/** Streams the answer to `prompt` as text pieces (see answerGeneration). */
export async function* streamAnswer(loaded: LoadedLlava, prompt: string, images: RgbImage[], opts: GenerationOptions): AsyncGenerator<string> {
  for await (const { text } of answerGeneration(loaded, prompt, images, opts)) if (text) yield text;
}
