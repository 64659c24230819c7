/**
 * Writes a fixture checkpoint as the GGUF pair llama.cpp's converters make of it (test-only:
 * the LLM file as convert_hf_to_gguf.py writes it, the vision file as the LLaVA mmproj
 * converter does, dropping the tower's layers past the selected one), so the GGUF loader can be
 * checked against the checkpoint it came from.
 */
import fs from "node:fs";
import path from "node:path";
import { GgufValueType } from "../../src/io/gguf.js";
import { readJsonFile } from "../../src/io/files.js";
import { ggufFromCanonical, llmKey, permuteRows, TOKEN_TYPE, TOKENIZER_KEY, CLIP_KEY, permutedHeads } from "../../src/llava/gguf-names.js";
import { partOf } from "../../src/llava/keys.js";
import { readModelSpec } from "../../src/llava/spec.js";
import { openCheckpointWeights } from "../../src/llava/weights.js";
import { packMatrix, type PackedFormat } from "../../src/tensor/packed.js";
import { parseSentencePieceModel } from "../../src/tokenizer/sentencepiece-model.js";
import { MODELS } from "../helpers/paths.js";
import { buildGguf, kv, type KvIn, type TensorIn } from "../io/gguf-build.js";

export type PairType = "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0";

export interface PairOptions {
  type: PairType;
  /** name CLIP's fc1 ffn_down and fc2 ffn_up, as the legacy LLaVA converter did */
  legacyFfn?: boolean;
  /** extra or replaced metadata of the LLM / vision file */
  llmKv?: KvIn[];
  visionKv?: KvIn[];
  /** tensors to leave out, by GGUF name */
  drop?: string[];
  visionTower?: string;
}

/** The tensor in the file's type: matrices in `type` when their rows are whole blocks, everything else f32. */
function encode(name: string, shape: number[], data: Float32Array, type: PairType): TensorIn {
  const ne = [...shape].reverse();
  const f32 = () => ({ name, type: "F32", ne, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
  if (shape.length !== 2 || type === "F32") return f32();
  const format = type.toLowerCase() as PackedFormat;
  if ((format === "q8_0" || format === "q4_0") && shape[1] % 32 !== 0) return f32();
  return { name, type, ne, data: packMatrix(data, shape[0], shape[1], format).data };
}

/** Writes `<out>/model-<type>.gguf` and `<out>/mmproj-model-f32.gguf` from a fixture model folder. */
export function writeGgufPair(modelDir: string, out: string, opts: PairOptions): { model: string; mmproj: string } {
  const spec = readModelSpec(modelDir, { visionTower: opts.visionTower });
  const weights = openCheckpointWeights(spec);
  const text = spec.text;
  const vision = spec.tower.config!;
  const keep = vision.numHiddenLayers + spec.settings.visionSelectLayer + 1;
  const llmTensors: TensorIn[] = [];
  const visionTensors: TensorIn[] = [];
  const drop = new Set(opts.drop ?? []);
  for (const name of weights.reader.names()) {
    let gguf = ggufFromCanonical(name);
    if (gguf === null || drop.has(gguf) || gguf.startsWith("v.post_ln")) continue;
    const layer = /^v\.blk\.(\d+)\./.exec(gguf);
    if (layer && Number(layer[1]) >= keep) continue;
    if (opts.legacyFfn) gguf = gguf.replace(/^(v\.blk\.\d+)\.ffn_(up|down)\./, (_, b, w) => `${b}.ffn_${w === "up" ? "down" : "up"}.`);
    const { shape } = weights.reader.info(name);
    let data = weights.reader.readF32(name);
    const heads = permutedHeads(name, { q: text.numAttentionHeads, kv: text.numKeyValueHeads });
    if (heads !== null) data = new Float32Array(permuteRows(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), shape[0], shape[1] * 4, heads, false).buffer);
    const part = partOf(name);
    (part === "llm" ? llmTensors : visionTensors).push(encode(gguf, shape, data, part === "llm" ? opts.type : "F32"));
  }
  weights.close();

  // the LLaMA SentencePiece vocabulary, then the checkpoint's added tokens, as llama.cpp appends them
  const sp = parseSentencePieceModel(fs.readFileSync(path.join(MODELS, "tiny-llava-1.5-orig", "tokenizer.model")));
  const tokens = sp.pieces.map((p) => p.piece);
  const scores = sp.pieces.map((p) => p.score);
  const types = sp.pieces.map((p) => p.type);
  const added = (readJsonFile(path.join(modelDir, "tokenizer.json"), "tokenizer") as { added_tokens: { id: number; content: string; special: boolean }[] }).added_tokens;
  for (const t of added.filter((a) => a.id >= tokens.length).sort((a, b) => a.id - b.id)) {
    tokens.push(t.content);
    scores.push(-1000);
    types.push(t.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined);
  }
  const arch = "llama";
  const k = (key: Parameters<typeof llmKey>[0]) => llmKey(key, arch);
  const llmKv: KvIn[] = [
    kv("general.architecture", arch),
    kv("general.name", path.basename(modelDir)),
    kv(k("contextLength"), text.maxPositionEmbeddings),
    kv(k("embeddingLength"), text.hiddenSize),
    kv(k("blockCount"), text.numHiddenLayers),
    kv(k("feedForwardLength"), text.intermediateSize),
    kv(k("ropeDimensionCount"), text.headDim),
    kv(k("headCount"), text.numAttentionHeads),
    kv(k("headCountKv"), text.numKeyValueHeads),
    kv(k("rmsEps"), text.rmsNormEps, GgufValueType.FLOAT32),
    kv(k("ropeFreqBase"), text.ropeTheta, GgufValueType.FLOAT32),
    kv(TOKENIZER_KEY.model, "llama"),
    kv(TOKENIZER_KEY.tokens, tokens, GgufValueType.ARRAY, GgufValueType.STRING),
    kv(TOKENIZER_KEY.scores, scores, GgufValueType.ARRAY, GgufValueType.FLOAT32),
    kv(TOKENIZER_KEY.tokenType, types, GgufValueType.ARRAY, GgufValueType.INT32),
    kv(TOKENIZER_KEY.bos, 1),
    kv(TOKENIZER_KEY.eos, 2),
    kv(TOKENIZER_KEY.unk, 0),
    kv(TOKENIZER_KEY.addBos, true),
    kv(TOKENIZER_KEY.addEos, false),
  ];
  const preprocessor = readJsonFile(path.join(spec.tower.dir ?? modelDir, "preprocessor_config.json"), "preprocessor") as { image_mean: number[]; image_std: number[] };
  const anyres = spec.settings.anyres;
  const visionKv: KvIn[] = [
    kv("general.architecture", "clip"),
    kv(CLIP_KEY.hasVisionEncoder, true),
    kv(CLIP_KEY.hasLlavaProjector, true),
    kv(CLIP_KEY.projectorType, "mlp"),
    kv(CLIP_KEY.useGelu, vision.hiddenAct === "gelu"),
    kv(CLIP_KEY.imageSize, vision.imageSize),
    kv(CLIP_KEY.patchSize, vision.patchSize),
    kv(CLIP_KEY.embeddingLength, vision.hiddenSize),
    kv(CLIP_KEY.feedForwardLength, vision.intermediateSize),
    kv(CLIP_KEY.projectionDim, vision.projectionDim),
    kv(CLIP_KEY.headCount, vision.numAttentionHeads),
    kv(CLIP_KEY.layerNormEps, vision.layerNormEps, GgufValueType.FLOAT32),
    kv(CLIP_KEY.blockCount, keep),
    kv(CLIP_KEY.imageMean, preprocessor.image_mean, GgufValueType.ARRAY, GgufValueType.FLOAT32),
    kv(CLIP_KEY.imageStd, preprocessor.image_std, GgufValueType.ARRAY, GgufValueType.FLOAT32),
    ...(anyres ? [kv(CLIP_KEY.pinpoints, anyres.pinpoints.flat(), GgufValueType.ARRAY, GgufValueType.INT32), kv(CLIP_KEY.mergeType, anyres.mergeType)] : []),
  ];
  const merge = (base: KvIn[], extra: KvIn[] = []) => [...base.filter((e) => !extra.some((x) => x.key === e.key)), ...extra];
  fs.mkdirSync(out, { recursive: true });
  const model = path.join(out, `model-${opts.type.toLowerCase()}.gguf`);
  const mmproj = path.join(out, "mmproj-model-f32.gguf");
  fs.writeFileSync(model, buildGguf({ kv: merge(llmKv, opts.llmKv), tensors: llmTensors }));
  fs.writeFileSync(mmproj, buildGguf({ kv: merge(visionKv, opts.visionKv), tensors: visionTensors }));
  return { model, mmproj };
}
