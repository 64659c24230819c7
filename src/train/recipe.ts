/**
 * A training run as the reference's train.py makes one: the starting model (init.ts), the data
 * checked before step 1 (data-check.ts), what trains in the stage (trainables.ts), the batches'
 * loss (batch.ts) in the reference sampler's order (sampler.ts), the loop with its checkpoints
 * (trainer.ts), and the stage's output files (save.ts).
 */
import { createHash } from "node:crypto";
import path from "node:path";
import { checkDataset, checkOptionsFor, type DataReport, problemLines } from "./data-check.js";
import { readTrainingData, type TrainingRecord } from "./dataset.js";
import { initTrainingModel, trainingConfigKeys } from "./init.js";
import type { TrainOptions } from "./options.js";
import type { Issue } from "./preprocess.js";
import { batchLoss } from "./batch.js";
import { sampleLengths, trainingOrder } from "./sampler.js";
import { saveFullModel, saveLora, saveProjector } from "./save.js";
import { setTrainables } from "./trainables.js";
import { train, type TrainerHooks, type TrainerOptions, type TrainerTask, type TrainResult } from "./trainer.js";
import { loadImages } from "../image/decode.js";
import type { LoadedLlava } from "../llava/load.js";
import { Scratch } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import { Rng } from "../util/random.js";

/** The trainer's settings from the run's options. */
export function trainerOptions(opts: TrainOptions): TrainerOptions {
  return {
    outputDir: opts.output_dir!,
    numTrainEpochs: opts.num_train_epochs,
    maxSteps: opts.max_steps > 0 ? opts.max_steps : undefined,
    perDeviceTrainBatchSize: opts.per_device_train_batch_size,
    gradientAccumulationSteps: opts.gradient_accumulation_steps,
    learningRate: opts.learning_rate,
    mmProjectorLr: opts.mm_projector_lr,
    weightDecay: opts.weight_decay,
    warmupRatio: opts.warmup_ratio,
    lrSchedulerType: opts.lr_scheduler_type,
    maxGradNorm: opts.max_grad_norm,
    saveSteps: opts.save_steps,
    saveTotalLimit: opts.save_total_limit,
    loggingSteps: opts.logging_steps,
    seed: opts.seed,
    resume: opts.resume,
  };
}

/**
 * The samples a run trains on: all of them, or with --skip-bad-samples those data check finds
 * usable. Unusable samples otherwise stop the run before step 1, listed.
 */
function usableRecords(records: TrainingRecord[], report: DataReport, opts: TrainOptions, warn: (line: string) => void): TrainingRecord[] {
  const bad = new Set(report.bad.map((s) => s.index));
  if (bad.size && !opts.skip_bad_samples) {
    throw new LlavaError(`${opts.data_path}: ${bad.size} of ${records.length} samples have problems (rerun with --skip-bad-samples to train without them; llava data check lists them all): ${problemLines(report, 5).join("; ")}`);
  }
  const usable = records.filter((r) => !bad.has(r.index));
  if (!usable.length) throw new LlavaError(`${opts.data_path}: none of its ${records.length} samples is usable: ${problemLines(report, 3).join("; ")}`);
  if (bad.size) warn(`skipping ${bad.size} of ${records.length} samples with problems (${kindCounts(report.bad.flatMap((s) => s.problems))})`);
  // what trains but not as written (cut by the length limit, turns dropped): counted, not silent
  if (report.warned.length) warn(`${report.warned.length} samples train with warnings (${kindCounts(report.warned.flatMap((s) => s.warnings))}); llava data check shows them`);
  return usable;
}

/** "missing-image 2, truncated 1": how many issues of each kind. */
function kindCounts(issues: Issue[]): string {
  const counts = new Map<string, number>();
  for (const { kind } of issues) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return [...counts].map(([kind, n]) => `${kind} ${n}`).join(", ");
}

/** Writes the stage's model files: the projector (stage 1), the LoRA adapter, or the whole model. */
function modelSaver(loaded: LoadedLlava, opts: TrainOptions, sourceDir: string): (dir: string) => void {
  const keys = trainingConfigKeys(opts);
  if (opts.tune_mm_mlp_adapter) return (dir) => saveProjector(dir, loaded, keys);
  if (opts.lora_enable) {
    const lora = { r: opts.lora_r, alpha: opts.lora_alpha, dropout: opts.lora_dropout, useRslora: false, baseModel: sourceDir };
    return (dir) => saveLora(dir, loaded, { ...lora, targetModules: loraTargets(loaded) }, { keys });
  }
  return (dir) => saveFullModel(dir, loaded, { keys, filesFrom: sourceDir });
}

/** The target_modules the adapters were attached to (the leaf names of the LLM's Linears that carry one). */
function loraTargets(loaded: LoadedLlava): string[] {
  return [...new Set(loaded.model.llm.namedLinears().filter(([, l]) => l.adapter).map(([n]) => n.split(".").pop()!))].sort();
}

export interface RunHooks extends TrainerHooks {
  /** where warnings go (default: one `llava: warning:` line each on stderr) */
  warn?: (line: string) => void;
}

/** A usable sample as the data check tokenized it, packed (4 bytes a token each for ids and labels). */
interface KeptSample {
  ids: Int32Array;
  labels: Int32Array;
  imagePaths: string[];
}

/** Runs `llava train` with checked options; see the file comment. */
export async function runTraining(opts: TrainOptions, hooks: RunHooks = {}): Promise<TrainResult> {
  const warn = hooks.warn ?? ((line: string) => process.stderr.write(`llava: warning: ${line}\n`));
  const records = readTrainingData(opts.data_path!);
  const { loaded, sourceDir } = await initTrainingModel(opts);
  const check = checkOptionsFor(loaded, opts.version, opts.model_max_length, opts.image_folder ?? undefined);
  // the check tokenizes every sample; training keeps them instead of tokenizing each again every
  // epoch (tokenizing took 15% of a stage-2 step of the world recipe)
  const kept = new Map<number, KeptSample>();
  const report = await checkDataset(records, check, undefined, ({ index, ids, labels, imagePaths }) => {
    kept.set(index, { ids: Int32Array.from(ids), labels: Int32Array.from(labels), imagePaths });
  });
  const usable = usableRecords(records, report, opts, warn);
  const parameters = setTrainables(loaded, {
    tuneMmMlpAdapter: opts.tune_mm_mlp_adapter,
    freezeBackbone: opts.freeze_backbone,
    freezeMmMlpAdapter: opts.freeze_mm_mlp_adapter,
    unfreezeVisionTower: opts.unfreeze_vision_tower,
    lora: opts.lora_enable ? { r: opts.lora_r, alpha: opts.lora_alpha, dropout: opts.lora_dropout } : null,
    // the adapters' initial A matrices, from a stream of their own
    rng: new Rng(opts.seed ^ 0x10a),
  });
  const { modalityLengths } = sampleLengths(usable);
  // each micro-batch's forward reuses one buffer (back-propagated before the next forward)
  const workspace = opts.gradient_checkpointing ? undefined : new Scratch();
  const task: TrainerTask = {
    parameters,
    numSamples: usable.length,
    order: (epoch) => trainingOrder(modalityLengths, {
      seed: opts.seed, epoch, batchSize: opts.per_device_train_batch_size,
      // LLaVATrainer passes world_size × gradient_accumulation_steps (one device here)
      worldSize: opts.gradient_accumulation_steps, groupByModalityLength: opts.group_by_modality_length,
    }),
    // each sample's images are read when its batch comes, as the reference's lazy dataset does
    async loss(indices, rng) {
      const examples = await Promise.all(indices.map(async (i) => {
        const { ids, labels, imagePaths } = kept.get(usable[i].index)!;
        return { ids: Array.from(ids), labels: Array.from(labels), images: await loadImages(imagePaths) };
      }));
      return batchLoss(loaded, examples, { modelMaxLength: opts.model_max_length, gradientCheckpointing: opts.gradient_checkpointing, rng, workspace });
    },
    saveModel: modelSaver(loaded, opts, sourceDir),
    sampleId: (i) => usable[i].id,
    fingerprint: {
      stage: opts.stage, model_name_or_path: path.resolve(opts.model_name_or_path!), data_path: path.resolve(opts.data_path!),
      samples: createHash("sha256").update(usable.map((r) => r.id).join("\n")).digest("hex").slice(0, 16), version: opts.version, model_max_length: opts.model_max_length,
      lora: opts.lora_enable ? `${opts.lora_r}/${opts.lora_alpha}/${opts.lora_dropout}` : "off", group_by_modality_length: opts.group_by_modality_length,
    },
  };
  return train(task, trainerOptions(opts), hooks);
}
