/** Shared setup of the training-loss tests: the tiny fixture model and v1-masked training examples. */
import path from "node:path";
import { loadImages, type RgbImage } from "../../src/image/decode.js";
import { maskRounds } from "../../src/llava/labels.js";
import { loadLlava, type LoadedLlava, type LoadOptions } from "../../src/llava/load.js";
import { promptIds } from "../../src/llava/pipeline.js";
import { tracePrompt } from "../../src/llava/trace.js";
import type { TrainingExample } from "../../src/train/batch.js";
import type { NamedParameters } from "../../src/nn/layers.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

export const TINY = path.join(MODELS, "tiny-llava-1.5-mha");

export function loadTiny(opts: LoadOptions = {}): Promise<LoadedLlava> {
  return loadLlava(TINY, { warn: () => {}, ...opts });
}

export async function fixtureImages(): Promise<{ checker: RgbImage; gradient: RgbImage }> {
  const [checker, gradient] = await loadImages([path.join(IMAGES, "checker_300x500.png"), path.join(IMAGES, "gradient_640x480.png")]);
  return { checker, gradient };
}

/** A one-turn llava_v1 example as the fixtures render it: `<image>\n` per image, the query, the answer; v1 labels. */
export function example(loaded: LoadedLlava, query: string, answer: string, images: RgbImage[]): TrainingExample {
  const { conv, prompt } = tracePrompt({ convMode: "llava_v1", query, answer, imageCount: images.length, maxNewTokens: 0 });
  const ids = promptIds(loaded, prompt);
  return { ids, labels: maskRounds(conv, prompt, ids, (text) => promptIds(loaded, text), loaded.tokenizer.legacy).labels, images };
}

/** A copy of every trainable parameter's gradient, by name (zeros where none arrived). */
export function gradients(params: NamedParameters): Map<string, Float32Array> {
  return new Map(params.map(([name, t]) => [name, t.grad ? Float32Array.from(t.grad) : new Float32Array(t.size)]));
}

export function zeroGrad(params: NamedParameters): void {
  for (const [, t] of params) t.grad = null;
}

/** Fills a tensor's data with values uniform in ±spread from a fixed stream. */
export function randomize(data: Float32Array, spread: number, seed = 5): void {
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    data[i] = spread * (2 * (s / 2 ** 32) - 1);
  }
}
