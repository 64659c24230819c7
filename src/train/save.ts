/**
 * The model files a training run writes, as the reference writes them (spec 6.7), from the model
 * in memory:
 * - stage 1: `config.json` + `mm_projector.bin`, the projector under its full names;
 * - LoRA on an original-format base: `config.json`, `adapter_config.json`,
 *   `adapter_model.safetensors` (PEFT's names) and `non_lora_trainables.bin`;
 * - LoRA on an HF base (llava-hf llava / llava_next): the folder transformers + PEFT write for
 *   that model: `adapter_config.json` naming the base, `adapter_model.safetensors` with the LoRA
 *   factors and the trained projector (PEFT's `modules_to_save`) under HF names, no config.json;
 * - a full fine-tune: the whole model in the base's format, with config, tokenizer and
 *   generation config.
 * Tensors are written as the f32 values the model holds, so what loads back computes the same.
 *
 * Each file is written atomically, and the file that makes a folder loadable (config.json, or
 * adapter_config.json for an HF adapter) is removed first and written last: a save cut short
 * leaves a folder no loader takes for a complete checkpoint.
 */
import fs from "node:fs";
import path from "node:path";
import { describeFsError, isFile, writeFileAtomic, writeFully } from "../io/files.js";
import { dumpJson, fromJs, pyFloat, type PyValue } from "../io/python.js";
import { type TensorToWrite, writeSafetensors, writeShardedSafetensors } from "../io/safetensors-write.js";
import { writeTorchBin } from "../io/torch-write.js";
import { partOf, requireStoredName } from "../llava/keys.js";
import type { LoadedLlava } from "../llava/load.js";
import { declaredTensors } from "../llava/tensors.js";
import { ADAPTER_PREFIX, isLoraTarget, type LoraConfig } from "../nn/lora.js";
import type { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import { copyIfPresent } from "../zoo/common.js";
import { towerNameFor } from "../zoo/merge-lora.js";
import { copyTokenizerFiles } from "../zoo/tokenizer-files.js";

/** The keys a LLaVA training run records in config.json (spec 6.5), as the reference names them. */
export interface TrainingConfigKeys {
  tune_mm_mlp_adapter?: boolean;
  freeze_mm_mlp_adapter?: boolean;
  mm_projector_lr?: number | null;
  image_aspect_ratio?: string;
  tokenizer_model_max_length?: number;
  tokenizer_padding_side?: string;
  mm_use_im_start_end?: boolean;
  mm_use_im_patch_token?: boolean;
}

/** Files the HF processor of a llava-hf model needs besides the tokenizer. */
const HF_SIDE_FILES = ["preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja"];

function makeFolder(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new LlavaError(`cannot create the output folder ${dir}: ${describeFsError(err)}`);
  }
}

/** Python's json.dumps(value, indent=2, sort_keys=True), as transformers and PEFT write their configs. */
function writeJsonAtomic(file: string, value: PyValue, trailingNewline = true): void {
  const text = dumpJson(value, { indent: 2, sortKeys: true }) + (trailingNewline ? "\n" : "");
  writeFileAtomic(file, (fd) => writeFully(fd, Buffer.from(text, "utf8")));
}

/** Removes the file that marks a folder complete, so that it is only there once everything else is. */
function unmark(file: string): void {
  fs.rmSync(file, { force: true });
}

/**
 * The LLaVA config a training run saves into `dir`: the model's config with the multimodal keys
 * of the model in memory and the training keys the run sets (the reference's defaults
 * otherwise); mm_vision_tower still reaches the same CLIP folder from `dir`, and torch_dtype
 * says float32, the dtype of every tensor written here.
 */
export function trainingConfig(dir: string, loaded: LoadedLlava, keys: TrainingConfigKeys = {}): PyValue {
  const { spec } = loaded;
  if (spec.format !== "original") throw new LlavaError(`${spec.configFile}: a LLaVA training config is the original format's; this model is ${spec.format}`);
  const s = spec.settings;
  const defaults: Record<string, unknown> = {
    use_mm_proj: true,
    mm_projector_type: spec.projector.type,
    mm_hidden_size: spec.tower.config?.hiddenSize ?? spec.config.mm_hidden_size,
    mm_vision_select_layer: s.visionSelectLayer,
    mm_vision_select_feature: s.visionSelectFeature,
    mm_patch_merge_type: spec.mergeType,
    image_aspect_ratio: s.imageAspectMode,
    tokenizer_model_max_length: s.maxSequenceLength,
    tokenizer_padding_side: "right",
    tune_mm_mlp_adapter: false,
    freeze_mm_mlp_adapter: false,
    mm_use_im_start_end: s.imageStartEnd,
    mm_projector_lr: null,
    mm_use_im_patch_token: false,
  };
  const config: Record<string, unknown> = {
    ...spec.config, mm_vision_tower: towerNameFor(spec.config.mm_vision_tower, spec.dir, dir, []), torch_dtype: "float32",
  };
  for (const [k, v] of Object.entries(defaults)) if (config[k] === undefined) config[k] = v;
  for (const [k, v] of Object.entries(keys)) if (v !== undefined) config[k] = v;
  return fromJs(config);
}

/** f32 tensors under their names, for the writers (the data is not copied). */
function toWrite(params: Array<[string, Tensor]>): Array<TensorToWrite & { dtype: "F32"; data: Float32Array }> {
  return params.map(([name, t]) => ({ name, dtype: "F32" as const, shape: [...t.shape], data: t.data }));
}

const isLora = (name: string) => /\.lora_[AB]\.weight$/.test(name);

/** Stage 1's output: config.json and mm_projector.bin with `model.mm_projector.*`, as LLaVATrainer saves it. */
export function saveProjector(dir: string, loaded: LoadedLlava, keys: TrainingConfigKeys = {}): void {
  if (loaded.format !== "original") {
    throw new LlavaError(`${loaded.dir}: a projector-only checkpoint is the original LLaVA format's; convert the base with "llava convert to-original" first`);
  }
  const config = trainingConfig(dir, loaded, { tune_mm_mlp_adapter: true, ...keys });
  const projector = loaded.model.namedParameters().filter(([n]) => partOf(n) === "projector");
  if (!projector.length) throw new LlavaError(`the model's projector (${loaded.spec.projector.type}) has no weights to save`);
  makeFolder(dir);
  unmark(path.join(dir, "config.json"));
  writeTorchBin(path.join(dir, "mm_projector.bin"), toWrite(projector));
  writeJsonAtomic(path.join(dir, "config.json"), config);
}

export interface SaveLoraOptions {
  /** the base model the adapter applies to, as adapter_config.json names it (default: the loaded folder) */
  baseModelPath?: string;
  keys?: TrainingConfigKeys;
}

/** adapter_config.json as PEFT's LoraConfig writes it for these settings. */
function adapterConfig(cfg: LoraConfig, lora: { base: string; targets: string[] | string; modulesToSave: string[] | null }): PyValue {
  return fromJs({
    alpha_pattern: {}, auto_mapping: null, base_model_name_or_path: lora.base, bias: "none", fan_in_fan_out: false,
    inference_mode: true, init_lora_weights: true, layers_pattern: null, layers_to_transform: null, lora_alpha: cfg.alpha,
    lora_dropout: pyFloat(cfg.dropout ?? 0), modules_to_save: lora.modulesToSave, peft_type: "LORA", r: cfg.r, rank_pattern: {}, revision: null,
    target_modules: lora.targets, task_type: "CAUSAL_LM", use_dora: false, use_rslora: cfg.useRslora,
  });
}

/** The LoRA factors and the other trainables (requiresGrad) of the model, by canonical name; `cfg` must target every adapted layer. */
function loraParts(loaded: LoadedLlava, cfg: LoraConfig) {
  const params = loaded.model.namedParameters();
  const lora = params.filter(([n]) => isLora(n));
  if (!lora.length) throw new LlavaError("the model has no LoRA adapters to save");
  const untargeted = lora.map(([n]) => n.replace(/\.lora_[AB]\.weight$/, "")).find((m) => !isLoraTarget(m, cfg.targetModules));
  if (untargeted) throw new LlavaError(`the LoRA config's target_modules (${JSON.stringify(cfg.targetModules)}) do not name "${untargeted}", which has an adapter`);
  const others = params.filter(([n, t]) => !isLora(n) && t.requiresGrad);
  return { lora, others };
}

/**
 * A LoRA run's output. Original-format base: the reference's folder (config.json,
 * adapter_config.json, adapter_model.safetensors, non_lora_trainables.bin). HF base: PEFT's
 * adapter folder for transformers' model (saveHfAdapter).
 */
export function saveLora(dir: string, loaded: LoadedLlava, cfg: LoraConfig, opts: SaveLoraOptions = {}): void {
  const base = opts.baseModelPath ?? cfg.baseModel ?? loaded.dir;
  const { lora, others } = loraParts(loaded, cfg);
  if (loaded.format !== "original") return saveHfAdapter(dir, loaded, cfg, { base, lora, others });
  const config = trainingConfig(dir, loaded, opts.keys);
  makeFolder(dir);
  unmark(path.join(dir, "config.json"));
  writeSafetensors(path.join(dir, "adapter_model.safetensors"), toWrite(lora.map(([n, t]) => [ADAPTER_PREFIX + n, t])), { format: "pt" });
  // the reference's get_peft_state_non_lora_maybe_zero_3 keeps PeftModel's names: base_model.model.model.mm_projector.0.weight
  writeTorchBin(path.join(dir, "non_lora_trainables.bin"), toWrite(others.map(([n, t]) => [ADAPTER_PREFIX + n, t])));
  writeJsonAtomic(path.join(dir, "adapter_config.json"), adapterConfig(cfg, { base, targets: cfg.targetModules, modulesToSave: null }), false);
  writeJsonAtomic(path.join(dir, "config.json"), config);
}

/** The stored name of a canonical tensor in the layout llava-hf repos hold (transformers' names before 4.52). */
const hfName = (loaded: LoadedLlava, canonical: string) => requireStoredName(canonical, "hf", loaded.format === "hf-llava-next", "the HF model");

/** The same name in either HF layout: before transformers 4.52 and since (model.language_model.*, lm_head). */
function hfModulePattern(hfModule: string): string {
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  if (hfModule.startsWith("language_model.model.")) return `(?:language_model\\.model|model\\.language_model)\\.${escape(hfModule.slice("language_model.model.".length))}`;
  if (hfModule === "language_model.lm_head") return "(?:language_model\\.)?lm_head";
  return escape(hfModule);
}

/**
 * PEFT's adapter for transformers' LlavaForConditionalGeneration / LlavaNextForConditionalGeneration:
 * LoRA factors under `base_model.model.<HF module>.lora_{A,B}.weight`; target_modules a regular
 * expression matching, in either HF layout, exactly the layers that carry an adapter (a bare
 * list like ["q_proj"] would also catch the CLIP tower's q_proj in transformers' model); the trained
 * projector saved as PEFT saves `modules_to_save = ["multi_modal_projector"]` (its full weights,
 * `base_model.model.multi_modal_projector.linear_1.weight`). Names follow the llava-hf layout
 * (`language_model.model.layers...`): transformers before 4.52 loads it as it is, and newer ones
 * with PEFT map it through the model's _checkpoint_conversion_mapping (PEFT #2574); an adapter
 * in the new layout would not load on the older versions.
 */
function saveHfAdapter(
  dir: string, loaded: LoadedLlava, cfg: LoraConfig,
  parts: { base: string; lora: Array<[string, Tensor]>; others: Array<[string, Tensor]> },
): void {
  const outside = parts.others.filter(([n]) => partOf(n) !== "projector");
  if (outside.length) {
    throw new LlavaError(`an HF-format LoRA adapter saves only the LoRA factors and the projector; "${outside[0][0]}" is trainable too`);
  }
  const modules = [...new Set(parts.lora.map(([n]) => n.replace(/\.lora_[AB]\.weight$/, "")))];
  const hfModules = modules.map((m) => hfName(loaded, `${m}.weight`).slice(0, -".weight".length));
  const targets = hfModules.map(hfModulePattern).join("|");
  const tensors = [
    ...parts.lora.map(([n, t]): [string, Tensor] => {
      const m = /^(.*)\.(lora_[AB])\.weight$/.exec(n)!;
      return [`${ADAPTER_PREFIX}${hfName(loaded, `${m[1]}.weight`).slice(0, -".weight".length)}.${m[2]}.weight`, t];
    }),
    ...parts.others.map(([n, t]): [string, Tensor] => [ADAPTER_PREFIX + hfName(loaded, n), t]),
  ];
  makeFolder(dir);
  unmark(path.join(dir, "adapter_config.json"));
  writeSafetensors(path.join(dir, "adapter_model.safetensors"), toWrite(tensors), { format: "pt" });
  const modulesToSave = parts.others.length ? ["multi_modal_projector"] : null;
  writeJsonAtomic(path.join(dir, "adapter_config.json"), adapterConfig(cfg, { base: parts.base, targets, modulesToSave }), false);
}

export interface SaveFullOptions {
  keys?: TrainingConfigKeys;
  /** the folder whose tokenizer (and, for HF, processor) files are copied (default: the loaded folder) */
  filesFrom?: string;
  /** the largest weight shard (save_pretrained's max_shard_size, default "5GB") */
  maxShardSize?: string | number;
}

/** generation_config.json as transformers derives it from a model config without one. */
function generationConfig(loaded: LoadedLlava): PyValue {
  const c = loaded.spec.config;
  const text = (typeof c.text_config === "object" && c.text_config) || c;
  const pick = (k: string) => (text as Record<string, unknown>)[k] ?? c[k];
  const out: Record<string, unknown> = { _from_model_config: true };
  for (const k of ["bos_token_id", "eos_token_id", "pad_token_id"]) if (pick(k) !== undefined && pick(k) !== null) out[k] = pick(k);
  return fromJs(out);
}

/**
 * A full fine-tune's model folder in the base's format: original (canonical names, the vision
 * tower included as the reference's save_pretrained keeps it) or llava-hf / llava_next
 * (transformers' names), `model.safetensors` (sharded past `maxShardSize`), config.json,
 * generation_config.json and the tokenizer files. The model must hold every weight in f32
 * (no --dtype, no quantization) and no unmerged LoRA adapter.
 */
export function saveFullModel(dir: string, loaded: LoadedLlava, opts: SaveFullOptions = {}): void {
  const { spec, model } = loaded;
  const params = model.namedParameters();
  if (params.some(([n]) => isLora(n))) throw new LlavaError("the model has unmerged LoRA adapters; save them with saveLora or merge them first");
  const held = new Set(params.map(([n]) => n));
  const packed = declaredTensors(spec).filter((d) => d.shape && !d.optional && !held.has(d.name));
  if (packed.length) {
    throw new LlavaError(`"${packed[0].name}" is held in 16-bit or quantized form; a full model is saved from a model loaded in f32`);
  }
  const original = spec.format === "original";
  const config = original ? trainingConfig(dir, loaded, opts.keys) : fromJs({ ...spec.config, torch_dtype: "float32" });
  const tensors = toWrite(original ? params : params.map(([n, t]) => [hfName(loaded, n), t]));
  const from = opts.filesFrom ?? loaded.dir;
  makeFolder(dir);
  unmark(path.join(dir, "config.json"));
  writeShardedSafetensors(dir, tensors, { maxShardBytes: opts.maxShardSize ?? "5GB" });
  copyTokenizerFiles(from, dir);
  copyIfPresent(from, dir, original ? ["generation_config.json"] : ["generation_config.json", ...HF_SIDE_FILES]);
  if (!isFile(path.join(from, "generation_config.json"))) writeJsonAtomic(path.join(dir, "generation_config.json"), generationConfig(loaded));
  writeJsonAtomic(path.join(dir, "config.json"), config);
}
