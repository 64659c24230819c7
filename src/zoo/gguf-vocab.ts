/**
 * A LLaMA tokenizer as llama.cpp's `tokenizer.ggml.*` metadata (model "llama": SentencePiece
 * pieces, scores and types), built as convert_hf_to_gguf.py builds it: from tokenizer.model when
 * the folder has it; else from tokenizer.json, where a piece's score is minus the rank of the
 * merge that makes it (SentencePiece's scores order the merges the same way). Added tokens
 * follow; rows past the vocabulary are `[PADn]` placeholders.
 */
import fs from "node:fs";
import path from "node:path";
import { isFile, readJsonFile } from "../io/files.js";
import { TOKEN_TYPE } from "../llava/gguf-names.js";
import { parseSentencePieceModel } from "../tokenizer/sentencepiece-model.js";
import { readTokenizerSettings } from "../tokenizer/tokenizer-config.js";
import { LlavaError } from "../util/errors.js";

export interface GgufVocab {
  tokens: string[];
  scores: number[];
  types: number[];
  bos: number | null;
  eos: number | null;
  unk: number | null;
  pad: number | null;
  addBos: boolean;
  addEos: boolean;
  chatTemplate: string | null;
}

/** convert_hf_to_gguf.py's score for added and placeholder tokens */
const ADDED_SCORE = -1000;

type Piece = { piece: string; score: number; type: number };

function fromSentencePiece(file: string): Piece[] {
  return parseSentencePieceModel(fs.readFileSync(file), file).pieces.map((p) => ({ ...p }));
}

function fromTokenizerJson(file: string): Piece[] {
  const json = readJsonFile(file, "tokenizer") as { model?: { type?: string; vocab?: Record<string, number>; merges?: Array<string | [string, string]>; unk_token?: string } };
  const model = json.model;
  if (model?.type !== "BPE" || !model.vocab || !Array.isArray(model.merges)) throw new LlavaError(`${file}: not a LLaMA (SentencePiece BPE) tokenizer; GGUF's "llama" tokenizer model needs one`);
  const rank = new Map<string, number>();
  model.merges.forEach((m, i) => {
    const [a, b] = typeof m === "string" ? m.split(" ") : m;
    if (!rank.has(a + b)) rank.set(a + b, i);
  });
  const pieces: Piece[] = [];
  for (const [piece, id] of Object.entries(model.vocab)) {
    const type = piece === model.unk_token ? TOKEN_TYPE.unknown : /^<0x[0-9A-F]{2}>$/.test(piece) ? TOKEN_TYPE.byte : TOKEN_TYPE.normal;
    pieces[id] = { piece, score: rank.has(piece) ? -rank.get(piece)! : 0, type };
  }
  for (let i = 0; i < pieces.length; i++) if (!pieces[i]) throw new LlavaError(`${file}: the vocabulary has no token ${i}`);
  return pieces;
}

/** The chat template of a folder: tokenizer_config.json's, else chat_template.json's; null when neither has one. */
function chatTemplateOf(dir: string, raw: Record<string, unknown>): string | null {
  if (typeof raw.chat_template === "string") return raw.chat_template;
  const file = path.join(dir, "chat_template.json");
  if (!isFile(file)) return null;
  const t = (readJsonFile(file, "chat template") as { chat_template?: unknown }).chat_template;
  return typeof t === "string" ? t : null;
}

/** The vocabulary of the tokenizer in `dir`, laid out over `rows` embedding rows. */
export function llamaGgufVocab(dir: string, rows: number): GgufVocab {
  const spFile = path.join(dir, "tokenizer.model");
  const jsonFile = path.join(dir, "tokenizer.json");
  if (!isFile(spFile) && !isFile(jsonFile)) throw new LlavaError(`${dir}: no tokenizer.model or tokenizer.json to write the GGUF vocabulary from`);
  const pieces = isFile(spFile) ? fromSentencePiece(spFile) : fromTokenizerJson(jsonFile);
  const settings = readTokenizerSettings(dir);
  const special = new Set([settings.bosToken, settings.eosToken, settings.unkToken, settings.padToken]);
  for (const p of pieces) if (p.type === TOKEN_TYPE.normal && special.has(p.piece)) p.type = TOKEN_TYPE.control;
  for (const added of settings.addedTokensDecoder) {
    if (added.id < pieces.length) continue;
    if (added.id !== pieces.length) throw new LlavaError(`${dir}: added token "${added.content}" has id ${added.id}, expected the next free id ${pieces.length}`);
    pieces.push({ piece: added.content, score: ADDED_SCORE, type: added.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined });
  }
  if (pieces.length > rows) throw new LlavaError(`${dir}: the tokenizer has ${pieces.length} tokens but the embedding only ${rows} rows`);
  for (let i = pieces.length; i < rows; i++) pieces.push({ piece: `[PAD${i}]`, score: ADDED_SCORE, type: TOKEN_TYPE.unused });
  const idOf = (token: string | undefined) => {
    const i = token === undefined ? -1 : pieces.findIndex((p) => p.piece === token);
    return i < 0 ? null : i;
  };
  return {
    tokens: pieces.map((p) => p.piece),
    scores: pieces.map((p) => p.score),
    types: pieces.map((p) => p.type),
    bos: idOf(settings.bosToken),
    eos: idOf(settings.eosToken),
    unk: idOf(settings.unkToken),
    pad: idOf(settings.padToken),
    addBos: settings.addBosToken,
    addEos: settings.addEosToken,
    chatTemplate: chatTemplateOf(dir, settings.raw),
  };
}
