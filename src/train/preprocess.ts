/**
 * One training record to ids and labels, as the reference's `LazySupervisedDataset.__getitem__`
 * does it (`preprocess_multimodal`, then `preprocess` for the template chosen by `--version`),
 * followed by the collator's cut at model_max_length. Where the reference would crash (an
 * assertion) or silently train on nothing (a tokenization mismatch zeroes the labels), the sample
 * carries a named problem instead, so the trainer and `llava data check` can refuse or count it.
 */
import path from "node:path";
import type { TrainingRecord, Turn } from "./dataset.js";
import { type Conversation, convTemplates, getConvTemplate } from "../llava/conversation.js";
import {
  IGNORE_INDEX, LEGACY_BEGIN, legacyTurn, maskingKind, maskLegacy, maskPlain, maskRounds, type Masked, type Tokenize,
} from "../llava/labels.js";
import type { LoadedLlava } from "../llava/load.js";
import { type PromptTokenization, tokenizePrompt } from "../llava/pipeline.js";
import { IM_END, IM_START, IMAGE_TOKEN } from "../llava/spec.js";
import { pyStrip } from "../io/python.js";
import type { LlavaTokenizer } from "../tokenizer/tokenizer.js";
import { LlavaError } from "../util/errors.js";

export interface PreprocessOptions {
  /** the reference's `--version`: a template name, or v0 / v0.5 (which keep the default vicuna_v1) */
  version: string;
  /** chunk-wise tokenization with one image marker per `<image>` and BOS, and no other rewriting */
  promptIds: Tokenize;
  /** the image marker id in those ids */
  imageTokenId: number;
  /** the tokenizer's `legacy` flag */
  legacy: boolean;
  modelMaxLength: number;
  /** mm_use_im_start_end: each image as `<im_start><image><im_end>` */
  imageStartEnd: boolean;
  /** a model with a vision tower (the reference's is_multimodal) */
  multimodal: boolean;
  /** what image paths are relative to */
  imageFolder?: string;
}

/** What can be wrong with a sample; the first seven make it unusable, the rest are worth a warning. */
export const PROBLEM_KINDS = ["mismatch", "no-labels", "out-of-order", "image-count", "plain-shape", "missing-image", "bad-image"] as const;
export const WARNING_KINDS = ["dropped-turn", "empty-turn", "truncated", "model-cut"] as const;
export type IssueKind = (typeof PROBLEM_KINDS)[number] | (typeof WARNING_KINDS)[number];

export interface Issue {
  kind: IssueKind;
  message: string;
}

export interface TokenizedSample {
  index: number;
  id: string;
  /** prompt ids, image markers as `imageTokenId`, cut at modelMaxLength */
  ids: number[];
  /** same length; IGNORE_INDEX where no loss is taken */
  labels: number[];
  imagePaths: string[];
  /** what makes the sample unusable for training: the reference crashes on it or trains on nothing */
  problems: Issue[];
  /** what the reference accepts silently but a user should know (a dropped turn, an empty turn, a cut) */
  warnings: Issue[];
  /** the collator's cut at modelMaxLength removed tokens */
  truncated: boolean;
  /** tokens before the cut */
  fullLength: number;
}

/** The template `--version` selects, as the reference's train() sets default_conversation. */
export function trainingTemplate(version: string): Conversation<unknown> {
  // v0 (which only adds a [PAD] token) and v0.5 leave the module's default, vicuna_v1
  if (version === "v0" || version === "v0.5") return getConvTemplate("vicuna_v1");
  // the reference falls back to vicuna_v1 for an unknown name; a typo here would train on the wrong template
  if (!(version in convTemplates)) throw new LlavaError(`--version ${version}: no such template (${Object.keys(convTemplates).join(", ")}, v0, v0.5)`);
  return getConvTemplate(version);
}

/** Preprocessing options for a loaded model. */
export function preprocessOptions(loaded: LoadedLlava, version: string, modelMaxLength: number, imageFolder?: string): PreprocessOptions {
  return preprocessOptionsFor(loaded.tokenizer, { ...loaded.model.settings, format: loaded.format }, version, modelMaxLength, imageFolder);
}

/** Preprocessing options from a tokenizer and the model's settings alone (no weights needed). */
export function preprocessOptionsFor(
  tokenizer: LlavaTokenizer, how: PromptTokenization, version: string, modelMaxLength: number, imageFolder?: string,
): PreprocessOptions {
  trainingTemplate(version);
  // the wrapping with <im_start>/<im_end> is preprocess_multimodal's job here, as in the reference
  const raw = { ...how, imageStartEnd: false };
  return {
    version,
    promptIds: (text) => tokenizePrompt(tokenizer, raw, text),
    imageTokenId: how.imageTokenId,
    legacy: tokenizer.legacy,
    modelMaxLength,
    imageStartEnd: how.imageStartEnd,
    multimodal: true,
    imageFolder,
  };
}

/** The reference's `preprocess_multimodal` for a sample with images: each `<image>` moves to the front of its turn. */
export function preprocessMultimodal(turns: Turn[], imageCount: number, version: string, imageStartEnd: boolean): Turn[] {
  return turns.map(({ from, value }) => {
    const markers = value.split(IMAGE_TOKEN).length - 1;
    if (markers === 0) return { from, value };
    let text = value;
    // LLaVA-1.5 gathers a turn's markers into one; with several images (LLaVA-NeXT's data) they stay in place
    if (imageCount <= 1 || markers === 1) text = pyStrip(IMAGE_TOKEN + "\n" + pyStrip(text.replaceAll(IMAGE_TOKEN, "")));
    if (version.includes("mmtag")) text = text.replaceAll(IMAGE_TOKEN, `<Image>${IMAGE_TOKEN}</Image>`);
    return { from, value: imageStartEnd ? text.replaceAll(IMAGE_TOKEN, IM_START + IMAGE_TOKEN + IM_END) : text };
  });
}

/** A rendered and masked sample, or why the reference cannot make one. */
type Rendered = { ids: number[]; masked: Masked } | Issue;

/** The reference's preprocessing of one record, with its problems named. */
export function tokenizeSample(record: TrainingRecord, opts: PreprocessOptions): TokenizedSample {
  const conv = trainingTemplate(opts.version);
  const warnings: Issue[] = [];
  record.conversations.forEach((t, i) => {
    if (t.value.trim() === "") warnings.push({ kind: "empty-turn", message: `turn ${i} (${t.from}) is empty` });
  });
  const hasImage = record.images.length > 0;
  const turns = opts.multimodal && hasImage ? preprocessMultimodal(record.conversations, record.images.length, conv.version, opts.imageStartEnd) : record.conversations;
  const kind = maskingKind(conv);
  const rendered = kind === "plain" ? renderPlain(conv, turns, opts)
    : kind === "legacy" ? renderLegacy(conv, turns, hasImage, opts)
    : renderRounds(conv, turns, opts, warnings);
  if ("kind" in rendered) return finish(record, opts, [], [], [rendered], warnings);
  const { ids, masked } = rendered;
  const problems: Issue[] = [];
  if (masked.mismatch) {
    const { counted, total } = masked.mismatch;
    problems.push({ kind: "mismatch", message: `tokenization mismatch: ${counted} vs. ${total} (the reference zeroes this sample's labels and trains on nothing)` });
  }
  const markers = ids.filter((id) => id === opts.imageTokenId).length;
  if (opts.multimodal && markers !== record.images.length) {
    problems.push({ kind: "image-count", message: `${markers} ${IMAGE_TOKEN} marker(s) for ${record.images.length} image(s)` });
  }
  return finish(record, opts, ids, masked.labels, problems, warnings);
}

/** `preprocess_plain`: `<image>` + caption + sep; the human text is replaced by the bare `<image>` (any wrapping goes with it). */
function renderPlain(conv: Conversation<unknown>, turns: Turn[], opts: PreprocessOptions): Rendered {
  if (turns.length !== 2 || !turns[0].value.includes(IMAGE_TOKEN)) {
    return { kind: "plain-shape", message: `the plain template needs 2 turns, the first with ${IMAGE_TOKEN} (got ${turns.length} turn(s))` };
  }
  const ids = opts.promptIds(IMAGE_TOKEN + turns[1].value + conv.sep);
  return { ids, masked: { labels: maskPlain(ids, opts.promptIds), mismatch: null } };
}

/** The legacy path: `{system}\n\n`, then `### Role: text\n` per turn, then `### `. */
function renderLegacy(conv: Conversation<unknown>, turns: Turn[], hasImage: boolean, opts: PreprocessOptions): Rendered {
  const header = `${conv.system}\n\n`;
  const pieces = turns.map((t) => ({ from: t.from, text: legacyTurn(conv, t.from, t.value) }));
  const ids = opts.promptIds(header + pieces.map((p) => p.text).join("") + LEGACY_BEGIN);
  // text-only pieces go through the tokenizer with truncation, images through tokenizer_image_token
  const pieceLength = (text: string) => (hasImage ? opts.promptIds(text).length : Math.min(opts.promptIds(text).length, opts.modelMaxLength));
  return { ids, masked: { labels: maskLegacy(ids, header, pieces, pieceLength), mismatch: null } };
}

/** v1, llama_2, mpt: a leading gpt turn is dropped, the rest must alternate, the template renders them. */
function renderRounds(conv: Conversation<unknown>, turns: Turn[], opts: PreprocessOptions, warnings: Issue[]): Rendered {
  const dropped = turns[0].from !== "human" ? 1 : 0;
  if (dropped) warnings.push({ kind: "dropped-turn", message: "the first turn is from gpt; it is dropped, as the reference does" });
  const kept = turns.slice(dropped);
  const order = kept.findIndex((t, j) => t.from !== (j % 2 === 0 ? "human" : "gpt"));
  if (order >= 0) {
    return { kind: "out-of-order", message: `turns out of order: turn ${order + dropped} is from ${kept[order].from} where the reference expects ${order % 2 === 0 ? "human" : "gpt"}` };
  }
  const c = conv.copy();
  kept.forEach((t, j) => c.appendMessage(c.roles[j % 2], t.value));
  const prompt = c.getPrompt();
  const ids = opts.promptIds(prompt);
  return { ids, masked: maskRounds(conv, prompt, ids, opts.promptIds, opts.legacy, opts.modelMaxLength) };
}

/** The collator's cut at model_max_length, and the check that some label is left. */
function finish(record: TrainingRecord, opts: PreprocessOptions, ids: number[], labels: number[], problems: Issue[], warnings: Issue[]): TokenizedSample {
  const fullLength = ids.length;
  const truncated = fullLength > opts.modelMaxLength;
  if (truncated) warnings.push({ kind: "truncated", message: `cut at model_max_length ${opts.modelMaxLength} (of ${fullLength} tokens)` });
  // image positions never carry a loss (the model gives their features IGNORE_INDEX labels)
  const kept = labels.slice(0, opts.modelMaxLength).map((l, i) => (ids[i] === opts.imageTokenId ? IGNORE_INDEX : l));
  if (!problems.length && !kept.some((l) => l !== IGNORE_INDEX)) {
    const message = truncated ? `no supervised token is left after the cut at model_max_length ${opts.modelMaxLength}` : "no supervised tokens (every label is masked)";
    problems.push({ kind: "no-labels", message });
  }
  const folder = opts.imageFolder ?? "";
  return {
    index: record.index,
    id: record.id,
    ids: ids.slice(0, opts.modelMaxLength),
    labels: kept,
    imagePaths: record.images.map((p) => path.resolve(folder, p)),
    problems,
    warnings,
    truncated,
    fullLength,
  };
}
