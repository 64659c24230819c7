/**
 * Builds the `tokenizer.json` equivalent of a LLaMA SentencePiece BPE model, the way transformers'
 * `LlamaConverter` (convert_slow_tokenizer.py) does when a checkpoint ships only `tokenizer.model`
 * (original-format LLaVA checkpoints such as liuhaotian/llava-v1.5-7b).
 */
import { LlavaError } from "../util/errors.js";
import { ModelType, PieceType, type SentencePieceModel } from "./sentencepiece-model.js";
import type { AddedTokenSpec, TokenizerSettings } from "./tokenizer-config.js";

const SPIECE_UNDERLINE = "\u2581";

/** The JSON document the tokenizer runtime consumes (the tokenizer.json schema, loosely typed). */
export type TokenizerJson = Record<string, unknown> & {
  added_tokens: AddedTokenSpec[];
  model: Record<string, unknown>;
};

/**
 * BPE merges derived from the piece scores, as the SentencePiece extractor of the transformers
 * release LLaVA pins (4.37) does: every split of a piece into two in-vocabulary halves is a merge,
 * pieces with score 0 (control and byte pieces) yield none, and merges are ordered by the merged
 * piece's score, highest first, ties by (id of left half, id of right half). This reproduces the
 * merges of the tokenizer.json files the LLaMA-2 family ships, byte for byte.
 */
export function mergesFromScores(pieces: readonly { piece: string; score: number }[]): [string, string][] {
  const ids = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (!ids.has(p.piece)) ids.set(p.piece, i);
  });
  const candidates: { left: string; right: string; score: number; leftId: number; rightId: number }[] = [];
  for (const { piece, score } of pieces) {
    if (score === 0) continue;
    // Python slices strings by code point, so split by code point, not UTF-16 unit.
    const chars = Array.from(piece);
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join("");
      const right = chars.slice(i).join("");
      const leftId = ids.get(left);
      const rightId = ids.get(right);
      if (leftId !== undefined && rightId !== undefined) {
        candidates.push({ left, right, score, leftId, rightId });
      }
    }
  }
  candidates.sort((a, b) => b.score - a.score || a.leftId - b.leftId || a.rightId - b.rightId);
  return candidates.map((c) => [c.left, c.right]);
}

/** LlamaTokenizerFast.update_post_processor: `<s>:0 $A:0 (</s>:0)`, pair adds `<s>:1 $B:1 (</s>:1)`. */
export function llamaPostProcessor(
  settings: TokenizerSettings,
  tokenToId: (token: string) => number | undefined,
  file: string,
): Record<string, unknown> {
  const special = (token: string | undefined, role: string, typeId: number) => {
    if (token === undefined) throw new LlavaError(`${file}: add_${role}_token is true but no ${role}_token is set`);
    const id = tokenToId(token);
    if (id === undefined) throw new LlavaError(`${file}: ${role}_token ${JSON.stringify(token)} is not in the vocabulary`);
    return { item: { SpecialToken: { id: token, type_id: typeId } }, entry: [token, { id: token, ids: [id], tokens: [token] }] as const };
  };
  const single: unknown[] = [];
  const pair: unknown[] = [];
  const specialTokens: Record<string, unknown> = {};
  const add = (list: unknown[], token: string | undefined, role: string, typeId: number) => {
    const s = special(token, role, typeId);
    list.push(s.item);
    specialTokens[s.entry[0]] = s.entry[1];
  };
  if (settings.addBosToken) add(single, settings.bosToken, "bos", 0);
  single.push({ Sequence: { id: "A", type_id: 0 } });
  if (settings.addEosToken) add(single, settings.eosToken, "eos", 0);
  pair.push(...single);
  if (settings.addBosToken) add(pair, settings.bosToken, "bos", 1);
  pair.push({ Sequence: { id: "B", type_id: 1 } });
  if (settings.addEosToken) add(pair, settings.eosToken, "eos", 1);
  return { type: "TemplateProcessing", single, pair, special_tokens: specialTokens };
}

/**
 * Added tokens: SentencePiece control (special) and user-defined (not special) pieces, then the
 * config's `added_tokens_decoder` entries, then the configured special tokens (transformers
 * registers bos/eos/unk/pad/additional special tokens as special added tokens).
 */
function addedTokens(model: SentencePieceModel, settings: TokenizerSettings, vocab: Map<string, number>): AddedTokenSpec[] {
  const byId = new Map<number, AddedTokenSpec>();
  const plain = (id: number, content: string, special: boolean): AddedTokenSpec => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special,
  });
  model.pieces.forEach((p, id) => {
    if (p.type === PieceType.CONTROL || p.type === PieceType.USER_DEFINED) {
      byId.set(id, plain(id, p.piece, p.type === PieceType.CONTROL));
    }
  });
  for (const t of settings.addedTokensDecoder) byId.set(t.id, { ...t });
  const specials = [settings.bosToken, settings.eosToken, settings.unkToken, settings.padToken, ...settings.additionalSpecialTokens];
  for (const token of specials) {
    if (token === undefined) continue;
    const id = vocab.get(token);
    if (id === undefined || byId.has(id)) continue;
    byId.set(id, plain(id, token, true));
  }
  return [...byId.values()].sort((a, b) => a.id - b.id);
}

/**
 * Converts a parsed SentencePiece model plus the checkpoint's tokenizer settings into a
 * tokenizer.json document equivalent to transformers' LlamaTokenizerFast built `from_slow`.
 */
export function convertLlamaSentencePiece(model: SentencePieceModel, settings: TokenizerSettings, file: string): TokenizerJson {
  if (model.trainerSpec.modelType !== ModelType.BPE) {
    throw new LlavaError(
      `${file}: SentencePiece model type ${model.trainerSpec.modelType} is not BPE; ` +
        "only LLaMA-style BPE tokenizers can be converted (provide a tokenizer.json instead)",
    );
  }
  const vocabMap = new Map<string, number>();
  // A null-prototype object keeps pieces such as "__proto__" as ordinary keys.
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  model.pieces.forEach((p, id) => {
    if (vocabMap.has(p.piece)) throw new LlavaError(`${file}: duplicate piece ${JSON.stringify(p.piece)}`);
    vocabMap.set(p.piece, id);
    vocab[p.piece] = id;
  });

  const added = addedTokens(model, settings, vocabMap);
  const tokenToId = (token: string) => added.find((t) => t.content === token)?.id ?? vocabMap.get(token);

  const { legacy, addPrefixSpace } = settings;
  const normalizer = legacy
    ? {
        type: "Sequence",
        normalizers: [
          ...(addPrefixSpace ? [{ type: "Prepend", prepend: SPIECE_UNDERLINE }] : []),
          { type: "Replace", pattern: { String: " " }, content: SPIECE_UNDERLINE },
        ],
      }
    : null;
  // Non-legacy: the prefix space goes only before the first section of the text, never after a
  // special token (transformers' `_get_prepend_scheme`).
  const preTokenizer = legacy
    ? null
    : {
        type: "Metaspace",
        replacement: SPIECE_UNDERLINE,
        prepend_scheme: addPrefixSpace ? "first" : "never",
        split: false,
      };
  const decoder = {
    type: "Sequence",
    decoders: [
      { type: "Replace", pattern: { String: SPIECE_UNDERLINE }, content: " " },
      { type: "ByteFallback" },
      { type: "Fuse" },
      ...(addPrefixSpace ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
    ],
  };

  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer,
    pre_tokenizer: preTokenizer,
    post_processor: llamaPostProcessor(settings, tokenToId, file),
    decoder,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: model.trainerSpec.unkPiece,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: mergesFromScores(model.pieces),
    },
  };
}
