/**
 * `llava convert to-gguf`: a LLaVA checkpoint (any format this project reads) to the pair of
 * GGUF files llama.cpp's multimodal tools (tools/mtmd) and Ollama load: the LLaMA LLM as
 * `<name>-<TYPE>.gguf` (convert_hf_to_gguf.py's names, metadata and Q/K row order) and the
 * CLIP tower with the projector as `mmproj-<name>-f16.gguf` (clip.cpp's `clip.*` keys).
 */
import path from "node:path";
import { isFile } from "../io/files.js";
import { type GgufTensorToWrite, type GgufValueToWrite, gguf, tensorBytes, writeGguf } from "../io/gguf-write.js";
import { checkOutsideInputs, writeOutputFolder } from "../io/output.js";
import type { WeightReader } from "../io/weights.js";
import { CLIP_KEY, GGUF_CLIP_ARCHITECTURE, ggufFromCanonical, LLM_KEY, llmKey, permutedHeads, permuteRows, TOKENIZER_KEY } from "../llava/gguf-names.js";
import { partOf } from "../llava/keys.js";
import { type ModelSpec, readModelSpec, requireTower } from "../llava/spec.js";
import { keptFormat, quantFormat } from "../llava/precision.js";
import { openCheckpointWeights } from "../llava/weights.js";
import { loadImageProcessorConfig, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD } from "../image/processor.js";
import { ggmlTypeOf } from "../tensor/ggml-types.js";
import { fittingFormat, packMatrix, packStoredHalfMatrix, type PackedFormat } from "../tensor/packed.js";
import { LlavaError } from "../util/errors.js";
import type { ConvertResult } from "./common.js";
import { llamaGgufVocab } from "./gguf-vocab.js";
import { type ProgressSink, silentProgress } from "./progress.js";

type Stored = PackedFormat | "f32";

/** The --type choices (llama.cpp's file types), with the llama_ftype number written as general.file_type. */
export const GGUF_FILE_TYPES = {
  f32: 0, f16: 1, q8_0: 7, q4_0: 2, q4_1: 3, q5_0: 8, q5_1: 9, q4_k_m: 15, q5_k_m: 17, q6_k: 18,
} as const satisfies Record<string, number>;

export type GgufFileType = keyof typeof GGUF_FILE_TYPES;

export interface ToGgufOptions {
  modelPath: string;
  visionTower?: string;
  out: string;
  type?: GgufFileType;
  /**
   * Store every tensor in the format the loader keeps it in under --load-8bit (q8_0) or
   * --load-4bit (q4_0), f32 where it keeps f32, instead of llama.cpp's choices for `type`
   * (`llava convert quantize`): loading the pair then reads the packed blocks as stored.
   */
  asLoaded?: "q8_0" | "q4_0";
  force?: boolean;
  progress?: ProgressSink;
}

const OUTPUT = "output.weight";

/**
 * The type one LLM tensor (canonical name) is stored in: vectors f32; matrices in the type, or
 * under a quantized type as llama-quant.cpp picks it (the loader's --quant rule, precision.ts),
 * token embedding included; a row that is not whole blocks falls back as llama.cpp's do, finally
 * to f16.
 */
export function llmTensorType(canonical: string, shape: number[], type: GgufFileType, layers: number): Stored {
  if (shape.length < 2 || type === "f32") return "f32";
  if (type === "f16") return "f16";
  return fittingFormat(quantFormat(canonical, type, layers), shape[shape.length - 1]) ?? "f16";
}

/** The type a tensor (canonical name) is kept in by the loader under --load-8bit / --load-4bit. */
export function loadedTensorType(canonical: string, shape: number[], quantize: "q8_0" | "q4_0"): Stored {
  if (shape.length !== 2) return "f32";
  return fittingFormat(keptFormat(canonical, { quantize }), shape[1]) ?? "f32";
}

/** The bytes of an f32 tensor (shape as in torch) stored as `type`. */
export function encodeTensor(values: Float32Array, shape: number[], type: Stored): Uint8Array {
  if (type === "f32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const cols = shape[shape.length - 1];
  return packMatrix(values, values.length / cols, cols, type).data;
}

const ggmlDims = (shape: number[]) => (shape.length ? [...shape].reverse() : [1]);

/** A tensor to write; `permute` reorders its rows (as bytes). 16-bit stored weights are packed from their bits. */
function tensor(reader: WeightReader, canonical: string, name: string, type: Stored, permute: (rows: Uint8Array) => Uint8Array = (b) => b): GgufTensorToWrite {
  const { shape, dtype } = reader.info(canonical);
  const data = () => {
    if (type !== "f32" && shape.length === 2 && (dtype === "BF16" || dtype === "F16")) {
      return packStoredHalfMatrix(permute(reader.readRaw(canonical).bytes), dtype, shape[0], shape[1], type).data;
    }
    const w = reader.readF32(canonical);
    const rows = permute(new Uint8Array(w.buffer, w.byteOffset, w.byteLength));
    return encodeTensor(new Float32Array(rows.buffer, rows.byteOffset, rows.byteLength / 4), shape, type);
  };
  return { name, type: ggmlTypeOf(type).name, ne: ggmlDims(shape), data };
}

/** The LLM file's tensors, in llama.cpp's order (embedding, blocks, norm, output). */
function llmTensors(reader: WeightReader, spec: ModelSpec, type: GgufFileType, asLoaded?: "q8_0" | "q4_0"): GgufTensorToWrite[] {
  const { numAttentionHeads, numKeyValueHeads } = spec.text;
  const tensors: Array<GgufTensorToWrite & { order: number[] }> = [];
  for (const canonical of reader.names()) {
    if (partOf(canonical) !== "llm") continue;
    const name = ggufFromCanonical(canonical);
    if (!name) throw new LlavaError(`${reader.source}: tensor "${canonical}" has no place in llama.cpp's LLaMA`);
    const { shape } = reader.info(canonical);
    // llama.cpp rotates adjacent pairs, so the query and key rows go in convert_hf_to_gguf.py's order
    const heads = permutedHeads(canonical, { q: numAttentionHeads, kv: numKeyValueHeads });
    const permute = heads ? (b: Uint8Array) => permuteRows(b, shape[0], b.byteLength / shape[0], heads, false) : undefined;
    const block = /^blk\.(\d+)\./.exec(name);
    const order = name === "token_embd.weight" ? [0, 0] : block ? [1, Number(block[1])] : [2, name === OUTPUT ? 1 : 0];
    const stored = asLoaded ? loadedTensorType(canonical, shape, asLoaded) : llmTensorType(canonical, shape, type, spec.text.numHiddenLayers);
    tensors.push({ ...tensor(reader, canonical, name, stored, permute), order });
  }
  if (!tensors.some((t) => t.name === "token_embd.weight")) throw new LlavaError(`${reader.source}: no token embedding (model.embed_tokens.weight)`);
  tensors.sort((a, b) => a.order[0] - b.order[0] || a.order[1] - b.order[1] || (a.name < b.name ? -1 : 1));
  return tensors.map(({ order: _, ...t }) => t);
}

function llmMetadata(spec: ModelSpec, name: string, type: GgufFileType, rows: number): Array<[string, GgufValueToWrite]> {
  const t = spec.text;
  if (t.modelType !== "llama") throw new LlavaError(`${spec.configFile}: the LLM is ${t.modelType}; to-gguf writes llama.cpp's "llama" architecture only`);
  if (t.attentionBias || t.mlpBias) throw new LlavaError(`${spec.configFile}: attention_bias / mlp_bias; this converter writes LLaMA without biases`);
  if (t.hiddenAct !== "silu") throw new LlavaError(`${spec.configFile}: hidden_act "${t.hiddenAct}"; llama.cpp's LLaMA uses silu`);
  if (t.ropeScaling && t.ropeScaling.ropeType !== "linear") throw new LlavaError(`${spec.configFile}: rope_scaling "${t.ropeScaling.ropeType}" is not written to GGUF by this converter (linear only)`);
  const vocab = llamaGgufVocab(spec.dir, rows);
  const L = (key: keyof typeof LLM_KEY) => llmKey(key, "llama");
  const md: Array<[string, GgufValueToWrite]> = [
    [L("architecture"), gguf.str("llama")],
    [L("name"), gguf.str(name)],
    [L("contextLength"), gguf.u32(t.maxPositionEmbeddings)],
    [L("embeddingLength"), gguf.u32(t.hiddenSize)],
    [L("blockCount"), gguf.u32(t.numHiddenLayers)],
    [L("feedForwardLength"), gguf.u32(t.intermediateSize)],
    [L("ropeDimensionCount"), gguf.u32(t.headDim)],
    [L("headCount"), gguf.u32(t.numAttentionHeads)],
    [L("headCountKv"), gguf.u32(t.numKeyValueHeads)],
    [L("rmsEps"), gguf.f32(t.rmsNormEps)],
    [L("ropeFreqBase"), gguf.f32(t.ropeTheta)],
    [L("fileType"), gguf.u32(GGUF_FILE_TYPES[type])],
    [L("vocabSize"), gguf.u32(rows)],
  ];
  if (t.headDim !== t.hiddenSize / t.numAttentionHeads) md.push([L("keyLength"), gguf.u32(t.headDim)], [L("valueLength"), gguf.u32(t.headDim)]);
  if (t.ropeScaling) md.push([L("ropeScalingType"), gguf.str("linear")], [L("ropeScalingFactor"), gguf.f32(t.ropeScaling.factor ?? 1)]);
  if (type !== "f32" && type !== "f16") md.push([L("quantizationVersion"), gguf.u32(2)]);
  const T = TOKENIZER_KEY;
  md.push(
    [T.model, gguf.str("llama")],
    [T.tokens, gguf.array("string", vocab.tokens)],
    [T.scores, gguf.array("f32", vocab.scores)],
    [T.tokenType, gguf.array("i32", vocab.types)],
  );
  for (const [key, id] of [[T.bos, vocab.bos], [T.eos, vocab.eos], [T.unk, vocab.unk], [T.pad, vocab.pad]] as const) if (id !== null) md.push([key, gguf.u32(id)]);
  md.push([T.addBos, gguf.bool(vocab.addBos)], [T.addEos, gguf.bool(vocab.addEos)]);
  if (vocab.chatTemplate !== null) md.push([T.chatTemplate, gguf.str(vocab.chatTemplate)]);
  return md;
}

/** The hidden state LLaVA takes from the tower, as a count of encoder layers run (hidden_states index). */
function featureLayerOf(spec: ModelSpec, layers: number): number {
  const select = spec.settings.visionSelectLayer;
  const k = select < 0 ? layers + 1 + select : select;
  if (k < 1 || k > layers) throw new LlavaError(`${spec.configFile}: vision select layer ${select} is outside the tower's ${layers} layers`);
  if (spec.settings.visionSelectFeature !== "patch") throw new LlavaError(`${spec.configFile}: clip.cpp drops the CLS feature; a model that keeps it (cls_patch / full) cannot be written as mmproj`);
  return k;
}

/** The mmproj tensors: the tower up to the feature layer (clip.cpp runs every block it finds), the projector, image_newline. */
function mmprojTensors(reader: WeightReader, featureLayer: number, asLoaded?: "q8_0" | "q4_0"): GgufTensorToWrite[] {
  const tensors: GgufTensorToWrite[] = [];
  for (const canonical of reader.names()) {
    if (partOf(canonical) === "llm") continue;
    const name = ggufFromCanonical(canonical);
    if (!name) throw new LlavaError(`${reader.source}: tensor "${canonical}" has no place in a llama.cpp mmproj file`);
    const layer = /^v\.blk\.(\d+)\./.exec(name);
    if ((layer && Number(layer[1]) >= featureLayer) || name.startsWith("v.post_ln.")) continue;
    const { shape } = reader.info(canonical);
    // as the reference converter: matrices and the patch convolution in f16, vectors in f32
    const type: Stored = asLoaded ? loadedTensorType(canonical, shape, asLoaded) : shape.length >= 2 && name.endsWith(".weight") ? "f16" : "f32";
    tensors.push(tensor(reader, canonical, name, type));
  }
  return tensors;
}

async function mmprojMetadata(spec: ModelSpec, name: string, featureLayer: number): Promise<Array<[string, GgufValueToWrite]>> {
  const v = requireTower(spec);
  if (spec.projector.type !== "mlp2x_gelu") throw new LlavaError(`${spec.configFile}: projector "${spec.projector.type}"; clip.cpp's LLaVA projector ("mlp") is mlp2x_gelu`);
  const processorDir = [spec.dir, spec.tower.dir].find((d) => d && isFile(path.join(d, "preprocessor_config.json")));
  const processor = processorDir ? await loadImageProcessorConfig(processorDir) : { imageMean: [...OPENAI_CLIP_MEAN], imageStd: [...OPENAI_CLIP_STD] };
  const C = CLIP_KEY;
  const md: Array<[string, GgufValueToWrite]> = [
    [LLM_KEY.architecture, gguf.str(GGUF_CLIP_ARCHITECTURE)],
    [C.hasTextEncoder, gguf.bool(false)],
    [C.hasVisionEncoder, gguf.bool(true)],
    [C.hasLlavaProjector, gguf.bool(true)],
    [LLM_KEY.fileType, gguf.u32(1)],
    [LLM_KEY.name, gguf.str(name)],
    [C.projectorType, gguf.str("mlp")],
    [C.useGelu, gguf.bool(v.hiddenAct === "gelu")],
    [C.imageSize, gguf.u32(v.imageSize)],
    [C.patchSize, gguf.u32(v.patchSize)],
    [C.embeddingLength, gguf.u32(v.hiddenSize)],
    [C.feedForwardLength, gguf.u32(v.intermediateSize)],
    [C.projectionDim, gguf.u32(v.projectionDim)],
    [C.headCount, gguf.u32(v.numAttentionHeads)],
    [C.layerNormEps, gguf.f32(v.layerNormEps)],
    [C.blockCount, gguf.u32(featureLayer)],
    [C.featureLayer, gguf.array("i32", [featureLayer])],
    [C.imageMean, gguf.array("f32", [...processor.imageMean])],
    [C.imageStd, gguf.array("f32", [...processor.imageStd])],
  ];
  const anyres = spec.settings.anyres;
  if (anyres) {
    // clip.cpp reads pinpoints as (width, height) pairs
    const wh = anyres.pinpoints.map(([a, b]) => (anyres.convention === "hf" ? [b, a] : [a, b]));
    md.push(
      [C.pinpoints, gguf.array("i32", wh.flat())],
      [C.cropResolution, gguf.u32(v.imageSize)],
      [C.mergeType, gguf.str(anyres.mergeType)],
    );
  }
  return md;
}

export interface ToGgufResult extends ConvertResult {
  llmFile: string;
  mmprojFile: string;
}

export async function convertToGguf(opts: ToGgufOptions): Promise<ToGgufResult> {
  const type = opts.type ?? "f16";
  if (!(type in GGUF_FILE_TYPES)) throw new LlavaError(`--type ${type} is not supported (${Object.keys(GGUF_FILE_TYPES).join(", ")})`);
  const spec = readModelSpec(opts.modelPath, { visionTower: opts.visionTower });
  const tower = requireTower(spec);
  checkOutsideInputs(opts.out, [spec.dir, spec.tower.dir]);
  const name = path.basename(spec.dir);
  const llmFile = `${name}-${type.toUpperCase()}.gguf`;
  const mmprojFile = `mmproj-${name}-f16.gguf`;
  const weights = openCheckpointWeights(spec);
  try {
    const { reader } = weights;
    if (weights.kind !== "full") throw new LlavaError(`${spec.dir}: holds no full model weights (a LoRA or projector-only checkpoint?); merge it first with "llava convert merge-lora"`);
    const featureLayer = featureLayerOf(spec, tower.numHiddenLayers);
    const llm = llmTensors(reader, spec, type, opts.asLoaded);
    const rows = llm.find((t) => t.name === "token_embd.weight")!.ne[1];
    const mmproj = mmprojTensors(reader, featureLayer, opts.asLoaded);
    const llmMd = llmMetadata(spec, name, type, rows);
    const mmprojMd = await mmprojMetadata(spec, name, featureLayer);
    const notes = [`vision tower written up to layer ${featureLayer} of ${tower.numHiddenLayers} (the feature layer LLaVA reads)`];
    const counts = new Map<string, number>();
    for (const t of llm) if (t.ne.length >= 2) counts.set(t.type, (counts.get(t.type) ?? 0) + 1);
    notes.push(`LLM matrices: ${[...counts].map(([t, n]) => `${n} ${t}`).join(", ")}`);
    const count = llm.length + mmproj.length;
    const progress = opts.progress ?? silentProgress;
    const counted = (ts: GgufTensorToWrite[]) => ts.map((t) => ({ ...t, data: () => {
      const bytes = t.data();
      progress.tensorDone(t.name, bytes.length);
      return bytes;
    } }));
    progress.start(count, [...llm, ...mmproj].reduce((n, t) => n + tensorBytes(t), 0));
    const written = await writeOutputFolder(opts.out, opts.force ?? false, async (tmp, interrupt) => {
      const a = await writeGguf(path.join(tmp, llmFile), { metadata: llmMd, tensors: counted(llm) }, interrupt);
      const b = await writeGguf(path.join(tmp, mmprojFile), { metadata: mmprojMd, tensors: counted(mmproj) }, interrupt);
      return a + b;
    });
    progress.finish();
    return { out: path.resolve(opts.out), files: [llmFile, mmprojFile], tensors: count, bytes: written, notes, llmFile, mmprojFile };
  } finally {
    weights.close();
  }
}
