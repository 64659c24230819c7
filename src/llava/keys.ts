/**
 * Tensor names of every checkpoint layout, mapped to one canonical naming: the original LLaVA
 * state dict (LlavaLlamaForCausalLM), whose prefixes the model composes its modules under. Each
 * module names its own parameters (clip.ts, llama.ts, projector.ts); this file only knows where
 * each module sits in each layout, as transformers' conversion scripts rename them
 * (KEYS_TO_MODIFY_MAPPING of convert_llava(_next)_weights_to_hf.py) and back.
 *
 * canonical (original)                            HF, old layout (llava-hf repos)   HF, new layout (transformers >= 4.52)
 * model.embed_tokens / layers.N / norm            language_model.model.*            model.language_model.*
 * lm_head.weight                                  language_model.lm_head.weight     lm_head.weight
 * model.mm_projector.{0,2}.*                      multi_modal_projector.linear_{1,2}.*  model.multi_modal_projector.linear_{1,2}.*
 * model.vision_tower.vision_tower.vision_model.*  vision_tower.vision_model.*       model.vision_tower.vision_model.*
 * model.image_newline (v1.6)                      image_newline                     model.image_newline
 *
 * A CLIP folder (CLIPVisionModel or CLIPModel) stores the tower as `vision_model.*`.
 */
import { LlavaError } from "../util/errors.js";

export type KeyLayout = "original" | "hf" | "hf-new" | "clip";

/** Where each part of the model sits in canonical names. */
export const PREFIX = {
  llm: "model.",
  head: "lm_head.",
  projector: "model.mm_projector.",
  /** the CLIPVisionModel inside LLaVA's CLIPVisionTower */
  tower: "model.vision_tower.vision_tower.",
  newline: "model.image_newline",
} as const;

export type Part = "llm" | "projector" | "vision" | "newline";

export function partOf(canonical: string): Part {
  if (canonical.startsWith(PREFIX.projector)) return "projector";
  if (canonical.startsWith(PREFIX.tower)) return "vision";
  if (canonical === PREFIX.newline) return "newline";
  return "llm";
}

/** The LLM's Linear layers by canonical module name: what --load-8bit/--load-4bit quantize and LoRA adapters attach to. */
export const LLM_LINEAR_MODULE = /^(model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)|lm_head)$/;

/** Buffers some checkpoints carry that are not parameters: rotary frequencies and CLIP's position ids, recomputed from the config. */
const BUFFER = /\.(inv_freq|position_ids)$/;

/** The HF layout of a checkpoint's names: new when the LLM sits under `model.language_model.`. */
export function hfLayoutOf(names: Iterable<string>): "hf" | "hf-new" {
  for (const n of names) if (n.startsWith("model.language_model.")) return "hf-new";
  return "hf";
}

/**
 * The canonical name of a stored tensor; null for buffers and, in a CLIP folder, for what is
 * not the vision model (a CLIPModel's text half). A name no rule knows is returned as it is,
 * so the loader reports it as unused.
 */
export function canonicalName(stored: string, layout: KeyLayout): string | null {
  if (BUFFER.test(stored)) return null;
  let m: RegExpExecArray | null;
  switch (layout) {
    case "original":
      return stored;
    case "clip":
      return stored.startsWith("vision_model.") ? PREFIX.tower + stored : null;
    case "hf":
    case "hf-new": {
      if ((m = /^(?:model\.)?multi_modal_projector\.linear_(\d+)\.(weight|bias)$/.exec(stored))) {
        return `${PREFIX.projector}${2 * (Number(m[1]) - 1)}.${m[2]}`;
      }
      if ((m = /^(?:model\.)?vision_tower\.(vision_model\..+)$/.exec(stored))) return PREFIX.tower + m[1];
      if (/^(?:model\.)?image_newline$/.test(stored)) return PREFIX.newline;
      if ((m = /^(?:language_model\.model|model\.language_model)\.(.+)$/.exec(stored))) return PREFIX.llm + m[1];
      if ((m = /^(?:language_model\.)?lm_head\.(.+)$/.exec(stored))) return PREFIX.head + m[1];
      return stored;
    }
  }
}

/**
 * The name a canonical tensor is stored under in `layout`; null when the layout has no place
 * for it. HF llava holds only a two-layer projector; `next` says whether it is llava_next,
 * which alone keeps image_newline.
 */
export function storedName(canonical: string, layout: KeyLayout, next = false): string | null {
  if (layout === "original") return canonical;
  const part = partOf(canonical);
  if (layout === "clip") return part === "vision" ? canonical.slice(PREFIX.tower.length) : null;
  const newLayout = layout === "hf-new";
  if (part === "newline") return next ? (newLayout ? "model.image_newline" : "image_newline") : null;
  if (part === "vision") return (newLayout ? "model.vision_tower." : "vision_tower.") + canonical.slice(PREFIX.tower.length);
  if (part === "projector") {
    const m = /^model\.mm_projector\.(0|2)\.(weight|bias)$/.exec(canonical);
    return m ? `${newLayout ? "model." : ""}multi_modal_projector.linear_${m[1] === "0" ? 1 : 2}.${m[2]}` : null;
  }
  // LLaVA parts HF llava has no module for (a resampler, a tower outside vision_tower.vision_tower)
  if (/^model\.(vision_resampler|mm_projector|vision_tower)\./.test(canonical)) return null;
  if (canonical.startsWith(PREFIX.head)) return newLayout ? canonical : `language_model.${canonical}`;
  return (newLayout ? "model.language_model." : "language_model.model.") + canonical.slice(PREFIX.llm.length);
}

/** `storedName`, failing with the tensor and the layout when the layout cannot hold it. */
export function requireStoredName(canonical: string, layout: KeyLayout, next: boolean, source: string): string {
  const name = storedName(canonical, layout, next);
  if (name === null) throw new LlavaError(`${source}: tensor "${canonical}" has no place in the ${layout === "clip" ? "CLIP folder" : "HF llava"} format`);
  return name;
}
