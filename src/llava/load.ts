/**
 * Loads a LLaVA checkpoint folder in any supported format (spec.ts) into a LlavaModel, with its
 * tokenizer and image processor settings: the spec is read once, the weights are opened under
 * canonical names (weights.ts), packed by the precision policy (precision.ts), and every tensor
 * of the checkpoint that the model does not use is reported.
 */
import path from "node:path";
import { LlavaModel } from "./model.js";
import { checkMemory, keptFormat, type PrecisionOptions, residentBytes } from "./precision.js";
import { type CheckpointFormat, IM_END, IM_START, IMAGE_TOKEN, type ModelSpec, readModelSpec, requireTower } from "./spec.js";
import { blockingProblem, checkTensors, declaredTensors, listed } from "./tensors.js";
import { openCheckpointWeights } from "./weights.js";
import { findGgufPair, type GgufPair, openGgufModel } from "./gguf-load.js";
import type { WeightDtype, WeightReader } from "../io/weights.js";
import type { PackedFormat } from "../tensor/packed.js";
import { loadGgufTokenizer } from "../tokenizer/gguf-tokenizer.js";
import type { ClipVisionConfig } from "../io/config.js";
import { isFile } from "../io/files.js";
import { type ImageProcessorConfig, loadImageProcessorConfig, parseImageProcessorConfig } from "../image/processor.js";
import { attachLora, checkAdapterUsed } from "../nn/lora.js";
import { ParamLoader } from "../nn/params.js";
import type { Backend } from "../tensor/backend.js";
import { modelPathOrDefault } from "./default-model.js";
import { createBackend } from "../tensor/backends.js";
import { LlavaTokenizer } from "../tokenizer/tokenizer.js";
import { LlavaError } from "../util/errors.js";

export type { CheckpointFormat } from "./spec.js";

export interface LoadOptions extends PrecisionOptions {
  backend?: Backend;
  /** folder of the CLIP vision tower, overriding `mm_vision_tower` (original format) */
  visionTower?: string;
  /** the base LLM folder under a LoRA or projector-only checkpoint (the reference's --model-base) */
  modelBase?: string;
  /** fail, instead of warning, when the checkpoint holds tensors the model does not use */
  strict?: boolean;
  /** where warnings go (default: one line each on stderr) */
  warn?: (message: string) => void;
  /** the vision (mmproj) GGUF that goes with a GGUF language model */
  mmproj?: string;
}

export interface LoadedLlava {
  model: LlavaModel;
  tokenizer: LlavaTokenizer;
  imageProcessor: ImageProcessorConfig;
  format: CheckpointFormat;
  /** the folder that was loaded */
  dir: string;
  /** what its configs say (spec.text: the LLM's config, spec.config: config.json as read) */
  spec: ModelSpec;
}

/** Image processor settings of a folder, or CLIP's defaults at the tower's resolution. */
async function imageProcessorFor(dir: string, vision: ClipVisionConfig): Promise<ImageProcessorConfig> {
  if (isFile(path.join(dir, "preprocessor_config.json"))) return loadImageProcessorConfig(dir);
  const size = vision.imageSize;
  return parseImageProcessorConfig({ size: { shortest_edge: size }, crop_size: { height: size, width: size } }, `${dir} (defaults)`);
}

/**
 * The prompt tokens the spec relies on: HF's `<image>` must be the config's image token (the
 * processor marks images with it), and `mm_use_im_start_end` models were trained with
 * <im_start>/<im_end> as tokens of their own.
 */
function checkImageTokens(spec: ModelSpec, tokenizer: LlavaTokenizer): void {
  if (spec.settings.expandImageTokens) {
    const ids = tokenizer.encode(IMAGE_TOKEN, { addSpecialTokens: false });
    if (ids.length !== 1 || ids[0] !== spec.settings.imageTokenId) {
      const found = ids.length === 1 ? `is token ${ids[0]}` : "is not a single token";
      throw new LlavaError(`${spec.configFile}: image_token_index is ${spec.settings.imageTokenId} but the tokenizer's "${IMAGE_TOKEN}" ${found}`);
    }
  }
  if (!spec.settings.imageStartEnd) return;
  for (const token of [IM_START, IM_END]) {
    if (tokenizer.encode(token, { addSpecialTokens: false }).length !== 1) {
      throw new LlavaError(`${spec.configFile}: mm_use_im_start_end is true but the tokenizer has no "${token}" token (it is added when such a model is trained)`);
    }
  }
}

/** Loads a checkpoint (original, HF, LoRA, projector-only or a GGUF pair); with no path, the shipped default model. */
export async function loadLlava(modelPath?: string, opts: LoadOptions = {}): Promise<LoadedLlava> {
  modelPath = modelPathOrDefault(modelPath);
  const pair = findGgufPair(modelPath, opts.mmproj);
  if (pair) return loadGgufLlava(pair, opts);
  const spec = readModelSpec(modelPath, { visionTower: opts.visionTower, modelBase: opts.modelBase });
  const vision = requireTower(spec);
  const backend = opts.backend ?? createBackend({ bf16Dot: opts.dtype === "bf16" });
  // everything is checked before any weight data is read: the files' headers, the tokenizer, the memory
  const weights = openCheckpointWeights(spec, { modelBase: opts.modelBase });
  let model: LlavaModel;
  let tokenizer: LlavaTokenizer;
  try {
    // the reference takes the tokenizer of the base under a LoRA or projector checkpoint
    const tokenizerDir = opts.modelBase && isFile(path.join(opts.modelBase, "tokenizer_config.json")) ? path.resolve(opts.modelBase) : spec.dir;
    tokenizer = LlavaTokenizer.load(tokenizerDir);
    checkImageTokens(spec, tokenizer);
    const precision = { ...opts, llmLayers: spec.text.numHiddenLayers };
    model = buildModel(spec, weights.reader, (name) => keptFormat(name, precision), backend, opts);
    if (weights.adapter) {
      const { weights: adapterWeights, config } = weights.adapter;
      checkAdapterUsed(adapterWeights, attachLora(model.llm.namedLinears(), adapterWeights, config, backend));
    }
  } finally {
    weights.close();
  }
  const imageProcessor = await imageProcessorFor(spec.tower.dir ?? spec.dir, vision);
  return { model, tokenizer, imageProcessor, format: spec.format, dir: spec.dir, spec };
}

/**
 * A GGUF pair (gguf-load.ts): weights kept in the packed type they are stored in (other weights
 * by the precision options), the tokenizer rebuilt from the metadata.
 */
function loadGgufLlava(pair: GgufPair, opts: LoadOptions): LoadedLlava {
  if (opts.modelBase || opts.visionTower) throw new LlavaError(`${opts.modelBase ? "--model-base" : "--vision-tower"} does not apply to a GGUF model (its vision tower is the --mmproj file)`);
  const gguf = openGgufModel(pair);
  try {
    const { spec } = gguf;
    const tokenizer = loadGgufTokenizer(gguf.llm);
    const backend = opts.backend ?? createBackend({ bf16Dot: opts.dtype === "bf16" });
    const precision = { ...opts, llmLayers: spec.text.numHiddenLayers };
    const model = buildModel(spec, gguf.reader, (name) => gguf.storedFormat(name) ?? keptFormat(name, precision), backend, opts);
    return { model, tokenizer, imageProcessor: gguf.imageProcessor, format: spec.format, dir: spec.dir, spec };
  } finally {
    gguf.close();
  }
}

/** Checks a checkpoint's tensors and the memory they need against the spec, then reads them into the model. */
function buildModel(spec: ModelSpec, reader: WeightReader<WeightDtype>, format: (name: string) => PackedFormat | null, backend: Backend, opts: LoadOptions): LlavaModel {
  const declared = declaredTensors(spec, reader);
  const findings = checkTensors(declared, reader);
  const problem = blockingProblem(findings, reader.source);
  if (problem) throw new LlavaError(problem);
  if (findings.unused.length) {
    const message = `${reader.source}: ${findings.unused.length} tensor(s) the model does not use: ${listed(findings.unused)}`;
    if (opts.strict) throw new LlavaError(`${message} (--strict)`);
    (opts.warn ?? ((m) => process.stderr.write(`llava: warning: ${m}\n`)))(message);
  }
  checkMemory(residentBytes(declared.flatMap(({ name, shape }) => (shape && reader.has(name) ? [{ name, shape }] : [])), opts, format), opts);
  return LlavaModel.load(new ParamLoader(reader, backend, "", format), spec);
}
