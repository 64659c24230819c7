/**
 * The in-memory conversion of a SentencePiece tokenizer.model must be the tokenizer.json that
 * transformers ships for it: same vocabulary, merges, added tokens and pipeline, and the same ids on
 * a varied corpus. The fixture tiny-llava-1.5-orig carries both files, so the comparison is direct.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { MODELS } from "../helpers/paths.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { convertLlamaSentencePiece, mergesFromScores } from "../../src/tokenizer/llama-converter.js";
import { parseSentencePieceModel, PieceType, ModelType } from "../../src/tokenizer/sentencepiece-model.js";
import { readTokenizerSettings } from "../../src/tokenizer/tokenizer-config.js";
import { LlavaError } from "../../src/util/errors.js";

const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const modelFile = path.join(ORIG, "tokenizer.model");
const shipped = JSON.parse(fs.readFileSync(path.join(ORIG, "tokenizer.json"), "utf8")) as Record<string, any>;
const spm = parseSentencePieceModel(fs.readFileSync(modelFile), modelFile);
const settings = readTokenizerSettings(ORIG);
const converted = convertLlamaSentencePiece(spm, settings, modelFile) as Record<string, any>;

const fromJson = LlavaTokenizer.load(ORIG, { source: "tokenizer.json" });
const fromModel = LlavaTokenizer.load(ORIG, { source: "tokenizer.model" });

test("protobuf reader: LLaMA-2 vocabulary, types and trainer spec", () => {
  assert.equal(spm.pieces.length, 32000);
  assert.deepEqual(spm.pieces.slice(0, 4), [
    { piece: "<unk>", score: 0, type: PieceType.UNKNOWN },
    { piece: "<s>", score: 0, type: PieceType.CONTROL },
    { piece: "</s>", score: 0, type: PieceType.CONTROL },
    { piece: "<0x00>", score: 0, type: PieceType.BYTE },
  ]);
  assert.deepEqual(spm.pieces[260], { piece: "\u2581t", score: -1, type: PieceType.NORMAL });
  // A piece that is only a byte-order mark must survive UTF-8 decoding.
  assert.ok(spm.pieces.some((p) => p.piece === "\uFEFF"));
  assert.equal(spm.trainerSpec.modelType, ModelType.BPE);
  assert.equal(spm.trainerSpec.byteFallback, true);
  assert.equal(spm.trainerSpec.unkPiece, "<unk>");
  assert.equal(spm.trainerSpec.padId, -1);
  assert.equal(spm.normalizerSpec.addDummyPrefix, true);
  assert.equal(spm.normalizerSpec.removeExtraWhitespaces, false);
});

test("converted vocabulary equals the shipped tokenizer.json", () => {
  assert.deepEqual({ ...converted.model.vocab }, shipped.model.vocab);
});

test("converted merges equal the shipped tokenizer.json, in order", () => {
  const shippedMerges = (shipped.model.merges as (string | string[])[]).map((m) => (typeof m === "string" ? m.split(" ") : m));
  assert.equal(converted.model.merges.length, shippedMerges.length);
  assert.deepEqual(converted.model.merges, shippedMerges);
});

test("converted pipeline (added tokens, normalizer, decoder, post-processor, model flags) equals the shipped one", () => {
  assert.deepEqual(converted.added_tokens, shipped.added_tokens);
  assert.deepEqual(converted.normalizer, shipped.normalizer);
  assert.deepEqual(converted.pre_tokenizer, shipped.pre_tokenizer);
  assert.deepEqual(converted.decoder, shipped.decoder);
  assert.deepEqual(converted.post_processor, shipped.post_processor);
  for (const key of ["type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges"]) {
    assert.deepEqual(converted.model[key], shipped.model[key], `model.${key}`);
  }
});

test("merges come from scores: highest score first, code-point splits, score-0 pieces skipped", () => {
  const merges = mergesFromScores([
    { piece: "a", score: 0 },
    { piece: "b", score: 0 },
    { piece: "ab", score: -1 },
    { piece: "abb", score: -2 },
    { piece: "\u{1F600}", score: 0 },
    { piece: "a\u{1F600}", score: -0.5 },
    { piece: "bb", score: -3 },
    { piece: "ba", score: 0 },
  ]);
  assert.deepEqual(merges, [
    ["a", "\u{1F600}"],
    ["a", "b"],
    // both splits of "abb", ordered by the ids of their halves
    ["a", "bb"],
    ["ab", "b"],
    ["b", "b"],
  ]);
});

const CORPUS = [
  "",
  " ",
  "  ",
  "\n",
  "Hello",
  " Hello",
  "  Hello  ",
  "Hello world",
  "Hello  world   with    many     spaces      and tabs\tand\t\ttabs",
  "A chat between a curious human and an artificial intelligence assistant. USER: <image>\nWhat is shown? ASSISTANT:",
  "USER: What is 1234567 + 89.5? ASSISTANT: 1234656.5, roughly; or (1e3 * 2) - 7 = 1993!",
  "Punctuation: ... --- !!! ??? ;;; ::: \"quotes\" 'single' `back` (parens) [brackets] {braces} <angle> @#$%^&*_+=|\\/~",
  "Line one\nLine two\n\nLine four\r\nWindows line\rCR only\n\n\n",
  "   leading spaces and trailing spaces   ",
  "\n\nleading newlines",
  "Unicode: café naïve résumé Ångström façade coöperate",
  "Русский текст: Привет, мир! Ελληνικά: Καλημέρα. עברית: שלום. العربية: مرحبا.",
  "中文：你好，世界！这是一个测试。日本語：こんにちは、世界。한국어: 안녕하세요",
  "Emoji: 😀 😃 👍🏽 🇺🇸 👨‍👩‍👧‍👦 ❤️ 🤖",
  "Rare characters that need byte fallback: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀 \u{10FFFD} \uE000 ꙮ ᚠᚢᚦ ⟁ ☃",
  "Combining marks: e\u0301 a\u0308 n\u0303 and zero width: a\u200Bb\u200Dc\uFEFFd",
  "Control chars: \u0001\u0002\u001f and DEL \u007f",
  "The end of a turn</s>USER: next turn</s>",
  "<s>Starts with BOS",
  "Text <s> in the middle and </s> and <unk> literal",
  "</s></s><s><s>",
  "Almost special: <s </s <unk <s>> </s >",
  "Underscore piece ▁ literal ▁▁ and ▁word",
  "Code: def f(x):\n    return x ** 2  # square\n\tif x > 0: print(f'{x}')",
  "URL https://example.com/path?query=1&b=2#frag and email a.b@c.de",
  "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 -42 1,000,000 12:30 2024-01-31",
  "Mixed scripts: English中文Русский日本語😀123",
  "A long word: pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
  "A".repeat(300),
  " ".repeat(40) + "x" + "\n".repeat(10),
];

/** Deterministic pseudo-random strings mixing the hard cases. */
function fuzzCorpus(count: number): string[] {
  let seed = 0x2545f491;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const pool = [
    " ", "  ", "\n", "\t", "a", "the", "ing", "▁", "Hello", ".", ",", "!", "?", "0", "42", "é", "ß", "你", "好", "世界",
    "😀", "👍🏽", "𝔘", "\u{10FFFD}", "</s>", "<s>", "<unk>", "<", ">", "/", "s", "ы", "к", "\u0301", "\u200B", "ab", "ABC",
  ];
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(next() * 24);
    let s = "";
    for (let j = 0; j < len; j++) s += pool[Math.floor(next() * pool.length)];
    out.push(s);
  }
  return out;
}

test("ids from the converted tokenizer.model equal ids from tokenizer.json on a varied corpus", () => {
  for (const text of [...CORPUS, ...fuzzCorpus(400)]) {
    for (const addSpecialTokens of [true, false]) {
      assert.deepEqual(fromModel.encode(text, { addSpecialTokens }), fromJson.encode(text, { addSpecialTokens }), JSON.stringify(text));
    }
  }
});

test("decoding agrees between the two sources and round-trips text", () => {
  for (const text of [...CORPUS, ...fuzzCorpus(100)]) {
    const ids = fromJson.encode(text);
    assert.equal(fromModel.decode(ids), fromJson.decode(ids));
    assert.equal(fromModel.decode(ids, { skipSpecialTokens: true }), fromJson.decode(ids, { skipSpecialTokens: true }));
  }
});

test("byte fallback: characters outside the vocabulary become UTF-8 byte tokens", () => {
  const ids = fromModel.encode("𝔘", { addSpecialTokens: false });
  // ▁ then the four UTF-8 bytes F0 9D 94 98 (byte token id = 3 + byte).
  assert.deepEqual(ids, [29871, 3 + 0xf0, 3 + 0x9d, 3 + 0x94, 3 + 0x98]);
  assert.equal(fromModel.decode(ids), "𝔘");
});

test("legacy and non-legacy conversion follow transformers' documented example", () => {
  // transformers' LlamaTokenizer docstring: "Hello <s>." -> legacy [1, 15043, 29871, 1, 869],
  // non-legacy [1, 15043, 29871, 1, 29889] (869 is "▁.", 29889 is ".").
  assert.deepEqual(fromModel.encode("Hello <s>."), [1, 15043, 29871, 1, 869]);
  const nonLegacy = LlavaTokenizer.fromJson(
    convertLlamaSentencePiece(spm, { ...settings, legacy: false }, modelFile),
    { ...settings, legacy: false },
  );
  assert.deepEqual(nonLegacy.encode("Hello <s>."), [1, 15043, 29871, 1, 29889]);
  // Without special tokens in the middle both agree.
  assert.deepEqual(nonLegacy.encode("Hello world"), fromModel.encode("Hello world"));
  assert.equal(nonLegacy.decode(nonLegacy.encode("Hello world"), { skipSpecialTokens: true }), "Hello world");
});

test("add_bos_token / add_eos_token shape the converted post-processor", () => {
  const both = { ...settings, addBosToken: true, addEosToken: true };
  const tok = LlavaTokenizer.fromJson(convertLlamaSentencePiece(spm, both, modelFile), both);
  assert.deepEqual(tok.encode("Hi"), [1, 6324, 2]);
  const none = { ...settings, addBosToken: false, addEosToken: false };
  const bare = LlavaTokenizer.fromJson(convertLlamaSentencePiece(spm, none, modelFile), none);
  assert.deepEqual(bare.encode("Hi"), [6324]);
});

// --- synthetic models, written with a tiny protobuf encoder -------------------------------------

function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(n));
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}
const field = (num: number, wire: number, payload: number[]) => [...varint((num << 3) | wire), ...payload];
const bytesField = (num: number, data: number[]) => field(num, 2, [...varint(data.length), ...data]);
const utf8 = (s: string) => [...new TextEncoder().encode(s)];
function piece(text: string, score: number, type: number): number[] {
  const f = new Uint8Array(new Float32Array([score]).buffer);
  return bytesField(1, [...bytesField(1, utf8(text)), ...field(2, 5, [...f]), ...field(3, 0, varint(type))]);
}
function model(pieces: [string, number, number][], modelType: number): Uint8Array {
  const trainer = [...field(3, 0, varint(modelType)), ...field(35, 0, [1]), ...field(43, 0, varint(-1)), ...bytesField(999, [1, 2, 3])];
  return Uint8Array.from([...pieces.flatMap(([t, s, ty]) => piece(t, s, ty)), ...bytesField(2, trainer), ...field(17, 1, [0, 0, 0, 0, 0, 0, 0, 0])]);
}

const TINY: [string, number, number][] = [
  ["<unk>", 0, PieceType.UNKNOWN],
  ["<s>", 0, PieceType.CONTROL],
  ["</s>", 0, PieceType.CONTROL],
  ["<img>", 0, PieceType.USER_DEFINED],
  ...Array.from({ length: 256 }, (_, b): [string, number, number] => [`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`, 0, PieceType.BYTE]),
  ["\u2581a", -1, PieceType.NORMAL],
  ["b", -2, PieceType.NORMAL],
  ["a", -3, PieceType.NORMAL],
  ["\u2581", -4, PieceType.NORMAL],
  ["\u2581ab", -5, PieceType.NORMAL],
];

test("synthetic model: unknown fields are skipped, user-defined pieces become non-special added tokens", () => {
  const parsed = parseSentencePieceModel(model(TINY, ModelType.BPE), "tiny.model");
  assert.equal(parsed.pieces.length, TINY.length);
  assert.equal(parsed.trainerSpec.padId, -1);
  const s = { ...settings, addedTokensDecoder: [] };
  const json = convertLlamaSentencePiece(parsed, s, "tiny.model");
  assert.deepEqual(
    json.added_tokens.map((t) => [t.id, t.content, t.special]),
    [[0, "<unk>", true], [1, "<s>", true], [2, "</s>", true], [3, "<img>", false]],
  );
  const tok = LlavaTokenizer.fromJson(json, s, "tiny.model");
  const ab = 260 + 4;
  assert.deepEqual(tok.encode("ab<img>ab"), [1, ab, 3, ab]);
  assert.deepEqual(tok.encode("ab c"), [1, ab, 260 + 3, 4 + 0x63]);
  assert.equal(tok.decode(tok.encode("ab<img>ab"), { skipSpecialTokens: true }), "ab<img> ab");
});

test("protobuf errors are LlavaErrors that name the file", () => {
  const good = model(TINY, ModelType.BPE);
  assert.throws(() => parseSentencePieceModel(new Uint8Array(0), "empty.model"), (e: unknown) => e instanceof LlavaError && /empty\.model: not a SentencePiece model/.test(e.message));
  assert.throws(() => parseSentencePieceModel(good.subarray(0, good.length - 3), "cut.model"), (e: unknown) => e instanceof LlavaError && /cut\.model: corrupt SentencePiece model/.test(e.message));
  assert.throws(() => parseSentencePieceModel(new TextEncoder().encode('{"not": "protobuf"}'), "json.model"), (e: unknown) => e instanceof LlavaError && /json\.model/.test(e.message));
  const unigram = parseSentencePieceModel(model(TINY, ModelType.UNIGRAM), "uni.model");
  assert.throws(() => convertLlamaSentencePiece(unigram, settings, "uni.model"), (e: unknown) => e instanceof LlavaError && /uni\.model: .*not BPE/.test(e.message));
});
