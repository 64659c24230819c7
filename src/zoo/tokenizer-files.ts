/**
 * The tokenizer side of a conversion. HF llava checkpoints add `<image>` (at the old vocabulary
 * size, 32000 for LLaMA) and `<pad>` (next id) as special, not-normalized added tokens, in
 * tokenizer.json and in tokenizer_config.json, as transformers' convert_llava_weights_to_hf.py
 * does with `add_tokens(AddedToken("<image>", special=True, normalized=False))` and
 * `add_special_tokens({"pad_token": "<pad>"})`; the original format has neither.
 */
import { IMAGE_TOKEN } from "../llava/spec.js";
import fs from "node:fs";
import path from "node:path";
import { isFile, readJsonFile } from "../io/files.js";
import { convertLlamaSentencePiece } from "../tokenizer/llama-converter.js";
import { parseSentencePieceModel } from "../tokenizer/sentencepiece-model.js";
import { readTokenizerSettings } from "../tokenizer/tokenizer-config.js";
import { LlavaError } from "../util/errors.js";
import { copyFile } from "./common.js";

type Json = Record<string, unknown>;

export const PAD_TOKEN = "<pad>";

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function readObject(file: string, what: string): Json | null {
  if (!isFile(file)) return null;
  const json = readJsonFile(file, what);
  if (!isObject(json)) throw new LlavaError(`${what} ${file}: expected a JSON object`);
  return json;
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + "\n");
}

/** Content of a special-token setting: a string or an AddedToken dict. */
const tokenContent = (v: unknown) => (typeof v === "string" ? v : isObject(v) && typeof v.content === "string" ? v.content : undefined);

interface TokenizerFiles {
  dir: string;
  json: Json | null;
  config: Json | null;
  specialMap: Json | null;
  hasSentencePiece: boolean;
}

function readTokenizerFiles(dir: string): TokenizerFiles {
  const files = {
    dir,
    json: readObject(path.join(dir, "tokenizer.json"), "tokenizer"),
    config: readObject(path.join(dir, "tokenizer_config.json"), "tokenizer config"),
    specialMap: readObject(path.join(dir, "special_tokens_map.json"), "special tokens map"),
    hasSentencePiece: isFile(path.join(dir, "tokenizer.model")),
  };
  if (!files.json && !files.hasSentencePiece) throw new LlavaError(`${dir}: no tokenizer (tokenizer.json or tokenizer.model)`);
  return files;
}

/** tokenizer.json as a fast tokenizer would save it, converted from tokenizer.model when absent. */
function tokenizerJsonOf(files: TokenizerFiles): Json {
  if (files.json) return structuredClone(files.json);
  const file = path.join(files.dir, "tokenizer.model");
  const converted = convertLlamaSentencePiece(parseSentencePieceModel(fs.readFileSync(file), file), readTokenizerSettings(files.dir), file);
  return structuredClone(converted) as Json;
}

function addedTokensOf(json: Json, file: string): Array<Json & { id: number; content: string }> {
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added) || !added.every((t) => isObject(t) && Number.isInteger(t.id) && typeof t.content === "string")) {
    throw new LlavaError(`${file}: "added_tokens" must be a list of {id, content} objects`);
  }
  return added as Array<Json & { id: number; content: string }>;
}

/** Number of ids the tokenizer uses: one past its largest id. */
function tokenizerLength(json: Json, file: string): number {
  const model = isObject(json.model) ? json.model : {};
  const vocab = model.vocab;
  let max = -1;
  if (isObject(vocab)) {
    for (const id of Object.values(vocab)) if (typeof id === "number") max = Math.max(max, id);
  } else if (Array.isArray(vocab)) {
    max = vocab.length - 1; // unigram vocabularies are [piece, score] lists
  }
  for (const t of addedTokensOf(json, file)) max = Math.max(max, t.id);
  return max + 1;
}

const addedToken = (id: number, content: string) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
});

/**
 * Writes the tokenizer files of `srcDir` into `outDir` with `<image>` = `imageId` and `<pad>` =
 * `imageId + 1` added. The tokenizer must use exactly ids 0..imageId-1, so the new ids are the
 * new embedding rows. Returns the ids.
 */
export function writeTokenizerWithImageToken(srcDir: string, outDir: string, imageId: number, processorClass: string): { image: number; pad: number } {
  const files = readTokenizerFiles(srcDir);
  const where = path.join(srcDir, files.json ? "tokenizer.json" : "tokenizer.model");
  const json = tokenizerJsonOf(files);
  const length = tokenizerLength(json, where);
  if (length !== imageId) {
    throw new LlavaError(`${where}: the tokenizer has ${length} tokens but the embeddings have ${imageId} rows; they must agree to place ${IMAGE_TOKEN}`);
  }
  const added = addedTokensOf(json, where);
  for (const t of added) {
    if (t.content === IMAGE_TOKEN || t.content === PAD_TOKEN) throw new LlavaError(`${where}: already has an added token "${t.content}"; is this folder converted already?`);
  }
  const image = imageId;
  const pad = imageId + 1;
  json.added_tokens = [...added, addedToken(image, IMAGE_TOKEN), addedToken(pad, PAD_TOKEN)];
  writeJson(path.join(outDir, "tokenizer.json"), json);

  const config = structuredClone(files.config ?? {});
  const decoder = isObject(config.added_tokens_decoder) ? config.added_tokens_decoder : {};
  for (const [id, content] of [[image, IMAGE_TOKEN], [pad, PAD_TOKEN]] as const) {
    const { id: _, ...entry } = addedToken(id, content);
    decoder[String(id)] = entry;
  }
  config.added_tokens_decoder = decoder;
  config.pad_token = PAD_TOKEN;
  config.processor_class = processorClass;
  config.extra_special_tokens = { ...(isObject(config.extra_special_tokens) ? config.extra_special_tokens : {}), image_token: IMAGE_TOKEN };
  writeJson(path.join(outDir, "tokenizer_config.json"), config);

  const map = structuredClone(files.specialMap ?? {});
  map.pad_token = PAD_TOKEN;
  map.image_token = IMAGE_TOKEN;
  writeJson(path.join(outDir, "special_tokens_map.json"), map);
  if (files.hasSentencePiece) copyFile(path.join(srcDir, "tokenizer.model"), path.join(outDir, "tokenizer.model"));
  const slowAdded = readObject(path.join(srcDir, "added_tokens.json"), "added tokens");
  if (slowAdded) writeJson(path.join(outDir, "added_tokens.json"), { ...slowAdded, [IMAGE_TOKEN]: image, [PAD_TOKEN]: pad });
  return { image, pad };
}

/**
 * Writes the tokenizer files of an HF checkpoint into `outDir` without the tokens at ids
 * >= `vocabSize` (which must be only `<image>` and `<pad>`); a `<pad>` pad token becomes
 * `<unk>`, what LLaVA's training sets for LLaMA tokenizers.
 */
export function writeTokenizerWithoutImageToken(srcDir: string, outDir: string, vocabSize: number): void {
  const files = readTokenizerFiles(srcDir);
  const removed = new Set([IMAGE_TOKEN, PAD_TOKEN]);
  const checkRemovable = (id: number, content: string, where: string) => {
    if (id >= vocabSize && !removed.has(content)) {
      throw new LlavaError(`${where}: token "${content}" (id ${id}) lies beyond the original vocabulary of ${vocabSize} and is not <image> or <pad>; the original format cannot hold it`);
    }
  };
  if (files.json) {
    const file = path.join(srcDir, "tokenizer.json");
    const json = structuredClone(files.json);
    const added = addedTokensOf(json, file);
    for (const t of added) checkRemovable(t.id, t.content, file);
    json.added_tokens = added.filter((t) => t.id < vocabSize);
    if (tokenizerLength(json, file) > vocabSize) throw new LlavaError(`${file}: the vocabulary has ids at or beyond ${vocabSize}, the original vocabulary size`);
    writeJson(path.join(outDir, "tokenizer.json"), json);
  }
  const pad = (v: unknown) => (tokenContent(v) === PAD_TOKEN ? "<unk>" : v);
  const withoutImage = (json: Json) => {
    if ("pad_token" in json) json.pad_token = pad(json.pad_token);
    delete json.image_token;
    if (Array.isArray(json.additional_special_tokens)) {
      json.additional_special_tokens = json.additional_special_tokens.filter((t) => !removed.has(tokenContent(t) ?? ""));
    }
  };
  if (files.config) {
    const file = path.join(srcDir, "tokenizer_config.json");
    const config = structuredClone(files.config);
    if (isObject(config.added_tokens_decoder)) {
      for (const [id, entry] of Object.entries(config.added_tokens_decoder)) {
        checkRemovable(Number(id), tokenContent(entry) ?? "", file);
        if (Number(id) >= vocabSize) delete config.added_tokens_decoder[id];
      }
    }
    withoutImage(config);
    delete config.processor_class;
    if (isObject(config.extra_special_tokens)) {
      delete config.extra_special_tokens.image_token;
      if (Object.keys(config.extra_special_tokens).length === 0) delete config.extra_special_tokens;
    }
    writeJson(path.join(outDir, "tokenizer_config.json"), config);
  }
  if (files.specialMap) {
    const map = structuredClone(files.specialMap);
    withoutImage(map);
    writeJson(path.join(outDir, "special_tokens_map.json"), map);
  }
  if (files.hasSentencePiece) copyFile(path.join(srcDir, "tokenizer.model"), path.join(outDir, "tokenizer.model"));
  const slowAdded = readObject(path.join(srcDir, "added_tokens.json"), "added tokens");
  if (slowAdded) {
    const kept = Object.fromEntries(Object.entries(slowAdded).filter(([content, id]) => {
      checkRemovable(Number(id), content, path.join(srcDir, "added_tokens.json"));
      return Number(id) < vocabSize;
    }));
    if (Object.keys(kept).length) writeJson(path.join(outDir, "added_tokens.json"), kept);
  }
}

/** Copies the tokenizer files of `srcDir` unchanged. */
export function copyTokenizerFiles(srcDir: string, outDir: string): void {
  for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "added_tokens.json"]) {
    if (isFile(path.join(srcDir, f))) copyFile(path.join(srcDir, f), path.join(outDir, f));
  }
}
