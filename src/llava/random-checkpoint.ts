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

  /** uniform in [center - spread, center + spread) */
  add(name: string, shape: number[], spread: number, center = 0): void {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = center + spread * (2 * this.random() - 1);
    this.pending.push({ name, dtype: this.dtype, shape, data });
    this.pendingBytes += n * (this.dtype === "F32" ? 4 : 2);
    if (this.pendingBytes >= this.maxShardBytes) this.flush();
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

/** Spread and center of a tensor's uniform values: Linear weights keep unit variance, norms sit near 1, biases near 0. */
function initOf(name: string, shape: number[]): { spread: number; center: number } {
  if (name.endsWith(".bias")) return { spread: 0.1, center: 0 };
  if (shape.length === 1 && /norm|layrnorm/.test(name)) return { spread: 0.1, center: 1 };
  if (/position_embedding/.test(name)) return { spread: 0.5, center: 0 };
  if (shape.length >= 2 && !/embed_tokens/.test(name)) return { spread: Math.sqrt(3 / shape.slice(1).reduce((a, b) => a * b, 1)), center: 0 };
  return { spread: 1, center: 0 };
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
  for (const { name, shape } of declaredTensors(readModelSpec(dir))) {
    if (!shape) continue;
    const { spread, center } = initOf(name, shape);
    if (tower && partOf(name) === "vision") tower.add(storedName(name, "clip")!, shape, spread, center);
    else main.add(hf ? storedName(name, "hf")! : name, shape, spread, center);
  }
  main.finish();
  tower?.finish();
  return { modelDir: dir, towerDir };
}
