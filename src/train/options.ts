/**
 * The options of `llava train`: the reference's ModelArguments, DataArguments and the
 * TrainingArguments its scripts use, under the reference's names (`--learning_rate` and
 * `--learning-rate` alike), plus this project's own. Values come from the command line, a
 * `--config` YAML or JSON file, the `--stage` preset (the v1.5 scripts' settings) and the
 * reference's defaults, in that order of precedence. Options keep the reference's snake_case
 * names everywhere (here, in config files and in the reference command line).
 */
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { z } from "zod";
import { projectorDepth } from "../llava/projector.js";
import { trainingTemplate } from "./preprocess.js";
import { describeFsError } from "../io/files.js";
import { editDistance, similarNames } from "../io/suggest.js";
import { LlavaError, UsageError } from "../util/errors.js";

type Kind = "string" | "number" | "int" | "bool" | readonly string[];

interface OptionSpec {
  kind: Kind;
  /** the reference's default (HF TrainingArguments or LLaVA's dataclasses), or this project's */
  default: unknown;
  /** null is a valid value (the reference's None) */
  nullable?: true;
  /** smallest value of a number */
  min?: number;
  /** largest value of a number */
  max?: number;
  help: string;
  /** accepted as on a reference command line, without an effect here */
  ignored?: true;
}

const STAGES = ["pretrain", "finetune", "vision"] as const;

/** Every option, in the order --help lists them. */
export const OPTION_SPECS = {
  // ours
  stage: { kind: STAGES, default: null, nullable: true, help: "pretrain (stage 1: projector only) or finetune (stage 2), which set the v1.5 script defaults below; or vision (a random tower's own stage before them, on cell labels)" },
  config: { kind: "string", default: null, nullable: true, help: "YAML or JSON file of options (same names); the command line wins" },
  resume: { kind: "bool", default: false, help: "continue from the newest checkpoint-N in output_dir (same optimizer, schedule, data order, random state)" },
  skip_bad_samples: { kind: "bool", default: false, help: "skip and count the samples data check finds unusable instead of stopping before step 1" },
  threads: { kind: "int", default: null, nullable: true, min: 1, max: 1024, help: "native kernel threads (default: the CPU's hardware threads)" },
  print_reference_command: { kind: "bool", default: false, help: "print the equivalent deepspeed command of the reference trainer and exit" },
  gpus: { kind: "int", default: 8, min: 1, help: "GPU count the reference command splits the global batch over" },
  // ModelArguments
  model_name_or_path: { kind: "string", default: null, nullable: true, help: "LLaMA-family LLM folder (stage 1) or LLaVA checkpoint" },
  version: { kind: "string", default: "v0", help: "conversation template of the preprocessing (plain, v1, llama_2, mpt, ...)" },
  freeze_backbone: { kind: "bool", default: false, help: "keep the LLM's weights frozen" },
  tune_mm_mlp_adapter: { kind: "bool", default: false, help: "train the projector only" },
  vision_tower: { kind: "string", default: null, nullable: true, help: "CLIP vision tower folder or hub name" },
  mm_vision_select_layer: { kind: "int", default: -1, help: "CLIP hidden state the projector reads" },
  pretrain_mm_mlp_adapter: { kind: "string", default: null, nullable: true, help: "stage-1 mm_projector.bin / .safetensors to start from" },
  mm_projector_type: { kind: "string", default: "linear", help: "linear, mlp{N}x_gelu or identity" },
  mm_use_im_start_end: { kind: "bool", default: false, help: "wrap images in <im_start> <im_end> (refused: it adds tokens to the vocabulary)" },
  mm_use_im_patch_token: { kind: "bool", default: true, help: "add the <im_patch> token" },
  mm_patch_merge_type: { kind: ["flat", "spatial", "spatial_unpad"], default: "flat", help: "how AnyRes tiles are merged" },
  mm_vision_select_feature: { kind: ["patch", "cls_patch"], default: "patch", help: "drop (patch) or keep (cls_patch) CLIP's CLS token" },
  unfreeze_vision_tower: { kind: "bool", default: false, help: "train the vision tower too (as LLaVA-1.6)" },
  // DataArguments
  data_path: { kind: "string", default: null, nullable: true, help: "LLaVA JSON or JSON-lines training data" },
  image_folder: { kind: "string", default: null, nullable: true, help: "folder the data's image paths are relative to" },
  image_aspect_ratio: { kind: ["square", "pad", "anyres"], default: "square", help: "image preprocessing" },
  group_by_modality_length: { kind: "bool", default: false, help: "batches of one modality, grouped by length (the reference's sampler)" },
  // TrainingArguments
  output_dir: { kind: "string", default: null, nullable: true, help: "where checkpoints and the model go" },
  num_train_epochs: { kind: "number", default: 3, min: Number.MIN_VALUE, help: "passes over the data" },
  max_steps: { kind: "int", default: -1, min: -1, help: "optimizer steps to run, overriding num_train_epochs (-1: off)" },
  per_device_train_batch_size: { kind: "int", default: 1, min: 1, help: "samples per forward pass" },
  gradient_accumulation_steps: { kind: "int", default: 8, min: 1, help: "forward passes per optimizer step" },
  learning_rate: { kind: "number", default: 5e-5, min: 0, help: "peak learning rate" },
  mm_projector_lr: { kind: "number", default: null, nullable: true, min: 0, help: "the projector's own learning rate" },
  weight_decay: { kind: "number", default: 0, min: 0, help: "AdamW weight decay (not on biases and norms)" },
  warmup_ratio: { kind: "number", default: 0, min: 0, max: 1, help: "share of the steps the learning rate warms up over" },
  lr_scheduler_type: { kind: ["linear", "cosine", "constant", "constant_with_warmup"], default: "linear", help: "learning-rate schedule" },
  max_grad_norm: { kind: "number", default: 1, min: 0, help: "gradient clipping norm (0: off)" },
  save_steps: { kind: "int", default: 500, min: 1, help: "steps between checkpoints" },
  save_total_limit: { kind: "int", default: null, nullable: true, min: 1, help: "checkpoints kept (oldest removed first)" },
  logging_steps: { kind: "int", default: 500, min: 1, help: "steps between progress lines" },
  seed: { kind: "int", default: 42, min: 0, max: 2 ** 32 - 1, help: "seed of every random stream" },
  gradient_checkpointing: { kind: "bool", default: false, help: "recompute activations in the backward pass (less memory)" },
  model_max_length: { kind: "int", default: 512, min: 1, help: "tokens per sample before truncation" },
  bits: { kind: ["4", "8", "16"], default: "16", help: "4 or 8: LoRA over a --load-4bit / --load-8bit base" },
  lora_enable: { kind: "bool", default: false, help: "train LoRA adapters instead of the LLM's weights" },
  lora_r: { kind: "int", default: 64, min: 1, help: "LoRA rank" },
  lora_alpha: { kind: "int", default: 16, min: 1, help: "LoRA scale numerator (scale = alpha / r)" },
  lora_dropout: { kind: "number", default: 0.05, min: 0, max: 0.999, help: "dropout on the LoRA input" },
  freeze_mm_mlp_adapter: { kind: "bool", default: false, help: "keep the projector frozen" },
  // reference command-line options with no effect here: a reference script's line runs as it is
  deepspeed: { kind: "string", default: null, nullable: true, help: "", ignored: true },
  bf16: { kind: "bool", default: false, help: "", ignored: true },
  fp16: { kind: "bool", default: false, help: "", ignored: true },
  tf32: { kind: "bool", default: false, help: "", ignored: true },
  lazy_preprocess: { kind: "bool", default: true, help: "", ignored: true },
  dataloader_num_workers: { kind: "int", default: 0, min: 0, help: "", ignored: true },
  evaluation_strategy: { kind: "string", default: "no", help: "", ignored: true },
  save_strategy: { kind: "string", default: "steps", help: "", ignored: true },
  per_device_eval_batch_size: { kind: "int", default: 8, min: 1, help: "", ignored: true },
  report_to: { kind: "string", default: "none", help: "", ignored: true },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTION_SPECS;

type ValueOf<K> = K extends "bool" ? boolean : K extends "number" | "int" ? number : K extends readonly (infer S)[] ? S : string;
type Spec<N extends OptionName> = (typeof OPTION_SPECS)[N];

/** The checked options, under the reference's names; `bits` as a number. */
export type TrainOptions = {
  [N in OptionName]: N extends "bits" ? 4 | 8 | 16 : Spec<N> extends { nullable: true } ? ValueOf<Spec<N>["kind"]> | null : ValueOf<Spec<N>["kind"]>;
} & { stage: (typeof STAGES)[number] };

/** Settings every v1.5 script (scripts/v1_5/*.sh) passes. */
const V15_COMMON = {
  num_train_epochs: 1, lr_scheduler_type: "cosine", warmup_ratio: 0.03, weight_decay: 0, logging_steps: 1,
  gradient_checkpointing: true, model_max_length: 2048, mm_projector_type: "mlp2x_gelu", mm_vision_select_layer: -2,
  mm_use_im_start_end: false, mm_use_im_patch_token: false, save_total_limit: 1,
} satisfies Partial<Record<OptionName, unknown>>;

/** The v1.5 scripts' settings per stage (pretrain.sh, finetune.sh, finetune_lora.sh); batch sizes stay ours. */
export const STAGE_PRESETS: Record<(typeof STAGES)[number], Partial<Record<OptionName, unknown>>> = {
  pretrain: { ...V15_COMMON, version: "plain", tune_mm_mlp_adapter: true, learning_rate: 1e-3, save_steps: 24000 },
  finetune: { ...V15_COMMON, version: "v1", image_aspect_ratio: "pad", group_by_modality_length: true, learning_rate: 2e-5, save_steps: 50000 },
  // not the reference's: the tower of a LLaVA checkpoint learns cell labels (see vision-stage.ts)
  vision: { ...V15_COMMON, unfreeze_vision_tower: true, learning_rate: 1e-3, gradient_checkpointing: false, save_steps: 500 },
};
/** finetune_lora.sh's changes to finetune.sh. */
export const LORA_PRESET: Partial<Record<OptionName, unknown>> = { lora_r: 128, lora_alpha: 256, learning_rate: 2e-4, mm_projector_lr: 2e-5 };

/** The reference's per-device batch (×1 accumulation on 8 GPUs) per stage, which the defaults here shrink to one CPU. */
export const REFERENCE_PER_DEVICE_BATCH = { pretrain: 32, finetune: 16 } as const;

const optionNames = Object.keys(OPTION_SPECS) as OptionName[];

/** `--learning-rate`, `--learning_rate` and a config key `learning-rate` all name learning_rate. */
function optionName(raw: string, where: string): OptionName {
  const name = raw.replaceAll("-", "_");
  if (Object.hasOwn(OPTION_SPECS, name)) return name as OptionName;
  const similar = similarNames(name, optionNames, 1).filter((s) => similarEnough(name, s));
  const hint = similar.length ? `; did you mean --${similar[0].replaceAll("_", "-")}?` : "";
  throw new UsageError(`train: unknown option ${where}${hint} (see llava train --help)`);
}

/** Close enough to be a typo of `b`. */
const similarEnough = (a: string, b: string) => editDistance(a, b) <= Math.max(2, Math.floor(b.length / 3));

const BOOL_WORDS: Record<string, boolean> = { true: true, t: true, yes: true, y: true, "1": true, false: false, f: false, no: false, n: false, "0": false };

/** Splits a command line into raw option values; a boolean alone means True (HF's `--flag`), else takes its value (`--flag False`). */
function readArgv(argv: string[]): Partial<Record<OptionName, unknown>> {
  const values: Partial<Record<OptionName, unknown>> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--") || arg === "--") throw new UsageError(`train: unexpected argument "${arg}" (options are --name value; see llava train --help)`);
    const eq = arg.indexOf("=");
    const name = optionName(eq < 0 ? arg.slice(2) : arg.slice(2, eq), eq < 0 ? arg : arg.slice(0, eq));
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) value = argv[++i];
    else if (OPTION_SPECS[name].kind === "bool") value = "true";
    else throw new UsageError(`train: ${arg} needs a value`);
    values[name] = value;
  }
  return values;
}

/** The options a config file sets (YAML or JSON, by extension; a mapping of option names). */
export function readConfigFile(file: string): Partial<Record<OptionName, unknown>> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new LlavaError(`--config ${file}: ${describeFsError(err)}`);
  }
  let parsed: unknown;
  try {
    parsed = path.extname(file).toLowerCase() === ".json" ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new LlavaError(`--config ${file}: not valid ${path.extname(file).toLowerCase() === ".json" ? "JSON" : "YAML"}: ${(err as Error).message.split("\n")[0]}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new LlavaError(`--config ${file}: expected a mapping of option names to values`);
  const values: Partial<Record<OptionName, unknown>> = {};
  for (const [key, value] of Object.entries(parsed)) {
    const name = optionName(key, `"${key}" in ${file}`);
    if (name === "config") throw new LlavaError(`--config ${file}: a config file cannot name another config file`);
    values[name] = value;
  }
  return values;
}

/** The zod schema of one option's value: command-line strings and config values alike. */
function schemaOf(spec: OptionSpec): z.ZodType {
  let schema: z.ZodType;
  if (spec.kind === "bool") {
    schema = z.preprocess((v) => (typeof v === "string" && Object.hasOwn(BOOL_WORDS, v.toLowerCase()) ? BOOL_WORDS[v.toLowerCase()] : v), z.boolean({ error: "must be True or False" }));
  } else if (spec.kind === "number" || spec.kind === "int") {
    let n = spec.kind === "int" ? z.number({ error: "must be a whole number" }).int({ error: "must be a whole number" }) : z.number({ error: "must be a number" });
    if (spec.min !== undefined) n = n.min(spec.min, { error: spec.min === Number.MIN_VALUE ? "must be > 0" : `must be >= ${spec.min}` });
    if (spec.max !== undefined) n = n.max(spec.max, { error: `must be <= ${spec.max}` });
    schema = z.preprocess((v) => (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v)) ? Number(v) : v), n);
  } else if (spec.kind === "string") {
    schema = z.string({ error: "must be a string" }).min(1, { error: "must not be empty" });
  } else {
    const choices = spec.kind;
    schema = z.preprocess((v) => (typeof v === "number" ? String(v) : v), z.enum(choices as [string, ...string[]], { error: `must be one of ${choices.join(", ")}` }));
  }
  // None / null: the reference's "unset"
  return spec.nullable ? z.preprocess((v) => (v === "None" || v === "none" ? null : v), schema.nullable()) : schema;
}

const TRAIN_SCHEMA = z.object(Object.fromEntries(optionNames.map((n) => [n, schemaOf(OPTION_SPECS[n])])));

/** The rules between options, one message each. */
function crossChecks(o: TrainOptions): string[] {
  const problems: string[] = [];
  const need = (name: OptionName) => o[name] === null && problems.push(`--${name.replaceAll("_", "-")} is required`);
  if (o.stage === null) problems.push("--stage pretrain|finetune|vision is required");
  need("model_name_or_path");
  need("data_path");
  need("output_dir");
  try {
    trainingTemplate(o.version);
  } catch (err) {
    problems.push((err as Error).message);
  }
  try {
    projectorDepth(o.mm_projector_type);
  } catch {
    problems.push(`--mm-projector-type "${o.mm_projector_type}" is not linear, mlp{N}x_gelu or identity`);
  }
  if (o.stage === "pretrain" && o.lora_enable) problems.push("--lora-enable applies to --stage finetune (stage 1 trains the projector only)");
  if (o.stage === "vision" && (o.lora_enable || o.tune_mm_mlp_adapter || o.bits !== 16)) problems.push("--stage vision trains the tower's own weights: it takes no --lora-enable, --tune-mm-mlp-adapter or --bits");
  if (o.bits !== 16 && !o.lora_enable) problems.push(`--bits ${o.bits} quantizes a frozen base: it needs --lora-enable`);
  if (o.tune_mm_mlp_adapter && o.freeze_mm_mlp_adapter) problems.push("--tune-mm-mlp-adapter and --freeze-mm-mlp-adapter exclude each other");
  if (o.mm_use_im_start_end) problems.push("--mm-use-im-start-end is not supported for training here (it adds tokens to the vocabulary)");
  return problems;
}

/**
 * Parses `llava train`'s command line (with its --config file and --stage preset) into checked
 * options. Every bad value is reported, one message each, in one error.
 */
export function parseTrainOptions(argv: string[]): TrainOptions {
  const cli = readArgv(argv);
  const fromFile = typeof cli.config === "string" ? readConfigFile(cli.config) : {};
  const stage = cli.stage ?? fromFile.stage;
  const lora = cli.lora_enable ?? fromFile.lora_enable;
  const preset = {
    ...(typeof stage === "string" && Object.hasOwn(STAGE_PRESETS, stage) ? STAGE_PRESETS[stage as (typeof STAGES)[number]] : {}),
    ...(stage === "finetune" && lora !== undefined && BOOL_WORDS[String(lora).toLowerCase()] === true ? LORA_PRESET : {}),
  };
  const defaults = Object.fromEntries(optionNames.map((n) => [n, OPTION_SPECS[n].default]));
  const merged = { ...defaults, ...preset, ...fromFile, ...cli };
  const result = TRAIN_SCHEMA.safeParse(merged);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const name = String(issue.path[0]);
      return `--${name.replaceAll("_", "-")} ${issue.message} (got ${JSON.stringify(merged[name as OptionName])})`;
    });
    throw new UsageError(`train: ${[...new Set(lines)].join("; ")}`);
  }
  const options = { ...result.data, bits: Number(result.data.bits) } as TrainOptions;
  const problems = crossChecks(options);
  if (problems.length) throw new UsageError(`train: ${problems.join("; ")}`);
  return options;
}

/** The options a run uses, for --help: name, default and what it does. */
export function optionsHelp(): string {
  const rows = optionNames.filter((n) => !(OPTION_SPECS[n] as OptionSpec).ignored).map((n) => {
    const spec = OPTION_SPECS[n] as OptionSpec;
    const value = spec.kind === "bool" ? "" : spec.kind === "number" || spec.kind === "int" ? " N" : spec.kind === "string" ? " V" : ` ${spec.kind.join("|")}`;
    const shown = spec.default === null || spec.default === false ? "" : ` (default ${String(spec.default)})`;
    return `  ${`--${n.replaceAll("_", "-")}${value}`.padEnd(34)} ${spec.help}${shown}`;
  });
  const ignored = optionNames.filter((n) => (OPTION_SPECS[n] as OptionSpec).ignored).map((n) => `--${n}`);
  return [
    ...rows,
    "",
    "stage presets (the reference's v1.5 scripts; options given on the command line or in --config win):",
    ...Object.entries(STAGE_PRESETS).flatMap(([stage, preset]) => wrapped(`--stage ${stage}: ${presetText(preset)}`)),
    ...wrapped(`--stage finetune --lora-enable: also ${presetText(LORA_PRESET)}`),
    ...wrapped("Batch sizes are not taken from the scripts (32 and 16 per GPU on 8 GPUs): the default, 1 sample per pass x 8 accumulated passes, fits one CPU; --print-reference-command splits the global batch over --gpus."),
    ...wrapped(`Accepted from reference command lines, with no effect here: ${ignored.join(" ")}.`),
  ].join("\n");
}

function presetText(preset: Partial<Record<OptionName, unknown>>): string {
  return Object.entries(preset).map(([k, v]) => `${k} ${String(v)}`).join(", ");
}

/** Text as indented lines of at most `width` characters, broken at spaces. */
function wrapped(text: string, width = 104): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width - 2) {
      lines.push(`  ${line}`);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  return line ? [...lines, `  ${line}`] : lines;
}
