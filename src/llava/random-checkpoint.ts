/**
 * Writes random-weight LLaVA checkpoints in the real on-disk formats (HF llava-hf, or original
 * LLaVA with a separate CLIP folder), for tests of shapes the fixtures do not cover and for
 * benchmarks at real model sizes. Nothing here is downloaded: the tokenizer files are copied
 * from a folder the caller names.
 */
import fs from "node:fs";
import path from "node:path";
import { writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import { projectorDepth } from "./projector.js";
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

  /** a Linear layer whose output keeps roughly unit variance */
  linear(prefix: string, out: number, inp: number, bias: boolean): void {
    this.add(`${prefix}.weight`, [out, inp], Math.sqrt(3 / inp));
    if (bias) this.add(`${prefix}.bias`, [out], 0.1);
  }

  norm(prefix: string, dim: number, bias: boolean): void {
    this.add(`${prefix}.weight`, [dim], 0.1, 1);
    if (bias) this.add(`${prefix}.bias`, [dim], 0.1);
  }
}

function clipTensors(t: RandomTensors, prefix: string, v: Json): void {
  const d = field(v, "hidden_size", 768);
  const inter = field(v, "intermediate_size", 3072);
  const patch = field(v, "patch_size", 32);
  const size = field(v, "image_size", 224);
  const channels = field(v, "num_channels", 3);
  t.add(`${prefix}embeddings.class_embedding`, [d], 1);
  t.add(`${prefix}embeddings.patch_embedding.weight`, [d, channels, patch, patch], Math.sqrt(3 / (channels * patch * patch)));
  t.add(`${prefix}embeddings.position_embedding.weight`, [(size / patch) ** 2 + 1, d], 0.5);
  t.norm(`${prefix}pre_layrnorm`, d, true);
  for (let i = 0; i < field(v, "num_hidden_layers", 12); i++) {
    const l = `${prefix}encoder.layers.${i}.`;
    for (const p of ["q_proj", "k_proj", "v_proj", "out_proj"]) t.linear(`${l}self_attn.${p}`, d, d, true);
    t.norm(`${l}layer_norm1`, d, true);
    t.linear(`${l}mlp.fc1`, inter, d, true);
    t.linear(`${l}mlp.fc2`, d, inter, true);
    t.norm(`${l}layer_norm2`, d, true);
  }
  t.norm(`${prefix}post_layernorm`, d, true);
}

function llamaTensors(t: RandomTensors, model: string, head: string, c: Json): void {
  const d = field(c, "hidden_size", 4096);
  const heads = field(c, "num_attention_heads", 32);
  const kv = field(c, "num_key_value_heads", heads);
  const hd = field(c, "head_dim", d / heads);
  const inter = field(c, "intermediate_size", 11008);
  const vocab = field(c, "vocab_size", 32000);
  const bias = c.attention_bias === true;
  t.add(`${model}embed_tokens.weight`, [vocab, d], 1);
  for (let i = 0; i < field(c, "num_hidden_layers", 32); i++) {
    const l = `${model}layers.${i}.`;
    t.linear(`${l}self_attn.q_proj`, heads * hd, d, bias);
    t.linear(`${l}self_attn.k_proj`, kv * hd, d, bias);
    t.linear(`${l}self_attn.v_proj`, kv * hd, d, bias);
    t.linear(`${l}self_attn.o_proj`, d, heads * hd, bias);
    t.linear(`${l}mlp.gate_proj`, inter, d, false);
    t.linear(`${l}mlp.up_proj`, inter, d, false);
    t.linear(`${l}mlp.down_proj`, d, inter, false);
    t.norm(`${l}input_layernorm`, d, false);
    t.norm(`${l}post_attention_layernorm`, d, false);
  }
  t.norm(`${model}norm`, d, false);
  if (c.tie_word_embeddings !== true) t.linear(`${head}`, vocab, d, false);
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
 */
export function writeRandomLlava(dir: string, spec: RandomLlavaSpec): { modelDir: string; towerDir: string | null } {
  fs.mkdirSync(dir, { recursive: true });
  copyTokenizer(spec.tokenizerFrom, dir);
  const t = new RandomTensors(spec.seed ?? 1, spec.dtype ?? "F32", dir, spec.maxShardBytes);
  const vd = field(spec.vision, "hidden_size", 768);
  const td = field(spec.text, "hidden_size", 4096);
  if (spec.format === "hf") {
    clipTensors(t, "vision_tower.vision_model.", spec.vision);
    t.linear("multi_modal_projector.linear_1", td, vd, true);
    t.linear("multi_modal_projector.linear_2", td, td, true);
    llamaTensors(t, "language_model.model.", "language_model.lm_head", spec.text);
    t.finish();
    writeJson(path.join(dir, "config.json"), {
      architectures: ["LlavaForConditionalGeneration"], model_type: "llava",
      image_token_index: 32000, projector_hidden_act: "gelu",
      vision_feature_layer: spec.visionSelectLayer ?? -2,
      vision_feature_select_strategy: spec.visionSelectFeature === "cls_patch" ? "full" : "default",
      text_config: { model_type: "llama", ...spec.text }, vision_config: { model_type: "clip_vision_model", ...spec.vision },
    });
    writeJson(path.join(dir, "preprocessor_config.json"), processorConfig(spec.vision));
    return { modelDir: dir, towerDir: null };
  }
  const towerDir = `${dir}-clip`;
  fs.mkdirSync(towerDir, { recursive: true });
  const tower = new RandomTensors((spec.seed ?? 1) + 1, spec.dtype ?? "F32", towerDir, spec.maxShardBytes);
  clipTensors(tower, "vision_model.", spec.vision);
  tower.finish();
  writeJson(path.join(towerDir, "config.json"), { model_type: "clip_vision_model", architectures: ["CLIPVisionModel"], ...spec.vision });
  writeJson(path.join(towerDir, "preprocessor_config.json"), processorConfig(spec.vision));
  const type = spec.projectorType ?? "mlp2x_gelu";
  const depth = projectorDepth(type);
  for (let i = 0; i < depth; i++) {
    t.linear(type === "linear" ? "model.mm_projector" : `model.mm_projector.${2 * i}`, td, i === 0 ? vd : td, true);
  }
  llamaTensors(t, "model.", "lm_head", spec.text);
  t.finish();
  writeJson(path.join(dir, "config.json"), {
    architectures: ["LlavaLlamaForCausalLM"], model_type: "llava_llama", ...spec.text,
    mm_vision_tower: towerDir, mm_hidden_size: vd, mm_projector_type: type,
    mm_vision_select_layer: spec.visionSelectLayer ?? -2, mm_vision_select_feature: spec.visionSelectFeature ?? "patch",
    image_aspect_ratio: spec.imageAspectRatio ?? "pad", mm_use_im_start_end: false, mm_use_im_patch_token: false,
    tokenizer_model_max_length: 2048, tokenizer_padding_side: "right",
  });
  return { modelDir: dir, towerDir };
}
