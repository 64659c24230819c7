/**
 * The model a training run starts from, as the reference's train.py builds it: a LLaVA
 * checkpoint as it is, or (stage 1) a LLaMA-family LLM folder joined to a CLIP vision tower by a
 * new projector (`initialize_vision_modules`), fresh or from a stage-1 `mm_projector` file. The
 * LLM + tower + projector is loaded the way the loader reads a projector-only checkpoint over
 * its base: a staging folder holds the LLaVA config and the projector, the LLM folder is the base.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { TrainOptions } from "./options.js";
import type { TrainingConfigKeys } from "./save.js";
import { PREFIX } from "../llava/keys.js";
import { type LoadedLlava, loadLlava } from "../llava/load.js";
import { projectorLinearNames } from "../llava/projector.js";
import { resolveVisionTower } from "../llava/spec.js";
import { checkpointKind } from "../llava/weights.js";
import { isObject, parseClipVisionConfig } from "../io/config.js";
import { isDirectory, isFile, readJsonFile } from "../io/files.js";
import { type TensorToWrite, writeSafetensors } from "../io/safetensors.js";
import { openWeights } from "../io/weights.js";
import { createBackend } from "../tensor/backends.js";
import { LlavaError } from "../util/errors.js";
import { Rng } from "../util/random.js";

type Json = Record<string, unknown>;

/** The config keys train.py records from the data and training arguments (spec 6.5), for any start. */
export function trainingConfigKeys(opts: TrainOptions): TrainingConfigKeys {
  return {
    image_aspect_ratio: opts.image_aspect_ratio,
    tokenizer_padding_side: "right",
    tokenizer_model_max_length: opts.model_max_length,
    tune_mm_mlp_adapter: opts.tune_mm_mlp_adapter,
    freeze_mm_mlp_adapter: opts.freeze_mm_mlp_adapter,
    mm_use_im_start_end: opts.mm_use_im_start_end,
    mm_projector_lr: opts.mm_projector_lr,
    mm_use_im_patch_token: opts.mm_use_im_patch_token,
  };
}

/** The keys `initialize_vision_modules` records when it joins a tower to the LLM. */
function visionModuleKeys(opts: TrainOptions, towerName: string, towerHidden: number): Json {
  return {
    mm_vision_tower: towerName,
    use_mm_proj: true,
    mm_projector_type: opts.mm_projector_type,
    mm_hidden_size: towerHidden,
    mm_vision_select_layer: opts.mm_vision_select_layer,
    mm_vision_select_feature: opts.mm_vision_select_feature,
    mm_patch_merge_type: opts.mm_patch_merge_type,
  };
}

type Start = "llava" | "llm";

/** Whether `config` is a LLaVA checkpoint's (original or HF) or a LLaMA-family LLM's. */
function startOf(config: Json, configFile: string): Start {
  const archs = Array.isArray(config.architectures) ? config.architectures.map(String) : [];
  if (config.mm_vision_tower !== undefined || config.model_type === "llava" || config.model_type === "llava_next") return "llava";
  if (["llama", "mistral"].includes(String(config.model_type)) || archs.some((a) => /^(Llama|Mistral)ForCausalLM$/.test(a))) return "llm";
  throw new LlavaError(`${configFile}: neither a LLaVA checkpoint nor a LLaMA-family LLM (model_type "${String(config.model_type)}")`);
}

/**
 * A new projector's tensors, initialised as torch's nn.Linear default: kaiming-uniform (a = √5)
 * weights and biases, both uniform in ±1/√fan_in, drawn in module order from the seed.
 */
export function freshProjector(type: string, inDim: number, outDim: number, seed: number): TensorToWrite[] {
  const rng = new Rng(seed);
  return projectorLinearNames(type).flatMap((name, i) => {
    const fanIn = i === 0 ? inDim : outDim;
    const { weight, bias } = torchLinearInit(rng, outDim, fanIn);
    const prefix = `${PREFIX.projector}${name ? `${name}.` : ""}`;
    return [
      { name: `${prefix}weight`, dtype: "F32" as const, shape: [outDim, fanIn], data: weight },
      { name: `${prefix}bias`, dtype: "F32" as const, shape: [outDim], data: bias },
    ];
  });
}

/** torch's nn.Linear default: weight [out, in] then bias, each uniform in ±1/√in, drawn from `rng` in that order. */
export function torchLinearInit(rng: Rng, outDim: number, inDim: number): { weight: Float32Array; bias: Float32Array } {
  const bound = 1 / Math.sqrt(inDim);
  const uniform = (n: number) => Float32Array.from({ length: n }, () => bound * (2 * rng.next() - 1));
  const weight = uniform(outDim * inDim);
  return { weight, bias: uniform(outDim) };
}

/**
 * A stage-1 projector file's tensors under canonical names, checked against the projector being
 * built (the reference keeps the part of each key after "mm_projector.").
 */
export function pretrainedProjector(file: string, fresh: TensorToWrite[]): TensorToWrite[] {
  if (!isFile(file)) throw new LlavaError(`--pretrain-mm-mlp-adapter ${file} does not exist or is not a file`);
  const reader = openWeights(file, "--pretrain-mm-mlp-adapter");
  try {
    const byName = new Map(reader.names().filter((n) => n.includes("mm_projector.")).map((n) => [PREFIX.projector + n.split("mm_projector.").pop(), n]));
    return fresh.map((want) => {
      const stored = byName.get(want.name);
      if (!stored) throw new LlavaError(`--pretrain-mm-mlp-adapter ${file}: no tensor for ${want.name} (holds ${[...byName.values()].join(", ") || "no mm_projector tensors"})`);
      const { shape } = reader.info(stored);
      if (shape.join(",") !== want.shape.join(",")) {
        throw new LlavaError(`--pretrain-mm-mlp-adapter ${file}: ${stored} has shape [${shape}], the ${want.name} being built needs [${want.shape}] (another mm_projector_type, tower or LLM?)`);
      }
      return { ...want, data: reader.readF32(stored) };
    });
  } finally {
    reader.close();
  }
}

/** The CLIP tower folder `--vision-tower` names and its hidden size. */
function towerOf(name: string, modelDir: string): { dir: string; hidden: number } {
  const dir = resolveVisionTower(name, modelDir);
  if (!dir) throw new LlavaError(`--vision-tower ${name}: no CLIP model folder with a config.json there (nor in the Hugging Face cache)`);
  const file = path.join(dir, "config.json");
  return { dir, hidden: parseClipVisionConfig(readJsonFile(file, "vision tower config"), file).hiddenSize };
}

export interface InitializedModel {
  /** `loaded.spec.config` is the LLaVA config a saved model starts from */
  loaded: LoadedLlava;
  /** the folder the tokenizer files (and the LLM's other files) come from */
  sourceDir: string;
}

/** Loads the model a run starts from (see the file comment). */
export async function initTrainingModel(opts: TrainOptions): Promise<InitializedModel> {
  const modelDir = path.resolve(opts.model_name_or_path!);
  const configFile = path.join(modelDir, "config.json");
  if (!isDirectory(modelDir)) throw new LlavaError(`--model-name-or-path ${modelDir} does not exist or is not a folder`);
  const config = readJsonFile(configFile, "model config");
  if (!isObject(config)) throw new LlavaError(`${configFile}: expected a JSON object`);
  const backend = createBackend({ threads: opts.threads ?? undefined });
  const quantize = opts.bits === 4 ? "q4_0" : opts.bits === 8 ? "q8_0" : undefined;
  if (startOf(config, configFile) === "llava") {
    if (opts.pretrain_mm_mlp_adapter) throw new LlavaError(`--pretrain-mm-mlp-adapter: ${modelDir} is a LLaVA checkpoint with its own projector; start from its LLM folder to use a stage-1 projector`);
    const kind = checkpointKind(modelDir);
    if (kind === "projector") throw new LlavaError(`--model-name-or-path ${modelDir} is a stage-1 output (a projector alone): pass its LLM as --model-name-or-path and its mm_projector file as --pretrain-mm-mlp-adapter`);
    if (kind === "lora") throw new LlavaError(`--model-name-or-path ${modelDir} is a LoRA adapter: merge it into its base first (llava convert merge-lora) and train from the merged model`);
    const loaded = await loadLlava(modelDir, { backend, visionTower: opts.vision_tower ?? undefined, quantize });
    // the images are preprocessed as the checkpoint says; a run that asks otherwise would train on other inputs
    const aspect = loaded.model.settings.imageAspectMode;
    if (aspect !== opts.image_aspect_ratio) throw new LlavaError(`${configFile}: the checkpoint's image_aspect_ratio is ${aspect}; pass --image-aspect-ratio ${aspect}`);
    return { loaded, sourceDir: modelDir };
  }
  if (!opts.vision_tower) throw new LlavaError(`--vision-tower is required: ${modelDir} is an LLM without one (stage 1 joins a CLIP tower to it)`);
  if (opts.image_aspect_ratio === "anyres") throw new LlavaError("--image-aspect-ratio anyres needs a LLaVA checkpoint that names its image_grid_pinpoints, not a bare LLM");
  const tower = towerOf(opts.vision_tower, modelDir);
  const hidden = Number(config.hidden_size);
  if (!Number.isInteger(hidden) || hidden < 1) throw new LlavaError(`${configFile}: hidden_size must be a positive whole number`);
  const llavaConfig: Json = {
    ...config,
    architectures: ["LlavaLlamaForCausalLM"],
    model_type: "llava_llama",
    ...visionModuleKeys(opts, opts.vision_tower, tower.hidden),
    ...trainingConfigKeys(opts),
  };
  const fresh = freshProjector(opts.mm_projector_type, tower.hidden, hidden, opts.seed);
  const projector = opts.pretrain_mm_mlp_adapter ? pretrainedProjector(path.resolve(opts.pretrain_mm_mlp_adapter), fresh) : fresh;
  const staging = fs.mkdtempSync(path.join(os.tmpdir(), "llava-train-init-"));
  try {
    fs.writeFileSync(path.join(staging, "config.json"), JSON.stringify(llavaConfig, null, 2));
    writeSafetensors(path.join(staging, "mm_projector.safetensors"), projector, { format: "pt" });
    const loaded = await loadLlava(staging, { backend, visionTower: tower.dir, modelBase: modelDir, quantize });
    return { loaded: { ...loaded, dir: modelDir }, sourceDir: modelDir };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
