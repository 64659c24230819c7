/**
 * Training targets as the reference's `preprocess_*` functions (llava/train/train.py) build them,
 * one per kind of template: only the assistant answers and their end token are supervised, all
 * else gets IGNORE_INDEX. Each function follows the reference's arithmetic exactly, its
 * off-by-ones included, because the labels must be the reference's; where the reference counts
 * its rounds to a length other than the sequence's, it zeroes the sample, and `mismatch` says so.
 */
import { type Conversation, SeparatorStyle } from "./conversation.js";
import { IMAGE_TOKEN } from "./spec.js";
import { LlavaError } from "../util/errors.js";

export const IGNORE_INDEX = -100;

/** Which of the reference's preprocess functions a template goes through (its `preprocess` dispatch). */
export type MaskingKind = "plain" | "llama_2" | "v1" | "mpt" | "legacy";

export function maskingKind(conv: Conversation<unknown>): MaskingKind {
  if (conv.sepStyle === SeparatorStyle.PLAIN) return "plain";
  if (conv.sepStyle === SeparatorStyle.LLAMA_2) return "llama_2";
  if (conv.version.startsWith("v1")) return "v1";
  if (conv.version === "mpt") return "mpt";
  return "legacy";
}

export interface Masked {
  labels: number[];
  /** the reference's "tokenization mismatch: counted vs. total", which zeroed the labels; null if none */
  mismatch: { counted: number; total: number } | null;
}

/** Tokenizes a piece of prompt as the whole prompt was tokenized (chunk-wise with image markers, with BOS). */
export type Tokenize = (text: string) => number[];

/**
 * The round-based masks of `preprocess_v1` (TWO style), `preprocess_llama_2` and `preprocess_mpt`:
 * split the rendered prompt into rounds, mask each round's instruction, advance by the round's
 * length, mask the rest.
 *
 * @param legacy the tokenizer's `legacy` flag: v1 counts one token less for rounds after the first
 *   with a non-legacy tokenizer, mpt one more with a legacy one (tokenizers >= 0.14)
 * @param maxLength model_max_length: the reference checks the count only below it
 */
export function maskRounds(
  conv: Conversation<unknown>, prompt: string, ids: number[], tokenize: Tokenize, legacy: boolean, maxLength = Infinity,
): Masked {
  const kind = maskingKind(conv);
  const labels = [...ids];
  let rounds: string[];
  let sep: string;
  let cur: number;
  if (kind === "mpt") {
    sep = conv.sep + conv.roles[1];
    // system + user + assistant, then user + assistant pairs
    const turns = prompt.split(conv.sep);
    rounds = [turns.slice(0, 3).join(conv.sep)];
    for (let i = 3; i < turns.length; i += 2) rounds.push(turns.slice(i, i + 2).join(conv.sep));
    cur = 0;
  } else if (kind === "v1" || kind === "llama_2") {
    if (conv.sep2 === null) throw new LlavaError(`template "${conv.version}" has no second separator`);
    sep = kind === "v1" ? conv.sep + conv.roles[1] + ": " : "[/INST] ";
    rounds = prompt.split(conv.sep2);
    cur = 1;
  } else {
    throw new LlavaError(`template "${conv.version}" is not masked by rounds (${kind})`);
  }
  labels.fill(IGNORE_INDEX, 0, Math.min(cur, labels.length));
  for (let i = 0; i < rounds.length; i++) {
    const round = rounds[i];
    if (round === "") break;
    const parts = round.split(sep);
    if (parts.length !== 2) break;
    let roundLen = tokenize(round).length;
    let instructionLen = tokenize(parts[0] + sep).length - (kind === "mpt" ? 1 : 2);
    if (i !== 0 && kind === "v1" && !legacy) {
      roundLen -= 1;
      instructionLen -= 1;
    }
    if (i !== 0 && kind === "mpt" && legacy) {
      roundLen += 1;
      instructionLen += 1;
    }
    fillRange(labels, cur, cur + instructionLen);
    cur += roundLen;
  }
  fillRange(labels, cur, labels.length);
  if (cur < maxLength && cur !== ids.length) {
    labels.fill(IGNORE_INDEX);
    return { labels, mismatch: { counted: cur, total: ids.length } };
  }
  return { labels, mismatch: null };
}

/** Python's `target[start:end] = IGNORE_INDEX` for non-negative bounds. */
function fillRange(labels: number[], start: number, end: number): void {
  if (end > start) labels.fill(IGNORE_INDEX, Math.min(start, labels.length), Math.min(end, labels.length));
}

/** `preprocess_plain` (stage 1): `<image>` + caption + sep; the tokens of `<image>` alone (BOS + marker) are masked. */
export function maskPlain(ids: number[], tokenize: Tokenize): number[] {
  const labels = [...ids];
  fillRange(labels, 0, tokenize(IMAGE_TOKEN).length);
  return labels;
}

/**
 * The legacy path (`_mask_targets`, for SINGLE-style templates such as llava_v0): the header
 * (system + "\n\n") is masked, and of each human turn `### Human: ...\n` all but its first two
 * tokens; each piece is tokenized on its own (so each counts a BOS), as the reference does.
 *
 * @param pieceLength the length the reference counts for a piece (it truncates text-only pieces to model_max_length)
 */
export function maskLegacy(ids: number[], header: string, turns: { from: string; text: string }[], pieceLength: (text: string) => number): number[] {
  const labels = [...ids];
  let cur = pieceLength(header);
  fillRange(labels, 0, cur);
  for (const { from, text } of turns) {
    const len = pieceLength(text);
    if (from === "human") fillRange(labels, cur + 2, cur + len);
    cur += len;
  }
  return labels;
}

/** The legacy path's rendering of one turn (`_add_speaker_and_signal`), and what ends the prompt. */
export const LEGACY_BEGIN = "### ";
export function legacyTurn(conv: Conversation<unknown>, from: string, value: string): string {
  const role = from.toLowerCase() === "human" ? conv.roles[0] : from.toLowerCase() === "gpt" ? conv.roles[1] : "unknown";
  return `${LEGACY_BEGIN}${role}: ${value}\n`;
}

/** Labels for the expanded sequence: image marker k becomes counts[k] ignored positions. */
export function expandLabels(ids: number[], labels: number[], marker: number, counts: number[]): number[] {
  let image = 0;
  return ids.flatMap((id, i) => (id === marker ? Array(counts[image++]).fill(IGNORE_INDEX) : [labels[i]]));
}
