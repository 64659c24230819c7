/**
 * A LLaVA model held as llama.cpp holds it: a language-model GGUF (`llama.*` hyperparameters,
 * `tokenizer.ggml.*`, `token_embd`/`blk.N.*` tensors with the query and key rows permuted) and a
 * vision GGUF (`mmproj`, `clip.*` keys, `v.*` and `mm.*` tensors), read as the same model spec
 * and canonical weights a checkpoint folder gives, so the loader and `llava inspect` treat both alike.
 */
import fs from "node:fs";
import path from "node:path";
import { canonicalFromGguf, CLIP_KEY, GGUF_CLIP_ARCHITECTURE, GGUF_LLM_ARCHITECTURES, ggufFromCanonical, llmKey, permutedHeads, permuteRows, TOKENIZER_KEY } from "./gguf-names.js";
import { convModeForModelName } from "./conversation.js";
import type { ModelSpec } from "./spec.js";
import { projectorDepth } from "./projector.js";
import type { PatchMergeType } from "./anyres.js";
import { parseClipVisionConfig, parseLlamaConfig } from "../io/config.js";
import { isDirectory, isFile } from "../io/files.js";
import { GgufFile, isGgufPath } from "../io/gguf.js";
import { ggufWeightReader, LOADABLE_GGML_TYPES, packedFormatOfGgml } from "../io/gguf-weights.js";
import { overlay, renamed, type WeightDtype, type WeightReader } from "../io/weights.js";
import { type ImageProcessorConfig, parseImageProcessorConfig, parsePinpoints } from "../image/processor.js";
import type { PackedFormat } from "../tensor/packed.js";
import { LlavaError } from "../util/errors.js";

export interface GgufPair {
  /** the language-model file */
  model: string;
  /** the vision (mmproj) file */
  mmproj: string;
}

const isMmprojName = (f: string) => /mmproj/i.test(path.basename(f));

/** The one `*.gguf` of `files` matching `pick`, or an error naming what was found. */
function onlyOne(files: string[], what: string, where: string): string {
  if (files.length === 1) return files[0];
  throw new LlavaError(`${where}: ${files.length ? `several ${what} files (${files.map((f) => path.basename(f)).join(", ")}); pass the one to use` : `no ${what} file`}`);
}

/**
 * The GGUF pair `modelPath` stands for: a .gguf file with `mmproj` (or the one `*mmproj*.gguf`
 * beside it), or a folder without config.json holding a language-model and an mmproj GGUF.
 * Null when `modelPath` is not GGUF (a checkpoint folder).
 */
export function findGgufPair(modelPath: string, mmproj?: string): GgufPair | null {
  const target = path.resolve(modelPath);
  let model: string | null = null;
  let candidates: string[] = [];
  if (isFile(target) && isGgufPath(target)) {
    model = target;
    if (!mmproj) candidates = ggufFilesIn(path.dirname(target)).filter(isMmprojName);
  } else if (isDirectory(target) && !isFile(path.join(target, "config.json"))) {
    const files = ggufFilesIn(target);
    if (files.length) {
      model = onlyOne(files.filter((f) => !isMmprojName(f)), "language-model GGUF", target);
      if (!mmproj) candidates = files.filter(isMmprojName);
    }
  }
  if (!model) {
    if (mmproj) throw new LlavaError(`--mmproj goes with a GGUF language model; ${target} is not a .gguf file or a folder of GGUF files`);
    return null;
  }
  if (mmproj) {
    const file = path.resolve(mmproj);
    if (!isFile(file)) throw new LlavaError(`--mmproj ${file} does not exist or is not a file`);
    return { model, mmproj: file };
  }
  if (!candidates.length) throw new LlavaError(`${model}: a GGUF language model needs its vision file: pass it with --mmproj (no *mmproj*.gguf beside it)`);
  return { model, mmproj: onlyOne(candidates, "mmproj GGUF", path.dirname(model)) };
}

function ggufFilesIn(dir: string): string[] {
  return fs.readdirSync(dir).filter(isGgufPath).sort().map((f) => path.join(dir, f)).filter(isFile);
}

export interface GgufModel {
  llm: GgufFile;
  vision: GgufFile;
  spec: ModelSpec;
  /** both files' tensors under canonical names, the query and key rows in the HF order */
  reader: WeightReader<WeightDtype>;
  /** the format each weight is kept in: packed types as stored */
  storedFormat(name: string): PackedFormat | null;
  imageProcessor: ImageProcessorConfig;
  close(): void;
}

/** Opens a GGUF pair: headers only, every check that needs no tensor data made. */
export function openGgufModel(pair: GgufPair): GgufModel {
  const llm = GgufFile.open(pair.model);
  let vision: GgufFile | null = null;
  try {
    vision = GgufFile.open(pair.mmproj);
    for (const file of [llm, vision]) {
      const bad = [...file.tensors.values()].find((t) => !LOADABLE_GGML_TYPES.includes(t.type.name));
      if (bad) file.fail(`tensor "${bad.name}" is of type ${bad.type.name}, which this project cannot load (supported: ${LOADABLE_GGML_TYPES.join(", ")})`);
    }
    const spec = ggufSpec(llm, vision, pair);
    const text = spec.text;
    const heads = { q: text.numAttentionHeads, kv: text.numKeyValueHeads };
    const reader = unpermuted(overlay([renamed(ggufWeightReader(llm), canonicalFromGguf, ggufFromCanonical), visionReader(vision, spec)]), heads);
    const storedFormat = (name: string) => (reader.has(name) ? packedFormatOfGgml(reader.info(name).dtype) : null);
    const imageProcessor = ggufImageProcessor(vision, spec);
    return { llm, vision, spec, reader, storedFormat, imageProcessor, close: () => reader.close() };
  } catch (err) {
    llm.close();
    vision?.close();
    throw err;
  }
}

/**
 * The vision file's tensors under canonical names. The legacy LLaVA converter named CLIP's fc1
 * `ffn_down` and fc2 `ffn_up`; as clip.cpp does, such a file is recognised by `ffn_down` taking
 * the hidden size as its input, and the names are swapped back.
 */
function visionReader(vision: GgufFile, spec: ModelSpec): WeightReader<WeightDtype> {
  const down = vision.tensors.get("v.blk.0.ffn_down.weight");
  const legacy = down !== undefined && down.ne[0] === spec.tower.config!.hiddenSize && down.ne[0] !== spec.tower.config!.intermediateSize;
  const swap = (n: string) => (legacy ? n.replace(/\.ffn_(up|down)\./, (_, w) => `.ffn_${w === "up" ? "down" : "up"}.`) : n);
  return renamed(ggufWeightReader(vision), (n) => canonicalFromGguf(swap(n)), (c) => {
    const g = ggufFromCanonical(c);
    return g && swap(g);
  });
}

/** A reader whose query and key weights are read with llama.cpp's row permutation undone (packed rows move whole). */
function unpermuted(reader: WeightReader<WeightDtype>, heads: { q: number; kv: number }): WeightReader<WeightDtype> {
  const rows = (name: string) => reader.info(name).shape[0];
  return {
    ...reader,
    readRaw: (name) => {
      const raw = reader.readRaw(name);
      const h = permutedHeads(name, heads);
      if (h === null) return raw;
      const n = rows(name);
      return { ...raw, bytes: permuteRows(raw.bytes, n, raw.bytes.length / n, h, true) };
    },
    readF32: (name) => {
      const data = reader.readF32(name);
      const h = permutedHeads(name, heads);
      if (h === null) return data;
      const n = rows(name);
      const bytes = permuteRows(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), n, data.byteLength / n, h, true);
      return new Float32Array(bytes.buffer);
    },
  };
}

/** The spec of a GGUF pair: the LLM's config from `llama.*`, the tower's from `clip.vision.*`, LLaVA's settings as llama.cpp runs them. */
function ggufSpec(llm: GgufFile, vision: GgufFile, pair: GgufPair): ModelSpec {
  const arch = llm.string("general.architecture");
  if (arch === GGUF_CLIP_ARCHITECTURE) llm.fail(`is a vision (mmproj) file; pass the language model with --model-path and this file with --mmproj`);
  if (!(GGUF_LLM_ARCHITECTURES as readonly string[]).includes(arch)) {
    llm.fail(`architecture "${arch}" is not a LLaMA-family language model (supported: ${GGUF_LLM_ARCHITECTURES.join(", ")})`);
  }
  const visionArch = vision.string("general.architecture", GGUF_CLIP_ARCHITECTURE);
  if (visionArch !== GGUF_CLIP_ARCHITECTURE) vision.fail(`architecture "${visionArch}" is not a vision (mmproj) file; pass it with --model-path and its mmproj with --mmproj`);
  const textJson = llmConfigJson(llm, arch);
  const text = parseLlamaConfig(textJson, llm.source);
  const visionJson = {
    model_type: "clip_vision_model",
    hidden_size: vision.uint(CLIP_KEY.embeddingLength),
    intermediate_size: vision.uint(CLIP_KEY.feedForwardLength),
    num_hidden_layers: vision.uint(CLIP_KEY.blockCount),
    num_attention_heads: vision.uint(CLIP_KEY.headCount),
    image_size: vision.uint(CLIP_KEY.imageSize),
    patch_size: vision.uint(CLIP_KEY.patchSize),
    layer_norm_eps: vision.number(CLIP_KEY.layerNormEps, 1e-5),
    // clip.cpp: use_gelu picks GELU, else CLIP's quick GELU
    hidden_act: vision.bool(CLIP_KEY.useGelu, false) ? "gelu" : "quick_gelu",
    projection_dim: vision.uint(CLIP_KEY.projectionDim, 768),
  };
  const tower = parseClipVisionConfig(visionJson, vision.source);
  if (!vision.bool(CLIP_KEY.hasVisionEncoder, true)) vision.fail(`has no vision encoder (${CLIP_KEY.hasVisionEncoder} is false)`);
  const projector = projectorType(vision);
  checkFits(vision, tower.hiddenSize, text.hiddenSize);
  const featureLayers = vision.numbers(CLIP_KEY.featureLayer);
  if (featureLayers && featureLayers.length !== 1) vision.fail(`${CLIP_KEY.featureLayer} lists ${featureLayers.length} layers; only a single feature layer is supported`);
  const pinpointList = vision.numbers(CLIP_KEY.pinpoints);
  const mergeType = vision.string(CLIP_KEY.mergeType, "flat") as PatchMergeType;
  if (!["flat", "spatial", "spatial_unpad"].includes(mergeType)) vision.fail(`${CLIP_KEY.mergeType} "${mergeType}" is not supported (flat, spatial, spatial_unpad)`);
  let anyres: ModelSpec["settings"]["anyres"] = null;
  if (pinpointList) {
    if (pinpointList.length % 2 !== 0) vision.fail(`${CLIP_KEY.pinpoints} has an odd number of values`);
    const pairs = Array.from({ length: pinpointList.length / 2 }, (_, i) => [pinpointList[2 * i], pinpointList[2 * i + 1]]);
    // clip.cpp reads each pair as (width, height), as the original LLaVA does
    anyres = { pinpoints: parsePinpoints(pairs, `${vision.source}: ${CLIP_KEY.pinpoints}`), convention: "llava", mergeType };
    if (!vision.tensors.has("model.image_newline") && mergeType === "spatial_unpad") vision.fail(`AnyRes with ${mergeType} needs the "model.image_newline" tensor`);
  }
  const name = llm.string("general.name", null);
  return {
    dir: path.dirname(pair.model),
    configFile: pair.model,
    config: { ...textJson, vision_config: visionJson, gguf: { model: pair.model, mmproj: pair.mmproj } },
    format: "original",
    text,
    tower: { name: null, dir: null, config: tower },
    projector: { type: projector, activation: "gelu" },
    mergeType,
    settings: {
      visionSelectLayer: featureLayers ? featureLayers[0] : -1,
      visionSelectFeature: "patch",
      imageTokenId: -200,
      expandImageTokens: false,
      // clip.cpp pads a LLaVA image to a square with the mean colour, as LLaVA-1.5's "pad"
      imageAspectMode: anyres ? "anyres" : "pad",
      maxSequenceLength: null,
      anyres,
      imageStartEnd: false,
    },
    visionTowerOption: null,
    peftAdapter: null,
    gguf: { model: pair.model, mmproj: pair.mmproj, name, chatTemplate: llm.string(TOKENIZER_KEY.chatTemplate, null) },
  };
}

/** The LLM's hyperparameters as the HF config they came from. */
function llmConfigJson(llm: GgufFile, arch: string): Record<string, unknown> {
  const key = (k: Parameters<typeof llmKey>[0]) => llmKey(k, arch);
  const hidden = llm.uint(key("embeddingLength"));
  const heads = llm.uint(key("headCount"));
  const headDim = llm.uint(key("keyLength"), null) ?? hidden / heads;
  const ropeDims = llm.uint(key("ropeDimensionCount"), null);
  if (ropeDims !== null && ropeDims !== headDim) llm.fail(`${key("ropeDimensionCount")} is ${ropeDims} but the heads are ${headDim} wide; partial rotary embeddings are not supported`);
  const embd = llm.tensors.get("token_embd.weight") ?? llm.fail(`has no tensor "token_embd.weight"`);
  const scaling = llm.string(key("ropeScalingType"), "none");
  if (scaling !== "none" && scaling !== "linear") llm.fail(`${key("ropeScalingType")} "${scaling}" is not supported (none, linear)`);
  return {
    model_type: "llama",
    hidden_size: hidden,
    intermediate_size: llm.uint(key("feedForwardLength")),
    num_hidden_layers: llm.uint(key("blockCount")),
    num_attention_heads: heads,
    num_key_value_heads: llm.uint(key("headCountKv"), heads),
    head_dim: headDim,
    rms_norm_eps: llm.number(key("rmsEps")),
    rope_theta: llm.number(key("ropeFreqBase"), 10000),
    ...(scaling === "linear" ? { rope_scaling: { rope_type: "linear", factor: llm.number(key("ropeScalingFactor")) } } : {}),
    max_position_embeddings: llm.uint(key("contextLength"), 4096),
    vocab_size: embd.ne[1],
    // llama.cpp multiplies by token_embd when the file has no output.weight
    tie_word_embeddings: !llm.tensors.has("output.weight"),
    bos_token_id: llm.uint(TOKENIZER_KEY.bos, 1),
    eos_token_id: llm.uint(TOKENIZER_KEY.eos, 2),
    pad_token_id: llm.uint(TOKENIZER_KEY.pad, null),
  };
}

/** The projector of an mmproj: clip.cpp's "mlp" is LLaVA's mlp2x_gelu (mm.0, GELU, mm.2); a lone mm.0 is a linear one. */
function projectorType(vision: GgufFile): string {
  const type = vision.string(CLIP_KEY.projectorType, vision.bool(CLIP_KEY.hasLlavaProjector, false) ? "mlp" : null);
  if (type === null) vision.fail(`has no LLaVA projector (${CLIP_KEY.projectorType} is missing)`);
  if (type !== "mlp") vision.fail(`projector type "${type}" is not supported (only "mlp", LLaVA's MLP projector)`);
  const linears = [...vision.tensors.keys()].filter((n) => /^mm\.\d+\.weight$/.test(n)).length;
  if (!linears) vision.fail(`has no projector tensors (mm.0.weight, ...)`);
  const name = linears === 1 ? "linear" : `mlp${linears}x_gelu`;
  projectorDepth(name);
  return name;
}

/** The projector must take the tower's width and give the LLM's. */
function checkFits(vision: GgufFile, towerHidden: number, llmHidden: number): void {
  const layers = [...vision.tensors.values()].filter((t) => /^mm\.\d+\.weight$/.test(t.name)).sort((a, b) => Number(a.name.split(".")[1]) - Number(b.name.split(".")[1]));
  const [first, last] = [layers[0], layers[layers.length - 1]];
  if (first.ne[0] !== towerHidden) vision.fail(`projector "${first.name}" takes ${first.ne[0]} features but the vision tower's hidden size is ${towerHidden}`);
  if (last.ne[1] !== llmHidden) vision.fail(`does not fit the language model: its projector gives ${last.ne[1]} features but the language model's hidden size is ${llmHidden}`);
}

function ggufImageProcessor(vision: GgufFile, spec: ModelSpec): ImageProcessorConfig {
  const size = spec.tower.config!.imageSize;
  const json: Record<string, unknown> = { size: { shortest_edge: size }, crop_size: { height: size, width: size } };
  const mean = vision.numbers(CLIP_KEY.imageMean);
  const std = vision.numbers(CLIP_KEY.imageStd);
  if (mean) json.image_mean = mean;
  if (std) json.image_std = std;
  return parseImageProcessorConfig(json, vision.source);
}

/**
 * The conversation template of a GGUF model, as the project picks one from a model's name: the
 * first of general.name, the file's name and the folder's name that names a template, else the
 * one tokenizer.chat_template is written for, else the name-based default.
 */
export function ggufConvMode(gguf: NonNullable<ModelSpec["gguf"]>): string {
  const names = [gguf.name, path.basename(gguf.model, ".gguf"), path.basename(path.dirname(gguf.model))].filter((n): n is string => !!n);
  // what a name that says nothing gets
  const fallback = convModeForModelName("");
  const named = names.map(convModeForModelName).find((m) => m !== fallback);
  if (named) return named;
  const t = gguf.chatTemplate ?? "";
  if (t.includes("<|im_start|>")) return "chatml_direct";
  if (t.includes("<<SYS>>")) return "llava_llama_2";
  if (t.includes("[INST]")) return "mistral_instruct";
  if (t.includes("USER:") && t.includes("ASSISTANT:")) return "llava_v1";
  return fallback;
}
