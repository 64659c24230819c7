/**
 * The tokenizer rebuilt from a GGUF's tokenizer.ggml.* metadata gives the ids of the HF
 * tokenizer the file was made from, on text that exercises merges, byte fallback, spaces and
 * added/special tokens, and decodes them back alike.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { GgufFile } from "../../src/io/gguf.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { loadGgufTokenizer } from "../../src/tokenizer/gguf-tokenizer.js";
import { MODELS } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";
import { kv } from "../io/gguf-build.js";
import { writeGgufPair } from "./gguf-pair.js";

const dir = tempDir("llava-gguf-tok-");

const TEXTS = [
  "",
  "Hello world",
  " leading space",
  "two  spaces   and\ttab\nnewline\n\n",
  "trailing space ",
  "<image>\nWhat is shown?",
  "USER: <image>\nDescribe it. ASSISTANT: A cat.</s>",
  "<s>bos in text</s><unk>",
  "no<image>space<image><image>",
  "unicode: café naïve 日本語のテキスト 🦙🚀 Ünïcödé ß",
  "emoji 👩‍👩‍👧 and combining é and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
  "code: def f(x):\n    return x ** 2  # comment",
  "numbers 1234567890 3.14159 -42",
  "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.",
  "▁already▁has▁metaspace",
  "<im_start> not a token here <im_end>",
  "\u0000control\u0007chars",
];

for (const model of ["tiny-llava-1.5-mha", "tiny-llava-1.5-orig"]) {
  test(`GGUF tokenizer ids equal ${model}'s HF tokenizer on many strings`, () => {
    const pair = writeGgufPair(path.join(MODELS, model), path.join(dir, model), { type: "F32", visionTower: path.join(MODELS, "tiny-clip-vit-56") });
    const file = GgufFile.open(pair.model);
    const gguf = loadGgufTokenizer(file);
    file.close();
    const hf = LlavaTokenizer.load(path.join(MODELS, model));
    for (const text of TEXTS) {
      for (const addSpecialTokens of [true, false]) {
        const ids = hf.encode(text, { addSpecialTokens });
        assert.deepEqual(gguf.encode(text, { addSpecialTokens }), ids, `${JSON.stringify(text)} (special tokens ${addSpecialTokens})`);
        for (const skipSpecialTokens of [true, false]) {
          assert.equal(gguf.decode(ids, { skipSpecialTokens }), hf.decode(ids, { skipSpecialTokens }), `decode ${JSON.stringify(text)}`);
        }
      }
    }
    if (model.endsWith("mha")) assert.deepEqual(gguf.encode("<image>", { addSpecialTokens: false }), [32000]);
  });
}

test("GGUF tokenizer settings: add_bos_token false, a missing or foreign tokenizer", () => {
  const base = path.join(MODELS, "tiny-llava-1.5-orig");
  const clip = path.join(MODELS, "tiny-clip-vit-56");
  const noBos = writeGgufPair(base, path.join(dir, "nobos"), { type: "F32", visionTower: clip, llmKv: [kv("tokenizer.ggml.add_bos_token", false)] });
  const open = (f: string) => {
    const file = GgufFile.open(f);
    try {
      return loadGgufTokenizer(file);
    } finally {
      file.close();
    }
  };
  assert.notEqual(open(noBos.model).encode("hi")[0], 1);
  const gpt2 = writeGgufPair(base, path.join(dir, "gpt2"), { type: "F32", visionTower: clip, llmKv: [kv("tokenizer.ggml.model", "gpt2")] });
  assert.throws(() => open(gpt2.model), /tokenizer model "gpt2" is not supported \(only "llama"/);
  const badEos = writeGgufPair(base, path.join(dir, "badeos"), { type: "F32", visionTower: clip, llmKv: [kv("tokenizer.ggml.eos_token_id", 99999)] });
  assert.throws(() => open(badEos.model), /"tokenizer.ggml.eos_token_id" is 99999, past the 32000 tokens/);
});
