/**
 * Training targets as the reference's `preprocess_v1` builds them for TWO-style templates
 * (vicuna_v1 / llava_v1): only the assistant answers and their closing `</s>` are supervised;
 * BOS, system text, user turns and `ASSISTANT:` headers get IGNORE_INDEX.
 */
import type { Conversation } from "./conversation.js";
import { LlavaError } from "../util/errors.js";

export const IGNORE_INDEX = -100;

/**
 * @param tokenize the same tokenisation that produced `ids` (chunk-wise with image markers)
 * @param legacy the tokenizer's `legacy` flag: non-legacy tokenizers count one token less for
 *   rounds after the first, as the reference corrects for tokenizers >= 0.14
 */
export function maskTargetsV1(
  conv: Conversation<unknown>, prompt: string, ids: number[], tokenize: (text: string) => number[], legacy = true,
): number[] {
  if (conv.sep2 === null) throw new LlavaError(`template "${conv.version}" has no second separator; labels need a TWO-style template`);
  const labels = [...ids];
  const sep = conv.sep + conv.roles[1] + ": ";
  let cur = 1;
  labels[0] = IGNORE_INDEX;
  const rounds = prompt.split(conv.sep2);
  for (let i = 0; i < rounds.length; i++) {
    const round = rounds[i];
    if (round === "") break;
    const parts = round.split(sep);
    if (parts.length !== 2) break;
    let roundLen = tokenize(round).length;
    let instructionLen = tokenize(parts[0] + sep).length - 2;
    if (i !== 0 && !legacy) {
      roundLen -= 1;
      instructionLen -= 1;
    }
    labels.fill(IGNORE_INDEX, cur, Math.min(cur + instructionLen, labels.length));
    cur += roundLen;
  }
  labels.fill(IGNORE_INDEX, Math.min(cur, labels.length));
  // the reference silently drops a sample whose rounds do not add up to its length
  if (cur !== ids.length) labels.fill(IGNORE_INDEX);
  return labels;
}

/** Labels for the expanded sequence: image marker k becomes counts[k] ignored positions. */
export function expandLabels(ids: number[], labels: number[], marker: number, counts: number[]): number[] {
  let image = 0;
  return ids.flatMap((id, i) => (id === marker ? Array(counts[image++]).fill(IGNORE_INDEX) : [labels[i]]));
}
