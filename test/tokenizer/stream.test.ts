/** StreamingDetokenizer: printable pieces while generating, concatenating to the full decode. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { CASES, MODELS } from "../helpers/paths.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { StreamingDetokenizer } from "../../src/tokenizer/stream.js";
import { readInt64Npy } from "./npy-int64.js";

const tok = LlavaTokenizer.load(path.join(MODELS, "tiny-llava-1.5-mha"));
const byte = (b: number) => 3 + b;

function stream(ids: number[], skipSpecialTokens = true): { pieces: string[]; text: string } {
  const s = new StreamingDetokenizer(tok, { skipSpecialTokens });
  const pieces = ids.map((id) => s.push(id));
  pieces.push(s.flush());
  return { pieces, text: pieces.join("") };
}

test("the first word's leading space is not printed, later ones are", () => {
  const ids = tok.encode("Hello world again", { addSpecialTokens: false });
  assert.deepEqual(stream(ids).pieces, ["Hello", " world", " again", ""]);
});

test("an emoji split into byte tokens is held back until its byte run ends", () => {
  const ids = tok.encode("Hi 😀 there", { addSpecialTokens: false });
  assert.deepEqual(ids, [6324, 29871, byte(0xf0), byte(0x9f), byte(0x98), byte(0x80), 727]);
  assert.deepEqual(stream(ids).pieces, ["Hi", " ", "", "", "", "", "😀 there", ""]);
  // At the end of the stream the held bytes are flushed.
  assert.deepEqual(stream(ids.slice(0, 6)).pieces, ["Hi", " ", "", "", "", "", "😀"]);
  // An incomplete sequence at the end decodes as the reference does: one U+FFFD per byte.
  assert.equal(stream(ids.slice(0, 4)).text, "Hi \uFFFD\uFFFD");
});

test("special tokens are skipped; newlines and the following word keep their spacing", () => {
  const ids = [1, ...tok.encode("First line\n Second\nThird", { addSpecialTokens: false }), 2];
  const { pieces, text } = stream(ids);
  assert.equal(text, "First line\n Second\nThird");
  assert.equal(pieces[0], ""); // BOS
  assert.equal(pieces.at(-2), ""); // EOS
  assert.equal(stream(ids, false).text, tok.decode(ids));
});

test("flush ends a stream; the next one starts fresh", () => {
  const s = new StreamingDetokenizer(tok);
  const first = tok.encode("One two", { addSpecialTokens: false });
  const out1 = first.map((id) => s.push(id)).join("") + s.flush();
  const out2 = first.map((id) => s.push(id)).join("") + s.flush();
  assert.equal(out1, "One two");
  assert.equal(out2, "One two");
  assert.equal(s.flush(), "");
});

test("the reference's greedy tokens stream to the reference text", () => {
  for (const [model, name] of [["tiny-llava-1.5-mha", "gradient"], ["tiny-llava-1.5-mha", "text_only"], ["tiny-llava-next", "gradient"]] as const) {
    const dir = path.join(CASES, model, name);
    const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf8")) as { generated_text: string };
    const ids = readInt64Npy(path.join(dir, "generated_ids.npy"));
    const t = LlavaTokenizer.load(path.join(MODELS, model));
    const s = new StreamingDetokenizer(t);
    const text = ids.map((id) => s.push(id)).join("") + s.flush();
    assert.equal(text, meta.generated_text, `${model}/${name}`);
  }
});

test("random token sequences: pieces always concatenate to decode(all ids)", () => {
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const emoji = [0xf0, 0x9f, 0x98, 0x80].map(byte);
  const ni = [0xe4, 0xbd, 0xa0].map(byte);
  const pick = (): number[] => {
    const r = rand();
    if (r < 0.25) return [byte(Math.floor(rand() * 256))]; // any byte, often invalid
    if (r < 0.35) return emoji;
    if (r < 0.45) return ni;
    if (r < 0.5) return [[0, 1, 2, 32000][Math.floor(rand() * 4)]!]; // specials
    if (r < 0.55) return [29871, byte(0x0a)]; // "▁", "\n"
    if (r < 0.57) return [-200];
    return [259 + Math.floor(rand() * (32000 - 259))]; // ordinary pieces
  };
  for (let trial = 0; trial < 300; trial++) {
    const ids: number[] = [];
    const n = 1 + Math.floor(rand() * 30);
    while (ids.length < n) ids.push(...pick());
    for (const skip of [true, false]) {
      const { pieces, text } = stream(ids, skip);
      assert.equal(text, tok.decode(ids, { skipSpecialTokens: skip, cleanUpTokenizationSpaces: false }), JSON.stringify(ids));
      assert.equal(pieces.length, ids.length + 1);
    }
  }
});
