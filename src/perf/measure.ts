/**
 * The timed parts of the protocol, run in a process of the bench's own (child.ts): each returns
 * the values of `runs` timed runs after one untimed warm-up run (first-touch page faults, JIT).
 */
import { Generation } from "../llava/generate.js";
import type { LoadedLlava } from "../llava/load.js";
import { prepareImages } from "../llava/pipeline.js";
import { benchImage, benchPromptIds, DECODE_TOKENS, type InferencePhase, textOnlyPromptIds, type TrainPhase, trainingStep } from "./protocol.js";

/** `runs` values of `fn` after a warm-up call. */
async function repeated(runs: number, fn: () => number | Promise<number>): Promise<number[]> {
  await fn();
  const values: number[] = [];
  for (let r = 0; r < runs; r++) values.push(await fn());
  return values;
}

function elapsedMs(fn: () => unknown): number {
  const t = performance.now();
  fn();
  return performance.now() - t;
}

export interface InferenceResult {
  /** the prompt's positions with the image spliced in */
  promptTokens: number;
  /** the same length in text ids, for the peers */
  textOnlyIds: number[];
  /** per phase: encode ms, prefill tok/s, decode tok/s */
  values: Partial<Record<InferencePhase, number[]>>;
}

/** Encode (ms per image through tower + projector), prefill (tok/s) and decode (tok/s over DECODE_TOKENS greedy steps). */
export async function measureInference(loaded: LoadedLlava, phases: InferencePhase[], runs: number): Promise<InferenceResult> {
  const { model } = loaded;
  const images = prepareImages(loaded, [benchImage()]);
  const values: InferenceResult["values"] = {};
  if (phases.includes("encode")) values.encode = await repeated(runs, () => elapsedMs(() => model.encodeImages(images.pixels)));
  const ids = benchPromptIds(loaded);
  const features = model.imageFeatures(model.encodeImages(images.pixels).projected, images.layouts);
  const embeds = model.embedPrompt(ids, features);
  const T = embeds.dim(1);
  if (phases.includes("prefill")) {
    values.prefill = await repeated(runs, () => T / (elapsedMs(() => model.llm.forward(embeds, { cache: model.llm.newCache(1, T + DECODE_TOKENS) })) / 1000));
  }
  if (phases.includes("decode")) {
    // the shared generation loop, timed from the first token to the last: DECODE_TOKENS decode steps
    values.decode = await repeated(runs, async () => {
      const stamps: number[] = [];
      for await (const _ of new Generation(loaded, embeds, { maxNewTokens: DECODE_TOKENS + 1, temperature: 0, eosTokenIds: [] })) stamps.push(performance.now());
      return DECODE_TOKENS / ((stamps[DECODE_TOKENS] - stamps[0]) / 1000);
    });
  }
  return { promptTokens: T, textOnlyIds: textOnlyPromptIds(loaded, ids, T - ids.length + 1), values };
}

export interface TrainResult {
  trainableParams: number;
  /** ms per step */
  values: number[];
  /** the warm-up step's loss: the untrained model's on the training example */
  firstLoss: number;
}

/** ms per training step; each timed step starts from a collected heap (the collection is not timed). */
export async function measureTraining(loaded: LoadedLlava, phase: TrainPhase, runs: number): Promise<TrainResult> {
  const { step, trainableParams } = trainingStep(loaded, phase);
  const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
  const losses: number[] = [];
  const values = await repeated(runs, () => (gc(), elapsedMs(() => losses.push(step()))));
  return { trainableParams, values, firstLoss: losses[0] };
}
