/**
 * The training forward of a batch, as the reference computes it (llava_arch.py
 * prepare_inputs_labels_for_multimodal, then HF LlamaForCausalLM's loss): every image of the
 * batch goes through the tower and the projector, each sample's image markers are replaced by
 * their feature rows (labels -100 over them), each sample is cut to model_max_length after that
 * expansion, the samples are right-padded to the longest and run as one [B, T] decoder forward,
 * and the loss is the mean next-token cross-entropy over every supervised position of the batch.
 *
 * No attention mask is needed: with right padding a sample's real positions all come before its
 * padding, and causal attention lets a position see only earlier ones, so padding never enters
 * a real position's attention (nor, having no label, the loss). A batch of N therefore gives the
 * loss and gradients of the N samples one by one, each weighted by its supervised token count.
 */
import type { RgbImage } from "../image/decode.js";
import { expandLabels, IGNORE_INDEX } from "../llava/labels.js";
import type { LoadedLlava } from "../llava/load.js";
import { type PreparedImages, prepareImages } from "../llava/pipeline.js";
import { concat, crossEntropy, gatherRows, reshape } from "../tensor/ops.js";
import { Scratch, Tensor, withScratch } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import type { Rng } from "../util/random.js";

/** One tokenized sample: ids with one image marker per image (as promptIds gives them), labels -100 where masked. */
export interface TrainingExample {
  ids: number[];
  labels: number[];
  images: RgbImage[];
}

export interface BatchLossOptions {
  /** each sample is cut to this many positions after its images are spliced in */
  modelMaxLength: number;
  /** recompute each layer's activations in the backward pass instead of keeping them */
  gradientCheckpointing?: boolean;
  /** LoRA dropout's random stream (restored for recomputation under checkpointing) */
  rng: Rng;
  /**
   * The batch's images already preprocessed: prepareImages of every example's images in order
   * (a data loader that prepares ahead, or a benchmark that times the step alone)
   */
  prepared?: PreparedImages;
  /**
   * Carves the forward's outputs from this buffer, reused by each call, instead of fresh arrays
   * (a bench-small projector step 710-727 -> 664-682 ms: no collections triggered by hundreds of
   * new arrays, and memory already mapped and cached). The loss must be back-propagated before
   * the next call with the same workspace; not with gradient checkpointing, whose forward would
   * then keep what it is meant to drop.
   */
  workspace?: Scratch;
}

export interface BatchLoss {
  /** scalar: mean cross-entropy over the batch's supervised positions */
  loss: Tensor;
  /** positions whose next token is supervised: the mean's denominator */
  supervisedTokens: number;
}

/** Each example's feature rows [M_i, D], all images through the tower and projector together. */
function imageFeaturesPerExample(loaded: LoadedLlava, examples: TrainingExample[], checkpointed: boolean, given?: PreparedImages): Tensor[][] {
  const model = loaded.model;
  const images = examples.flatMap((e) => e.images);
  if (given && given.layouts.length !== images.length) throw new LlavaError(`the batch has ${images.length} image(s) but ${given.layouts.length} prepared`);
  if (!images.length) return examples.map(() => []);
  const prepared = given ?? prepareImages(loaded, images);
  const towerTrains = checkpointed && model.vision.namedParameters().some(([, t]) => t.requiresGrad);
  const features = model.imageFeatures(model.encodeImages(prepared.pixels, false, towerTrains).projected, prepared.layouts);
  let next = 0;
  return examples.map((e) => features.slice(next, (next += e.images.length)));
}

function checkExample(e: TrainingExample, i: number, marker: number): void {
  if (e.ids.length !== e.labels.length) throw new LlavaError(`training sample ${i}: ${e.ids.length} ids but ${e.labels.length} labels`);
  const markers = e.ids.filter((id) => id === marker).length;
  if (markers !== e.images.length) throw new LlavaError(`training sample ${i}: ${markers} image marker(s) but ${e.images.length} image(s)`);
}

/** The loss of a batch of examples and the number of supervised positions it averages over. */
export function batchLoss(loaded: LoadedLlava, examples: TrainingExample[], opts: BatchLossOptions): BatchLoss {
  if (opts.workspace && opts.gradientCheckpointing) throw new LlavaError("a training workspace keeps every output of the forward: not with gradient checkpointing");
  return opts.workspace ? withScratch(opts.workspace, () => forwardLoss(loaded, examples, opts)) : forwardLoss(loaded, examples, opts);
}

function forwardLoss(loaded: LoadedLlava, examples: TrainingExample[], opts: BatchLossOptions): BatchLoss {
  const model = loaded.model;
  const marker = model.settings.imageTokenId;
  if (!examples.length) throw new LlavaError("a training batch needs at least one sample");
  if (!(Number.isInteger(opts.modelMaxLength) && opts.modelMaxLength >= 1)) throw new LlavaError(`model_max_length must be a positive whole number, got ${opts.modelMaxLength}`);
  examples.forEach((e, i) => checkExample(e, i, marker));
  const checkpointed = opts.gradientCheckpointing === true;
  const features = imageFeaturesPerExample(loaded, examples, checkpointed, opts.prepared);
  const rows = examples.map((e, i) => {
    const embeds = model.embedPrompt(e.ids, features[i], opts.modelMaxLength);
    const labels = expandLabels(e.ids, e.labels, marker, features[i].map((f) => f.dim(0))).slice(0, embeds.dim(1));
    return { embeds, labels };
  });
  const length = Math.max(...rows.map((r) => r.labels.length));
  const dim = rows[0].embeds.dim(2);
  const backend = model.backend;
  // right padding with zero embeddings, as the reference re-pads after splicing
  const padded = rows.map(({ embeds }) => {
    const missing = length - embeds.dim(1);
    return missing ? concat([embeds, Tensor.zeros([1, missing, dim], backend)], 1) : embeds;
  });
  // position t predicts token t+1 of its own row (HF's shift), padding has no label
  const positions: number[] = [];
  const targets: number[] = [];
  rows.forEach(({ labels }, b) => {
    for (let t = 0; t + 1 < labels.length; t++) {
      if (labels[t + 1] === IGNORE_INDEX) continue;
      positions.push(b * length + t);
      targets.push(labels[t + 1]);
    }
  });
  if (!targets.length) throw new LlavaError(`the batch has no supervised tokens (all labels are masked${examples.length > 1 ? " in every sample" : ""}, or cut by model_max_length ${opts.modelMaxLength})`);
  // the decoder's output from the first supervised position on (the last layer skips the rest),
  // and logits only where the loss looks: the same mean over the same rows
  const from = positions.reduce((m, p) => Math.min(m, p % length), length);
  const { hidden } = model.llm.forward(padded.length === 1 ? padded[0] : concat(padded, 0), { training: { rng: opts.rng, checkpoint: checkpointed }, outputFrom: from });
  const kept = length - from;
  const supervised = gatherRows(reshape(hidden, [rows.length * kept, dim]), Int32Array.from(positions, (p) => Math.floor(p / length) * kept + (p % length) - from));
  const loss = crossEntropy(model.llm.logits(supervised), Int32Array.from(targets), IGNORE_INDEX);
  return { loss, supervisedTokens: targets.length };
}
