/**
 * Writes random-weight LLaVA checkpoints in the real on-disk formats (HF llava-hf, or original
 * LLaVA with a separate CLIP folder), for tests of shapes the fixtures do not cover and for
 * benchmarks at real model sizes. Nothing here is downloaded: the tokenizer files are copied
 * from a folder the caller names.
 */
import fs from "node:fs";
import path from "node:path";
import { writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import { partOf, storedName } from "./keys.js";
import { readModelSpec } from "./spec.js";
import { declaredTensors } from "./tensors.js";
import { seededRandom } from "../util/random.js";

type Json = Record<string, unknown>;

export interface RandomLlavaSpec {
  format: "hf" | "original";
  /** LLaMA config fields as written to disk (omitted fields take transformers' defaults) */
  text: Json;
  /** CLIP vision config fields as written to disk */
  vision: Json;
  /** folder whose tokenizer files are copied (its vocabulary must match text.vocab_size) */
  tokenizerFrom: string;
  seed?: number;
  /** original format only */
  projectorType?: string;
  imageAspectRatio?: "pad" | "square";
  visionSelectLayer?: number;
  visionSelectFeature?: "patch" | "cls_patch";
  /**
   * "test" (default): values that keep every activation meaningful, for parity tests and
   * benchmarks; "train": each part as its reference class initializes it before training (LLaMA
   * and CLIP `_init_weights`, the projector as torch's nn.Linear), for training from scratch
   */
  init?: "test" | "train";
  /** written as F32 (default), F16 or BF16 */
  dtype?: "F32" | "F16" | "BF16";
  /** shard the weights past this many bytes (default: one file) */
  maxShardBytes?: number;
}

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"];

/** Reads a field written in `json`, else transformers' default. */
const field = (json: Json, name: string, fallback: number): number => (typeof json[name] === "number" ? (json[name] as number) : fallback);

/**
 * Random tensors written to `dir` as they are made: one model.safetensors, or, past
 * `maxShardBytes`, shards with an index as transformers names them (so a 7B-shaped model never
 * has to fit in memory at once).
 */
class RandomTensors {
  private pending: TensorToWrite[] = [];
  private pendingBytes = 0;
  private readonly shards: Array<{ file: string; names: string[]; bytes: number }> = [];
  private readonly random: () => number;

  constructor(seed: number, private readonly dtype: "F32" | "F16" | "BF16", private readonly dir: string, private readonly maxShardBytes = Infinity) {
    this.random = seededRandom(seed);
  }

  add(name: string, shape: number[], init: Init): void {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (init.kind === "uniform") for (let i = 0; i < n; i++) data[i] = init.center + init.spread * (2 * this.random() - 1);
    else for (let i = 0; i < n; i++) data[i] = init.std * this.gaussian();
    this.pending.push({ name, dtype: this.dtype, shape, data });
    this.pendingBytes += n * (this.dtype === "F32" ? 4 : 2);
    if (this.pendingBytes >= this.maxShardBytes) this.flush();
  }

  /** Box-Muller: a standard normal value */
  private gaussian(): number {
    const u = 1 - this.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.random());
  }

  private flush(): void {
    if (!this.pending.length) return;
    const file = `model-part-${this.shards.length}.safetensors`;
    writeSafetensors(path.join(this.dir, file), this.pending, { format: "pt" });
    this.shards.push({ file, names: this.pending.map((t) => t.name), bytes: this.pendingBytes });
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Writes what is left: model.safetensors, or the last shard and the index. */
  finish(): void {
    if (!this.shards.length) {
      writeSafetensors(path.join(this.dir, "model.safetensors"), this.pending, { format: "pt" });
      return;
    }
    this.flush();
    const count = this.shards.length;
    const pad = (i: number) => String(i).padStart(5, "0");
    const weightMap: Record<string, string> = {};
    this.shards.forEach((shard, i) => {
      const name = `model-${pad(i + 1)}-of-${pad(count)}.safetensors`;
      fs.renameSync(path.join(this.dir, shard.file), path.join(this.dir, name));
      for (const n of shard.names) weightMap[n] = name;
    });
    const totalSize = this.shards.reduce((s, x) => s + x.bytes, 0);
    writeJson(path.join(this.dir, "model.safetensors.index.json"), { metadata: { total_size: totalSize }, weight_map: weightMap });
  }
}

type Init = { kind: "uniform"; spread: number; center: number } | { kind: "normal"; std: number };
const uniform = (spread: number, center = 0): Init => ({ kind: "uniform", spread, center });
const normal = (std: number): Init => ({ kind: "normal", std });
const fanIn = (shape: number[]) => shape.slice(1).reduce((a, b) => a * b, 1);

/** Test values: Linear weights keep unit variance, norms sit near 1, biases near 0. */
function testInit(name: string, shape: number[]): Init {
  if (name.endsWith(".bias")) return uniform(0.1);
  if (shape.length === 1 && /norm|layrnorm/.test(name)) return uniform(0.1, 1);
  if (/position_embedding/.test(name)) return uniform(0.5);
  if (shape.length >= 2 && !/embed_tokens/.test(name)) return uniform(Math.sqrt(3 / fanIn(shape)));
  return uniform(1);
}

/**
 * Training values, as the reference's classes make them: LLaMA's normal(0, 0.02); CLIP's
 * factor-scaled rules (CLIPPreTrainedModel._init_weights with initializer_factor 1); the
 * projector as LLaVA's build_vision_projector gets it from nn.Linear (kaiming uniform, bias
 * uniform within 1/sqrt(fan_in)). Norms are 1 and 0, as their classes start.
 */
function trainInit(name: string, shape: number[], spec: RandomLlavaSpec, shapeOf: (name: string) => number[]): Init {
  if (/norm|layrnorm/.test(name) && shape.length === 1) return uniform(0, name.endsWith(".weight") ? 1 : 0);
  if (name.includes("mm_projector")) return uniform(1 / Math.sqrt(fanIn(shapeOf(name.replace(/bias$/, "weight")))));
  if (!name.includes("vision_tower")) return normal(field(spec.text, "initializer_range", 0.02));
  if (name.endsWith(".bias")) return uniform(0);
  const width = field(spec.vision, "hidden_size", 768);
  const depth = field(spec.vision, "num_hidden_layers", 12);
  const range = field(spec.vision, "initializer_range", 0.02);
  const inner = width ** -0.5 * (2 * depth) ** -0.5;
  if (name.endsWith("class_embedding")) return normal(width ** -0.5);
  if (/patch_embedding|position_embedding/.test(name)) return normal(range);
  if (/q_proj|k_proj|v_proj|fc2/.test(name)) return normal(inner);
  if (name.includes("out_proj")) return normal(width ** -0.5);
  if (name.includes("fc1")) return normal((2 * width) ** -0.5);
  throw new Error(`no training init for ${name}`);
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2));
}

function processorConfig(v: Json): Json {
  const size = field(v, "image_size", 224);
  return {
    crop_size: { height: size, width: size }, do_center_crop: true, do_normalize: true, do_rescale: true, do_resize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073], image_std: [0.26862954, 0.26130258, 0.27577711],
    image_processor_type: "CLIPImageProcessor", resample: 3, rescale_factor: 1 / 255, size: { shortest_edge: size },
  };
}

function copyTokenizer(from: string, to: string): void {
  for (const f of TOKENIZER_FILES) if (fs.existsSync(path.join(from, f))) fs.copyFileSync(path.join(from, f), path.join(to, f));
}

/**
 * Writes the checkpoint into `dir` (created). For the original format the CLIP tower goes to
 * `dir`-clip beside it, named by `mm_vision_tower` as an absolute path; returns both folders.
 * The configs are written first and the tensors are those the loader reads for them, under
 * the format's names (keys.ts).
 */
export function writeRandomLlava(dir: string, spec: RandomLlavaSpec): { modelDir: string; towerDir: string | null } {
  fs.mkdirSync(dir, { recursive: true });
  copyTokenizer(spec.tokenizerFrom, dir);
  const seed = spec.seed ?? 1;
  const dtype = spec.dtype ?? "F32";
  const hf = spec.format === "hf";
  const towerDir = hf ? null : `${dir}-clip`;
  if (hf) {
    writeJson(path.join(dir, "config.json"), {
      architectures: ["LlavaForConditionalGeneration"], model_type: "llava",
      image_token_index: 32000, projector_hidden_act: "gelu",
      vision_feature_layer: spec.visionSelectLayer ?? -2,
      vision_feature_select_strategy: spec.visionSelectFeature === "cls_patch" ? "full" : "default",
      text_config: { model_type: "llama", ...spec.text }, vision_config: { model_type: "clip_vision_model", ...spec.vision },
    });
    writeJson(path.join(dir, "preprocessor_config.json"), processorConfig(spec.vision));
  } else {
    fs.mkdirSync(towerDir!, { recursive: true });
    writeJson(path.join(towerDir!, "config.json"), { model_type: "clip_vision_model", architectures: ["CLIPVisionModel"], ...spec.vision });
    writeJson(path.join(towerDir!, "preprocessor_config.json"), processorConfig(spec.vision));
    writeJson(path.join(dir, "config.json"), {
      architectures: ["LlavaLlamaForCausalLM"], model_type: "llava_llama", ...spec.text,
      mm_vision_tower: towerDir, mm_hidden_size: field(spec.vision, "hidden_size", 768), mm_projector_type: spec.projectorType ?? "mlp2x_gelu",
      mm_vision_select_layer: spec.visionSelectLayer ?? -2, mm_vision_select_feature: spec.visionSelectFeature ?? "patch",
      image_aspect_ratio: spec.imageAspectRatio ?? "pad", mm_use_im_start_end: false, mm_use_im_patch_token: false,
      tokenizer_model_max_length: 2048, tokenizer_padding_side: "right",
    });
  }
  const main = new RandomTensors(seed, dtype, dir, spec.maxShardBytes);
  const tower = towerDir ? new RandomTensors(seed + 1, dtype, towerDir, spec.maxShardBytes) : null;
  const tensors = declaredTensors(readModelSpec(dir)).filter((t) => t.shape);
  const shapes = new Map(tensors.map((t) => [t.name, t.shape!]));
  for (const { name, shape } of tensors) {
    const init = spec.init === "train" ? trainInit(name, shape!, spec, (n) => shapes.get(n)!) : testInit(name, shape!);
    if (tower && partOf(name) === "vision") tower.add(storedName(name, "clip")!, shape!, init);
    else main.add(hf ? storedName(name, "hf")! : name, shape!, init);
  }
  main.finish();
  tower?.finish();
  return { modelDir: dir, towerDir };
}
