/** Checking a dataset before training: in process, and end to end through `llava data check`. */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { readModelSpec, requireTower } from "../../src/llava/spec.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { loadLlava } from "../../src/llava/load.js";
import { checkDataset, checkOptionsFor, imageTokenCounter, renderMasked } from "../../src/train/data-check.js";
import { readTrainingData } from "../../src/train/dataset.js";
import { preprocessOptionsFor, type TokenizedSample, tokenizeSample } from "../../src/train/preprocess.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";

const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-data-check-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
fs.writeFileSync(path.join(tmp, "corrupt.png"), "not an image");

const ask = (q: string, a: string) => [{ from: "human", value: q }, { from: "gpt", value: a }];
const GOOD = [
  { id: "img", image: "checker_300x500.png", conversations: [...ask("What is shown?\n<image>", "A red square."), ...ask("Colour?", "Red.")] },
  { id: "txt", conversations: ask("Tell me a joke.", "No.") },
  { id: "long", image: "gradient_640x480.png", conversations: ask("<image>\nDescribe this picture in great detail, please, with every colour you see.", "A gradient ".repeat(30)) },
];
const BAD = [
  { id: "missing", image: "nowhere.png", conversations: ask("<image>\nWhat?", "A dog.") },
  { id: "corrupt", image: path.join(tmp, "corrupt.png"), conversations: ask("<image>\nWhat?", "A dog.") },
  { id: "nomarker", image: "checker_300x500.png", conversations: ask("What?", "A dog.") },
  { id: "unanswered", conversations: [...ask("Hi", "Hello."), { from: "human", value: "Bye" }] },
  { id: "order", conversations: [{ from: "human", value: "a" }, { from: "human", value: "b" }] },
];

function dataset(name: string, records: unknown[]): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, records.map((r) => JSON.stringify(r)).join("\n"));
  return file;
}

function checkOptions(model: string, modelMaxLength = 2048) {
  const spec = readModelSpec(path.join(MODELS, model));
  const tokenizer = LlavaTokenizer.load(spec.dir);
  const preprocess = preprocessOptionsFor(tokenizer, { ...spec.settings, format: spec.format }, "v1", modelMaxLength, IMAGES);
  return { tokenizer, opts: { preprocess, imageTokens: imageTokenCounter(spec.settings, requireTower(spec)) } };
}

test("image token counts as the model expands them: 16 per image for 1.5, the fixture's 70 for an AnyRes 640x480", () => {
  for (const model of ["tiny-llava-1.5-orig", "tiny-llava-1.5-mha"]) {
    const spec = readModelSpec(path.join(MODELS, model));
    assert.equal(imageTokenCounter(spec.settings, requireTower(spec))({ width: 640, height: 480 }), 16);
  }
  const next = readModelSpec(path.join(MODELS, "tiny-llava-next"));
  const meta = JSON.parse(fs.readFileSync(path.join(CASES, "tiny-llava-next", "gradient", "meta.json"), "utf8"));
  assert.equal(imageTokenCounter(next.settings, requireTower(next))({ width: 640, height: 480 }), meta.n_image_tokens);
});

test("checkDataset: every kind of problem named per sample, statistics over the usable ones", async () => {
  const { opts } = checkOptions("tiny-llava-1.5-orig");
  const kept: TokenizedSample[] = [];
  const records = readTrainingData(dataset("mixed.jsonl", [...GOOD, ...BAD]));
  const report = await checkDataset(records, opts, undefined, (s) => kept.push(s));
  assert.equal(report.samples, 8);
  // the usable samples, tokenized as training tokenizes them
  assert.deepEqual(kept.map((s) => s.id), ["img", "txt", "long"]);
  for (const s of kept) assert.deepEqual(s.ids, tokenizeSample(records[s.index], opts.preprocess).ids);
  assert.deepEqual([report.imageSamples, report.textSamples], [5, 3]);
  assert.deepEqual(report.bad.map((s) => [s.id, s.problems.map((p) => p.kind)]), [
    ["missing", ["missing-image"]], ["corrupt", ["bad-image"]], ["nomarker", ["image-count"]], ["unanswered", ["mismatch"]], ["order", ["out-of-order"]],
  ]);
  assert.match(report.bad[0].problems[0].message, /nowhere\.png: file not found/);
  assert.deepEqual(report.counts, { "missing-image": 1, "bad-image": 1, "image-count": 1, mismatch: 1, "out-of-order": 1 });
  assert.ok(report.tokenLengths);
  const { min, median, max } = report.tokenLengths;
  assert.ok(min < median && median < max, JSON.stringify(report.tokenLengths));
  assert.equal(report.example?.sample.id, "img");
  assert.deepEqual(report.example?.imageTokens, [16]);
});

test("a length limit: cut samples are warned about, one cut before its answer is a problem", async () => {
  const { opts } = checkOptions("tiny-llava-1.5-orig", 70);
  const report = await checkDataset(readTrainingData(dataset("good.jsonl", GOOD)), opts);
  assert.deepEqual(report.bad.map((s) => [s.id, s.problems.map((p) => p.message)]), [["long", ["no supervised token is left after the model's cut of the expanded sequence at 70"]]]);
  assert.deepEqual(report.warned.map((s) => [s.id, s.warnings.map((w) => w.kind)]), [["img", ["model-cut"]]]);
  assert.equal(report.tokenLengths?.max, 70);
  assert.deepEqual(report.counts, { "no-labels": 1, truncated: 1, "model-cut": 2 });
});

test("the example shows its label mask: masked text in brackets, images as <image×N>", async () => {
  const { opts, tokenizer } = checkOptions("tiny-llava-1.5-orig");
  const report = await checkDataset(readTrainingData(dataset("good.jsonl", GOOD)), opts);
  const text = renderMasked(report.example!, tokenizer, -200);
  assert.match(text, /^\[<s> A chat .* USER: \]\[<image×16>\]\[\s*\nWhat is shown\? ASSISTANT:\] A red square\.<\/s>\[ USER: Colour\? ASSISTANT:\] Red\.<\/s>$/s);
});

test("checkOptionsFor a loaded model gives the report the model folder alone gives", async () => {
  const loaded = await loadLlava(ORIG);
  const records = readTrainingData(dataset("mixed.jsonl", [...GOOD, ...BAD]));
  const fromModel = await checkDataset(records, checkOptionsFor(loaded, "v1", 2048, IMAGES));
  assert.deepEqual(fromModel, await checkDataset(records, checkOptions("tiny-llava-1.5-orig").opts));
});

test("llava data check: a clean dataset prints counts, statistics and the example, exit 0", () => {
  const r = llava(["data", "check", "--data-path", dataset("good.json", GOOD), "--image-folder", IMAGES, "--model-path", ORIG]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^3 samples \(2 with images, 1 text-only\): 3 usable, 0 with problems/);
  assert.match(r.stdout, /tokens per sample \(images expanded\): min \d+, median \d+, p95 \d+, max \d+; \d+ supervised in all/);
  assert.match(r.stdout, /example: record 0 \(id "img"\)/);
  assert.match(r.stdout, /\] A red square\.<\/s>\[/);
});

test("llava data check: problems listed, exit 1 with one error line; --json is the report", () => {
  const file = dataset("bad.json", [...GOOD, ...BAD]);
  const r = llava(["data", "check", "--data-path", file, "--image-folder", IMAGES, "--model-path", ORIG]);
  assertCleanError(r, /5 of 8 samples have problems the trainer refuses \(first: record 3 \(id "missing"\)/);
  assert.match(r.stdout, /problems: mismatch 1, out-of-order 1, image-count 1, missing-image 1, bad-image 1/);
  assert.match(r.stdout, /record 6 \(id "unanswered"\): tokenization mismatch: \d+ vs\. \d+/);
  const j = llava(["data", "check", "--data-path", file, "--image-folder", IMAGES, "--model-path", ORIG, "--json"]);
  assert.equal(j.status, 1);
  const report = JSON.parse(j.stdout);
  assert.equal(report.bad.length, 5);
  assert.equal(report.example.sample.id, "img");
  assert.match(report.example.rendered, /A red square/);
});

test("llava data check: usage mistakes exit 2, bad files exit 1, before any sample is read", () => {
  const good = dataset("good.json", GOOD);
  const usage = [
    [["data", "check", "--model-path", ORIG], /needs --data-path/],
    [["data", "check", "--data-path", good, "--model-path", ORIG], /needs --image-folder: record 0 \(id "img"\) has images/],
    [["data", "check", "--data-path", good, "--model-path", ORIG, "--image-folder", IMAGES, "--model-max-length", "0"], /--model-max-length must be a whole number/],
    [["data", "check", "--data-path", good, "--model-path", ORIG, "--image-folder", IMAGES, "--image-aspect-ratio", "wide"], /--image-aspect-ratio must be pad, square or anyres/],
    [["data", "verify"], /unknown sub-command "verify"/],
  ] as const;
  for (const [args, message] of usage) {
    const r = llava([...args]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, message);
  }
  assertCleanError(llava(["data", "check", "--data-path", good, "--model-path", ORIG, "--image-folder", IMAGES, "--version", "v9"]), /--version v9: no such template/);
  assertCleanError(llava(["data", "check", "--data-path", path.join(tmp, "none.json"), "--model-path", ORIG, "--image-folder", IMAGES]), /none\.json: file not found/);
  assertCleanError(llava(["data", "check", "--data-path", good, "--model-path", path.join(tmp, "no-model"), "--image-folder", IMAGES]), /no-model/);
});
