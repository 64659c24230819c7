/**
 * The training loop, as the HF Trainer (4.37) runs it for LLaVA: micro-batches from the epoch's
 * sample order, each micro-batch's mean loss divided by the accumulation steps and
 * back-propagated, then gradient clipping, an AdamW step at the scheduled learning rate and
 * zeroed gradients. Metrics go to metrics.jsonl and a progress line; checkpoints every
 * `saveSteps` and at the end; a run whose output folder holds checkpoints continues from the
 * latest one (the reference auto-resumes the same way) and ends with the same weights as an
 * uninterrupted run.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { NamedParameters } from "../nn/layers.js";
import { describeFsError } from "../io/files.js";
import type { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import { Rng } from "../util/random.js";
import {
  checkpointName, fingerprintDifferences, listCheckpoints, readCheckpoint, removeStaleFolders,
  type ResumeState, rotateCheckpoints, TRAINER_STATE_FILE, writeCheckpoint, writeJson,
} from "./checkpoint.js";
import { writeLossCurve } from "./loss-curve.js";
import { MetricsLog, Progress, type ProgressStream, readMetrics, type StepMetrics } from "./metrics.js";
import { AdamW, clipGradNorm, parameterGroups } from "./optimizer.js";
import { checkSchedulerType, lrFactor, stepMicroBatches, trainingPlan, warmupSteps } from "./schedule.js";

/** What to train: the trainer knows nothing of models or data beyond this. */
interface LossResult {
  loss: Tensor;
  supervisedTokens: number;
}

export interface TrainerTask {
  /** the trainable parameters by canonical name */
  parameters: NamedParameters;
  numSamples: number;
  /** the sample indices of an epoch, in training order: a pure function of the epoch (and the run's seed) */
  order(epoch: number): number[];
  /**
   * the mean loss over the supervised tokens of these samples; `rng` drives any randomness
   * (dropout). The trainer back-propagates it before it asks for the next, so a task may reuse
   * the forward's buffers from one call to the next.
   */
  loss(indices: number[], rng: Rng): LossResult | Promise<LossResult>;
  /** writes the model files of a checkpoint or of the final output into `dir` */
  saveModel(dir: string): void | Promise<void>;
  /** any other random streams the task keeps (augmentation, say): saved in checkpoints and restored on resume */
  rngs?: Record<string, Rng>;
  /** a sample's id for messages */
  sampleId?(index: number): string;
  /** what else the run depends on (data, model, preprocessing): a resume with other values is refused */
  fingerprint?: Record<string, unknown>;
}

/** HF TrainingArguments' names, in camelCase. */
export interface TrainerOptions {
  outputDir: string;
  numTrainEpochs: number;
  /** > 0: the number of optimizer steps, overriding the epochs */
  maxSteps?: number;
  perDeviceTrainBatchSize: number;
  gradientAccumulationSteps: number;
  learningRate: number;
  mmProjectorLr?: number | null;
  weightDecay: number;
  warmupRatio: number;
  warmupSteps?: number;
  lrSchedulerType: string;
  /** <= 0 turns clipping off */
  maxGradNorm: number;
  saveSteps: number;
  saveTotalLimit?: number | null;
  loggingSteps: number;
  seed: number;
  /** insist on continuing from a checkpoint (one is used anyway when the output folder has some) */
  resume?: boolean;
}

export interface TrainerHooks {
  /** where the progress line goes (default stderr; null for none) */
  progress?: ProgressStream | null;
  onStep?(m: StepMetrics): void;
  /** called with a checkpoint's temporary folder when it is complete, before it is renamed into place */
  beforeCheckpointCommit?(tempDir: string, step: number): void | Promise<void>;
}

export interface TrainResult {
  globalStep: number;
  /** the checkpoint the run continued from, if any */
  resumedFrom: string | null;
  lastCheckpoint: string;
  logHistory: Array<Record<string, number>>;
}

const positiveInt = (v: number) => Number.isInteger(v) && v > 0;

function checkOptions(o: TrainerOptions): void {
  const bad = (name: string, rule: string, v: unknown) => new LlavaError(`${name} must be ${rule} (got ${v})`);
  for (const [name, v] of [["per_device_train_batch_size", o.perDeviceTrainBatchSize], ["gradient_accumulation_steps", o.gradientAccumulationSteps], ["save_steps", o.saveSteps], ["logging_steps", o.loggingSteps]] as const) {
    if (!positiveInt(v)) throw bad(name, "a positive integer", v);
  }
  if (!(o.numTrainEpochs > 0) && !(o.maxSteps && o.maxSteps > 0)) throw bad("num_train_epochs", "positive (or max_steps set)", o.numTrainEpochs);
  if (o.maxSteps !== undefined && !Number.isInteger(o.maxSteps)) throw bad("max_steps", "an integer", o.maxSteps);
  for (const [name, v] of [["learning_rate", o.learningRate], ["weight_decay", o.weightDecay], ["max_grad_norm", o.maxGradNorm], ["mm_projector_lr", o.mmProjectorLr ?? 0]] as const) {
    if (!Number.isFinite(v) || v < 0) throw bad(name, "a finite number >= 0", v);
  }
  if (!(o.warmupRatio >= 0 && o.warmupRatio <= 1)) throw bad("warmup_ratio", "in [0, 1]", o.warmupRatio);
  if (!Number.isInteger(o.seed)) throw bad("seed", "an integer", o.seed);
  checkSchedulerType(o.lrSchedulerType);
}

/** Everything the run's numbers depend on; a checkpoint made with other values cannot be continued. */
function fingerprint(task: TrainerTask, o: TrainerOptions): Record<string, unknown> {
  const shapes = task.parameters.map(([n, t]) => `${n}:${t.shape.join("x")}`).join("\n");
  return {
    num_train_epochs: o.numTrainEpochs,
    max_steps: o.maxSteps ?? 0,
    per_device_train_batch_size: o.perDeviceTrainBatchSize,
    gradient_accumulation_steps: o.gradientAccumulationSteps,
    learning_rate: o.learningRate,
    mm_projector_lr: o.mmProjectorLr ?? null,
    weight_decay: o.weightDecay,
    warmup_ratio: o.warmupRatio,
    warmup_steps: o.warmupSteps ?? 0,
    lr_scheduler_type: o.lrSchedulerType,
    max_grad_norm: o.maxGradNorm,
    seed: o.seed,
    num_samples: task.numSamples,
    trainable_parameters: createHash("sha256").update(shapes).digest("hex").slice(0, 16),
    ...task.fingerprint,
  };
}

/** Checks an epoch's order once: every entry a sample index. */
function checkedOrder(task: TrainerTask, epoch: number): number[] {
  const order = task.order(epoch);
  const bad = order.find((i) => !Number.isInteger(i) || i < 0 || i >= task.numSamples);
  if (bad !== undefined) throw new LlavaError(`the sample order of epoch ${epoch} holds ${bad}, not an index below ${task.numSamples}`);
  return order;
}

function makeOutputFolder(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new LlavaError(`cannot create the output folder ${dir}: ${describeFsError(err)}`);
  }
}

/**
 * Loads checkpoint `dir` into the parameters, the optimizer and the random streams, after
 * checking it was made with the same settings; returns the run's position and log.
 */
function restore(dir: string, task: TrainerTask, optimizer: AdamW, streams: Record<string, Rng>, print: Record<string, unknown>) {
  const saved = readCheckpoint(dir);
  const diff = fingerprintDifferences(saved.state.fingerprint, print);
  if (diff.length) {
    throw new LlavaError(`cannot resume from ${dir}: it was made with other settings (${diff.join("; ")}); rerun with the same settings or use another output folder`);
  }
  for (const [name, t] of task.parameters) {
    const data = saved.parameters.get(name);
    if (!data || data.length !== t.size) throw new LlavaError(`cannot resume from ${dir}: it holds no ${name} of ${t.size} values`);
    t.data.set(data);
  }
  optimizer.loadState(saved.optimizerState);
  for (const [name, r] of Object.entries(streams)) {
    const state = saved.state.rngStates[name];
    if (!Number.isInteger(state)) throw new LlavaError(`cannot resume from ${dir}: it holds no state of the random stream "${name}"`);
    r.state = state;
  }
  return { state: saved.state, logHistory: (saved.trainerState.log_history ?? []) as Array<Record<string, number>> };
}

/**
 * Back-propagates each micro-batch's mean loss divided by the accumulation steps (HF's
 * scaling), so the parameters' gradients sum to the step's; returns the step's loss and tokens.
 */
async function accumulateGradients(task: TrainerTask, microBatches: number[][], accum: number, rng: Rng, nonFinite: (what: string, indices: number[]) => Error) {
  let loss = 0;
  let tokens = 0;
  for (const indices of microBatches) {
    const out = await task.loss(indices, rng);
    const value = out.loss.data[0];
    if (!Number.isFinite(value)) throw nonFinite(`the loss is ${value}`, indices);
    out.loss.backward(new Float32Array([1 / accum]));
    loss += value / accum;
    tokens += out.supervisedTokens;
  }
  return { loss, tokens };
}

/** Trains `task` with `opts`; see the module comment. */
export async function train(task: TrainerTask, opts: TrainerOptions, hooks: TrainerHooks = {}): Promise<TrainResult> {
  checkOptions(opts);
  if (!task.parameters.length) throw new LlavaError("nothing to train: no parameter is trainable");
  const outputDir = path.resolve(opts.outputDir);
  makeOutputFolder(outputDir);
  removeStaleFolders(outputDir);

  const accum = opts.gradientAccumulationSteps;
  const plan = trainingPlan({ numSamples: task.numSamples, batchSize: opts.perDeviceTrainBatchSize, gradientAccumulationSteps: accum, numTrainEpochs: opts.numTrainEpochs, maxSteps: opts.maxSteps });
  const schedulerType = checkSchedulerType(opts.lrSchedulerType);
  const warmup = warmupSteps(plan.totalSteps, opts.warmupRatio, opts.warmupSteps);
  const optimizer = new AdamW(parameterGroups(task.parameters, opts));
  const params = optimizer.parameters();
  const rng = new Rng(opts.seed);
  const streams: Record<string, Rng> = { ...task.rngs, loss: rng };
  const rngStates = () => Object.fromEntries(Object.entries(streams).map(([name, r]) => [name, r.state]));
  const print = fingerprint(task, opts);
  let state: ResumeState = { globalStep: 0, epoch: 0, stepInEpoch: 0, rngStates: rngStates(), fingerprint: print, lossSinceLog: 0, stepsSinceLog: 0 };
  let logHistory: Array<Record<string, number>> = [];

  const checkpoints = listCheckpoints(outputDir);
  if (opts.resume && !checkpoints.length) throw new LlavaError(`--resume: no checkpoint in ${outputDir}`);
  const resumedFrom = checkpoints.length ? checkpoints[checkpoints.length - 1].dir : null;
  if (resumedFrom) ({ state, logHistory } = restore(resumedFrom, task, optimizer, streams, print));

  const metrics = new MetricsLog(outputDir, state.globalStep);
  const progress = hooks.progress === null ? null : new Progress(hooks.progress ?? process.stderr, plan.totalSteps, opts.loggingSteps);
  let lastCheckpoint = resumedFrom;

  const trainerState = (epoch: number) => ({
    best_metric: null,
    best_model_checkpoint: null,
    epoch,
    eval_steps: 500,
    global_step: state.globalStep,
    is_hyper_param_search: false,
    is_local_process_zero: true,
    is_world_process_zero: true,
    log_history: logHistory,
    logging_steps: opts.loggingSteps,
    max_steps: plan.totalSteps,
    num_train_epochs: plan.numEpochs,
    save_steps: opts.saveSteps,
    train_batch_size: opts.perDeviceTrainBatchSize,
    trial_name: null,
    trial_params: null,
  });
  const epochNow = () => state.epoch + state.stepInEpoch / plan.stepsPerEpoch;

  const saveCheckpoint = async () => {
    state.rngStates = rngStates();
    const step = state.globalStep;
    lastCheckpoint = await writeCheckpoint(outputDir, {
      parameters: task.parameters,
      optimizerState: optimizer.state,
      state,
      trainerState: trainerState(epochNow()),
      saveModel: (dir) => task.saveModel(dir),
      beforeCommit: hooks.beforeCheckpointCommit && ((dir) => hooks.beforeCheckpointCommit!(dir, step)),
    });
    rotateCheckpoints(outputDir, opts.saveTotalLimit);
  };

  const nonFinite = (what: string, indices: number[]) => {
    const ids = task.sampleId ? ` (ids ${indices.map((i) => task.sampleId!(i)).join(", ")})` : "";
    const last = lastCheckpoint ? `the last good checkpoint is ${lastCheckpoint}` : "no checkpoint was written yet";
    return new LlavaError(`${what} at step ${state.globalStep + 1} (epoch ${state.epoch + 1}) on samples ${indices.join(", ")}${ids}; training stopped, ${last}`);
  };

  let order: number[] | null = null;
  let orderEpoch = -1;
  try {
    while (state.globalStep < plan.totalSteps) {
      if (state.stepInEpoch >= plan.stepsPerEpoch) {
        state = { ...state, epoch: state.epoch + 1, stepInEpoch: 0 };
        continue;
      }
      if (orderEpoch !== state.epoch) [order, orderEpoch] = [checkedOrder(task, state.epoch), state.epoch];
      const started = performance.now();
      const micro = stepMicroBatches(plan, state.stepInEpoch, accum, opts.perDeviceTrainBatchSize, order!.length).map(([a, b]) => order!.slice(a, b));
      const { loss: stepLoss, tokens } = await accumulateGradients(task, micro, accum, rng, nonFinite);
      const gradNorm = clipGradNorm(params, opts.maxGradNorm);
      if (!Number.isFinite(gradNorm)) throw nonFinite(`the gradient norm is ${gradNorm}`, micro.flat());
      if (!params.some((p) => p.grad)) throw new LlavaError("the loss does not depend on any trainable parameter: nothing would train");
      const factor = lrFactor(schedulerType, state.globalStep, warmup, plan.totalSteps);
      optimizer.step(factor);
      optimizer.zeroGrad();
      state.globalStep++;
      state.stepInEpoch++;
      const seconds = (performance.now() - started) / 1000;
      const m: StepMetrics = {
        step: state.globalStep,
        epoch: epochNow(),
        loss: stepLoss,
        learning_rate: optimizer.groups[0].lr * factor,
        grad_norm: gradNorm,
        tokens_per_second: seconds > 0 ? tokens / seconds : 0,
        seconds_per_step: seconds,
      };
      metrics.append(m);
      progress?.step(m);
      hooks.onStep?.(m);
      state.lossSinceLog += stepLoss;
      state.stepsSinceLog++;
      if (state.globalStep % opts.loggingSteps === 0) {
        logHistory.push({ epoch: m.epoch, grad_norm: gradNorm, learning_rate: m.learning_rate, loss: Math.round((state.lossSinceLog / state.stepsSinceLog) * 1e4) / 1e4, step: m.step });
        state.lossSinceLog = 0;
        state.stepsSinceLog = 0;
      }
      if (state.globalStep % opts.saveSteps === 0) await saveCheckpoint();
    }
    if (!lastCheckpoint || path.basename(lastCheckpoint) !== checkpointName(state.globalStep)) await saveCheckpoint();
  } finally {
    progress?.done();
  }

  await task.saveModel(outputDir);
  const final = trainerState(epochNow());
  writeJson(path.join(outputDir, TRAINER_STATE_FILE), final);
  writeLossCurve(path.join(outputDir, "loss.svg"), readMetrics(metrics.file));
  return { globalStep: state.globalStep, resumedFrom, lastCheckpoint: lastCheckpoint!, logHistory };
}
