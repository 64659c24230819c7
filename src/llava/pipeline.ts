/**
 * From a rendered prompt and images to model inputs and streamed answers: the glue every
 * command and server uses, so they all tokenize, preprocess and splice the same way.
 */
import type { LoadedLlava } from "./load.js";
import { type EncodedImages, LlavaModel } from "./model.js";
import { generateTokens, type SamplingOptions } from "./generate.js";
import type { RgbImage } from "../image/decode.js";
import { clipPreprocess, padPreprocess, type PixelTensor } from "../image/processor.js";
import { Tensor } from "../tensor/tensor.js";
import { expandImageTokens, tokenizerImageToken } from "../tokenizer/image-tokens.js";
import { StreamingDetokenizer } from "../tokenizer/stream.js";
import { LlavaError } from "../util/errors.js";

/** Stacks per-image [3, S, S] pixels into one [n, 3, S, S] tensor. */
function stack(pixels: PixelTensor[], backend: Tensor["backend"]): Tensor {
  const [c, h, w] = pixels[0].shape;
  const data = new Float32Array(pixels.length * c * h * w);
  pixels.forEach((p, i) => data.set(p.data, i * c * h * w));
  return new Tensor(data, [pixels.length, c, h, w], backend);
}

/** Pixels of the images as this model preprocesses them (center crop or LLaVA pad). */
export function preprocessImages(loaded: LoadedLlava, images: RgbImage[]): Tensor {
  const mode = loaded.model.settings.imageAspectMode;
  if (mode === "anyres") throw new LlavaError("AnyRes preprocessing is not supported yet");
  const one = mode === "pad" ? padPreprocess : clipPreprocess;
  return stack(images.map((img) => one(img, loaded.imageProcessor)), loaded.model.backend);
}

/**
 * Prompt ids with one image marker per `<image>`: the reference's chunk-wise
 * tokenizer_image_token (-200) for the original format, the tokenizer's own `<image>` token for HF.
 */
export function promptIds(loaded: LoadedLlava, prompt: string): number[] {
  const marker = loaded.model.settings.imageTokenId;
  return loaded.format === "original" ? tokenizerImageToken(loaded.tokenizer, prompt, marker) : loaded.tokenizer.encode(prompt);
}

/** HF processor ids: each image token repeated once per feature row. */
export function expandedIds(loaded: LoadedLlava, ids: number[], images: number): number[] {
  const { imageTokenId } = loaded.model.settings;
  return expandImageTokens(ids, imageTokenId, Array(images).fill(loaded.model.tokensPerImage));
}

export interface PromptInputs {
  ids: number[];
  encoded: EncodedImages | null;
  /** [1, T, D] */
  embeds: Tensor;
}

/** Tokenizes, encodes the images and splices them in. */
export function buildInputs(loaded: LoadedLlava, prompt: string, pixels: Tensor | null, allVisionLayers = false): PromptInputs {
  const ids = promptIds(loaded, prompt);
  const encoded = pixels ? loaded.model.encodeImages(pixels, allVisionLayers) : null;
  const features = encoded ? LlavaModel.perImage(encoded.projected) : [];
  return { ids, encoded, embeds: loaded.model.embedPrompt(ids, features) };
}

export interface AnswerOptions extends SamplingOptions {
  /** generation ends when the answer ends with one of these strings (removed from the answer) */
  stop?: string[];
}

/**
 * Streams the answer to `prompt` as text pieces. Generation stops at EOS, a stop string or
 * `maxNewTokens`; text that might be the start of a stop string is held back until it is not.
 */
export async function* streamAnswer(
  loaded: LoadedLlava, prompt: string, images: RgbImage[], opts: AnswerOptions,
): AsyncGenerator<string> {
  const pixels = images.length ? preprocessImages(loaded, images) : null;
  const { embeds } = buildInputs(loaded, prompt, pixels);
  const detok = new StreamingDetokenizer(loaded.tokenizer);
  const stops = (opts.stop ?? []).filter((s) => s.length > 0);
  const eos = loaded.tokenizer.eosTokenId;
  const eosTokenIds = opts.eosTokenIds ?? (eos === undefined || eos === null ? [] : [eos]);
  let text = "";
  let emitted = 0;
  for await (const token of generateTokens(loaded.model, embeds, { ...opts, eosTokenIds })) {
    text += detok.push(token);
    const hit = stops.map((s) => text.indexOf(s)).filter((i) => i >= 0);
    if (hit.length) {
      const end = Math.min(...hit);
      if (end > emitted) yield text.slice(emitted, end);
      return;
    }
    const safe = text.length - heldBack(text, stops);
    if (safe > emitted) {
      yield text.slice(emitted, safe);
      emitted = safe;
    }
  }
  text += detok.flush();
  if (text.length > emitted) yield text.slice(emitted);
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
function heldBack(text: string, stops: string[]): number {
  let keep = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > keep; n--) {
      if (text.endsWith(s.slice(0, n))) {
        keep = n;
        break;
      }
    }
  }
  return keep;
}
