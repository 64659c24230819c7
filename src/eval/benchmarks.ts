/**
 * The benchmarks `llava eval run` chains, one entry each: the reference's shell script
 * (scripts/v1_5/eval/<name>.sh) as steps, its answer runner first, then its converter and scorer,
 * with the same options and the same paths under the reference's `playground/data/eval` layout
 * (--data-dir); what the scorer prints, read back as a score; and, where the score comes from a
 * server, the file to submit and where it goes.
 */
import path from "node:path";
import type { EvalCommand } from "./commands.js";
import { modelVqa, modelVqaLoader } from "./model-vqa.js";
import { modelVqaScience } from "./model-vqa-science.js";
import { modelVqaMmbench } from "./model-vqa-mmbench.js";
import { evalPope } from "./eval-pope.js";
import { evalScienceQa } from "./eval-science-qa.js";
import { evalTextvqa } from "./eval-textvqa.js";
import { convertVizwizForSubmission, convertVqav2ForSubmission } from "./convert-vqa-submission.js";
import { convertGqa } from "./convert-gqa.js";
import { convertSeed } from "./convert-seed.js";
import { convertMmvet } from "./convert-mmvet.js";
import { convertMmbench } from "./convert-mmbench.js";
import { convertAnswerToMme } from "./convert-mme.js";
import { mmeCalculation } from "./mme-calculation.js";
import { evalGptReviewBench } from "./eval-gpt-review-bench.js";
import { summarizeGptReview } from "./summarize-gpt-review.js";
import { LlavaError } from "../util/errors.js";

/** What one run of a benchmark needs to know. */
export interface RunContext {
  /** the benchmark's folder, playground/data/eval/<folder> in the reference */
  dir: string;
  /** the experiment name the answers are filed under (the reference's CKPT) */
  model: string;
  /** the runner options every benchmark shares: model, template, temperature 0, budget */
  runnerArgs: string[];
  /** the judge's options and rule file (LLaVA-Bench only) */
  judgeArgs: string[];
}

/** One command of a benchmark's script, run in-process as `llava eval <command> <argv>`. */
export interface Step {
  command: EvalCommand;
  argv: string[];
  /** the folder the script `cd`s into first (MME's tools read paths relative to it) */
  cwd?: string;
  /** a folder the script makes (`mkdir -p`) before the step */
  mkdir?: string;
}

/** A benchmark's score as the report shows it. */
export interface Score {
  metric: string;
  value: number;
  categories: Record<string, number>;
}

/** A file to hand to the benchmark's own server or grader. */
export interface Submission {
  file: string;
  to: string;
}

export interface Benchmark {
  /** the name of the reference's script and of the results file */
  name: string;
  title: string;
  /** the folder under --data-dir */
  folder: string;
  /** LLaVA-Bench: only with a judge */
  needsJudge?: boolean;
  steps(ctx: RunContext): Step[];
  /** the score in what the scoring steps printed; null where the score comes from elsewhere */
  score(printed: string): Score | null;
  submission?(ctx: RunContext): Submission;
}

/**
 * LLaVA-1.5's published scores (docs/MODEL_ZOO.md, full finetune), as the spec's section 7.2
 * lists them: [7B, 13B].
 */
export const REFERENCE_SCORES: Record<string, [number, number]> = {
  vqav2: [78.5, 80.0],
  gqa: [62.0, 63.3],
  vizwiz: [50.0, 53.6],
  sqa: [66.8, 71.6],
  textvqa: [58.2, 61.3],
  pope: [85.9, 85.9],
  mme: [1510.7, 1531.3],
  mmbench: [64.3, 67.7],
  mmbench_cn: [58.3, 63.6],
  seed: [58.6, 61.6],
  llavabench: [65.4, 72.5],
  mmvet: [31.1, 36.1],
};

const at = (ctx: RunContext, ...parts: string[]) => path.join(ctx.dir, ...parts);

/** Every match of `pattern` (with the global flag) in `text`, as [group 1, number in group 2]. */
function pairs(text: string, pattern: RegExp): Array<[string, number]> {
  return [...text.matchAll(pattern)].map((m) => [m[1], Number(m[2])]);
}

/** Where the scorer printed no score (e.g. POPE given no label file), there is none to report. */
const noScore = (what: string): never => {
  throw new LlavaError(`the scorer printed no ${what}`);
};

function single(text: string, pattern: RegExp, what: string): number {
  const m = pattern.exec(text);
  return m ? Number(m[1]) : noScore(what);
}

/** The loader on a JSON-lines question file, as most scripts run it. */
const loader = (ctx: RunContext, questions: string, images: string, answers: string): Step => ({
  command: modelVqaLoader,
  argv: [...ctx.runnerArgs, "--question-file", at(ctx, questions), "--image-folder", at(ctx, images), "--answers-file", at(ctx, answers)],
});

/**
 * The multi-GPU scripts answer in chunks `{CHUNKS}_{IDX}.jsonl` and concatenate them into
 * merge.jsonl; here there is one chunk, so the answers are written to merge.jsonl itself.
 */
const merged = (ctx: RunContext, folder: string) => path.join(folder, ctx.model, "merge.jsonl");

const VQAV2_SPLIT = "llava_vqav2_mscoco_test-dev2015";
const GQA_SPLIT = "llava_gqa_testdev_balanced";
const MMBENCH_SPLITS = { mmbench: "mmbench_dev_20230712", mmbench_cn: "mmbench_dev_cn_20231003" };

function mmbench(name: "mmbench" | "mmbench_cn", title: string, lang: string[]): Benchmark {
  const split = MMBENCH_SPLITS[name];
  return {
    name,
    title,
    folder: name,
    steps: (ctx) => [
      {
        command: modelVqaMmbench,
        argv: [...ctx.runnerArgs, "--question-file", at(ctx, `${split}.tsv`), "--answers-file", at(ctx, "answers", split, `${ctx.model}.jsonl`), ...lang, "--single-pred-prompt"],
      },
      {
        command: convertMmbench,
        mkdir: at(ctx, "answers_upload", split),
        argv: ["--annotation-file", at(ctx, `${split}.tsv`), "--result-dir", at(ctx, "answers", split), "--upload-dir", at(ctx, "answers_upload", split), "--experiment", ctx.model],
      },
    ],
    score: () => null,
    submission: (ctx) => ({ file: at(ctx, "answers_upload", split, `${ctx.model}.xlsx`), to: "the OpenCompass MMBench evaluation server (CircularEval accuracy)" }),
  };
}

/** In the order of the spec's table of the 12 benchmarks. */
export const BENCHMARKS: Benchmark[] = [
  {
    name: "vqav2",
    title: "VQAv2 (test-dev)",
    folder: "vqav2",
    steps: (ctx) => [
      loader(ctx, `${VQAV2_SPLIT}.jsonl`, "test2015", merged(ctx, path.join("answers", VQAV2_SPLIT))),
      { command: convertVqav2ForSubmission, argv: ["--dir", ctx.dir, "--split", VQAV2_SPLIT, "--ckpt", ctx.model] },
    ],
    score: () => null,
    submission: (ctx) => ({ file: at(ctx, "answers_upload", VQAV2_SPLIT, `${ctx.model}.json`), to: "the EvalAI VQAv2 server, test-dev phase (VQA accuracy)" }),
  },
  {
    name: "gqa",
    title: "GQA (testdev-balanced)",
    folder: "gqa",
    steps: (ctx) => [
      loader(ctx, `${GQA_SPLIT}.jsonl`, path.join("data", "images"), merged(ctx, path.join("answers", GQA_SPLIT))),
      { command: convertGqa, argv: ["--src", at(ctx, merged(ctx, path.join("answers", GQA_SPLIT))), "--dst", at(ctx, "data", "testdev_balanced_predictions.json")] },
    ],
    score: () => null,
    submission: (ctx) => ({ file: at(ctx, "data", "testdev_balanced_predictions.json"), to: `GQA's official eval/eval.py --tier testdev_balanced, run in ${at(ctx, "data")}` }),
  },
  {
    name: "vizwiz",
    title: "VizWiz (test)",
    folder: "vizwiz",
    steps: (ctx) => [
      loader(ctx, "llava_test.jsonl", "test", path.join("answers", `${ctx.model}.jsonl`)),
      {
        command: convertVizwizForSubmission,
        argv: ["--annotation-file", at(ctx, "llava_test.jsonl"), "--result-file", at(ctx, "answers", `${ctx.model}.jsonl`), "--result-upload-file", at(ctx, "answers_upload", `${ctx.model}.json`)],
      },
    ],
    score: () => null,
    submission: (ctx) => ({ file: at(ctx, "answers_upload", `${ctx.model}.json`), to: "the EvalAI VizWiz-VQA server, test phase" }),
  },
  {
    name: "sqa",
    title: "ScienceQA-IMG",
    folder: "scienceqa",
    steps: (ctx) => [
      {
        command: modelVqaScience,
        argv: [...ctx.runnerArgs, "--question-file", at(ctx, "llava_test_CQM-A.json"), "--image-folder", at(ctx, "images", "test"), "--answers-file", at(ctx, "answers", `${ctx.model}.jsonl`), "--single-pred-prompt"],
      },
      {
        command: evalScienceQa,
        argv: [
          "--base-dir", ctx.dir, "--result-file", at(ctx, "answers", `${ctx.model}.jsonl`),
          "--output-file", at(ctx, "answers", `${ctx.model}_output.jsonl`), "--output-result", at(ctx, "answers", `${ctx.model}_result.json`),
        ],
      },
    ],
    score: (printed) => ({
      metric: "IMG-Accuracy (%)",
      value: single(printed, /IMG-Accuracy: ([\d.]+)%/, "IMG-Accuracy"),
      categories: { "all questions": single(printed, /, Accuracy: ([\d.]+)%/, "Accuracy") },
    }),
  },
  {
    name: "textvqa",
    title: "TextVQA (val)",
    folder: "textvqa",
    steps: (ctx) => [
      loader(ctx, "llava_textvqa_val_v051_ocr.jsonl", "train_images", path.join("answers", `${ctx.model}.jsonl`)),
      { command: evalTextvqa, argv: ["--annotation-file", at(ctx, "TextVQA_0.5.1_val.json"), "--result-file", at(ctx, "answers", `${ctx.model}.jsonl`)] },
    ],
    score: (printed) => ({ metric: "Accuracy (%)", value: single(printed, /Accuracy: ([\d.]+)%/, "Accuracy"), categories: {} }),
  },
  {
    name: "pope",
    title: "POPE",
    folder: "pope",
    steps: (ctx) => [
      loader(ctx, "llava_pope_test.jsonl", "val2014", path.join("answers", `${ctx.model}.jsonl`)),
      {
        command: evalPope,
        argv: ["--annotation-dir", at(ctx, "coco"), "--question-file", at(ctx, "llava_pope_test.jsonl"), "--result-file", at(ctx, "answers", `${ctx.model}.jsonl`)],
      },
    ],
    // the reported figure is the mean F1 of the categories, in percent
    score: (printed) => {
      const categories = pairs(printed, /Category: (\S+), # samples[^]*?F1 score: (\S+)/g);
      if (categories.length === 0) noScore("F1 score");
      const f1 = categories.map(([, x]) => x * 100);
      return { metric: "F1 (%), mean of categories", value: f1.reduce((a, b) => a + b, 0) / f1.length, categories: Object.fromEntries(categories.map(([c], i) => [c, f1[i]])) };
    },
  },
  {
    name: "mme",
    title: "MME",
    folder: "MME",
    steps: (ctx) => [
      loader(ctx, "llava_mme.jsonl", "MME_Benchmark_release_version", path.join("answers", `${ctx.model}.jsonl`)),
      { command: convertAnswerToMme, cwd: ctx.dir, argv: ["--experiment", ctx.model] },
      { command: mmeCalculation, cwd: at(ctx, "eval_tool"), argv: ["--results_dir", path.join("answers", ctx.model)] },
    ],
    // the reported figure is the Perception total; Cognition and the subtasks are its categories
    score: (printed) => {
      const totals = pairs(printed, /=+ (\w+) =+\ntotal score: (\S+)/g);
      const subtasks = pairs(printed, /\t (.+?)  score: (\S+)/g);
      const perception = totals.find(([kind]) => kind === "Perception");
      if (!perception) return noScore("Perception total");
      return { metric: "Perception score", value: perception[1], categories: Object.fromEntries([...totals.filter(([k]) => k !== "Perception"), ...subtasks]) };
    },
  },
  mmbench("mmbench", "MMBench (dev)", []),
  mmbench("mmbench_cn", "MMBench-CN (dev)", ["--lang", "cn"]),
  {
    name: "seed",
    title: "SEED-Bench",
    folder: "seed_bench",
    steps: (ctx) => [
      loader(ctx, "llava-seed-bench.jsonl", ".", merged(ctx, "answers")),
      {
        command: convertSeed,
        argv: ["--annotation-file", at(ctx, "SEED-Bench.json"), "--result-file", at(ctx, merged(ctx, "answers")), "--result-upload-file", at(ctx, "answers_upload", `${ctx.model}.jsonl`)],
      },
    ],
    // the converter scores against the annotation's answers; the leaderboard takes the upload file
    score: (printed) => ({
      metric: "Accuracy (%), image and video",
      value: single(printed, /^Total accuracy: ([\d.]+)%/m, "total accuracy"),
      categories: Object.fromEntries(pairs(printed, /^(.+?): ([\d.]+)%$/gm).filter(([name]) => name !== "Total accuracy")),
    }),
    submission: (ctx) => ({ file: at(ctx, "answers_upload", `${ctx.model}.jsonl`), to: "the SEED-Bench leaderboard" }),
  },
  {
    name: "llavabench",
    title: "LLaVA-Bench (in-the-wild)",
    folder: "llava-bench-in-the-wild",
    needsJudge: true,
    steps: (ctx) => [
      { command: modelVqa, argv: [...ctx.runnerArgs, "--question-file", at(ctx, "questions.jsonl"), "--image-folder", at(ctx, "images"), "--answers-file", at(ctx, "answers", `${ctx.model}.jsonl`)] },
      {
        command: evalGptReviewBench,
        mkdir: at(ctx, "reviews"),
        argv: [
          ...ctx.judgeArgs, "--question", at(ctx, "questions.jsonl"), "--context", at(ctx, "context.jsonl"),
          "--answer-list", at(ctx, "answers_gpt4.jsonl"), at(ctx, "answers", `${ctx.model}.jsonl`), "--output", at(ctx, "reviews", `${ctx.model}.jsonl`),
        ],
      },
      { command: summarizeGptReview, argv: ["-f", at(ctx, "reviews", `${ctx.model}.jsonl`)] },
    ],
    // summarize prints "<category> <relative score> <reference score> <model score>"
    score: (printed) => {
      const rows = pairs(printed, /^(\w+) (\S+) \S+ \S+$/gm);
      const all = rows.find(([c]) => c === "all");
      if (!all) return noScore("relative score of all categories");
      return { metric: "relative score (%)", value: all[1], categories: Object.fromEntries(rows.filter(([c]) => c !== "all")) };
    },
  },
  {
    name: "mmvet",
    title: "MM-Vet",
    folder: "mm-vet",
    steps: (ctx) => [
      { command: modelVqa, argv: [...ctx.runnerArgs, "--question-file", at(ctx, "llava-mm-vet.jsonl"), "--image-folder", at(ctx, "images"), "--answers-file", at(ctx, "answers", `${ctx.model}.jsonl`)] },
      { command: convertMmvet, mkdir: at(ctx, "results"), argv: ["--src", at(ctx, "answers", `${ctx.model}.jsonl`), "--dst", at(ctx, "results", `${ctx.model}.json`)] },
    ],
    score: () => null,
    submission: (ctx) => ({ file: at(ctx, "results", `${ctx.model}.json`), to: "the official MM-Vet GPT-4 grader" }),
  },
];
