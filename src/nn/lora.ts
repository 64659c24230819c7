/**
 * LoRA adapters in the PEFT format (adapter_config.json + adapter weights): attached unmerged
 * to a model's Linear layers, or merged into their weights.
 */
import type { Linear } from "./layers.js";
import type { TensorSource } from "./params.js";
import { ParamLoader } from "./params.js";
import type { Backend } from "../tensor/backend.js";
import { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

export interface LoraConfig {
  r: number;
  alpha: number;
  /** PEFT's target_modules: names matched as a suffix, or one regular expression (full match) */
  targetModules: string[] | string;
  useRslora: boolean;
  /** the base model the adapter was trained on, if recorded */
  baseModel: string | null;
  /** lora_dropout, on the adapter's input in training (default 0) */
  dropout?: number;
}

export function parseLoraConfig(json: unknown, file: string): LoraConfig {
  const j = (json ?? {}) as Record<string, unknown>;
  if (j.peft_type !== undefined && j.peft_type !== "LORA") throw new LlavaError(`${file}: peft_type "${String(j.peft_type)}" is not LoRA`);
  const r = j.r;
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1) throw new LlavaError(`${file}: "r" must be a positive whole number`);
  if (j.bias !== undefined && j.bias !== "none") throw new LlavaError(`${file}: LoRA bias "${String(j.bias)}" is not supported (only "none")`);
  if (j.use_dora === true) throw new LlavaError(`${file}: DoRA adapters (use_dora) are not supported`);
  if (j.fan_in_fan_out === true) throw new LlavaError(`${file}: fan_in_fan_out adapters (Conv1D layers) are not supported`);
  const targets = j.target_modules;
  if (!(typeof targets === "string" || (Array.isArray(targets) && targets.every((t) => typeof t === "string")))) {
    throw new LlavaError(`${file}: target_modules must be a list of names or a regular expression`);
  }
  return {
    r,
    alpha: typeof j.lora_alpha === "number" ? j.lora_alpha : 8,
    targetModules: targets as string[] | string,
    useRslora: j.use_rslora === true,
    baseModel: typeof j.base_model_name_or_path === "string" ? j.base_model_name_or_path : null,
    dropout: typeof j.lora_dropout === "number" ? j.lora_dropout : 0,
  };
}

export const loraScale = (cfg: LoraConfig) => (cfg.useRslora ? cfg.alpha / Math.sqrt(cfg.r) : cfg.alpha / cfg.r);

/** PEFT's module matching: a regex must match the whole name; a list entry the last components. */
export function isLoraTarget(name: string, targets: string[] | string): boolean {
  if (typeof targets === "string") return new RegExp(`^(?:${targets})$`).test(name);
  return targets.some((t) => name === t || name.endsWith(`.${t}`));
}

/** PEFT's prefix of adapter tensor names in a saved LLaVA LoRA. */
export const ADAPTER_PREFIX = "base_model.model.";

/** Layer `name`'s A and B tensors in the adapter (PEFT saves them with or without `.default`); fails, naming the file, when it has none. */
export function loraKeys(adapter: TensorSource, name: string): { a: string; b: string } {
  const find = (ab: "A" | "B") => [`${ADAPTER_PREFIX}${name}.lora_${ab}.weight`, `${ADAPTER_PREFIX}${name}.lora_${ab}.default.weight`].find((k) => adapter.has(k));
  const a = find("A");
  const b = find("B");
  if (!a || !b) throw new LlavaError(`${adapter.source}: no LoRA weights for targeted layer "${name}" (expected "${ADAPTER_PREFIX}${name}.lora_A.weight")`);
  return { a, b };
}

/**
 * Attaches the adapter to every targeted Linear. Fails, naming the file, when the adapter and
 * the model disagree: a targeted layer without weights, or a shape mismatch. Returns the names
 * of the layers that took an adapter.
 */
export function attachLora(linears: Array<[string, Linear]>, adapter: TensorSource, cfg: LoraConfig, backend: Backend): Set<string> {
  const p = new ParamLoader(adapter, backend);
  const taken = new Set<string>();
  for (const [name, linear] of linears) {
    if (!isLoraTarget(name, cfg.targetModules)) continue;
    const [out, inp] = linear.weight.shape;
    const { a, b } = loraKeys(adapter, name);
    linear.adapter = { a: p.tensor(a, [cfg.r, inp]), b: p.tensor(b, [out, cfg.r]), scale: loraScale(cfg) };
    taken.add(name);
  }
  return taken;
}

/** Fails, naming the file, when the adapter holds weights for layers no model layer took: it belongs to another model. */
export function checkAdapterUsed(adapter: TensorSource & { names(): string[] }, taken: Set<string>): void {
  const unused = adapter.names().filter((n) => /\.lora_[AB]\./.test(n)).filter((n) => {
    const m = /^(?:base_model\.model\.)?(.*)\.lora_[AB]\./.exec(n);
    return !m || !taken.has(m[1]);
  });
  if (unused.length) {
    throw new LlavaError(`${adapter.source}: the adapter does not match the base model: no layer for "${unused[0]}"${unused.length > 1 ? ` and ${unused.length - 1} more` : ""}`);
  }
}

/** W + scale · B A as a new f32 weight (the adapter's effect folded in). */
export function mergedWeight(linear: Linear): Tensor {
  if (!(linear.weight instanceof Tensor)) throw new LlavaError("cannot merge a LoRA adapter into a packed (quantized or half) weight");
  const w = linear.weight;
  const out = new Float32Array(w.data);
  if (linear.adapter) {
    const { a, b, scale } = linear.adapter;
    const [rows, cols] = w.shape;
    const delta = new Float32Array(rows * cols);
    w.backend.gemm(b.data, a.data, delta, { m: rows, n: cols, k: a.shape[0] });
    for (let i = 0; i < out.length; i++) out[i] += scale * delta[i];
  }
  return new Tensor(out, w.shape, w.backend);
}

/**
 * Fresh trainable adapters on the targeted layers, initialised as PEFT does: A uniform in
 * ±1/sqrt(in) (kaiming-uniform with a = sqrt(5)), B zero, so the model is unchanged at first.
 */
export function addLoraAdapters(linears: Array<[string, Linear]>, cfg: LoraConfig, random: () => number): Tensor[] {
  const params: Tensor[] = [];
  for (const [name, linear] of linears) {
    if (!isLoraTarget(name, cfg.targetModules)) continue;
    const [out, inp] = linear.weight.shape;
    const bound = 1 / Math.sqrt(inp);
    const a = new Tensor(Float32Array.from({ length: cfg.r * inp }, () => (2 * random() - 1) * bound), [cfg.r, inp], linear.weight.backend, true);
    const b = new Tensor(new Float32Array(out * cfg.r), [out, cfg.r], linear.weight.backend, true);
    linear.adapter = { a, b, scale: loraScale(cfg), dropout: cfg.dropout ?? 0 };
    params.push(a, b);
  }
  return params;
}
