/** LlavaTokenizer: special tokens, decoding semantics, and the errors a user sees. */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { MODELS } from "../helpers/paths.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { LlavaError } from "../../src/util/errors.js";

const MHA = path.join(MODELS, "tiny-llava-1.5-mha");
const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const hf = LlavaTokenizer.load(MHA);
const orig = LlavaTokenizer.load(ORIG);

/** Byte-fallback token id of a byte in the LLaMA vocabulary. */
const byte = (b: number) => 3 + b;

test("special tokens and vocabulary size (HF format has <image> = 32000)", () => {
  assert.equal(hf.bosTokenId, 1);
  assert.equal(hf.eosTokenId, 2);
  assert.equal(hf.eosToken, "</s>");
  assert.equal(hf.unkTokenId, 0);
  assert.equal(hf.padTokenId, 0); // llava-hf sets pad_token = <unk>
  assert.equal(hf.vocabSize, 32001);
  assert.equal(hf.tokenToId("<image>"), 32000);
  assert.equal(hf.idToToken(32000), "<image>");
  assert.equal(hf.tokenToId("\u2581Hello"), 15043);
  assert.equal(hf.idToToken(15043), "\u2581Hello");
  assert.equal(hf.tokenToId("no such token"), undefined);
  assert.equal(hf.idToToken(-200), undefined);
  assert.equal(hf.idToToken(32001), undefined);
  assert.equal(hf.idToToken(1.5), undefined);

  assert.equal(orig.vocabSize, 32000);
  assert.equal(orig.tokenToId("<image>"), undefined);
  assert.equal(orig.padTokenId, undefined); // original LLaVA: pad_token null
  assert.equal(orig.bosTokenId, 1);
  assert.equal(orig.eosTokenId, 2);
});

test("encode adds BOS by default, not with addSpecialTokens: false", () => {
  assert.deepEqual(hf.encode("Hello world"), [1, 15043, 3186]);
  assert.deepEqual(hf.encode("Hello world", { addSpecialTokens: false }), [15043, 3186]);
  assert.deepEqual(hf.encode(""), [1]);
  assert.deepEqual(hf.encode("", { addSpecialTokens: false }), []);
  assert.deepEqual(hf.tokenize("Hello world"), ["\u2581Hello", "\u2581world"]);
});

test("literal special tokens in text become their ids (templates rely on </s>)", () => {
  assert.deepEqual(hf.encode("Hi</s>", { addSpecialTokens: false }), [6324, 2]);
  assert.deepEqual(hf.encode("<s>Hi", { addSpecialTokens: false }), [1, 6324]);
  // "Hi" at the start of a section gets the prefix space: "\u2581Hi" is 6324, plain "Hi" is 18567.
  assert.deepEqual(hf.encode("<image>\nHi", { addSpecialTokens: false }), [32000, 29871, 13, 18567]);
  // The original format has no <image> token: the text is ordinary pieces.
  const ids = orig.encode("<image>", { addSpecialTokens: false });
  assert.ok(ids.length > 1 && ids.every((id) => id < 32000));
  assert.equal(orig.decode(ids), "<image>");
});

test("decode: special tokens kept or skipped, the leading space of the first word stripped", () => {
  const ids = hf.encode("Hello world</s>");
  assert.equal(hf.decode(ids), "<s> Hello world</s>");
  assert.equal(hf.decode(ids, { skipSpecialTokens: true }), "Hello world");
  assert.equal(hf.decode([]), "");
  assert.equal(hf.decode([1, 2], { skipSpecialTokens: true }), "");
  // <image> is a special added token too.
  assert.equal(hf.decode([32000, 6324], { skipSpecialTokens: true }), "Hi");
  assert.equal(hf.decode([32000, 6324]), "<image> Hi");
});

test("decode drops ids outside the vocabulary, such as the -200 image sentinel", () => {
  assert.equal(orig.decode([1, 15043, -200, 3186], { skipSpecialTokens: true }), "Hello world");
  assert.equal(orig.decode([15043, 99999, 3186]), "Hello world");
});

test("decode round-trips text without special tokens", () => {
  const texts = [
    "Hello world",
    " leading space",
    "two  spaces and trailing ",
    "line\nbreaks\n\n and\ttabs",
    "中文 日本語 한국어 Ελληνικά",
    "emoji 😀👍🏽🇺🇸 and 𝔘𝔫𝔦 need byte fallback",
    "punctuation , . ! ? stays as is",
  ];
  for (const text of texts) {
    assert.equal(hf.decode(hf.encode(text), { skipSpecialTokens: true }), text);
    assert.equal(orig.decode(orig.encode(text, { addSpecialTokens: false })), text);
  }
});

test("byte fallback decoding follows Rust tokenizers: an invalid byte run is one U+FFFD per byte", () => {
  const ni = [0xe4, 0xbd, 0xa0].map(byte); // 你
  assert.equal(hf.decode(ni), "你");
  assert.equal(hf.decode([byte(0xf0), byte(0x9f)]), "\uFFFD\uFFFD");
  // One invalid byte spoils its whole run, valid prefix included.
  assert.equal(hf.decode([...ni, byte(0xe5)]), "\uFFFD".repeat(4));
  // A non-byte token ends a run.
  assert.equal(hf.decode([byte(0xf0), 6324, ...ni]), "\uFFFD Hi你");
});

test("clean_up_tokenization_spaces: off in LLaVA configs, available on request", () => {
  const ids = hf.encode("Hello , world !", { addSpecialTokens: false });
  assert.equal(hf.decode(ids), "Hello , world !");
  assert.equal(hf.decode(ids, { cleanUpTokenizationSpaces: true }), "Hello, world!");
});

// --- errors ---------------------------------------------------------------------------------------

const tempDirs: string[] = [];
after(() => tempDirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

function tempDir(files: Record<string, string | { link: string }>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llava-tok-"));
  tempDirs.push(dir);
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(dir, name);
    if (typeof content === "string") fs.writeFileSync(file, content);
    else fs.symlinkSync(content.link, file);
  }
  return dir;
}

function throwsLlava(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LlavaError, `expected a LlavaError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

const shippedJson = { link: path.join(MHA, "tokenizer.json") };

test("missing directory, a file instead of a directory, or no tokenizer files", () => {
  throwsLlava(() => LlavaTokenizer.load(path.join(os.tmpdir(), "llava-no-such-dir-xyz")), /tokenizer directory not found: .*llava-no-such-dir-xyz/);
  throwsLlava(() => LlavaTokenizer.load(path.join(MHA, "config.json")), /not a directory: .*config\.json/);
  const empty = tempDir({});
  throwsLlava(() => LlavaTokenizer.load(empty), /no tokenizer in .*: expected tokenizer\.json or tokenizer\.model/);
  throwsLlava(() => LlavaTokenizer.load(empty, { source: "tokenizer.model" }), /cannot read .*tokenizer\.model/);
  throwsLlava(() => LlavaTokenizer.load(empty, { source: "tokenizer.json" }), /cannot read .*tokenizer\.json/);
});

test("corrupt tokenizer.json, tokenizer_config.json, special_tokens_map.json or tokenizer.model", () => {
  throwsLlava(() => LlavaTokenizer.load(tempDir({ "tokenizer.json": '{"model": {' })), /tokenizer\.json is not valid JSON/);
  throwsLlava(() => LlavaTokenizer.load(tempDir({ "tokenizer.json": "[1, 2]" })), /tokenizer\.json: not a tokenizer\.json/);
  throwsLlava(
    () => LlavaTokenizer.load(tempDir({ "tokenizer.json": '{"model": {"type": "Nope"}, "added_tokens": []}' })),
    /tokenizer\.json: unsupported or corrupt tokenizer/,
  );
  throwsLlava(
    () => LlavaTokenizer.load(tempDir({ "tokenizer.json": '{"model": {"type": "BPE"}, "added_tokens": [{"id": "x"}]}' })),
    /tokenizer\.json: "added_tokens" must be a list/,
  );
  throwsLlava(() => LlavaTokenizer.load(tempDir({ "tokenizer.json": shippedJson, "tokenizer_config.json": "{oops" })), /tokenizer_config\.json is not valid JSON/);
  throwsLlava(() => LlavaTokenizer.load(tempDir({ "tokenizer.json": shippedJson, "special_tokens_map.json": "" })), /special_tokens_map\.json is not valid JSON/);
  throwsLlava(() => LlavaTokenizer.load(tempDir({ "tokenizer.json": shippedJson, "tokenizer_config.json": "[]" })), /tokenizer_config\.json: expected a JSON object/);
  throwsLlava(() => LlavaTokenizer.load(tempDir({ "tokenizer.model": "definitely not protobuf" })), /tokenizer\.model: (corrupt|not a) SentencePiece model/);
});

test("configuration errors name the file and the setting", () => {
  throwsLlava(
    () => LlavaTokenizer.load(tempDir({ "tokenizer.json": shippedJson, "tokenizer_config.json": '{"tokenizer_class": "LlamaTokenizer", "bos_token": "<nope>"}' })),
    /tokenizer\.json: bos_token "<nope>" is not in the vocabulary/,
  );
  throwsLlava(
    () => LlavaTokenizer.load(tempDir({ "tokenizer.json": shippedJson, "tokenizer_config.json": '{"eos_token": null}' })),
    /no usable eos_token/,
  );
});

test("without tokenizer_config.json the LlamaTokenizer defaults apply", () => {
  const tok = LlavaTokenizer.load(tempDir({ "tokenizer.json": shippedJson }));
  assert.equal(tok.bosTokenId, 1);
  assert.equal(tok.eosTokenId, 2);
  assert.equal(tok.unkTokenId, 0);
  assert.equal(tok.padTokenId, undefined);
  assert.deepEqual(tok.encode("Hi"), [1, 6324]);
});
