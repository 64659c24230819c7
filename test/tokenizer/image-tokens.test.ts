/** tokenizer_image_token (original LLaVA) and the HF processor's <image> expansion. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { CASES, MODELS } from "../helpers/paths.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { convertLlamaSentencePiece } from "../../src/tokenizer/llama-converter.js";
import { parseSentencePieceModel } from "../../src/tokenizer/sentencepiece-model.js";
import { readTokenizerSettings } from "../../src/tokenizer/tokenizer-config.js";
import { expandImageTokens, tokenizerImageToken, IMAGE_TOKEN_INDEX } from "../../src/tokenizer/image-tokens.js";
import { LlavaError } from "../../src/util/errors.js";
import { readInt64Npy } from "./npy-int64.js";

const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const orig = LlavaTokenizer.load(ORIG);
const hf = LlavaTokenizer.load(path.join(MODELS, "tiny-llava-1.5-mha"));

test("chunks are tokenized separately: the text after <image> gets its own prefix space", () => {
  // "USER: " ends in its own "▁" (29871); "\nWhat" starts with "▁" then <0x0A> (13).
  assert.deepEqual(tokenizerImageToken(orig, "USER: <image>\nWhat"), [1, 3148, 1001, 29901, 29871, IMAGE_TOKEN_INDEX, 29871, 13, 5618]);
  // Tokenizing the whole prompt at once would not give that.
  assert.notDeepEqual(orig.encode("USER: \nWhat"), [1, 3148, 1001, 29901, 29871, 29871, 13, 5618]);
});

test("a prompt without <image> is plain encode; one starting or ending with <image> keeps a single BOS", () => {
  assert.deepEqual(tokenizerImageToken(orig, "Tell me a joke."), orig.encode("Tell me a joke."));
  assert.deepEqual(tokenizerImageToken(orig, "<image>\nWhat"), [1, IMAGE_TOKEN_INDEX, ...orig.encode("\nWhat").slice(1)]);
  assert.deepEqual(tokenizerImageToken(orig, "Look: <image>"), [...orig.encode("Look: "), IMAGE_TOKEN_INDEX]);
  assert.deepEqual(tokenizerImageToken(orig, "<image><image>x"), [1, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX, ...orig.encode("x").slice(1)]);
  assert.deepEqual(tokenizerImageToken(orig, ""), [1]);
  assert.deepEqual(tokenizerImageToken(orig, "<image>"), [1, IMAGE_TOKEN_INDEX]);
});

test("a custom image index and an HF tokenizer give the same layout", () => {
  const prompt = fs.readFileSync(path.join(CASES, "tiny-llava-1.5-orig", "gradient", "prompt.txt"), "utf8");
  const reference = readInt64Npy(path.join(CASES, "tiny-llava-1.5-orig", "gradient", "input_ids.npy"));
  // Same LLaMA vocabulary: the HF tokenizer's chunk-wise ids equal the original ones.
  assert.deepEqual(tokenizerImageToken(hf, prompt), reference);
  assert.deepEqual(tokenizerImageToken(orig, prompt, 32000), reference.map((id) => (id === IMAGE_TOKEN_INDEX ? 32000 : id)));
});

test("without BOS (add_bos_token false) the chunks are joined whole", () => {
  const spmFile = path.join(ORIG, "tokenizer.model");
  const settings = { ...readTokenizerSettings(ORIG), addBosToken: false };
  const noBos = LlavaTokenizer.fromJson(convertLlamaSentencePiece(parseSentencePieceModel(fs.readFileSync(spmFile), spmFile), settings, spmFile), settings);
  assert.deepEqual(noBos.encode("Hi"), [6324]);
  assert.deepEqual(tokenizerImageToken(noBos, "Hi <image>\nThere"), [...noBos.encode("Hi "), IMAGE_TOKEN_INDEX, ...noBos.encode("\nThere")]);
  assert.deepEqual(tokenizerImageToken(noBos, "<image>x"), [IMAGE_TOKEN_INDEX, ...noBos.encode("x")]);
});

test("expandImageTokens repeats the k-th image token featuresPerImage[k] times", () => {
  assert.deepEqual(expandImageTokens([1, 5, 32000, 6, 32000, 7], 32000, [2, 3]), [1, 5, 32000, 32000, 6, 32000, 32000, 32000, 7]);
  assert.deepEqual(expandImageTokens([1, 32000], 32000, [0]), [1]);
  assert.deepEqual(expandImageTokens([1, 2, 3], 32000, []), [1, 2, 3]);
  assert.deepEqual(expandImageTokens([1, -200, 2], -200, [2]), [1, -200, -200, 2]);
  const ids = hf.encode("USER: <image>\nWhat is shown? ASSISTANT:");
  const expanded = expandImageTokens(ids, 32000, [576]);
  assert.equal(expanded.length, ids.length + 575);
  assert.equal(expanded.filter((id) => id === 32000).length, 576);
});

test("expandImageTokens: a mismatch between image tokens and images is a clear error", () => {
  const isMismatch = (e: unknown) => e instanceof LlavaError && /2 image token\(s\) \(id 32000\) but 1 image\(s\)/.test(e.message);
  assert.throws(() => expandImageTokens([32000, 1, 32000], 32000, [16]), isMismatch);
  assert.throws(() => expandImageTokens([1, 2], 32000, [16]), (e: unknown) => e instanceof LlavaError && /0 image token/.test(e.message));
  assert.throws(() => expandImageTokens([32000], 32000, [-1]), LlavaError);
  assert.throws(() => expandImageTokens([32000], 32000, [1.5]), LlavaError);
});
