/**
 * `llava data check`: a training dataset validated against a model's tokenizer and settings, without loading weights.
 * `llava data synth`: a dataset of the procedural visual world, to train and evaluate on.
 */
import path from "node:path";
import { parseCommandArgs, type Values } from "./common.js";
import { readModelSpec, requireTower } from "../llava/spec.js";
import { isDirectory } from "../io/files.js";
import { LlavaTokenizer } from "../tokenizer/tokenizer.js";
import { checkDataset, formatDataReport, imageTokenCounter, problemLines, renderMasked } from "../train/data-check.js";
import { readTrainingData } from "../train/dataset.js";
import { preprocessOptionsFor } from "../train/preprocess.js";
import { LlavaError, UsageError } from "../util/errors.js";
import { SYNTH_DEFAULTS, synthesize } from "../synth/dataset.js";

const USAGE = `usage: llava data check --data-path FILE --model-path DIR [--image-folder DIR] [options]
       llava data synth --out DIR [--seed S] [--train N] [--test M] [--image-size PX] [--overwrite]

data check checks a LLaVA training dataset (JSON array or JSON lines) as the trainer will preprocess it:
missing or undecodable images, <image> markers that do not match the images, turns out of
order, samples whose labels are all masked (the reference's silent "tokenization mismatch"),
samples cut by the length limit. Prints counts, token-length statistics and one example with
its label mask; exits 1 when a sample has a problem the trainer would refuse.

data check options:
  --data-path FILE          the dataset
  --image-folder DIR        what image paths are relative to (needed when samples have images)
  --model-path DIR          the model to train (its tokenizer and config; no weights are read)
  --vision-tower DIR        CLIP folder for an original-format model (default: mm_vision_tower)
  --version V               conversation template, as the reference's --version (default v1)
  --model-max-length N      the length limit (default 2048)
  --image-aspect-ratio pad|square|anyres  how images are preprocessed (default: the model's)
  --json                    the report as JSON

data synth writes a procedural visual world: scenes of 1-4 coloured shapes on a 3x3 grid over
plain or gradient backgrounds (images/), stage-1 captions (pretrain.json, the plain layout of
blip_laion_cc_sbu_558k.json), stage-2 conversations (finetune.json, the layout of
llava_v1_5_mix665k.json), held-out test questions (test.jsonl, the model_vqa layout) with their
answers (test_answers.jsonl) over test images that hold colour-shape pairs no training image has,
every scene (scenes.json) and the world's vocabulary, split, counts and chance levels (world.json).
The same seed writes the same bytes.

data synth options:
  --out DIR                 the folder to write (refused when not empty, unless --overwrite)
  --seed S                  the random seed (default ${SYNTH_DEFAULTS.seed})
  --train N                 training images (default ${SYNTH_DEFAULTS.train})
  --test M                  test images, 5 questions each (default ${SYNTH_DEFAULTS.test})
  --image-size PX           image width and height (default ${SYNTH_DEFAULTS.imageSize})
  --overwrite               replace the files a previous data synth wrote in --out
`;

const options = {
  "data-path": { type: "string" },
  "image-folder": { type: "string" },
  "model-path": { type: "string" },
  "vision-tower": { type: "string" },
  version: { type: "string" },
  "model-max-length": { type: "string" },
  "image-aspect-ratio": { type: "string" },
  json: { type: "boolean" },
} as const;

const synthOptions = {
  out: { type: "string" },
  seed: { type: "string" },
  train: { type: "string" },
  test: { type: "string" },
  "image-size": { type: "string" },
  overwrite: { type: "boolean" },
} as const;

export async function runData(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (!sub || sub === "-h" || sub === "--help") {
    process.stdout.write(USAGE);
    return;
  }
  if (sub !== "check" && sub !== "synth") throw new UsageError(`data: unknown sub-command "${sub}" (data check, data synth; see llava data --help)`);
  const v = parseCommandArgs(`data ${sub}`, rest, sub === "check" ? options : synthOptions);
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  await (sub === "check" ? checkCommand(v) : synthCommand(v));
}

function wholeNumber(v: Values, name: string, fallback: number, min: number): number {
  const text = v[name] as string | undefined;
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min || !Number.isSafeInteger(Number(text))) throw new UsageError(`--${name} must be a whole number >= ${min}, got "${text}"`);
  return Number(text);
}

async function synthCommand(v: Values): Promise<void> {
  const out = v.out;
  if (typeof out !== "string" || out === "") throw new UsageError("data synth needs --out (see llava data --help)");
  const options = {
    out,
    seed: wholeNumber(v, "seed", SYNTH_DEFAULTS.seed, 0),
    train: wholeNumber(v, "train", SYNTH_DEFAULTS.train, 1),
    test: wholeNumber(v, "test", SYNTH_DEFAULTS.test, 1),
    imageSize: wholeNumber(v, "image-size", SYNTH_DEFAULTS.imageSize, 16),
    overwrite: v.overwrite === true,
  };
  const progress = process.stderr.isTTY ? (done: number, total: number) => process.stderr.write(`\rrendered ${done}/${total}${done === total ? "\n" : ""}`) : undefined;
  const s = await synthesize(options, progress);
  process.stdout.write(
    `wrote ${s.trainImages} training and ${s.testImages} test images, ${s.pretrainSamples} captions (pretrain.json), ` +
      `${s.finetuneSamples} conversations (finetune.json) and ${s.testQuestions} test questions (test.jsonl) to ${out}\n`,
  );
}

function required(v: Values, name: string): string {
  const value = v[name];
  if (typeof value !== "string" || value === "") throw new UsageError(`data check needs --${name} (see llava data --help)`);
  return value;
}

async function checkCommand(v: Values): Promise<void> {
  const dataPath = required(v, "data-path");
  const modelPath = required(v, "model-path");
  const maxText = (v["model-max-length"] as string | undefined) ?? "2048";
  const modelMaxLength = Number(maxText);
  if (!/^\d+$/.test(maxText) || modelMaxLength < 1) throw new UsageError(`--model-max-length must be a whole number >= 1, got "${maxText}"`);
  const aspect = v["image-aspect-ratio"] as string | undefined;
  if (aspect !== undefined && !["pad", "square", "anyres"].includes(aspect)) throw new UsageError(`--image-aspect-ratio must be pad, square or anyres, got "${aspect}"`);
  const imageFolder = v["image-folder"] as string | undefined;
  if (imageFolder !== undefined && !isDirectory(imageFolder)) throw new LlavaError(`--image-folder ${imageFolder}: not a folder`);

  const spec = readModelSpec(modelPath, { visionTower: v["vision-tower"] as string | undefined });
  const vision = requireTower(spec);
  if (aspect === "anyres" && !spec.settings.anyres) throw new LlavaError(`--image-aspect-ratio anyres: ${spec.configFile} has no image_grid_pinpoints`);
  const tokenizer = LlavaTokenizer.load(spec.dir);
  const preprocess = preprocessOptionsFor(tokenizer, { ...spec.settings, format: spec.format }, (v.version as string | undefined) ?? "v1", modelMaxLength, imageFolder);
  const records = readTrainingData(dataPath);
  const withImages = records.find((r) => r.images.length);
  if (withImages && imageFolder === undefined) throw new UsageError(`data check needs --image-folder: record ${withImages.index} (id ${JSON.stringify(withImages.id)}) has images`);
  const imageTokens = imageTokenCounter({ ...spec.settings, anyres: aspect === undefined || aspect === "anyres" ? spec.settings.anyres : null }, vision);

  const progress = process.stderr.isTTY ? (done: number) => process.stderr.write(`\rchecked ${done}/${records.length}${done === records.length ? "\n" : ""}`) : undefined;
  const report = await checkDataset(records, { preprocess, imageTokens }, progress);
  const render = (dim?: (s: string) => string) => report.example && renderMasked(report.example, tokenizer, preprocess.imageTokenId, dim);
  if (v.json) {
    const example = report.example && { ...report.example, rendered: render() };
    process.stdout.write(`${JSON.stringify({ dataPath: path.resolve(dataPath), ...report, example }, null, 2)}\n`);
  } else {
    process.stdout.write(formatDataReport(report, render(process.stdout.isTTY ? (s) => `\x1b[2m${s}\x1b[22m` : undefined)));
  }
  if (report.bad.length) {
    throw new LlavaError(`${dataPath}: ${report.bad.length} of ${report.samples} samples have problems the trainer refuses (first: ${problemLines(report, 1)[0]})`);
  }
}
