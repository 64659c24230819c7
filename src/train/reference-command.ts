/**
 * The hand-off to a GPU cluster: the reference trainer's command line (`deepspeed
 * llava/train/train_mem.py ...`, as in its v1.5 scripts) for the same data, model, paths and
 * hyperparameters, with the global batch split over the stated number of GPUs.
 */
import { OPTION_SPECS, type OptionName, REFERENCE_PER_DEVICE_BATCH, type TrainOptions } from "./options.js";
import { LlavaError } from "../util/errors.js";

/** This project's options, which the reference trainer does not have. */
const OURS: ReadonlySet<OptionName> = new Set<OptionName>(["stage", "config", "resume", "skip_bad_samples", "threads", "print_reference_command", "gpus"]);

/** What the v1.5 scripts pass for the options that only tune the cluster run. */
const CLUSTER_SETTINGS: Array<[string, string]> = [
  ["bf16", "True"], ["tf32", "True"], ["evaluation_strategy", "no"], ["save_strategy", "steps"],
  ["per_device_eval_batch_size", "4"], ["dataloader_num_workers", "4"], ["lazy_preprocess", "True"], ["report_to", "none"],
];

/** A value as the reference's argument parser reads it: Python's True/False, numbers as written. */
function argValue(value: unknown): string {
  if (typeof value === "boolean") return value ? "True" : "False";
  return String(value);
}

/** Quoted for a POSIX shell when needed. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

/**
 * The per-GPU batch and accumulation giving `global` samples per step on `gpus` GPUs: the largest
 * per-GPU batch up to the reference's for the stage, the rest accumulated.
 */
export function splitGlobalBatch(global: number, gpus: number, maxPerDevice: number): { perDevice: number; accumulation: number } {
  if (global % gpus !== 0) {
    throw new LlavaError(`the global batch of ${global} samples per step does not split over ${gpus} GPUs; pass --gpus N dividing it, or batch sizes whose product is a multiple of ${gpus}`);
  }
  const perGpu = global / gpus;
  let perDevice = Math.min(perGpu, maxPerDevice);
  while (perGpu % perDevice !== 0) perDevice--;
  return { perDevice, accumulation: perGpu / perDevice };
}

/** The reference trainer's command line equivalent to `opts`, one argument per line, ready to paste into a shell. */
export function referenceCommand(opts: TrainOptions): string {
  if (opts.stage === "vision") throw new LlavaError("--stage vision has no equivalent in the reference's trainer (it starts from a pretrained CLIP tower)");
  if (opts.unfreeze_vision_tower) throw new LlavaError("--unfreeze-vision-tower has no equivalent in the reference's released trainer (LLaVA-1.6's training code is not public)");
  const global = opts.per_device_train_batch_size * opts.gradient_accumulation_steps;
  const { perDevice, accumulation } = splitGlobalBatch(global, opts.gpus, REFERENCE_PER_DEVICE_BATCH[opts.stage]);
  // the v1.5 scripts: ZeRO-2 for stage 1, ZeRO-3 for the LLM's fine-tuning (full or LoRA)
  const zero = opts.stage === "pretrain" ? "zero2" : "zero3";
  const args: Array<[string, string]> = [["deepspeed", `./scripts/${zero}.json`]];
  for (const name of Object.keys(OPTION_SPECS) as OptionName[]) {
    const spec = OPTION_SPECS[name];
    if (OURS.has(name) || ("ignored" in spec && spec.ignored) || name === "unfreeze_vision_tower") continue;
    const value = name === "per_device_train_batch_size" ? perDevice : name === "gradient_accumulation_steps" ? accumulation : opts[name];
    if (value === null) continue;
    args.push([name, argValue(value)]);
  }
  args.push(...CLUSTER_SETTINGS);
  const lines = [`deepspeed --num_gpus ${opts.gpus} llava/train/train_mem.py`, ...args.map(([k, v]) => `--${k} ${shellWord(v)}`)];
  return lines.join(" \\\n    ") + "\n";
}
