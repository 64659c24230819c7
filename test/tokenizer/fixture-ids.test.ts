/**
 * Id parity with the reference implementation on every fixture case: prompt ids, HF-expanded ids,
 * and decoding of the reference's greedy tokens back to the reference's text.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { CASES, MODELS } from "../helpers/paths.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { expandImageTokens, tokenizerImageToken, IMAGE_TOKEN_INDEX } from "../../src/tokenizer/image-tokens.js";
import { readInt64Npy } from "./npy-int64.js";

interface CaseMeta {
  model: string;
  format: "hf" | "orig";
  images: string[];
  n_image_tokens?: number;
  generated_text?: string;
}

/** Image features per image where meta.json does not record it (fixtures README table). */
const TOKENS_PER_IMAGE: Record<string, number> = { "tiny-llava-1.5-mha": 16 };

const tokenizers = new Map<string, LlavaTokenizer>();
function tokenizerFor(model: string, source: "auto" | "tokenizer.model" = "auto"): LlavaTokenizer {
  const key = `${model}:${source}`;
  if (!tokenizers.has(key)) tokenizers.set(key, LlavaTokenizer.load(path.join(MODELS, model), { source }));
  return tokenizers.get(key)!;
}

const cases = fs
  .readdirSync(CASES)
  .flatMap((model) => fs.readdirSync(path.join(CASES, model)).map((name) => path.join(CASES, model, name)));

test("fixture cases are present", () => {
  assert.ok(cases.length >= 5, `found ${cases.length} cases under ${CASES}`);
});

for (const dir of cases) {
  const name = path.relative(CASES, dir);
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf8")) as CaseMeta;
  const prompt = fs.readFileSync(path.join(dir, "prompt.txt"), "utf8");

  test(`${name}: prompt ids match input_ids.npy`, () => {
    const expected = readInt64Npy(path.join(dir, "input_ids.npy"));
    if (meta.format === "orig") {
      assert.deepEqual(tokenizerImageToken(tokenizerFor(meta.model), prompt), expected);
      assert.ok(expected.includes(IMAGE_TOKEN_INDEX));
    } else {
      assert.deepEqual(tokenizerFor(meta.model).encode(prompt), expected);
    }
  });

  if (meta.format === "orig") {
    test(`${name}: tokenizer.model converted in memory gives the same prompt ids`, () => {
      const expected = readInt64Npy(path.join(dir, "input_ids.npy"));
      assert.deepEqual(tokenizerImageToken(tokenizerFor(meta.model, "tokenizer.model"), prompt), expected);
    });
  }

  const expandedFile = path.join(dir, "input_ids_expanded.npy");
  if (fs.existsSync(expandedFile)) {
    test(`${name}: expanded ids match input_ids_expanded.npy`, () => {
      const tok = tokenizerFor(meta.model);
      const imageTokenId = tok.tokenToId("<image>");
      assert.equal(imageTokenId, 32000);
      const perImage = meta.n_image_tokens ?? TOKENS_PER_IMAGE[meta.model];
      assert.ok(perImage !== undefined, `no image token count for ${name}`);
      const features = meta.images.map(() => perImage);
      const expanded = expandImageTokens(tok.encode(prompt), imageTokenId, features);
      assert.deepEqual(expanded, readInt64Npy(expandedFile));
    });
  }

  const generatedFile = path.join(dir, "generated_ids.npy");
  if (fs.existsSync(generatedFile) && meta.generated_text !== undefined) {
    test(`${name}: decoding generated_ids.npy gives the reference text`, () => {
      const tok = tokenizerFor(meta.model);
      const ids = readInt64Npy(generatedFile);
      assert.equal(tok.decode(ids, { skipSpecialTokens: true }), meta.generated_text);
    });
  }
}
