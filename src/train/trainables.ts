/**
 * What trains in each stage (the reference's train.py, spec 6.5): every parameter is frozen,
 * then the stage's parts are unfrozen: stage 1 the projector alone; stage 2 the LLM and the
 * projector, or LoRA adapters on the LLM's Linear layers plus the projector. The result lists
 * the trainable tensors under canonical names (the original LLaVA state dict's).
 */
import type { LoadedLlava } from "../llava/load.js";
import { partOf, PREFIX } from "../llava/keys.js";
import type { Linear, NamedParameters } from "../nn/layers.js";
import { addLoraAdapters, isLoraTarget } from "../nn/lora.js";
import { PackedTensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import type { Rng } from "../util/random.js";

export interface LoraOptions {
  r: number;
  alpha: number;
  /** lora_dropout on the adapters' inputs in training */
  dropout: number;
  /** PEFT target_modules; default the reference's find_all_linear_names */
  targets?: string[];
}

export interface TrainablesOptions {
  /** stage 1: the projector alone trains */
  tuneMmMlpAdapter?: boolean;
  /** the decoder (the reference's model.model: embeddings, layers, final norm) stays frozen; lm_head still trains */
  freezeBackbone?: boolean;
  /** the projector stays frozen */
  freezeMmMlpAdapter?: boolean;
  /** the vision tower trains too (as LLaVA-1.6 does) */
  unfreezeVisionTower?: boolean;
  /** LoRA adapters on the LLM instead of training its weights */
  lora?: LoraOptions | null;
  /** draws the adapters' initial A matrices */
  rng: Rng;
}

/**
 * The reference's find_all_linear_names: the last name component of every Linear layer of the
 * LLM, lm_head excluded (the adapters are attached before the projector and the tower exist,
 * so neither gets one). Sorted, as it is written to adapter_config.json.
 */
export function defaultLoraTargets(loaded: LoadedLlava): string[] {
  const leaves = loaded.model.llm.namedLinears().map(([name]) => name.split(".").pop()!);
  return [...new Set(leaves)].filter((n) => n !== "lm_head").sort();
}

/** The LLM's Linear layers an adapter may go on: all but lm_head (see defaultLoraTargets). */
export function loraCandidates(loaded: LoadedLlava): Array<[string, Linear]> {
  return loaded.model.llm.namedLinears().filter(([name]) => name !== "lm_head");
}

/** The reference's model.model as freeze_backbone freezes it: embeddings, decoder layers, final norm (the projector and tower are built after that freeze). */
const inBackbone = (name: string) => partOf(name) === "llm" && name.startsWith(PREFIX.llm);

/** Fails when the parameters that are to train include weights kept packed (quantized or 16-bit): those cannot take updates. */
function requireUnpacked(loaded: LoadedLlava, part: "llm" | "vision", what: string): void {
  const model = loaded.model;
  const packed = part === "llm"
    ? [...model.llm.namedLinears().map(([, l]) => l.weight), model.llm.embedTokens.weight]
    : model.vision.layers.flatMap((l) => Object.values(l.linears).map((x) => x.weight));
  if (packed.some((w) => w instanceof PackedTensor)) {
    throw new LlavaError(`${what} needs the ${part === "llm" ? "LLM" : "vision tower"} in f32, but it was loaded packed (--load-4bit, --load-8bit or --dtype); train LoRA adapters on a packed base instead`);
  }
}

/**
 * Freezes the model, unfreezes what `opts` trains (attaching fresh LoRA adapters, initialised
 * as PEFT does, when asked) and returns the trainable parameters under canonical names.
 */
export function setTrainables(loaded: LoadedLlava, opts: TrainablesOptions): NamedParameters {
  const model = loaded.model;
  if (opts.lora && opts.tuneMmMlpAdapter) throw new LlavaError("LoRA and tune_mm_mlp_adapter together would train the projector alone; choose one");
  const llm = model.llm.namedLinears();
  if (llm.some(([, l]) => l.adapter)) throw new LlavaError("the model already carries a LoRA adapter; merge it into the base before training");
  for (const [, t] of model.namedParameters()) {
    t.requiresGrad = false;
    t.grad = null;
  }
  const trains = new Set<string>();
  if (opts.tuneMmMlpAdapter) {
    trains.add("projector");
  } else {
    trains.add("projector").add("newline");
    if (!opts.lora) {
      requireUnpacked(loaded, "llm", "training the LLM's weights");
      trains.add("llm");
    }
  }
  if (opts.freezeMmMlpAdapter) trains.delete("projector");
  if (opts.unfreezeVisionTower) {
    requireUnpacked(loaded, "vision", "training the vision tower");
    trains.add("vision");
  }
  for (const [name, t] of model.namedParameters()) {
    t.requiresGrad = trains.has(partOf(name)) && !(opts.freezeBackbone && inBackbone(name));
  }
  if (opts.lora) {
    const { r, alpha, dropout } = opts.lora;
    if (!(Number.isInteger(r) && r >= 1)) throw new LlavaError(`lora_r must be a positive whole number, got ${r}`);
    if (!(dropout >= 0 && dropout < 1)) throw new LlavaError(`lora_dropout must be in [0, 1), got ${dropout}`);
    const targets = opts.lora.targets ?? defaultLoraTargets(loaded);
    const candidates = loraCandidates(loaded);
    if (!candidates.some(([name]) => isLoraTarget(name, targets))) throw new LlavaError(`no Linear layer of the LLM matches the LoRA targets ${targets.join(", ")}`);
    addLoraAdapters(candidates, { r, alpha, dropout, targetModules: targets, useRslora: false, baseModel: null }, () => opts.rng.next());
  }
  return model.namedParameters().filter(([, t]) => t.requiresGrad);
}
