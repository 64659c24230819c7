/**
 * A real tiny training task for the trainer's tests: the tiny-llava-1.5-mha fixture with its
 * projector trainable, six image + question + answer examples, and the per-example loss that
 * traceTraining computes (the batched loss of the data and loss layers is not needed here).
 * The question of each example is drawn from the run's random stream, so a resume that lost the
 * random state would train on other text.
 */
import path from "node:path";
import { loadImages, type RgbImage } from "../../src/image/decode.js";
import { writeSafetensors } from "../../src/io/safetensors.js";
import { expandLabels, IGNORE_INDEX, maskRounds } from "../../src/llava/labels.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import { buildInputs, prepareImages, promptIds } from "../../src/llava/pipeline.js";
import { tracePrompt } from "../../src/llava/trace.js";
import { add, crossEntropy, reshape, scale } from "../../src/tensor/ops.js";
import type { Tensor } from "../../src/tensor/tensor.js";
import type { TrainerTask } from "../../src/train/trainer.js";
import { Rng } from "../../src/util/random.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

const ANSWERS = ["A red square.", "A checkerboard.", "Colours fading left to right.", "A gradient.", "Squares on a board.", "Red and white."];
const QUESTIONS = ["What is shown?", "Describe the image."];

interface Example {
  image: RgbImage;
  answer: string;
}

function exampleLoss(loaded: LoadedLlava, ex: Example, question: string): { loss: Tensor; tokens: number } {
  const { conv, prompt } = tracePrompt({ query: question, answer: ex.answer, convMode: "llava_v1", imageCount: 1, maxNewTokens: 0 });
  const { ids, embeds, imageFeatures } = buildInputs(loaded, prompt, prepareImages(loaded, [ex.image]));
  const labels = maskRounds(conv, prompt, ids, (text) => promptIds(loaded, text), loaded.tokenizer.legacy).labels;
  const full = expandLabels(ids, labels, loaded.model.settings.imageTokenId, imageFeatures.map((f) => f.dim(0)));
  const { hidden } = loaded.model.llm.forward(embeds);
  const logits = loaded.model.llm.logits(reshape(hidden, [hidden.dim(1), hidden.dim(2)]));
  const targets = Int32Array.from({ length: logits.dim(0) }, (_, i) => full[i + 1] ?? IGNORE_INDEX);
  return { loss: crossEntropy(logits, targets), tokens: targets.filter((t) => t !== IGNORE_INDEX).length };
}

/** A seeded shuffle per epoch (a pure function of seed and epoch, as the trainer requires). */
export function shuffled(n: number, seed: number): number[] {
  const rng = new Rng(seed);
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

export async function tinyProjectorTask(seed = 7): Promise<{ task: TrainerTask; loaded: LoadedLlava }> {
  const loaded = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
  const images = await loadImages([path.join(IMAGES, "checker_300x500.png"), path.join(IMAGES, "gradient_640x480.png")]);
  const examples: Example[] = ANSWERS.map((answer, i) => ({ image: images[i % 2], answer }));
  const parameters = loaded.model.namedParameters().filter(([name]) => name.includes("mm_projector"));
  for (const [, t] of parameters) t.requiresGrad = true;
  const task: TrainerTask = {
    parameters,
    numSamples: examples.length,
    order: (epoch) => shuffled(examples.length, seed * 1000 + epoch),
    loss(indices, rng) {
      // the token-mean over the batch: each example's mean weighted by its share of the tokens
      const parts = indices.map((i) => exampleLoss(loaded, examples[i], QUESTIONS[Math.floor(rng.next() * QUESTIONS.length)]));
      const total = parts.reduce((s, p) => s + p.tokens, 0);
      const loss = parts.map((p) => scale(p.loss, p.tokens / total)).reduce((a, b) => add(a, b));
      return { loss, supervisedTokens: total };
    },
    saveModel(dir) {
      writeSafetensors(path.join(dir, "projector.safetensors"), parameters.map(([name, t]) => ({ name, dtype: "F32", shape: [...t.shape], data: t.data })));
    },
    sampleId: (i) => `example-${i}`,
  };
  return { task, loaded };
}
