/**
 * From a rendered prompt and images to model inputs and streamed answers: the glue every
 * command and server uses, so they all tokenize, preprocess and splice the same way.
 */
import type { LoadedLlava } from "./load.js";
import { IM_END, IM_START, IMAGE_TOKEN } from "./spec.js";
import type { AnyresLayout } from "./anyres.js";
import type { EncodedImages } from "./model.js";
import { Generation, type GenerationOptions } from "./generate.js";
import type { ImageFeatureCache } from "./image-cache.js";
import type { PositionKey, PrefixCache } from "./prefix-cache.js";
import type { RgbImage } from "../image/decode.js";
import { anyresPreprocess, clipPreprocess, padPreprocess, type PixelTensor } from "../image/processor.js";
import { Tensor } from "../tensor/tensor.js";
import { expandImageTokens, tokenizerImageToken } from "../tokenizer/image-tokens.js";
import type { LlavaTokenizer } from "../tokenizer/tokenizer.js";

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

/** What decides how a prompt becomes ids besides the tokenizer. */
export interface PromptTokenization {
  format: LoadedLlava["format"];
  /** the id that marks an image */
  imageTokenId: number;
  /** wrap each bare `<image>` as `<im_start><image><im_end>` */
  imageStartEnd: boolean;
}

/**
 * Prompt ids with one image marker per `<image>`: the reference's chunk-wise
 * tokenizer_image_token (-200) for the original format, the tokenizer's own `<image>` token for HF.
 * A `mm_use_im_start_end` model sees each image as `<im_start><image><im_end>`, as the reference's
 * CLI, run_llava and evaluation scripts write it.
 */
export function promptIds(loaded: LoadedLlava, prompt: string): number[] {
  return tokenizePrompt(loaded.tokenizer, { ...loaded.model.settings, format: loaded.format }, prompt);
}

/** promptIds for a tokenizer and settings, without a loaded model. */
export function tokenizePrompt(tokenizer: LlavaTokenizer, how: PromptTokenization, prompt: string): number[] {
  const text = how.imageStartEnd ? prompt.replace(UNWRAPPED_IMAGE, IM_START + IMAGE_TOKEN + IM_END) : prompt;
  return how.format === "original" ? tokenizerImageToken(tokenizer, text, how.imageTokenId) : tokenizer.encode(text);
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

/** Each image's feature rows [M_i, D], the images through the tower together. */
export function encodeImageFeatures(loaded: LoadedLlava, images: RgbImage[]): Tensor[] {
  const prepared = prepareImages(loaded, images);
  return loaded.model.imageFeatures(loaded.model.encodeImages(prepared.pixels).projected, prepared.layouts);
}

/** What decides an image's features besides its pixels. */
function preprocessingMode(loaded: LoadedLlava): string {
  const { imageAspectMode, anyres } = loaded.model.settings;
  return anyres ? `${imageAspectMode}:${anyres.convention}:${JSON.stringify(anyres.pinpoints)}` : imageAspectMode;
}

/** Caches that let a request skip work an earlier one did: image features, and KV caches of shared prefixes. */
export interface Reuse {
  images: ImageFeatureCache;
  prefixes: PrefixCache;
}

export interface ReusableInputs {
  /** [1, T, D] */
  embeds: Tensor;
  /** what each of the T positions holds, for the prefix cache */
  keys: PositionKey[];
}

/** The prompt's embeddings and what each position holds, with the image features from `imageCache`. */
export function reusableInputs(loaded: LoadedLlava, prompt: string, images: RgbImage[], imageCache: ImageFeatureCache): ReusableInputs {
  const ids = promptIds(loaded, prompt);
  const { hashes, features } = imageCache.lookup(images, preprocessingMode(loaded), (missing) => encodeImageFeatures(loaded, missing));
  const embeds = loaded.model.embedPrompt(ids, features);
  const marker = loaded.model.settings.imageTokenId;
  const keys: PositionKey[] = [];
  let image = 0;
  for (const id of ids) {
    if (id !== marker) keys.push(id);
    else for (let row = 0, n = features[image].dim(0), h = hashes[image++]; row < n; row++) keys.push(`${h}#${row}`);
  }
  return { embeds, keys: keys.slice(0, embeds.dim(1)) };
}

/** HF processor ids: each image token repeated once per feature row of its image. */
export function expandedIds(loaded: LoadedLlava, ids: number[], imageFeatures: Tensor[]): number[] {
  return expandImageTokens(ids, loaded.model.settings.imageTokenId, imageFeatures.map((f) => f.dim(0)));
}

/**
 * The generation of the answer to `prompt`: stops at EOS (the tokenizer's unless
 * `eosTokenIds` says otherwise), a stop string, `maxNewTokens` or the end of the context.
 */
export function answerGeneration(loaded: LoadedLlava, prompt: string, images: RgbImage[], opts: GenerationOptions, reuse?: Reuse): Generation {
  if (reuse) {
    const { embeds, keys } = reusableInputs(loaded, prompt, images, reuse.images);
    return new Generation(loaded, embeds, { ...opts, prefix: { cache: reuse.prefixes, keys } });
  }
  const { embeds } = buildInputs(loaded, prompt, images.length ? prepareImages(loaded, images) : null);
  return new Generation(loaded, embeds, opts);
}

/** Streams the answer to `prompt` as text pieces (see answerGeneration). */
export async function* streamAnswer(loaded: LoadedLlava, prompt: string, images: RgbImage[], opts: GenerationOptions, reuse?: Reuse): AsyncGenerator<string> {
  for await (const { text } of answerGeneration(loaded, prompt, images, opts, reuse)) if (text) yield text;
}
