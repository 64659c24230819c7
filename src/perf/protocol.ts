/**
 * The bench protocol, the same for llava-ts and its peers: the prompt, the decode length and the
 * training step. See `llava bench --help` and the README's Performance section.
 */
import { IGNORE_INDEX } from "../llava/labels.js";
import type { LoadedLlava } from "../llava/load.js";
import { prepareImages, promptIds } from "../llava/pipeline.js";
import { Scratch } from "../tensor/tensor.js";
import { AdamW } from "../train/optimizer.js";
import { batchLoss } from "../train/batch.js";
import { setTrainables, type TrainablesOptions } from "../train/trainables.js";
import { LlavaError } from "../util/errors.js";
import { Rng } from "../util/random.js";
import { noiseImage } from "./checkpoints.js";

/** Tokens of the prompt besides the image's: BOS, `USER:`, filler text, ` ASSISTANT:`. */
export const PROMPT_TEXT_TOKENS = 40;
/** Greedy tokens decoded after the prompt. */
export const DECODE_TOKENS = 64;
/** Supervised answer tokens of a training step. */
export const ANSWER_TOKENS = 64;
/** AdamW's learning rate in a training step (weight decay 0, the default betas and epsilon). */
export const TRAIN_LR = 1e-5;

export const INFERENCE_PHASES = ["encode", "prefill", "decode"] as const;
export const TRAIN_PHASES = ["train_proj", "train_lora", "train_full"] as const;
export const PHASES = [...INFERENCE_PHASES, ...TRAIN_PHASES] as const;
export type InferencePhase = (typeof INFERENCE_PHASES)[number];
export type TrainPhase = (typeof TRAIN_PHASES)[number];
export type Phase = (typeof PHASES)[number];

/** What each training phase trains: the projector alone (stage 1), LoRA r=128 adapters + projector, the whole LLM + projector (stage 2). */
export const TRAINABLES: Record<TrainPhase, Omit<TrainablesOptions, "rng">> = {
  train_proj: { tuneMmMlpAdapter: true },
  train_lora: { lora: { r: 128, alpha: 256, dropout: 0.05 } },
  train_full: {},
};

/** The bench image: uniform noise at 640x480, preprocessed as the model does. */
export const benchImage = () => noiseImage(640, 480);

const FILLER = ["red", "blue", "cat", "sky"];
const promptText = (words: number) => `USER: <image>\n${Array.from({ length: words }, (_, i) => FILLER[i % FILLER.length]).join(" ")} ASSISTANT:`;

/** The prompt's ids (BOS, `USER:`, the image marker, filler to PROMPT_TEXT_TOKENS non-image ids, ` ASSISTANT:`). */
export function benchPromptIds(loaded: LoadedLlava): number[] {
  const marker = loaded.model.settings.imageTokenId;
  const textTokens = (ids: number[]) => ids.filter((id) => id !== marker).length;
  let words = PROMPT_TEXT_TOKENS - textTokens(promptIds(loaded, promptText(0)));
  // a filler word is one token in LLaMA's vocabulary; another tokenizer may need a few tries
  for (let attempt = 0; attempt < 8 && words >= 0; attempt++) {
    const ids = promptIds(loaded, promptText(words));
    const miss = PROMPT_TEXT_TOKENS - textTokens(ids);
    if (miss === 0) return ids;
    words += miss;
  }
  throw new LlavaError(`the bench prompt cannot be made ${PROMPT_TEXT_TOKENS} text tokens long with this model's tokenizer`);
}

/**
 * The peers' prompt, which takes no image: the bench prompt with the image marker replaced by
 * `imageRows` filler text ids, so the prompt is as long as ours with the image spliced in.
 */
export function textOnlyPromptIds(loaded: LoadedLlava, ids: number[], imageRows: number): number[] {
  const filler = loaded.tokenizer.encode(FILLER[0]).at(-1)!;
  const marker = loaded.model.settings.imageTokenId;
  return ids.flatMap((id) => (id === marker ? new Array<number>(imageRows).fill(filler) : [id]));
}

/** The example a training step learns: the bench prompt with the bench image, then ANSWER_TOKENS supervised answer ids. */
export function trainingExample(loaded: LoadedLlava) {
  const prompt = benchPromptIds(loaded);
  const vocab = loaded.spec.text.vocabSize;
  const answer = Array.from({ length: ANSWER_TOKENS }, (_, i) => 1000 + ((i * 7919) % (vocab - 1000)));
  return { ids: [...prompt, ...answer], labels: [...prompt.map(() => IGNORE_INDEX), ...answer], images: [benchImage()] };
}

/** One training step of `phase` (zero grad, forward with the frozen tower, loss on the answer, backward, AdamW), set up once; a step returns its loss. */
export function trainingStep(loaded: LoadedLlava, phase: TrainPhase): { step: () => number; trainableParams: number } {
  const rng = new Rng(1);
  const named = setTrainables(loaded, { ...TRAINABLES[phase], rng });
  const opt = new AdamW([{ params: named, lr: TRAIN_LR, weightDecay: 0 }]);
  const example = trainingExample(loaded);
  // the step starts from preprocessed pixels, as PyTorch's does (torch_peer.py reads them)
  const prepared = prepareImages(loaded, example.images);
  const workspace = new Scratch(); // as the trainer's
  const step = () => {
    opt.zeroGrad();
    const { loss } = batchLoss(loaded, [example], { modelMaxLength: loaded.spec.text.maxPositionEmbeddings, rng, prepared, workspace });
    loss.backward();
    opt.step(1);
    return loss.data[0];
  };
  return { step, trainableParams: named.reduce((n, [, t]) => n + t.size, 0) };
}
