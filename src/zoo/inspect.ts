/**
 * `llava inspect`: what a checkpoint folder holds and what running it takes, from its configs
 * and weight headers only (no tensor data is read): format, LLM and vision tower shapes,
 * projector, image handling, parameter counts, dtypes, the conversation templates the CLI and
 * web UI would pick, image tokens per image, and memory at f32 / bf16 / q8_0 / q4_0.
 */
import path from "node:path";
import type { ClipVisionConfig, LlamaConfig } from "../io/config.js";
import { anyresGridShape, type PinpointConvention } from "../image/processor.js";
import { unpaddedRange } from "../llava/anyres.js";
import { convModeForModelName, modelNameFromPath, webConvModeForModelName } from "../llava/conversation.js";
import { type Part, partOf } from "../llava/keys.js";
import { keptFormat, kvCacheValueBytes, type PrecisionOptions, residentBytes } from "../llava/precision.js";
import { findGgufPair, ggufConvMode, type GgufModel, openGgufModel } from "../llava/gguf-load.js";
import type { GgufFile } from "../io/gguf.js";
import type { PackedFormat } from "../tensor/packed.js";
import { type CheckpointFormat, type ModelSpec, readModelSpec } from "../llava/spec.js";
import { checkTensors, declaredTensors, listed, type TensorFindings } from "../llava/tensors.js";
import { openCheckpointWeights } from "../llava/weights.js";
import { formatBytes } from "./progress.js";

export interface VisionReport {
  /** where the tower's weights are: in the checkpoint, in a CLIP folder, or nowhere found */
  weights: "checkpoint" | "folder" | "missing";
  /** the CLIP folder used for the config (and weights when not in the checkpoint) */
  folder: string | null;
  /** mm_vision_tower as written (original format) */
  name: string | null;
  imageSize: number | null;
  patchSize: number | null;
  layers: number | null;
  hiddenSize: number | null;
  heads: number | null;
}

export interface ImageTokens {
  width: number;
  height: number;
  /** feature rows the model splices in for one image of this size (null: the model cannot run it) */
  tokens: number | null;
  /** AnyRes tile grid, "cols x rows" */
  grid: string | null;
}

export interface MemoryEstimate {
  /** weights, each precision as the loader keeps it */
  weights: { f32: number; bf16: number; q8_0: number; q4_0: number };
  /** K and V of every layer for `contextLength` positions, per precision (f32 for f32 weights, else 16-bit: kvCacheValueBytes) */
  kvCache: MemoryEstimate["weights"];
  contextLength: number;
}

export interface InspectReport {
  path: string;
  format: CheckpointFormat;
  architecture: string;
  /** a full model, or a LoRA / projector-only checkpoint (read with its --model-base when given) */
  checkpoint: "full" | "lora" | "projector";
  modelBase: string | null;
  weightFiles: string[];
  llm: {
    modelType: string; hiddenSize: number; layers: number; heads: number; kvHeads: number; headDim: number;
    intermediateSize: number; vocabSize: number; ropeTheta: number; ropeScaling: string | null; maxPositions: number; tiedEmbeddings: boolean;
  };
  vision: VisionReport;
  projector: { type: string; activation: string };
  selectLayer: number;
  selectFeature: "patch" | "cls_patch";
  image: {
    mode: "square" | "pad" | "anyres";
    pinpoints: number[][] | null;
    /** how the config's pinpoints read: HF (height, width), original (width, height) */
    pinpointOrder: "height,width" | "width,height" | null;
    mergeType: string | null;
    /** the original format truncates the spliced sequence to this many positions */
    maxSequenceLength: number | null;
  };
  /** parameter counts; null where the weights were not found */
  parameters: { llm: number | null; vision: number | null; projector: number | null; other: number | null; lora: number | null; total: number };
  lora: { r: number; alpha: number; targets: string[] | string } | null;
  /** dtype -> tensors and parameters stored in it */
  dtypes: Record<string, { tensors: number; parameters: number }>;
  templates: { modelName: string; cli: string; web: string };
  imageTokens: ImageTokens[];
  memory: MemoryEstimate;
  /** a GGUF pair's files: what each holds, by GGML type (null for a checkpoint folder) */
  gguf: GgufFileReport[] | null;
  /** the loader's own check of the tensors against the model (null when it cannot run: no tower config, or a partial checkpoint without its base) */
  tensors: TensorFindings | null;
  notes: string[];
}

export interface InspectOptions {
  modelBase?: string;
  visionTower?: string;
  /** the vision GGUF of a GGUF language model */
  mmproj?: string;
}

export interface GgufFileReport {
  file: string;
  version: number;
  /** general.architecture */
  architecture: string;
  /** general.name */
  name: string | null;
  bytes: number;
  metadataEntries: number;
  /** GGML type -> tensors, parameters and bytes stored in it */
  types: Record<string, { tensors: number; parameters: number; bytes: number }>;
}

/** Image sizes (width x height) the report counts tokens for. */
export const INSPECT_IMAGE_SIZES: Array<[number, number]> = [[336, 336], [672, 672], [1024, 768], [768, 1024], [1920, 1080]];

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

interface TensorHeader {
  name: string;
  part: Part | "lora";
  dtype: string;
  shape: number[];
}

/**
 * Feature rows one image of `width` x `height` becomes, computed as the model computes them:
 * (S/p)^2 (+1 with the CLS token) for 1.5; for AnyRes the base tile plus the tile grid, cropped
 * of its padding (`unpaddedRange`) and ended by a newline column per row for spatial_unpad.
 */
export function imageTokenCount(
  vision: { imageSize: number; patchSize: number }, feature: "patch" | "cls_patch", image: InspectReport["image"], width: number, height: number,
): ImageTokens {
  const side = vision.imageSize / vision.patchSize;
  const perTile = side * side + (feature === "cls_patch" ? 1 : 0);
  if (image.mode !== "anyres" || !image.pinpoints) return { width, height, tokens: perTile, grid: null };
  const convention: PinpointConvention = image.pinpointOrder === "height,width" ? "hf" : "llava";
  const { rows, cols } = anyresGridShape({ width, height }, image.pinpoints, convention, vision.imageSize);
  const grid = `${cols}x${rows}`;
  if (image.mergeType !== "spatial_unpad") return { width, height, tokens: (1 + rows * cols) * perTile, grid };
  if (feature === "cls_patch") return { width, height, tokens: null, grid };
  const keep = unpaddedRange(rows * side, cols * side, width, height, convention === "hf");
  const h = keep.axis === 1 ? keep.end - keep.start : rows * side;
  const w = keep.axis === 2 ? keep.end - keep.start : cols * side;
  return { width, height, tokens: perTile + h * (w + 1), grid };
}

/** The precisions a memory estimate lists, by their loading options. */
const MEMORY_PRECISIONS = { f32: {}, bf16: { dtype: "bf16" }, q8_0: { quantize: "q8_0" }, q4_0: { quantize: "q4_0" } } as const satisfies Record<string, PrecisionOptions>;

/**
 * Memory as the loader takes it at each precision: the weights (precision.ts decides each
 * tensor's format; `stored` gives the packed format a GGUF tensor keeps whatever the option) and
 * the KV cache of the whole context, 16-bit or f32 by those formats.
 */
function memoryEstimate(tensors: Array<{ name: string; shape: number[] }>, text: LlamaConfig, stored: (name: string) => PackedFormat | null = () => null): MemoryEstimate {
  const kvValues = 2 * text.numHiddenLayers * text.numKeyValueHeads * text.headDim * text.maxPositionEmbeddings;
  const weights = { f32: 0, bf16: 0, q8_0: 0, q4_0: 0 };
  const kvCache = { ...weights };
  for (const [k, opts] of Object.entries(MEMORY_PRECISIONS) as Array<[keyof typeof weights, PrecisionOptions]>) {
    const format = (name: string) => stored(name) ?? keptFormat(name, opts);
    weights[k] = residentBytes(tensors, opts, format);
    kvCache[k] = kvValues * kvCacheValueBytes(opts, format);
  }
  return { weights, kvCache, contextLength: text.maxPositionEmbeddings };
}

/** A tower config from the tensor shapes alone (the head count is not in them). */
function visionFromShapes(headers: TensorHeader[]): Omit<VisionReport, "weights" | "folder" | "name"> | null {
  const find = (suffix: string) => headers.find((h) => h.part === "vision" && h.name.endsWith(suffix));
  const patch = find("embeddings.patch_embedding.weight");
  const pos = find("embeddings.position_embedding.weight");
  if (!patch || !pos) return null;
  const layers = new Set(headers.filter((h) => h.part === "vision").map((h) => /encoder\.layers\.(\d+)\./.exec(h.name)?.[1]).filter((x) => x !== undefined));
  const p = patch.shape[2];
  return { imageSize: Math.round(Math.sqrt(pos.shape[0] - 1)) * p, patchSize: p, layers: layers.size, hiddenSize: patch.shape[0], heads: null };
}

const visionFields = (v: ClipVisionConfig) => ({ imageSize: v.imageSize, patchSize: v.patchSize, layers: v.numHiddenLayers, hiddenSize: v.hiddenSize, heads: v.numAttentionHeads });

function sumParams(headers: TensorHeader[], part: TensorHeader["part"]): number {
  return headers.filter((h) => h.part === part).reduce((s, h) => s + numel(h.shape), 0);
}

interface Sources {
  headers: TensorHeader[];
  weightFiles: string[];
  checkpoint: InspectReport["checkpoint"];
  lora: InspectReport["lora"];
  tower: "checkpoint" | "folder" | "missing";
  findings: TensorFindings | null;
  notes: string[];
}

/** The tensors the loader would read (canonical names), with the base and adapter of a partial checkpoint. */
function readSources(spec: ModelSpec, modelBase: string | undefined): Sources {
  const weights = openCheckpointWeights(spec, { modelBase, allowMissingBase: true });
  try {
    const { reader, adapter } = weights;
    const headers: TensorHeader[] = reader.names().map((name) => ({ name, part: partOf(name), ...reader.info(name) }));
    const files = reader.filePaths();
    const notes: string[] = [];
    if (weights.kind !== "full" && !modelBase) {
      notes.push(`a ${weights.kind === "lora" ? "LoRA" : "projector-only"} checkpoint: pass its base LLM with --model-base to count the LLM`);
    }
    if (adapter) {
      for (const n of adapter.weights.names()) headers.push({ name: n, part: "lora", ...adapter.weights.info(n) });
      files.push(...adapter.weights.filePaths());
    }
    const lora = adapter ? { r: adapter.config.r, alpha: adapter.config.alpha, targets: adapter.config.targetModules } : null;
    const complete = spec.tower.config !== null && (weights.kind === "full" || modelBase !== undefined);
    const findings = complete ? checkTensors(declaredTensors(spec, reader), reader) : null;
    return { headers, weightFiles: files, checkpoint: weights.kind, lora, tower: weights.tower, findings, notes };
  } finally {
    weights.close();
  }
}

/** A GGUF pair's tensors under canonical names, checked as the loader checks them. */
function ggufSources(gguf: GgufModel): Sources {
  const { reader, spec } = gguf;
  const headers: TensorHeader[] = reader.names().map((name) => ({ name, part: partOf(name), ...reader.info(name) }));
  const findings = checkTensors(declaredTensors(spec, reader), reader);
  return { headers, weightFiles: reader.filePaths(), checkpoint: "full", lora: null, tower: "checkpoint", findings, notes: [] };
}

function ggufFileReport(file: GgufFile): GgufFileReport {
  const types: GgufFileReport["types"] = {};
  let bytes = file.dataStart;
  for (const t of file.tensors.values()) {
    const entry = (types[t.type.name] ??= { tensors: 0, parameters: 0, bytes: 0 });
    entry.tensors++;
    entry.parameters += numel(t.ne);
    entry.bytes += t.byteLength;
    bytes = Math.max(bytes, file.dataStart + t.offset + t.byteLength);
  }
  return {
    file: file.source, version: file.version, architecture: file.string("general.architecture", null) ?? "(not stated)",
    name: file.string("general.name", null), bytes, metadataEntries: file.metadata.size, types,
  };
}

function visionReport(spec: ModelSpec, sources: Sources): VisionReport {
  const v = spec.tower.config;
  if (!v) {
    const inCheckpoint = sources.tower === "checkpoint";
    sources.notes.push(`the vision tower "${spec.tower.name}" (mm_vision_tower) was not found as a folder${inCheckpoint ? "; its shape is read from the checkpoint's tensors (head count unknown)" : "; the model cannot run without it"}`);
  }
  const fields = v ? visionFields(v) : visionFromShapes(sources.headers);
  return {
    weights: sources.tower, folder: spec.tower.dir, name: spec.tower.name,
    ...(fields ?? { imageSize: null, patchSize: null, layers: null, hiddenSize: null, heads: null }),
  };
}

function imageSettings(spec: ModelSpec): InspectReport["image"] {
  const { imageAspectMode: mode, anyres, maxSequenceLength } = spec.settings;
  return {
    mode,
    pinpoints: anyres?.pinpoints ?? null,
    pinpointOrder: anyres ? (anyres.convention === "hf" ? "height,width" : "width,height") : null,
    mergeType: spec.format === "hf-llava" ? null : spec.mergeType,
    maxSequenceLength,
  };
}

function llmReport(c: LlamaConfig): InspectReport["llm"] {
  return {
    modelType: c.modelType, hiddenSize: c.hiddenSize, layers: c.numHiddenLayers, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads,
    headDim: c.headDim, intermediateSize: c.intermediateSize, vocabSize: c.vocabSize, ropeTheta: c.ropeTheta,
    ropeScaling: c.ropeScaling ? `${c.ropeScaling.ropeType}${c.ropeScaling.factor !== null ? ` x${c.ropeScaling.factor}` : ""}` : null,
    maxPositions: c.maxPositionEmbeddings, tiedEmbeddings: c.tieWordEmbeddings,
  };
}

export function inspectModel(modelPath: string, opts: InspectOptions = {}): InspectReport {
  const pair = findGgufPair(modelPath, opts.mmproj);
  if (!pair) return inspectSpec(readModelSpec(modelPath, { visionTower: opts.visionTower, modelBase: opts.modelBase }), readSources, opts);
  const gguf = openGgufModel(pair);
  try {
    return { ...inspectSpec(gguf.spec, () => ggufSources(gguf), opts, gguf.storedFormat), gguf: [gguf.llm, gguf.vision].map(ggufFileReport) };
  } finally {
    gguf.close();
  }
}

function inspectSpec(spec: ModelSpec, read: (spec: ModelSpec, modelBase: string | undefined) => Sources, opts: InspectOptions, stored?: (name: string) => PackedFormat | null): InspectReport {
  const { dir, config, format, text } = spec;
  const sources = read(spec, opts.modelBase);
  const v = visionReport(spec, sources);
  const notes = sources.notes;
  const headers = sources.headers;
  const { visionSelectFeature: selectFeature, visionSelectLayer: selectLayer } = spec.settings;
  const image = imageSettings(spec);
  const has = (part: TensorHeader["part"]) => headers.some((h) => h.part === part);
  const dtypes: InspectReport["dtypes"] = {};
  for (const h of headers) {
    const d = (dtypes[h.dtype] ??= { tensors: 0, parameters: 0 });
    d.tensors++;
    d.parameters += numel(h.shape);
  }
  const modelName = spec.gguf ? spec.gguf.name ?? path.basename(spec.gguf.model) : modelNameFromPath(dir);
  const parameters = {
    llm: has("llm") ? sumParams(headers, "llm") : null,
    vision: has("vision") ? sumParams(headers, "vision") : null,
    projector: has("projector") ? sumParams(headers, "projector") : null,
    other: has("newline") ? sumParams(headers, "newline") : null,
    lora: has("lora") ? sumParams(headers, "lora") : null,
    total: headers.reduce((s, h) => s + numel(h.shape), 0),
  };
  return {
    path: dir,
    format,
    architecture: Array.isArray(config.architectures) && typeof config.architectures[0] === "string" ? config.architectures[0] : "(not stated)",
    checkpoint: sources.checkpoint,
    modelBase: opts.modelBase ? path.resolve(opts.modelBase) : null,
    weightFiles: sources.weightFiles.map((f) => path.relative(dir, f) || path.basename(f)),
    llm: llmReport(text),
    vision: v,
    projector: { type: spec.projector.type, activation: format === "original" ? "gelu" : String(config.projector_hidden_act ?? "gelu") },
    selectLayer,
    selectFeature,
    image,
    parameters,
    lora: sources.lora,
    dtypes,
    templates: { modelName, cli: spec.gguf ? ggufConvMode(spec.gguf) : convModeForModelName(modelName), web: webConvModeForModelName(modelName) },
    imageTokens: v.imageSize && v.patchSize
      ? INSPECT_IMAGE_SIZES.map(([w, h]) => imageTokenCount({ imageSize: v.imageSize!, patchSize: v.patchSize! }, selectFeature, image, w, h))
      : [],
    gguf: null,
    tensors: sources.findings,
    memory: memoryEstimate(headers, text, stored),
    notes,
  };
}

/** Counts like 6.74B, 303M, 21.0K. */
export function formatCount(n: number): string {
  const units: Array<[number, string]> = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]];
  for (const [size, unit] of units) if (n >= size) return `${(n / size).toFixed(n / size >= 100 ? 0 : 2)}${unit}`;
  return String(n);
}

const FORMAT_NAMES: Record<CheckpointFormat, string> = {
  original: "original LLaVA",
  "hf-llava": "HF llava (llava-hf)",
  "hf-llava-next": "HF LLaVA-NeXT (llava_next)",
};

/** The report as aligned text lines for a terminal. */
export function formatReport(r: InspectReport): string {
  const lines: string[] = [];
  const row = (key: string, value: string) => lines.push(`  ${key.padEnd(26)}${value}`);
  const count = (n: number | null) => (n === null ? "-" : `${formatCount(n)} (${n})`);
  lines.push(r.path);
  row("format", r.gguf ? "GGUF pair (llama.cpp: language model + mmproj)" : `${FORMAT_NAMES[r.format]} (${r.architecture})${r.checkpoint === "full" ? "" : `, ${r.checkpoint} checkpoint`}`);
  for (const g of r.gguf ?? []) {
    row(path.basename(g.file), `GGUF v${g.version}, ${g.architecture}${g.name ? ` "${g.name}"` : ""}, ${formatBytes(g.bytes)}, ${g.metadataEntries} metadata entries`);
    for (const [type, x] of Object.entries(g.types)) row(`  ${type}`, `${x.tensors} tensors / ${formatCount(x.parameters)} params / ${formatBytes(x.bytes)}`);
  }
  if (r.modelBase) row("model base", r.modelBase);
  row("weight files", r.weightFiles.join(", ") || "-");
  row("dtypes", Object.entries(r.dtypes).map(([d, x]) => `${d} ${x.tensors} tensors / ${formatCount(x.parameters)} params`).join("; ") || "-");
  const l = r.llm;
  lines.push(`LLM (${l.modelType})`);
  row("shape", `hidden ${l.hiddenSize}, layers ${l.layers}, heads ${l.heads}, kv heads ${l.kvHeads}, head dim ${l.headDim}, intermediate ${l.intermediateSize}`);
  row("vocabulary", `${l.vocabSize}${l.tiedEmbeddings ? " (tied embeddings)" : ""}`);
  row("positions", `max ${l.maxPositions}, rope theta ${l.ropeTheta}${l.ropeScaling ? `, scaling ${l.ropeScaling}` : ""}`);
  const v = r.vision;
  const where = v.weights === "checkpoint" ? "in the checkpoint" : v.weights === "folder" ? `from ${v.folder}` : "NOT FOUND";
  lines.push(`vision tower (${where}${v.name ? `; mm_vision_tower "${v.name}"` : ""})`);
  const n = (x: number | null) => (x === null ? "?" : String(x));
  row("shape", `image ${n(v.imageSize)} px, patch ${n(v.patchSize)}, layers ${n(v.layers)}, hidden ${n(v.hiddenSize)}, heads ${n(v.heads)}`);
  row("features", `layer ${r.selectLayer}, ${r.selectFeature === "patch" ? "patch (CLS dropped)" : "cls_patch (CLS kept)"}`);
  lines.push("projector");
  row("type", `${r.projector.type} (${r.projector.activation})`);
  lines.push("images");
  const img = r.image;
  row("mode", img.mode === "pad" ? "pad (expand to a square in the mean colour, then CLIP)" : img.mode === "square" ? "square (CLIP resize + center crop)" : `anyres, merge ${img.mergeType}`);
  if (img.pinpoints) row("pinpoints", `${img.pinpoints.map((p) => `(${p.join(", ")})`).join(" ")} as (${img.pinpointOrder!.replace(",", ", ")})`);
  if (img.maxSequenceLength !== null) row("max sequence", `${img.maxSequenceLength} (tokenizer_model_max_length: longer prompts are cut)`);
  row("tokens per image", r.imageTokens.map((t) => `${t.width}x${t.height}: ${t.tokens ?? "n/a"}${t.grid ? ` (grid ${t.grid})` : ""}`).join(", ") || "-");
  lines.push("parameters");
  const p = r.parameters;
  row("LLM", count(p.llm));
  row("vision", count(p.vision));
  row("projector", count(p.projector));
  if (p.other !== null) row("image_newline", count(p.other));
  if (p.lora !== null) row("LoRA", `${count(p.lora)}, r ${r.lora?.r}, alpha ${r.lora?.alpha}`);
  row("total", count(p.total));
  lines.push(`templates (${r.gguf ? "model" : "folder"} name "${r.templates.modelName}")`);
  row("CLI", r.templates.cli);
  row("web UI", r.templates.web);
  const m = r.memory;
  lines.push(`memory (weights + KV cache of ${m.contextLength} positions: f32 with f32 weights, else 16-bit)`);
  for (const k of ["f32", "bf16", "q8_0", "q4_0"] as const) {
    const label = { f32: r.gguf ? "as stored" : "f32", bf16: "bf16 (--dtype bf16)", q8_0: "q8_0 (--load-8bit)", q4_0: "q4_0 (--load-4bit)" }[k];
    row(label, `${formatBytes(m.weights[k])} + ${formatBytes(m.kvCache[k])} = ${formatBytes(m.weights[k] + m.kvCache[k])}`);
  }
  const t = r.tensors;
  if (t) {
    const problems = [...t.missing.map((n) => `missing tensor "${n}"`), ...t.misshaped];
    lines.push("tensors (the loader's check)");
    row("result", problems.length ? `${problems.length} problem(s): the model cannot load` : "all the model needs, with the right shapes");
    for (const p of problems) lines.push(`problem: ${p}`);
    if (t.unused.length) lines.push(`warning: ${t.unused.length} tensor(s) the model does not use: ${listed(t.unused)}`);
  }
  for (const note of r.notes) lines.push(`note: ${note}`);
  return lines.join("\n") + "\n";
}
