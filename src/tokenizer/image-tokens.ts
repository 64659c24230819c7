/**
 * Image placeholders in prompt ids: the original LLaVA chunk-wise tokenisation with a sentinel id,
 * and the HF processor's expansion of `<image>` into one token per image feature.
 */
import { LlavaError } from "../util/errors.js";
import type { LlavaTokenizer } from "./tokenizer.js";

/** LLaVA's `IMAGE_TOKEN_INDEX`: a sentinel id that is never embedded. */
export const IMAGE_TOKEN_INDEX = -200;
/** LLaVA's `DEFAULT_IMAGE_TOKEN`. */
export const DEFAULT_IMAGE_TOKEN = "<image>";

/**
 * LLaVA's `tokenizer_image_token` (llava/mm_utils.py): split the prompt on the literal `<image>`,
 * tokenize every chunk on its own with the tokenizer's default special tokens, and join the chunks
 * with one `imageTokenIndex` each. When the first chunk starts with BOS (LLaMA adds one to every
 * chunk), one BOS is kept at the start and the first token of every chunk is dropped; otherwise the
 * chunks are joined whole.
 */
export function tokenizerImageToken(
  tokenizer: LlavaTokenizer,
  prompt: string,
  imageTokenIndex: number = IMAGE_TOKEN_INDEX,
): number[] {
  const chunks = prompt.split(DEFAULT_IMAGE_TOKEN).map((chunk) => tokenizer.encode(chunk));
  const first = chunks[0]!;
  const offset = first.length > 0 && first[0] === tokenizer.bosTokenId ? 1 : 0;
  const ids: number[] = offset ? [first[0]!] : [];
  chunks.forEach((chunk, i) => {
    if (i > 0) ids.push(imageTokenIndex);
    // The reference strips `offset` tokens from every chunk, whatever they are.
    ids.push(...chunk.slice(offset));
  });
  return ids;
}

/**
 * The HF processor's expansion: the k-th occurrence of `imageTokenId` is repeated
 * `featuresPerImage[k]` times (LLaVA-1.5: 576 for every image; LLaVA-NeXT: per image size).
 */
export function expandImageTokens(ids: readonly number[], imageTokenId: number, featuresPerImage: readonly number[]): number[] {
  const occurrences = ids.reduce((n, id) => n + (id === imageTokenId ? 1 : 0), 0);
  if (occurrences !== featuresPerImage.length) {
    throw new LlavaError(
      `the prompt has ${occurrences} image token(s) (id ${imageTokenId}) but ${featuresPerImage.length} image(s) were given; ` +
        "put exactly one <image> in the prompt per image",
    );
  }
  for (const n of featuresPerImage) {
    if (!Number.isInteger(n) || n < 0) throw new LlavaError(`image feature count must be a non-negative integer, got ${n}`);
  }
  const out: number[] = [];
  let image = 0;
  for (const id of ids) {
    if (id === imageTokenId) {
      for (let i = featuresPerImage[image++]!; i > 0; i--) out.push(id);
    } else {
      out.push(id);
    }
  }
  return out;
}
