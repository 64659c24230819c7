/**
 * Traces: the model's intermediate arrays for one prompt, named and typed as the reference
 * fixtures store them (pixels, hidden states, projector output, logits, greedy ids; for a
 * training example labels, loss and the projector's gradients). `llava dump` writes them as .npy
 * files; tests and trainers use them in memory.
 */
import path from "node:path";
import { type Conversation, getConvTemplate } from "./conversation.js";
import { argmax, Generation } from "./generate.js";
import { expandLabels, IGNORE_INDEX, maskRounds } from "./labels.js";
import type { LoadedLlava } from "./load.js";
import { buildInputs, expandedIds, prepareImages, promptIds, type PreparedImages } from "./pipeline.js";
import { IMAGE_TOKEN } from "./spec.js";
import type { RgbImage } from "../image/decode.js";
import { writeFileAtomic, writeFully } from "../io/files.js";
import { writeNpy } from "../io/npy.js";
import { writeOutputFolder } from "../io/output.js";
import { clipPreprocess, padPreprocess } from "../image/processor.js";
import { concat, crossEntropy, reshape } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";

/** One traced array: float32 values or int64 ids, as numpy would hold them. */
export type TracedArray = { dtype: "<f4"; shape: number[]; data: Float32Array } | { dtype: "<i8"; shape: number[]; data: BigInt64Array };

/** Arrays by their fixture names, in the order they were traced. */
export class Trace {
  readonly arrays = new Map<string, TracedArray>();

  float(name: string, shape: number[], data: Float32Array): void {
    this.arrays.set(name, { dtype: "<f4", shape, data });
  }

  ints(name: string, values: ArrayLike<number>, shape = [values.length]): void {
    this.arrays.set(name, { dtype: "<i8", shape, data: BigInt64Array.from(Array.from(values), (v) => BigInt(v)) });
  }

  tensor(name: string, t: Tensor): void {
    this.float(name, [...t.shape], t.data);
  }
}

/** Stacks equally shaped tensors along a new first axis. */
function stackTensors(ts: Tensor[]): { shape: number[]; data: Float32Array } {
  const data = new Float32Array(ts.length * ts[0].size);
  ts.forEach((t, i) => data.set(t.data, i * t.size));
  return { shape: [ts.length, ...ts[0].shape], data };
}

/**
 * Pixels: for 1.5 models both the center-crop and the pad preprocessing (the model uses one);
 * for AnyRes models the tiles the model sees and the original sizes (height, width).
 */
function tracePixels(trace: Trace, loaded: LoadedLlava, images: RgbImage[], prepared: PreparedImages): void {
  if (loaded.model.settings.imageAspectMode === "anyres") {
    trace.tensor("pixel_values", prepared.pixels);
    trace.ints("image_sizes", images.flatMap((i) => [i.height, i.width]), [images.length, 2]);
    return;
  }
  for (const [name, fn] of [["pixel_values", clipPreprocess], ["pixel_values_pad", padPreprocess]] as const) {
    const ps = images.map((img) => fn(img, loaded.imageProcessor));
    const data = new Float32Array(ps.length * ps[0].data.length);
    ps.forEach((p, i) => data.set(p.data, i * p.data.length));
    trace.float(name, [ps.length, ...ps[0].shape], data);
  }
}

/** Per-position logits summaries, as the reference fixtures store them. */
function traceLogits(trace: Trace, logits: Tensor): void {
  const [t, v] = [logits.dim(-2), logits.dim(-1)];
  trace.float("logits_all", [t, v], logits.data);
  trace.float("logits_last", [v], logits.data.slice((t - 1) * v));
  const lse = new Float32Array(t);
  const best: number[] = [];
  for (let i = 0; i < t; i++) {
    const row = logits.data.subarray(i * v, (i + 1) * v);
    const m = row[argmax(row)];
    let s = 0;
    for (const x of row) s += Math.exp(x - m);
    lse[i] = Math.log(s) + m;
    best.push(argmax(row));
  }
  trace.float("logits_all_logsumexp", [t], lse);
  trace.ints("logits_all_argmax", best);
}

function prepareTraced(loaded: LoadedLlava, images: RgbImage[], trace: Trace): PreparedImages | null {
  if (!images.length) return null;
  const p = prepareImages(loaded, images);
  tracePixels(trace, loaded, images, p);
  return p;
}

/**
 * The forward pass over `prompt`: every vision layer, the projector, the spliced embeddings,
 * every decoder layer, the logits, and `maxNewTokens` greedy ids that ignore EOS (the fixtures'
 * generated_ids).
 */
export async function traceInference(loaded: LoadedLlava, prompt: string, images: RgbImage[], maxNewTokens: number): Promise<Trace> {
  const trace = new Trace();
  const model = loaded.model;
  const { ids, encoded, imageFeatures, embeds } = buildInputs(loaded, prompt, prepareTraced(loaded, images, trace), true);
  trace.ints("input_ids", ids);
  if (model.settings.expandImageTokens) trace.ints("input_ids_expanded", expandedIds(loaded, ids, imageFeatures));
  if (encoded) {
    const vs = stackTensors(encoded.visionHiddenStates);
    trace.float("vision_hidden_states", vs.shape, vs.data);
    trace.tensor("image_features", encoded.features);
    trace.tensor("projector_output", encoded.projected);
    if (model.settings.anyres) trace.tensor("image_features_packed", imageFeatures.length === 1 ? imageFeatures[0] : concat(imageFeatures, 0));
  }
  trace.float("inputs_embeds", [embeds.dim(1), embeds.dim(2)], embeds.data);
  const { hidden, hiddenStates } = model.llm.forward(embeds, { collectHidden: true });
  const hs = stackTensors(hiddenStates!.map((h) => reshape(h, [h.dim(1), h.dim(2)])));
  trace.float("hidden_states", hs.shape, hs.data);
  traceLogits(trace, model.llm.logits(reshape(hidden, [hidden.dim(1), hidden.dim(2)])));
  const greedy = await new Generation(loaded, embeds, { maxNewTokens, temperature: 0, eosTokenIds: [] }).complete();
  trace.ints("generated_ids", greedy.tokens);
  return trace;
}

/**
 * One training example: `prompt` rendered from `conv` with the answer in place. Traces the ids,
 * the reference's labels (and their expansion for HF checkpoints), the loss and the gradients of
 * the projector's Linear layers; the projector's gradient state is restored afterwards.
 */
export function traceTraining(loaded: LoadedLlava, conv: Conversation<unknown>, prompt: string, images: RgbImage[]): Trace {
  const trace = new Trace();
  const model = loaded.model;
  const projectorParams = model.projector.namedParameters().map(([, t]) => t);
  for (const t of projectorParams) t.requiresGrad = true;
  try {
    const { ids, embeds, imageFeatures } = buildInputs(loaded, prompt, prepareTraced(loaded, images, trace));
    trace.ints("input_ids", ids);
    const { labels } = maskRounds(conv, prompt, ids, (text) => promptIds(loaded, text), loaded.tokenizer.legacy);
    trace.ints("labels", labels);
    const full = expandLabels(ids, labels, model.settings.imageTokenId, imageFeatures.map((f) => f.dim(0)));
    if (model.settings.expandImageTokens) {
      trace.ints("input_ids_expanded", expandedIds(loaded, ids, imageFeatures));
      trace.ints("labels_expanded", full);
    }
    const { hidden } = model.llm.forward(embeds);
    const logits = model.llm.logits(reshape(hidden, [hidden.dim(1), hidden.dim(2)]));
    const targets = Int32Array.from(full.slice(0, logits.dim(0)), (_, i) => full[i + 1] ?? IGNORE_INDEX);
    const loss = crossEntropy(logits, targets);
    trace.float("loss", [], loss.data);
    loss.backward();
    model.projector.linears.forEach((l, i) => {
      for (const [name, t] of l.namedParameters()) trace.float(`grad_linear_${i + 1}_${name}`, [...t.shape], t.grad!);
    });
    return trace;
  } finally {
    for (const t of projectorParams) {
      t.requiresGrad = false;
      t.grad = null;
    }
  }
}

/** A request to trace: as the reference fixtures are made, one `<image>` line per image before the query. */
export interface TraceRequest {
  images: RgbImage[];
  query: string;
  system?: string;
  /** with an answer, a training example (labels, loss, gradients); without, greedy generation */
  answer?: string;
  convMode: string;
  maxNewTokens: number;
}

/** The reference fixtures' rendering of a request: the template, then the answer if any. */
export function tracePrompt(req: Omit<TraceRequest, "images"> & { imageCount: number }): { conv: Conversation<unknown>; prompt: string } {
  const conv = getConvTemplate(req.convMode);
  if (req.system !== undefined) conv.system = req.system;
  conv.appendMessage(conv.roles[0], `${IMAGE_TOKEN}\n`.repeat(req.imageCount) + req.query);
  conv.appendMessage(conv.roles[1], req.answer ?? null);
  return { conv, prompt: conv.getPrompt() };
}

/** The rendered prompt and the trace of a request. */
export async function traceRequest(loaded: LoadedLlava, req: TraceRequest): Promise<{ prompt: string; trace: Trace }> {
  const { conv, prompt } = tracePrompt({ ...req, imageCount: req.images.length });
  const trace = req.answer !== undefined ? traceTraining(loaded, conv, prompt, req.images) : await traceInference(loaded, prompt, req.images, req.maxNewTokens);
  return { prompt, trace };
}

/**
 * Writes prompt.txt and one .npy per traced array into the folder `out`, complete or not at all
 * (an existing non-empty `out` only with `force`); returns the arrays' names.
 */
export function writeTrace(out: string, force: boolean, prompt: string, trace: Trace): Promise<string[]> {
  return writeOutputFolder(out, force, async (dir, interrupt) => {
    writeFileAtomic(path.join(dir, "prompt.txt"), (fd) => writeFully(fd, Buffer.from(prompt, "utf8")));
    for (const [name, array] of trace.arrays) {
      await interrupt();
      writeNpy(path.join(dir, `${name}.npy`), array);
    }
    return [...trace.arrays.keys()];
  });
}
