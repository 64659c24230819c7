/** Preprocessing and label masks against the reference fixture and the reference's algorithm, per template. */
import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { IGNORE_INDEX } from "../../src/llava/labels.js";
import { readModelSpec } from "../../src/llava/spec.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import type { TrainingRecord, Turn } from "../../src/train/dataset.js";
import { type PreprocessOptions, preprocessOptionsFor, tokenizeSample } from "../../src/train/preprocess.js";
import { CASES, MODELS } from "../helpers/paths.js";
import { readInt64Npy } from "../tokenizer/npy-int64.js";

function optionsFor(model: string, version: string, modelMaxLength = 2048, imageStartEnd?: boolean): { opts: PreprocessOptions; tokenizer: LlavaTokenizer } {
  const dir = path.join(MODELS, model);
  const spec = readModelSpec(dir);
  const tokenizer = LlavaTokenizer.load(dir);
  const how = { ...spec.settings, format: spec.format, imageStartEnd: imageStartEnd ?? spec.settings.imageStartEnd };
  return { opts: preprocessOptionsFor(tokenizer, how, version, modelMaxLength), tokenizer };
}

const human = (value: string): Turn => ({ from: "human", value });
const gpt = (value: string): Turn => ({ from: "gpt", value });
const record = (conversations: Turn[], images: string[] = ["a.png"]): TrainingRecord => ({ index: 0, id: "s0", images, conversations });

/** The supervised stretches of a sample, decoded: what the loss is taken on. */
function supervised(tokenizer: LlavaTokenizer, ids: number[], labels: number[]): string[] {
  const spans: string[] = [];
  let run: number[] = [];
  labels.forEach((l, i) => {
    if (l !== IGNORE_INDEX) {
      assert.equal(l, ids[i], "a label is its own token");
      run.push(l);
    }
    if ((l === IGNORE_INDEX || i === labels.length - 1) && run.length) {
      spans.push(tokenizer.decode(run));
      run = [];
    }
  });
  return spans;
}

const fixtureRecord = record([human("<image>\nWhat is shown?"), gpt("A red square on a checkerboard.")], ["checker_300x500.png"]);

test("v1 (llava_v1) ids and labels equal the reference fixture's train_grad", () => {
  const { opts } = optionsFor("tiny-llava-1.5-mha", "llava_v1");
  const s = tokenizeSample(fixtureRecord, opts);
  const dir = path.join(CASES, "tiny-llava-1.5-mha", "train_grad");
  assert.deepEqual(s.ids, readInt64Npy(path.join(dir, "input_ids.npy")));
  assert.deepEqual(s.labels, readInt64Npy(path.join(dir, "labels.npy")));
  assert.deepEqual(s.problems, []);
  assert.equal(s.truncated, false);
});

test("the original format gives the same labels with the -200 marker", () => {
  const { opts } = optionsFor("tiny-llava-1.5-orig", "llava_v1");
  const s = tokenizeSample(fixtureRecord, opts);
  const dir = path.join(CASES, "tiny-llava-1.5-mha", "train_grad");
  assert.deepEqual(s.ids, readInt64Npy(path.join(dir, "input_ids.npy")).map((id) => (id === 32000 ? -200 : id)));
  assert.deepEqual(s.labels, readInt64Npy(path.join(dir, "labels.npy")));
});

const twoRounds = [human("What is it?\n<image>"), gpt("A cat."), human("And its colour?"), gpt("Black and white.")];

test("v1 multi-turn: loss on each answer and its </s>, the image moved to the front of its turn", () => {
  const { opts, tokenizer } = optionsFor("tiny-llava-1.5-orig", "v1");
  const s = tokenizeSample(record(twoRounds), opts);
  assert.deepEqual(s.problems, []);
  assert.deepEqual(supervised(tokenizer, s.ids, s.labels), ["A cat.</s>", "Black and white.</s>"]);
  const system = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";
  const prompt = `${system} USER: <image>\nWhat is it? ASSISTANT: A cat.</s>USER: And its colour? ASSISTANT: Black and white.</s>`;
  assert.deepEqual(s.ids, opts.promptIds(prompt), "the marker moved from the end of the turn to its start");
});

test("v1 text-only sample: no marker, same masking", () => {
  const { opts, tokenizer } = optionsFor("tiny-llava-1.5-orig", "v1");
  const s = tokenizeSample(record([human("Tell me a joke."), gpt("No.")], []), opts);
  assert.deepEqual(s.problems, []);
  assert.ok(!s.ids.includes(-200));
  assert.deepEqual(supervised(tokenizer, s.ids, s.labels), ["No.</s>"]);
});

test("v1 with a non-legacy tokenizer: the reference's -1 per later round (a mismatch with this legacy tokenizer)", () => {
  const { opts } = optionsFor("tiny-llava-1.5-orig", "v1");
  const s = tokenizeSample(record(twoRounds), { ...opts, legacy: false });
  assert.equal(s.problems.length, 1);
  assert.match(s.problems[0].message, /tokenization mismatch: \d+ vs\. \d+/);
  assert.ok(s.labels.every((l) => l === IGNORE_INDEX), "the reference zeroes the labels");
});

test("a conversation ending on a human turn is the reference's mismatch, a named problem", () => {
  const { opts } = optionsFor("tiny-llava-1.5-orig", "v1");
  const s = tokenizeSample(record([human("<image>\nHi"), gpt("Hello."), human("Bye")]), opts);
  assert.match(s.problems.map((p) => p.message).join(";"), /tokenization mismatch/);
});

test("a leading gpt turn is dropped with a warning; turns out of order are a problem", () => {
  const { opts, tokenizer } = optionsFor("tiny-llava-1.5-orig", "v1");
  const dropped = tokenizeSample(record([gpt("Hello!"), human("<image>\nWhat?"), gpt("A dog.")]), opts);
  assert.deepEqual(dropped.problems, []);
  assert.match(dropped.warnings.map((p) => p.message).join(";"), /first turn is from gpt/);
  assert.deepEqual(supervised(tokenizer, dropped.ids, dropped.labels), ["A dog.</s>"]);
  const disordered = tokenizeSample(record([human("<image>\nWhat?"), human("Well?"), gpt("A dog.")]), opts);
  assert.match(disordered.problems.map((p) => p.message).join(";"), /turns out of order: turn 1 is from human/);
});

test("<image> count must equal the images; empty turns are warned about", () => {
  const { opts } = optionsFor("tiny-llava-1.5-orig", "v1");
  const noMarker = tokenizeSample(record([human("What?"), gpt("A dog.")]), opts);
  assert.match(noMarker.problems.map((p) => p.message).join(";"), /0 <image> marker\(s\) for 1 image\(s\)/);
  const textWithMarker = tokenizeSample(record([human("<image>\nWhat?"), gpt("A dog.")], []), opts);
  assert.match(textWithMarker.problems.map((p) => p.message).join(";"), /1 <image> marker\(s\) for 0 image\(s\)/);
  const empty = tokenizeSample(record([human("<image>\nWhat?"), gpt("")]), opts);
  assert.match(empty.warnings.map((p) => p.message).join(";"), /turn 1 \(gpt\) is empty/);
});

test("truncation: cut at model_max_length as the collator cuts, and a sample cut before its answer is a problem", () => {
  const full = tokenizeSample(record(twoRounds), optionsFor("tiny-llava-1.5-orig", "v1").opts);
  const answerStarts = full.labels.flatMap((l, i) => (l !== IGNORE_INDEX && full.labels[i - 1] === IGNORE_INDEX ? [i] : []));
  const cutAt = answerStarts[1] + 2; // inside the second answer
  const cut = tokenizeSample(record(twoRounds), optionsFor("tiny-llava-1.5-orig", "v1", cutAt).opts);
  assert.equal(cut.truncated, true);
  assert.equal(cut.fullLength, full.ids.length);
  assert.deepEqual(cut.ids, full.ids.slice(0, cutAt));
  assert.deepEqual(cut.labels, full.labels.slice(0, cutAt));
  assert.deepEqual(cut.problems, []);
  assert.match(cut.warnings.map((p) => p.message).join(";"), /cut at model_max_length/);
  const tooShort = tokenizeSample(record(twoRounds), optionsFor("tiny-llava-1.5-orig", "v1", 8).opts);
  assert.match(tooShort.problems.map((p) => p.message).join(";"), /no supervised token is left after the cut/);
});

test("plain (stage 1): the human text becomes the bare <image>, loss on the caption and \\n", () => {
  const { opts, tokenizer } = optionsFor("tiny-llava-1.5-orig", "plain");
  const s = tokenizeSample(record([human("Describe this.\n<image>"), gpt("A cat on a mat.")]), opts);
  assert.deepEqual(s.problems, []);
  assert.deepEqual(s.ids.slice(0, 2), [tokenizer.bosTokenId, -200]);
  assert.deepEqual(s.labels.slice(0, 2), [IGNORE_INDEX, IGNORE_INDEX]);
  assert.deepEqual(s.labels.slice(2), s.ids.slice(2));
  assert.equal(tokenizer.decode(s.ids.slice(2)), "A cat on a mat.\n");
  const three = tokenizeSample(record([human("<image>"), gpt("a"), gpt("b")]), opts);
  assert.match(three.problems.map((p) => p.message).join(";"), /plain template needs 2 turns, the first with <image> \(got 3 turn\(s\)\)/);
});

test("llama_2 (llava_llama_2): loss on each answer, its trailing space and </s>", () => {
  const { opts, tokenizer } = optionsFor("tiny-llava-1.5-orig", "llava_llama_2");
  const s = tokenizeSample(record(twoRounds), opts);
  assert.deepEqual(s.problems, []);
  assert.deepEqual(supervised(tokenizer, s.ids, s.labels), ["A cat. </s>", "Black and white. </s>"]);
});

test("mpt with the LLaMA tokenizer (BOS, <|im_end|> not a token) is the reference's mismatch", () => {
  const { opts } = optionsFor("tiny-llava-1.5-orig", "chatml_direct");
  const s = tokenizeSample(record(twoRounds), opts);
  assert.match(s.problems.map((p) => p.message).join(";"), /tokenization mismatch/);
});

/**
 * A tokenizer whose tokens are characters, so the reference's arithmetic can be followed by hand:
 * BOS first, and <image>, <s>, </s>, <|im_start|>, <|im_end|> single tokens.
 */
const SPECIAL: Record<string, number> = { "<image>": -200, "<s>": 1, "</s>": 2, "<|im_start|>": 1002, "<|im_end|>": 1003 };
const charIds = (text: string): number[] => [1, ...text.split(/(<image>|<s>|<\/s>|<\|im_start\|>|<\|im_end\|>)/).flatMap((part) => (part in SPECIAL ? [SPECIAL[part]] : [...part].map((c) => c.codePointAt(0)! + 2000)))];
const charText = (ids: number[]): string => ids.map((id) => Object.keys(SPECIAL).find((k) => SPECIAL[k] === id) ?? String.fromCodePoint(id - 2000)).join("");
const charOptions = (version: string, legacy: boolean): PreprocessOptions => ({
  version, promptIds: charIds, imageTokenId: -200, legacy, modelMaxLength: 4096, imageStartEnd: false, multimodal: true,
});
const charSpans = (s: { ids: number[]; labels: number[] }): string[] => {
  const spans: string[] = [];
  s.labels.forEach((l, i) => {
    if (l === IGNORE_INDEX) return;
    if (s.labels[i - 1] === IGNORE_INDEX || i === 0) spans.push("");
    spans[spans.length - 1] += charText([l]);
  });
  return spans;
};

test("hand-checked with a character tokenizer: v1 and llama_2 (instruction - 2 leaves the space before the answer)", () => {
  const v1 = tokenizeSample(record(twoRounds), charOptions("v1", true));
  assert.deepEqual(v1.problems, []);
  assert.deepEqual(charSpans(v1), [" A cat.</s>", " Black and white.</s>"]);
  assert.match(tokenizeSample(record(twoRounds), charOptions("v1", false)).problems.map((p) => p.message).join(";"), /mismatch/);
  const llama2 = tokenizeSample(record(twoRounds), charOptions("llava_llama_2", true));
  assert.deepEqual(llama2.problems, []);
  assert.deepEqual(charSpans(llama2), [" A cat. </s>", " Black and white. </s>"]);
});

test("hand-checked with a character tokenizer: mpt counts from 0, instruction - 1, +1 per later round for a legacy tokenizer", () => {
  const s = tokenizeSample(record(twoRounds), charOptions("chatml_direct", true));
  assert.deepEqual(s.problems, []);
  // round 1: the instruction counts BOS + chars - 1, so its last "\n" is supervised; round 2's mask starts on
  // round 1's <|im_end|> and (+1) covers its whole instruction; the final <|im_end|> is supervised
  assert.deepEqual(charSpans(s), ["\nA cat.", "Black and white.<|im_end|>"]);
  assert.match(tokenizeSample(record(twoRounds), charOptions("chatml_direct", false)).problems.map((p) => p.message).join(";"), /mismatch: \d+ vs/);
});

test("hand-checked with a character tokenizer: the legacy path (llava_v0) masks [start+2, start+len) of human turns, each piece counting a BOS", () => {
  const s = tokenizeSample(record(twoRounds), charOptions("llava_v0", true));
  assert.deepEqual(s.problems, []);
  const system = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";
  assert.equal(charText(s.ids), `<s>${system}\n\n### Human: <image>\nWhat is it?\n### Assistant: A cat.\n### Human: And its colour?\n### Assistant: Black and white.\n### `);
  assert.deepEqual(charSpans(s), ["##", "## Assistant: A cat.\n### ", " Assistant: Black and white.\n### "]);
});

test("mm_use_im_start_end wraps the image; mmtag versions tag it first", () => {
  const opts = { ...charOptions("v1_mmtag", true), imageStartEnd: true };
  const s = tokenizeSample(record(twoRounds), opts);
  assert.match(charText(s.ids), /USER: <Image><im_start><image><im_end><\/Image>\nWhat is it\? ASSISTANT:/);
  const plain = tokenizeSample(record([human("<image>\nHi"), gpt("A cat.")]), { ...charOptions("plain", true), imageStartEnd: true });
  assert.equal(charText(plain.ids), "<s><image>A cat.\n", "plain drops the wrapping with the human text");
});

test("one image: a turn's markers gather at its front (LLaVA-1.5); several images: markers stay in place", () => {
  const one = tokenizeSample(record([human("Left <image> and right <image>?"), gpt("Same.")]), charOptions("v1", true));
  assert.match(charText(one.ids), /USER: <image>\nLeft  and right \? ASSISTANT:/);
  assert.deepEqual(one.problems, []);
  const two = tokenizeSample(record([human("Left <image> and right <image>?"), gpt("Same.")], ["a.png", "b.png"]), charOptions("v1", true));
  assert.match(charText(two.ids), /USER: Left <image> and right <image>\? ASSISTANT:/);
  assert.deepEqual(two.problems, []);
  const short = tokenizeSample(record([human("<image>\nWhich?"), gpt("Same.")], ["a.png", "b.png"]), charOptions("v1", true));
  assert.match(short.problems.map((p) => p.message).join(";"), /1 <image> marker\(s\) for 2 image\(s\)/);
});

test("v0 and v0.5 keep vicuna_v1 as the reference does; an unknown version is refused", () => {
  assert.deepEqual(tokenizeSample(record(twoRounds), charOptions("v0", true)).labels, tokenizeSample(record(twoRounds), charOptions("vicuna_v1", true)).labels);
  assert.throws(() => tokenizeSample(record(twoRounds), charOptions("v2", true)), /--version v2: no such template/);
});
