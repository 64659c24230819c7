/**
 * Tensor names of the two formats, mapped as transformers' conversion scripts rename them
 * (KEYS_TO_MODIFY_MAPPING of convert_llava(_next)_weights_to_hf.py) and back.
 *
 * original                                        HF (layout llava-hf repos store)
 * model.embed_tokens / layers.N / norm            language_model.model.*
 * lm_head.weight                                  language_model.lm_head.weight
 * model.mm_projector.{0,2}.*                      multi_modal_projector.linear_{1,2}.*
 * model.vision_tower.vision_tower.vision_model.*  vision_tower.vision_model.*
 * model.image_newline (v1.6)                      image_newline
 */
import { LlavaError } from "../util/errors.js";

export type Part = "llm" | "projector" | "vision" | "newline";

export interface MappedName {
  name: string;
  part: Part;
}

/** The HF name of an original tensor, null for one HF does not keep (rotary inv_freq, 1.5's newline). */
export function hfNameOf(name: string, next: boolean, source: string): MappedName | null {
  let m: RegExpExecArray | null;
  if (name.endsWith(".inv_freq")) return null;
  if (name === "model.image_newline") return next ? { name: "image_newline", part: "newline" } : null;
  if ((m = /^model\.mm_projector\.(0|2)\.(weight|bias)$/.exec(name))) {
    return { name: `multi_modal_projector.linear_${m[1] === "0" ? 1 : 2}.${m[2]}`, part: "projector" };
  }
  if ((m = /^model\.vision_tower\.vision_tower\.(vision_model\..+)$/.exec(name))) return { name: `vision_tower.${m[1]}`, part: "vision" };
  if (/^model\.(mm_projector|vision_tower|vision_resampler)\./.test(name)) {
    throw new LlavaError(`${source}: tensor "${name}" has no place in the HF llava format`);
  }
  if ((m = /^model\.(.+)$/.exec(name))) return { name: `language_model.model.${m[1]}`, part: "llm" };
  if ((m = /^lm_head\.(.+)$/.exec(name))) return { name: `language_model.lm_head.${m[1]}`, part: "llm" };
  throw new LlavaError(`${source}: unexpected tensor "${name}" in an original LLaVA checkpoint`);
}

/** The original name of an HF tensor, old (language_model.model.*) or new (model.language_model.*) layout. */
export function originalNameOf(name: string, source: string): MappedName {
  let m: RegExpExecArray | null;
  if ((m = /^(?:model\.)?multi_modal_projector\.linear_(1|2)\.(weight|bias)$/.exec(name))) {
    return { name: `model.mm_projector.${m[1] === "1" ? 0 : 2}.${m[2]}`, part: "projector" };
  }
  if ((m = /^(?:model\.)?vision_tower\.(vision_model\..+)$/.exec(name))) return { name: `model.vision_tower.vision_tower.${m[1]}`, part: "vision" };
  if (/^(?:model\.)?image_newline$/.test(name)) return { name: "model.image_newline", part: "newline" };
  if ((m = /^(?:language_model\.model|model\.language_model)\.(.+)$/.exec(name))) return { name: `model.${m[1]}`, part: "llm" };
  if ((m = /^(?:language_model\.)?lm_head\.(.+)$/.exec(name))) return { name: `lm_head.${m[1]}`, part: "llm" };
  throw new LlavaError(`${source}: unexpected tensor "${name}" in an HF llava checkpoint`);
}

/** The name inside a plain CLIP folder of an original checkpoint's tower tensor. */
export const towerFolderName = (originalName: string) => originalName.replace(/^model\.vision_tower\.vision_tower\./, "");
