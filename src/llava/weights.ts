/**
 * A checkpoint's weights under canonical names (keys.ts), whatever the folder holds: a full
 * model in any layout, the original format's separate CLIP tower, or a LoRA / projector-only
 * checkpoint over its base LLM, combined the way the reference loader combines them. The
 * loader, `llava inspect` and `llava convert merge-lora` all read a checkpoint through this.
 */
import path from "node:path";
import { canonicalName, hfLayoutOf, partOf, PREFIX, storedName } from "./keys.js";
import type { ModelSpec } from "./spec.js";
import { hasModelWeights } from "../io/checkpoint-files.js";
import { isDirectory, isFile, readJsonFile } from "../io/files.js";
import { openWeightFile, openWeights, overlay, renamed, type WeightReader } from "../io/weights.js";
import { ADAPTER_PREFIX, type LoraConfig, parseLoraConfig } from "../nn/lora.js";
import { LlavaError } from "../util/errors.js";

/** What a folder holds: a full model, or a partial checkpoint that needs --model-base. */
export type CheckpointKind = "full" | "lora" | "projector";

export function checkpointKind(dir: string): CheckpointKind {
  const has = (f: string) => isFile(path.join(dir, f));
  const lora = has("adapter_config.json");
  const projector = has("mm_projector.bin") || has("mm_projector.safetensors");
  if (lora && projector) {
    throw new LlavaError(`${dir}: holds both a LoRA adapter (adapter_config.json) and a projector (mm_projector.*); remove the one that does not belong`);
  }
  if (lora) return "lora";
  if (projector) return "projector";
  return "full";
}

/** The name a non-LoRA trainable gets: the reference strips "base_model." and then a leading "model." from "model.model.*". */
export function trainableName(n: string): string {
  const k = n.startsWith("base_model.") ? n.slice("base_model.".length) : n;
  return k.startsWith("model.model.") ? k.slice("model.".length) : k;
}

export interface CheckpointWeights {
  kind: CheckpointKind;
  /** every tensor the model can read, under canonical names */
  reader: WeightReader;
  /** a LoRA checkpoint's adapter, attached once the model is built */
  adapter: { config: LoraConfig; weights: WeightReader } | null;
  /** where the tower's weights come from */
  tower: "checkpoint" | "folder" | "missing";
  /** closes every file opened */
  close(): void;
}

export interface WeightOptions {
  /** the base LLM under a LoRA or projector-only checkpoint (the reference's --model-base) */
  modelBase?: string;
  /** read a partial checkpoint without its base (for inspection) */
  allowMissingBase?: boolean;
  /** add the CLIP folder's tower when the checkpoint lacks it (default true) */
  towerFolder?: boolean;
}

/** The canonical reader of a folder holding a full model. */
function fullModel(dir: string, original: boolean, what: string): WeightReader {
  const store = openWeights(dir, what);
  if (original) return store;
  const layout = hfLayoutOf(store.names());
  return renamed(store, (n) => canonicalName(n, layout), (n) => storedName(n, layout, true));
}

/** A partial checkpoint's own tensors (the LoRA's non-LoRA trainables or the projector file) and its adapter. */
function partialParts(dir: string, kind: "lora" | "projector", opened: WeightReader[]) {
  const track = <T extends WeightReader | null>(r: T) => (r && opened.push(r), r);
  if (kind === "projector") return { overlayReader: track(openWeightFile(dir, "mm_projector"))!, adapter: null };
  const trainables = track(openWeightFile(dir, "non_lora_trainables"));
  const adapterFile = path.join(dir, "adapter_config.json");
  const config = parseLoraConfig(readJsonFile(adapterFile, "LoRA adapter config"), adapterFile);
  const weights = track(openWeightFile(dir, "adapter_model"));
  if (!weights) throw new LlavaError(`${dir}: has adapter_config.json but no adapter_model.safetensors or adapter_model.bin`);
  return { overlayReader: trainables && renamed(trainables, trainableName), adapter: { config, weights } };
}

const PEFT_LORA = new RegExp(`^${ADAPTER_PREFIX.replaceAll(".", "\\.")}(.+)\\.(lora_[AB])(?:\\.default)?\\.weight$`);

/**
 * A PEFT adapter folder made for the base `spec` describes (no config.json of its own, as PEFT
 * saves it on transformers' llava-hf models or on an original LLaVA): the LoRA factors renamed to
 * the canonical layer names the model attaches them by, and PEFT's `modules_to_save` (the trained
 * projector, or any other full tensor) as canonical tensors laid over the base. Names of both HF
 * layouts (`language_model.model.*` before transformers 4.52, `model.language_model.*` since) are
 * read. The layers that take an adapter are those the file holds factors for: target_modules
 * speaks of the HF model's module names.
 */
function peftAdapterParts(dir: string, original: boolean, opened: WeightReader[]) {
  const adapterFile = path.join(dir, "adapter_config.json");
  const config = parseLoraConfig(readJsonFile(adapterFile, "LoRA adapter config"), adapterFile);
  const store = openWeightFile(dir, "adapter_model");
  if (!store) throw new LlavaError(`${dir}: has adapter_config.json but no adapter_model.safetensors or adapter_model.bin`);
  opened.push(store);
  const canonical = (stored: string) => (original ? stored : canonicalName(stored, "hf"));
  const modules = new Set<string>();
  const lora = renamed(store, (n) => {
    const m = PEFT_LORA.exec(n);
    if (!m) return null;
    const module = canonical(`${m[1]}.weight`)?.slice(0, -".weight".length) ?? m[1];
    if (partOf(module) !== "llm") throw new LlavaError(`${store.source}: "${n}" is a LoRA layer outside the language model; only LoRA on the LLM's layers is supported`);
    modules.add(module);
    return `${ADAPTER_PREFIX}${module}.${m[2]}.weight`;
  });
  const saved = renamed(store, (n) => (PEFT_LORA.test(n) || !n.startsWith(ADAPTER_PREFIX) ? null : canonical(n.slice(ADAPTER_PREFIX.length))));
  return { overlayReader: saved.names().length ? saved : null, adapter: { config: { ...config, targetModules: [...modules] }, weights: lora } };
}

/** Opens the weights `spec`'s folder stands for; on error, every file opened so far is closed. */
export function openCheckpointWeights(spec: ModelSpec, opts: WeightOptions = {}): CheckpointWeights {
  const dir = spec.dir;
  const original = spec.format === "original";
  const kind = spec.peftAdapter ? "lora" : checkpointKind(dir);
  const opened: WeightReader[] = [];
  const closeAll = () => opened.forEach((r) => r.close());
  try {
    let layers: WeightReader[];
    let adapter: CheckpointWeights["adapter"] = null;
    if (spec.peftAdapter) {
      const parts = peftAdapterParts(spec.peftAdapter, original, opened);
      adapter = parts.adapter;
      const main = fullModel(dir, original, "--model-base");
      opened.push(main);
      layers = parts.overlayReader ? [parts.overlayReader, main] : [main];
    } else if (kind === "full") {
      if (opts.modelBase) {
        throw new LlavaError(hasModelWeights(dir)
          ? `${dir}: holds a full model; --model-base is only for LoRA adapters and projector-only checkpoints`
          : `${dir}: holds neither a LoRA adapter (adapter_config.json) nor a projector (mm_projector.bin), so --model-base does not apply`);
      }
      const main = fullModel(dir, original, "model folder");
      opened.push(main);
      layers = [main];
    } else {
      if (!original) throw new LlavaError(`${spec.configFile}: a LoRA or projector checkpoint needs an original-format LLaVA config (with mm_vision_tower)`);
      const parts = partialParts(dir, kind, opened);
      adapter = parts.adapter;
      layers = parts.overlayReader ? [parts.overlayReader] : [];
      if (opts.modelBase) {
        const base = path.resolve(opts.modelBase);
        if (!isDirectory(base)) throw new LlavaError(`--model-base ${base} does not exist or is not a folder`);
        const baseReader = fullModel(base, true, "--model-base");
        opened.push(baseReader);
        layers.push(baseReader);
      } else if (!opts.allowMissingBase) {
        throw new LlavaError(`${dir}: a ${kind === "lora" ? "LoRA" : "projector-only"} checkpoint; pass its base LLM with --model-base`);
      }
    }
    let tower: CheckpointWeights["tower"] = "checkpoint";
    if (!layers.some((r) => r.has(`${PREFIX.tower}vision_model.pre_layrnorm.weight`))) {
      // LLaVA-1.5 keeps the tower in its CLIP folder; v1.6 and HF checkpoints carry it
      if (spec.tower.dir && opts.towerFolder !== false) {
        const clip = openWeights(spec.tower.dir, "vision tower folder");
        opened.push(clip);
        layers.push(renamed(clip, (n) => canonicalName(n, "clip"), (n) => storedName(n, "clip")));
        tower = "folder";
      } else {
        tower = "missing";
      }
    }
    const reader = layers.length === 1 ? layers[0] : overlay(layers);
    return { kind, reader, adapter, tower, close: closeAll };
  } catch (err) {
    closeAll();
    throw err;
  }
}
