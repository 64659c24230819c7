/**
 * The text tokenizer of a LLaVA checkpoint: Hugging Face `tokenizer.json` when present, otherwise
 * the SentencePiece `tokenizer.model` converted in memory the way transformers does.
 * Encoding runs on @huggingface/tokenizers; decoding follows the Rust `tokenizers` semantics
 * that transformers' fast tokenizers use (see `decode`).
 */
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { LlavaError } from "../util/errors.js";
import { convertLlamaSentencePiece, llamaPostProcessor, type TokenizerJson } from "./llama-converter.js";
import { parseSentencePieceModel } from "./sentencepiece-model.js";
import {
  isLlamaTokenizerClass,
  readJsonFile,
  readTokenizerSettings,
  type AddedTokenSpec,
  type TokenizerSettings,
} from "./tokenizer-config.js";

export interface LoadTokenizerOptions {
  /**
   * Which file to build the tokenizer from. "auto" (default) prefers tokenizer.json, as
   * transformers' fast tokenizer does, and falls back to tokenizer.model.
   */
  source?: "auto" | "tokenizer.json" | "tokenizer.model";
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
  /** Defaults to the checkpoint's `clean_up_tokenization_spaces`. */
  cleanUpTokenizationSpaces?: boolean;
}

const BYTE_TOKEN = /^<0x[0-9A-Fa-f]{2}>$/;
const REPLACEMENT_CHAR = "\uFFFD";

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Does this decoder config (possibly a Sequence) contain a ByteFallback step? */
function usesByteFallback(decoder: unknown): boolean {
  if (!isRecord(decoder)) return false;
  if (decoder["type"] === "ByteFallback") return true;
  const inner = decoder["decoders"];
  return Array.isArray(inner) && inner.some(usesByteFallback);
}

/** transformers' `clean_up_tokenization`. */
function cleanUpTokenization(text: string): string {
  return text
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

function validateTokenizerJson(json: unknown, file: string): TokenizerJson {
  if (!isRecord(json) || !isRecord(json["model"])) {
    throw new LlavaError(`${file}: not a tokenizer.json (missing the "model" object)`);
  }
  const added = json["added_tokens"] ?? [];
  if (!Array.isArray(added) || !added.every((t) => isRecord(t) && Number.isInteger(t["id"]) && typeof t["content"] === "string")) {
    throw new LlavaError(`${file}: "added_tokens" must be a list of {id, content} objects`);
  }
  // The runtime requires these keys to exist (null is allowed).
  const doc: Record<string, unknown> = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...json };
  doc["added_tokens"] = added;
  return doc as TokenizerJson;
}

export class LlavaTokenizer {
  private readonly specialIds: Set<number>;
  private readonly byteFallback: boolean;

  private constructor(
    private readonly inner: Tokenizer,
    private readonly settings: TokenizerSettings,
    addedTokens: readonly AddedTokenSpec[],
    decoderConfig: unknown,
    /** Where the tokenizer came from, for messages. */
    readonly source: string,
  ) {
    this.byteFallback = usesByteFallback(decoderConfig);
    // Rust `decode(skip_special_tokens)` drops the added tokens marked special; transformers also
    // registers its configured special tokens as such.
    this.specialIds = new Set(addedTokens.filter((t) => t.special).map((t) => t.id));
    const named = [settings.bosToken, settings.eosToken, settings.unkToken, settings.padToken, ...settings.additionalSpecialTokens];
    for (const token of named) {
      const id = token === undefined ? undefined : this.tokenToId(token);
      if (id !== undefined) this.specialIds.add(id);
    }
    if (this.eosTokenIdOrUndefined() === undefined) {
      throw new LlavaError(`${source}: no usable eos_token (set "eos_token" in tokenizer_config.json or special_tokens_map.json)`);
    }
  }

  /** Loads the tokenizer of the checkpoint directory `dir`. */
  static load(dir: string, opts: LoadTokenizerOptions = {}): LlavaTokenizer {
    const source = opts.source ?? "auto";
    let stat: fs.Stats;
    try {
      stat = fs.statSync(dir);
    } catch {
      throw new LlavaError(`tokenizer directory not found: ${dir}`);
    }
    if (!stat.isDirectory()) throw new LlavaError(`tokenizer path is not a directory: ${dir}`);

    const settings = readTokenizerSettings(dir);
    const jsonFile = path.join(dir, "tokenizer.json");
    const spmFile = path.join(dir, "tokenizer.model");
    const useJson = source === "tokenizer.json" || (source === "auto" && fs.existsSync(jsonFile));
    const useSpm = source === "tokenizer.model" || (source === "auto" && !useJson && fs.existsSync(spmFile));

    let json: TokenizerJson;
    let file: string;
    if (useJson) {
      file = jsonFile;
      json = validateTokenizerJson(readJsonFile(jsonFile), jsonFile);
      if (isLlamaTokenizerClass(settings)) {
        // LlamaTokenizerFast always rebuilds its post-processor from add_bos_token/add_eos_token.
        const vocab = json.model["vocab"];
        const lookup = (token: string) =>
          json.added_tokens.find((t) => t.content === token)?.id ??
          (isRecord(vocab) && typeof vocab[token] === "number" ? (vocab[token] as number) : undefined);
        json.post_processor = llamaPostProcessor(settings, lookup, jsonFile);
      }
    } else if (useSpm) {
      file = spmFile;
      let bytes: Uint8Array;
      try {
        bytes = fs.readFileSync(spmFile);
      } catch (e) {
        throw new LlavaError(`cannot read ${spmFile}: ${(e as Error).message}`);
      }
      json = convertLlamaSentencePiece(parseSentencePieceModel(bytes, spmFile), settings, spmFile);
    } else {
      throw new LlavaError(`no tokenizer in ${dir}: expected tokenizer.json or tokenizer.model`);
    }
    return LlavaTokenizer.fromJson(json, settings, file);
  }

  /** Builds a tokenizer from an in-memory tokenizer.json document and resolved settings. */
  static fromJson(json: TokenizerJson, settings: TokenizerSettings, source = "tokenizer.json"): LlavaTokenizer {
    let inner: Tokenizer;
    try {
      inner = new Tokenizer(json, settings.raw);
    } catch (e) {
      throw new LlavaError(`${source}: unsupported or corrupt tokenizer (${(e as Error).message})`);
    }
    return new LlavaTokenizer(inner, settings, json.added_tokens, json["decoder"], source);
  }

  /** Token ids of `text`; like calling the HF tokenizer, special tokens (LLaMA: BOS) are added by default. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.inner.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /** The token strings of `text` (no special tokens added), for inspection. */
  tokenize(text: string): string[] {
    return this.inner.tokenize(text, { add_special_tokens: false });
  }

  /**
   * Text of `ids`, as transformers' fast tokenizer decodes: ids outside the vocabulary (such as
   * the -200 image sentinel) are dropped, special tokens are dropped when asked, the decoder chain
   * runs over the rest, and a run of byte tokens that is not valid UTF-8 becomes one U+FFFD per
   * byte (Rust's ByteFallback; the JS runtime would collapse it differently).
   */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    const skip = opts.skipSpecialTokens ?? false;
    const tokens: string[] = [];
    for (const id of ids) {
      if (skip && this.specialIds.has(id)) continue;
      const token = this.idToToken(id);
      if (token !== undefined) tokens.push(token);
    }
    if (this.byteFallback) this.replaceInvalidByteRuns(tokens);
    const decoder = this.inner.decoder;
    let text = decoder ? decoder.decode(tokens) : tokens.join(" ");
    if (opts.cleanUpTokenizationSpaces ?? this.settings.cleanUpTokenizationSpaces) text = cleanUpTokenization(text);
    return text;
  }

  private replaceInvalidByteRuns(tokens: string[]): void {
    const strict = new TextDecoder("utf-8", { fatal: true });
    let start = 0;
    while (start < tokens.length) {
      if (!BYTE_TOKEN.test(tokens[start]!)) {
        start++;
        continue;
      }
      let end = start;
      while (end < tokens.length && BYTE_TOKEN.test(tokens[end]!)) end++;
      const bytes = Uint8Array.from(tokens.slice(start, end), (t) => parseInt(t.slice(3, 5), 16));
      try {
        strict.decode(bytes);
      } catch {
        tokens.fill(REPLACEMENT_CHAR, start, end);
      }
      start = end;
    }
  }

  tokenToId(token: string): number | undefined {
    return this.inner.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    if (!Number.isInteger(id) || id < 0) return undefined;
    return this.inner.id_to_token(id);
  }

  /** True for SentencePiece byte-fallback tokens such as `<0x0A>`. */
  isByteToken(id: number): boolean {
    const token = this.idToToken(id);
    return this.byteFallback && token !== undefined && BYTE_TOKEN.test(token);
  }

  /** True for ids that `decode(..., { skipSpecialTokens: true })` drops. */
  isSpecialId(id: number): boolean {
    return this.specialIds.has(id);
  }

  private idOf(token: string | undefined): number | undefined {
    return token === undefined ? undefined : this.tokenToId(token);
  }

  private eosTokenIdOrUndefined(): number | undefined {
    return this.idOf(this.settings.eosToken);
  }

  /** LlamaTokenizer's `legacy` flag (the training masks count tokens differently without it). */
  get legacy(): boolean {
    return this.settings.legacy;
  }

  get bosTokenId(): number | undefined {
    return this.idOf(this.settings.bosToken);
  }

  get eosTokenId(): number {
    return this.eosTokenIdOrUndefined()!;
  }

  get eosToken(): string {
    return this.settings.eosToken!;
  }

  /** Undefined when the checkpoint sets no pad token (original LLaVA: training uses unk as pad). */
  get padTokenId(): number | undefined {
    return this.idOf(this.settings.padToken);
  }

  get unkTokenId(): number | undefined {
    return this.idOf(this.settings.unkToken);
  }

  /** Number of distinct tokens including added tokens, like `len(tokenizer)`. */
  get vocabSize(): number {
    let n = 0;
    for (const token of this.inner.get_vocab(true).keys()) if (token !== undefined) n++;
    return n;
  }
}
