/**
 * How long a run is and how its learning rate moves, as the HF Trainer (4.37) computes them:
 * optimizer steps per epoch = len(dataloader) // gradient_accumulation_steps (at least 1), total
 * steps = ceil(epochs × that) unless max_steps is set, warmup = ceil(warmup_ratio × total), and
 * the `transformers.get_scheduler` learning-rate factors.
 */
import { LlavaError } from "../util/errors.js";

export const SCHEDULER_TYPES = ["cosine", "linear", "constant", "constant_with_warmup"] as const;
export type SchedulerType = (typeof SCHEDULER_TYPES)[number];

export function checkSchedulerType(name: string): SchedulerType {
  if (!(SCHEDULER_TYPES as readonly string[]).includes(name)) {
    throw new LlavaError(`unknown lr_scheduler_type "${name}" (supported: ${SCHEDULER_TYPES.join(", ")})`);
  }
  return name as SchedulerType;
}

export interface PlanInput {
  numSamples: number;
  batchSize: number;
  gradientAccumulationSteps: number;
  numTrainEpochs: number;
  /** > 0 overrides the epochs, as HF's max_steps does */
  maxSteps?: number;
}

export interface TrainingPlan {
  /** micro-batches (of `batchSize`, the last one possibly shorter) in an epoch: len(dataloader) */
  microBatchesPerEpoch: number;
  stepsPerEpoch: number;
  /** epochs started (the last one may stop early) */
  numEpochs: number;
  totalSteps: number;
}

export function trainingPlan(p: PlanInput): TrainingPlan {
  if (!(p.numSamples > 0)) throw new LlavaError("the training set is empty");
  const microBatchesPerEpoch = Math.ceil(p.numSamples / p.batchSize);
  const stepsPerEpoch = Math.max(Math.floor(microBatchesPerEpoch / p.gradientAccumulationSteps), 1);
  if (p.maxSteps && p.maxSteps > 0) {
    return { microBatchesPerEpoch, stepsPerEpoch, totalSteps: p.maxSteps, numEpochs: Math.ceil(p.maxSteps / stepsPerEpoch) };
  }
  const totalSteps = Math.ceil(p.numTrainEpochs * stepsPerEpoch);
  return { microBatchesPerEpoch, stepsPerEpoch, totalSteps, numEpochs: Math.ceil(p.numTrainEpochs) };
}

/**
 * The micro-batches of optimizer step `stepInEpoch`, as [start, end) indices into the epoch's
 * order. A step takes `accum` micro-batches; when an epoch has no more than `accum`, its one step
 * takes them all (HF's "last step with fewer steps than gradient accumulation"). The fewer than
 * `accum` micro-batches left at the end of a longer epoch train no step: the step count above
 * already leaves them out (HF 4.37 folds their gradients into the next epoch's first step, with
 * accumulation windows that then straddle epochs; with no remainder, the usual case, both agree).
 */
export function stepMicroBatches(plan: TrainingPlan, stepInEpoch: number, accum: number, batchSize: number, numSamples: number): Array<[number, number]> {
  const first = stepInEpoch * accum;
  const count = Math.min(accum, plan.microBatchesPerEpoch - first);
  return Array.from({ length: count }, (_, i) => [(first + i) * batchSize, Math.min((first + i + 1) * batchSize, numSamples)]);
}

/** TrainingArguments.get_warmup_steps: explicit steps win over the ratio. */
export function warmupSteps(totalSteps: number, warmupRatio: number, steps = 0): number {
  return steps > 0 ? steps : Math.ceil(totalSteps * warmupRatio);
}

/** The factor on the base learning rate for optimizer step `step` (0-based), as LambdaLR applies it. */
export function lrFactor(type: SchedulerType, step: number, warmup: number, total: number): number {
  if (type === "constant") return 1;
  if (step < warmup) return step / Math.max(1, warmup);
  switch (type) {
    case "constant_with_warmup":
      return 1;
    case "linear":
      return Math.max(0, (total - step) / Math.max(1, total - warmup));
    case "cosine": {
      const progress = (step - warmup) / Math.max(1, total - warmup);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
  }
}
