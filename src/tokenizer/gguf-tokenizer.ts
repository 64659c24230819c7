/**
 * The tokenizer of a GGUF file, rebuilt from its `tokenizer.ggml.*` metadata. llama.cpp's
 * converter stores a SentencePiece (LLaMA) vocabulary as the model's pieces in id order with
 * their scores and piece types (added tokens appended: control for special ones, user-defined
 * for the rest), so the pieces form the same SentencePiece model as `tokenizer.model`, and the
 * LlamaConverter turns them into the tokenizer.json transformers would build.
 */
import type { GgufFile } from "../io/gguf.js";
import { convertLlamaSentencePiece } from "./llama-converter.js";
import { ModelType, type SentencePiece, type SentencePieceModel } from "./sentencepiece-model.js";
import type { TokenizerSettings } from "./tokenizer-config.js";
import { LlavaTokenizer } from "./tokenizer.js";

/** Metadata keys of the tokenizer (in the LLM file), as convert_hf_to_gguf.py writes them. */
export const TOKENIZER_KEY = {
  model: "tokenizer.ggml.model",
  tokens: "tokenizer.ggml.tokens",
  scores: "tokenizer.ggml.scores",
  tokenType: "tokenizer.ggml.token_type",
  merges: "tokenizer.ggml.merges",
  bos: "tokenizer.ggml.bos_token_id",
  eos: "tokenizer.ggml.eos_token_id",
  unk: "tokenizer.ggml.unknown_token_id",
  pad: "tokenizer.ggml.padding_token_id",
  addBos: "tokenizer.ggml.add_bos_token",
  addEos: "tokenizer.ggml.add_eos_token",
  addSpacePrefix: "tokenizer.ggml.add_space_prefix",
  chatTemplate: "tokenizer.chat_template",
} as const;

/** llama.cpp's token types (llama_token_type / gguf TokenType). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

/** The pieces and settings a GGUF's metadata describes. */
export function ggufSentencePiece(file: GgufFile): { model: SentencePieceModel; settings: TokenizerSettings } {
  const kind = file.string(TOKENIZER_KEY.model, null);
  if (kind === null) file.fail(`has no tokenizer (metadata "${TOKENIZER_KEY.model}" is missing)`);
  if (kind !== "llama") file.fail(`tokenizer model "${kind}" is not supported (only "llama", SentencePiece BPE, as LLaVA's LLaMA-family models use)`);
  const tokens = file.strings(TOKENIZER_KEY.tokens) ?? file.fail(`metadata "${TOKENIZER_KEY.tokens}" is missing`);
  const scores = file.numbers(TOKENIZER_KEY.scores);
  const types = file.numbers(TOKENIZER_KEY.tokenType);
  for (const [key, list] of [[TOKENIZER_KEY.scores, scores], [TOKENIZER_KEY.tokenType, types]] as const) {
    if (list && list.length !== tokens.length) file.fail(`metadata "${key}" has ${list.length} entries for ${tokens.length} tokens`);
  }
  const pieces: SentencePiece[] = tokens.map((piece, i) => ({ piece, score: scores?.[i] ?? 0, type: types?.[i] ?? TOKEN_TYPE.normal }));
  const id = (key: string, fallback: number | null) => {
    const v = file.uint(key, fallback);
    if (v !== null && v >= tokens.length) file.fail(`metadata "${key}" is ${v}, past the ${tokens.length} tokens`);
    return v;
  };
  const unk = id(TOKENIZER_KEY.unk, 0)!;
  const bos = id(TOKENIZER_KEY.bos, 1);
  const eos = id(TOKENIZER_KEY.eos, 2);
  const pad = id(TOKENIZER_KEY.pad, null);
  const piece = (i: number | null) => (i === null ? undefined : tokens[i]);
  const addPrefixSpace = file.bool(TOKENIZER_KEY.addSpacePrefix, true);
  const model: SentencePieceModel = {
    pieces,
    trainerSpec: {
      modelType: ModelType.BPE,
      byteFallback: true,
      unkId: unk,
      bosId: bos ?? -1,
      eosId: eos ?? -1,
      padId: pad ?? -1,
      unkPiece: tokens[unk],
      bosPiece: piece(bos) ?? "",
      eosPiece: piece(eos) ?? "",
      padPiece: piece(pad) ?? "",
    },
    normalizerSpec: { name: "identity", addDummyPrefix: addPrefixSpace, removeExtraWhitespaces: false, hasPrecompiledCharsmap: false },
  };
  const settings: TokenizerSettings = {
    raw: {},
    tokenizerClass: "LlamaTokenizer",
    bosToken: piece(bos),
    eosToken: piece(eos),
    unkToken: tokens[unk],
    padToken: piece(pad),
    additionalSpecialTokens: [],
    addBosToken: file.bool(TOKENIZER_KEY.addBos, true),
    addEosToken: file.bool(TOKENIZER_KEY.addEos, false),
    // llama.cpp's SPM tokenizer prefixes a space to every text fragment, as the legacy LLaMA tokenizer does
    legacy: true,
    addPrefixSpace,
    cleanUpTokenizationSpaces: false,
    addedTokensDecoder: [],
  };
  return { model, settings };
}

export function loadGgufTokenizer(file: GgufFile): LlavaTokenizer {
  const { model, settings } = ggufSentencePiece(file);
  return LlavaTokenizer.fromJson(convertLlamaSentencePiece(model, settings, file.source), settings, file.source);
}
