/**
 * `llava eval run`: the reference's evaluation shell scripts in one command. For each chosen
 * benchmark its steps (benchmarks.ts) run in-process, in order, and its result is written to
 * `<out>/results/<benchmark>.json`, with what the scoring steps printed next to it
 * (`<benchmark>.txt`). A benchmark whose result exists is skipped and an interrupted one starts
 * again, its answer runner keeping the answers already written, so a rerun after an interruption
 * picks up where it stopped. A failing benchmark is reported and the others still run.
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs, type ArgValues } from "./args.js";
import { BENCHMARKS, type Benchmark, type RunContext, type Score, type Step, type Submission } from "./benchmarks.js";
import type { EvalCommand } from "./commands.js";
import { writeText } from "./script-io.js";
import { modelNameFromPath } from "../llava/conversation.js";
import { LlavaError } from "../util/errors.js";

/** What `results/<benchmark>.json` holds. */
export interface BenchmarkResult {
  benchmark: string;
  title: string;
  model: string;
  /** null where the score comes from the benchmark's server */
  metric: string | null;
  value: number | null;
  categories: Record<string, number>;
  submission: Submission | null;
}

export const RESULTS_FOLDER = "results";

/** The steps' own stdout, kept as it is shown (the scores are read from it). */
async function capturingStdout(body: () => Promise<void>): Promise<string> {
  const write = process.stdout.write;
  let printed = "";
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    printed += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
    return (write as (...a: unknown[]) => boolean).call(process.stdout, chunk, ...rest);
  }) as typeof process.stdout.write;
  try {
    await body();
  } finally {
    process.stdout.write = write;
  }
  return printed;
}

/** Runs one step as `llava eval <name> <argv>` would, in its folder. */
async function runStep(step: Step): Promise<void> {
  if (step.mkdir) fs.mkdirSync(step.mkdir, { recursive: true });
  const home = process.cwd();
  if (step.cwd) process.chdir(step.cwd);
  try {
    await step.command.run(parseArgs(step.command.name, step.argv, step.command.options));
  } finally {
    process.chdir(home);
  }
}

async function runBenchmark(benchmark: Benchmark, ctx: RunContext, resultsDir: string): Promise<BenchmarkResult> {
  const [answer, ...scoring] = benchmark.steps(ctx);
  process.stderr.write(`== ${benchmark.name}: ${answer.command.name}\n`);
  await runStep(answer);
  const printed = await capturingStdout(async () => {
    for (const step of scoring) {
      process.stderr.write(`== ${benchmark.name}: ${step.command.name}\n`);
      await runStep(step);
    }
  });
  writeText(path.join(resultsDir, `${benchmark.name}.txt`), printed);
  const score: Score | null = benchmark.score(printed);
  const submission = benchmark.submission?.(ctx) ?? null;
  if (submission) process.stderr.write(`${benchmark.name}: submission written to ${submission.file}; it goes to ${submission.to}\n`);
  return {
    benchmark: benchmark.name,
    title: benchmark.title,
    model: ctx.model,
    metric: score?.metric ?? null,
    value: score?.value ?? null,
    categories: score?.categories ?? {},
    submission,
  };
}

/** The benchmarks named by --benchmark ("all": every one whose folder is in the data folder, LLaVA-Bench only with a judge). */
function chosenBenchmarks(names: string, dataDir: string, hasJudge: boolean): Benchmark[] {
  if (names === "all") {
    const present = BENCHMARKS.filter((b) => fs.existsSync(path.join(dataDir, b.folder)) && (hasJudge || !b.needsJudge));
    if (present.length === 0) throw new LlavaError(`eval run: --data-dir ${dataDir} holds none of the benchmark folders ${BENCHMARKS.map((b) => b.folder).join(", ")}`);
    return present;
  }
  const chosen = names.split(",").map((name) => {
    const benchmark = BENCHMARKS.find((b) => b.name === name.trim());
    if (!benchmark) throw new LlavaError(`eval run: unknown benchmark "${name}"; known: ${BENCHMARKS.map((b) => b.name).join(", ")}, or all`);
    if (benchmark.needsJudge && !hasJudge) throw new LlavaError(`eval run: ${benchmark.name} is scored by a judge model: give --judge-api-base`);
    return benchmark;
  });
  return [...new Set(chosen)];
}

async function runAll(args: ArgValues): Promise<void> {
  const judgeBase = args.judge_api_base as string | null;
  const dataDir = path.resolve(String(args.data_dir));
  if (!fs.existsSync(dataDir)) throw new LlavaError(`eval run: --data-dir ${dataDir}: no such folder (the reference's playground/data/eval)`);
  const benchmarks = chosenBenchmarks(String(args.benchmark), dataDir, judgeBase !== null);
  const modelPath = String(args.model_path);
  const missing = benchmarks.filter((b) => !fs.existsSync(path.join(dataDir, b.folder))).map((b) => `${b.name} (${b.folder})`);
  if (missing.length) throw new LlavaError(`eval run: --data-dir ${dataDir} has no folder for ${missing.join(", ")}`);
  const resultsDir = path.resolve(String(args.out), RESULTS_FOLDER);
  fs.mkdirSync(resultsDir, { recursive: true });

  const runnerArgs = ["--model-path", path.resolve(modelPath), "--temperature", "0", "--conv-mode", String(args.conv_mode)];
  if (args.model_base !== null) runnerArgs.push("--model-base", path.resolve(String(args.model_base)));
  if (args.max_new_tokens !== null) runnerArgs.push("--max_new_tokens", String(args.max_new_tokens));
  const judgeArgs = judgeBase === null ? [] : ["--api-base", judgeBase, "--rule", path.resolve(String(args.judge_rule))];
  if (args.judge_model !== null) judgeArgs.push("--judge-model", String(args.judge_model));
  const model = String(args.experiment ?? modelNameFromPath(modelPath));

  const failed: string[] = [];
  for (const benchmark of benchmarks) {
    const resultFile = path.join(resultsDir, `${benchmark.name}.json`);
    if (fs.existsSync(resultFile)) {
      process.stderr.write(`== ${benchmark.name}: done before (${resultFile}), skipped\n`);
      continue;
    }
    try {
      const result = await runBenchmark(benchmark, { dir: path.join(dataDir, benchmark.folder), model, runnerArgs, judgeArgs }, resultsDir);
      writeText(resultFile, JSON.stringify(result, null, 2) + "\n");
    } catch (err) {
      if (!(err instanceof LlavaError)) throw err;
      process.stderr.write(`llava: warning: ${benchmark.name} stopped: ${err.message}\n`);
      failed.push(benchmark.name);
    }
  }
  if (failed.length) throw new LlavaError(`eval run: ${failed.length} of ${benchmarks.length} benchmark(s) failed: ${failed.join(", ")} (see the lines above); a rerun resumes them`);
}

export const evalRun: EvalCommand = {
  name: "run",
  summary: "answers, converts and scores benchmarks in the reference's playground/data/eval layout; resumable",
  options: {
    "--benchmark": { type: "str", required: true, help: `comma-separated: ${BENCHMARKS.map((b) => b.name).join(",")}, or all (those in --data-dir)` },
    "--model-path": { type: "str", required: true },
    "--model-base": { type: "str", default: null },
    "--data-dir": { type: "str", default: "./playground/data/eval", help: "the reference's playground/data/eval" },
    "--out": { type: "str", default: "./eval-results", help: "results/<benchmark>.json are written here" },
    "--experiment": { type: "str", default: null, help: "the name answers are filed under (default: the model folder's name)" },
    "--conv-mode": { type: "str", default: "vicuna_v1" },
    "--max-new-tokens": { type: "int", default: null, help: "the runners' budget (default: each runner's own)" },
    "--judge-api-base": { type: "str", default: null, help: "the judge's OpenAI-compatible endpoint (LLaVA-Bench)" },
    "--judge-model": { type: "str", default: null, help: "default: the reference's (gpt-4-0314)" },
    "--judge-rule": { type: "str", default: "llava/eval/table/rule.json", help: "the review rules, the reference's rule.json (its path in llavabench.sh)" },
  },
  run: runAll,
};
