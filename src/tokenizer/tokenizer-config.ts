/**
 * Reads the Hugging Face tokenizer side files of a checkpoint: `tokenizer_config.json` and
 * `special_tokens_map.json`, and resolves the settings that change tokenisation.
 */
import fs from "node:fs";
import path from "node:path";
import { LlavaError } from "../util/errors.js";

/** One entry of `added_tokens_decoder` (or of tokenizer.json's `added_tokens`). */
export interface AddedTokenSpec {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

export interface TokenizerSettings {
  /** tokenizer_config.json with special_tokens_map.json merged over it (transformers' precedence). */
  raw: Record<string, unknown>;
  tokenizerClass: string | undefined;
  /** Special token strings; LlamaTokenizer's defaults (<s>, </s>, <unk>, no pad) when not configured. */
  bosToken: string | undefined;
  eosToken: string | undefined;
  unkToken: string | undefined;
  padToken: string | undefined;
  additionalSpecialTokens: string[];
  /** LlamaTokenizer defaults: BOS yes, EOS no. */
  addBosToken: boolean;
  addEosToken: boolean;
  /** LlamaTokenizer's `legacy` (missing means true, with a warning in transformers). */
  legacy: boolean;
  addPrefixSpace: boolean;
  /** transformers 4.37 (LLaVA's pin) defaults this to true when the file does not say. */
  cleanUpTokenizationSpaces: boolean;
  addedTokensDecoder: AddedTokenSpec[];
}

/** Reads and parses a JSON file, with errors that name the file. */
export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new LlavaError(`cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new LlavaError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Special tokens are stored as a plain string or as an AddedToken dict `{content, ...}`. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isRecord(v) && typeof v["content"] === "string") return v["content"];
  return undefined;
}

function bool(v: unknown, fallback: boolean): boolean {
  return typeof v === "boolean" ? v : fallback;
}

function parseAddedTokensDecoder(v: unknown, file: string): AddedTokenSpec[] {
  if (v === undefined || v === null) return [];
  if (!isRecord(v)) throw new LlavaError(`${file}: "added_tokens_decoder" must be an object`);
  const out: AddedTokenSpec[] = [];
  for (const [key, entry] of Object.entries(v)) {
    const id = Number(key);
    const content = tokenContent(entry);
    if (!Number.isInteger(id) || id < 0 || content === undefined || !isRecord(entry)) {
      throw new LlavaError(`${file}: bad "added_tokens_decoder" entry ${JSON.stringify(key)}`);
    }
    out.push({
      id,
      content,
      single_word: bool(entry["single_word"], false),
      lstrip: bool(entry["lstrip"], false),
      rstrip: bool(entry["rstrip"], false),
      normalized: bool(entry["normalized"], false),
      special: bool(entry["special"], false),
    });
  }
  return out.sort((a, b) => a.id - b.id);
}

/** Loads tokenizer_config.json and special_tokens_map.json from `dir`; both are optional. */
export function readTokenizerSettings(dir: string): TokenizerSettings {
  const configFile = path.join(dir, "tokenizer_config.json");
  const mapFile = path.join(dir, "special_tokens_map.json");
  const config = fs.existsSync(configFile) ? readJsonFile(configFile) : {};
  const map = fs.existsSync(mapFile) ? readJsonFile(mapFile) : {};
  if (!isRecord(config)) throw new LlavaError(`${configFile}: expected a JSON object`);
  if (!isRecord(map)) throw new LlavaError(`${mapFile}: expected a JSON object`);

  // transformers lets special_tokens_map.json override the same keys of tokenizer_config.json.
  const raw: Record<string, unknown> = { ...config };
  for (const [key, value] of Object.entries(map)) raw[key] = value;

  const additional = raw["additional_special_tokens"];
  const additionalSpecialTokens = Array.isArray(additional)
    ? additional.map(tokenContent).filter((t): t is string => t !== undefined)
    : [];

  // A key that is absent takes LlamaTokenizer's default; an explicit null means "none".
  const special = (key: string, fallback: string | undefined) => (key in raw ? tokenContent(raw[key]) : fallback);

  return {
    raw,
    tokenizerClass: typeof raw["tokenizer_class"] === "string" ? raw["tokenizer_class"] : undefined,
    bosToken: special("bos_token", "<s>"),
    eosToken: special("eos_token", "</s>"),
    unkToken: special("unk_token", "<unk>"),
    padToken: special("pad_token", undefined),
    additionalSpecialTokens,
    addBosToken: bool(raw["add_bos_token"], true),
    addEosToken: bool(raw["add_eos_token"], false),
    legacy: bool(raw["legacy"], true),
    addPrefixSpace: bool(raw["add_prefix_space"], true),
    cleanUpTokenizationSpaces: bool(raw["clean_up_tokenization_spaces"], true),
    addedTokensDecoder: parseAddedTokensDecoder(config["added_tokens_decoder"], configFile),
  };
}

/** True for the tokenizer classes whose fast version rebuilds its post-processor from the config. */
export function isLlamaTokenizerClass(settings: TokenizerSettings): boolean {
  const cls = settings.tokenizerClass;
  return cls === "LlamaTokenizer" || cls === "LlamaTokenizerFast";
}
