/**
 * `llava eval run` and `llava eval report` end to end: a tiny POPE and ScienceQA in the
 * reference's playground/data/eval layout, answered by the shared tiny model, scored, reported,
 * then interrupted and rerun.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CLI, llava } from "../helpers/cli.js";
import { IMAGES, MODELS, ROOT } from "../helpers/paths.js";
import { MME_TASKS } from "../../src/eval/mme.js";
import { BENCHMARKS, REFERENCE_SCORES } from "../../src/eval/benchmarks.js";
import { parseArgs } from "../../src/eval/args.js";
import { LlavaError } from "../../src/util/errors.js";
import { llavaAsync, startFakeJudge } from "./fake-judge.js";

const MODEL = path.join(MODELS, "tiny-llava-1.5-mha");
const EXPERIMENT = "tiny-llava-1.5-mha";
const SHORT_ANSWER = "\nAnswer the question using a single word or phrase.";

const jsonl = (rows: object[]) => rows.map((r) => JSON.stringify(r) + "\n").join("");

function write(file: string, text: string | Buffer): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
}

/** POPE: two categories of two questions each, with different labels. */
function popeSample(dir: string): void {
  fs.mkdirSync(path.join(dir, "val2014"), { recursive: true });
  fs.copyFileSync(path.join(IMAGES, "checker_300x500.png"), path.join(dir, "val2014", "checker.png"));
  fs.copyFileSync(path.join(IMAGES, "gradient_640x480.png"), path.join(dir, "val2014", "gradient.png"));
  const questions = ["adversarial", "random"].flatMap((category, c) =>
    ["checker.png", "gradient.png"].map((image, i) => ({ question_id: 2 * c + i + 1, image, text: `Is there a ${["cat", "dog"][i]} in the image?${SHORT_ANSWER}`, category })),
  );
  write(path.join(dir, "llava_pope_test.jsonl"), jsonl(questions));
  for (const category of ["adversarial", "random"]) {
    const labels = category === "random" ? ["yes", "yes"] : ["yes", "no"];
    write(path.join(dir, "coco", `coco_pope_${category}.json`), jsonl(labels.map((label, i) => ({ image: ["checker.png", "gradient.png"][i], label }))));
  }
}

/** MME: every subtask that calculation scores, one image with a yes and a no question each. */
function mmeSample(dir: string): void {
  const root = path.join(dir, "MME_Benchmark_release_version");
  const questions = MME_TASKS.flatMap(([, tasks]) => tasks).flatMap((task) => {
    write(path.join(root, task, "0.png"), fs.readFileSync(path.join(IMAGES, "checker_300x500.png")));
    write(path.join(root, task, "0.txt"), `Is it ${task}? Please answer yes or no.\tYes\nIs it a cat? Please answer yes or no.\tNo\n`);
    return [`Is it ${task}?`, "Is it a cat?"].map((q) => ({ question_id: `${task}/0.png`, image: `${task}/0.png`, text: q + SHORT_ANSWER }));
  });
  write(path.join(dir, "llava_mme.jsonl"), jsonl(questions));
  fs.mkdirSync(path.join(dir, "eval_tool"));
}

/** MM-Vet: two questions, scored by its own grader from the converted file. */
function mmvetSample(dir: string): void {
  write(path.join(dir, "images", "v1_0.png"), fs.readFileSync(path.join(IMAGES, "gradient_640x480.png")));
  write(path.join(dir, "llava-mm-vet.jsonl"), jsonl([0, 1].map((i) => ({ question_id: i, image: "v1_0.png", text: ["What is this?", "What colour is it?"][i] }))));
}

/** TextVQA: two questions of one image in the OCR prompt format, with their ten answers. */
function textvqaSample(dir: string): void {
  write(path.join(dir, "train_images", "t1.png"), fs.readFileSync(path.join(IMAGES, "checker_300x500.png")));
  const questions = ["what is written?", "what colour is it?"];
  write(path.join(dir, "llava_textvqa_val_v051_ocr.jsonl"), jsonl(questions.map((q) => ({ question_id: "t1", image: "t1.png", text: `${q}\nReference OCR token: Jahrh${SHORT_ANSWER}` }))));
  const data = questions.map((question, i) => ({ image_id: "t1", question, answers: Array(10).fill(i === 0 ? "jahrh" : "black") }));
  write(path.join(dir, "TextVQA_0.5.1_val.json"), JSON.stringify({ dataset_name: "textvqa", data }));
}

/** VQAv2: two test-dev questions of the three of test2015 (the upload has all three). */
function vqav2Sample(dir: string): void {
  write(path.join(dir, "test2015", "q.png"), fs.readFileSync(path.join(IMAGES, "gradient_640x480.png")));
  const questions = [7, 8, 9].map((id) => ({ question_id: id, image: "q.png", text: `Question ${id}?${SHORT_ANSWER}` }));
  write(path.join(dir, "llava_vqav2_mscoco_test-dev2015.jsonl"), jsonl(questions.slice(0, 2)));
  write(path.join(dir, "llava_vqav2_mscoco_test2015.jsonl"), jsonl(questions));
}

/** ScienceQA: one question with an image, one text-only. */
function scienceQaSample(dir: string): void {
  write(path.join(dir, "images", "test", "1", "image.png"), fs.readFileSync(path.join(IMAGES, "gradient_640x480.png")));
  const questions = [
    { id: "1", image: "1/image.png", conversations: [{ from: "human", value: "<image>\nWhich side is brighter?\nOptions: (A) left (B) right" }, { from: "gpt", value: "B" }] },
    { id: "2", conversations: [{ from: "human", value: "Which number is larger?\nOptions: (A) 3 (B) 4" }, { from: "gpt", value: "B" }] },
  ];
  write(path.join(dir, "llava_test_CQM-A.json"), JSON.stringify(questions, null, 2));
  write(path.join(dir, "pid_splits.json"), JSON.stringify({ test: ["1", "2"] }));
  write(path.join(dir, "problems.json"), JSON.stringify({ "1": { choices: ["left", "right"], answer: 1 }, "2": { choices: ["3", "4"], answer: 1 } }));
}

function sample(): { root: string; data: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "llava-eval-run-"));
  const data = path.join(root, "playground", "data", "eval");
  popeSample(path.join(data, "pope"));
  scienceQaSample(path.join(data, "scienceqa"));
  mmeSample(path.join(data, "MME"));
  mmvetSample(path.join(data, "mm-vet"));
  textvqaSample(path.join(data, "textvqa"));
  vqav2Sample(path.join(data, "vqav2"));
  return { root, data };
}

const RUN = ["eval", "run", "--benchmark", "pope,sqa", "--model-path", MODEL, "--max-new-tokens", "3", "--out", "out"];

function runOk(root: string, args = RUN) {
  const r = llava(args, { cwd: root });
  assert.equal(r.status, 0, r.stderr);
  return r;
}

const readResult = (root: string, name: string) => JSON.parse(fs.readFileSync(path.join(root, "out", "results", `${name}.json`), "utf8"));

test("run answers, scores and reports POPE and ScienceQA; a rerun after an interruption gives the same results", () => {
  const { root, data } = sample();
  try {
    const first = runOk(root);
    const pope = readResult(root, "pope");
    const sqa = readResult(root, "sqa");

    // the scores are those the scorers print on the same answers, run on their own
    const popeAnswers = path.join(data, "pope", "answers", `${EXPERIMENT}.jsonl`);
    const popeAlone = llava(["eval", "eval_pope", "--annotation-dir", "coco", "--question-file", "llava_pope_test.jsonl", "--result-file", popeAnswers], { cwd: path.join(data, "pope") });
    assert.equal(popeAlone.status, 0, popeAlone.stderr);
    assert.equal(fs.readFileSync(path.join(root, "out", "results", "pope.txt"), "utf8"), popeAlone.stdout);
    const f1 = [...popeAlone.stdout.matchAll(/F1 score: (\S+)/g)].map((m) => Number(m[1]) * 100);
    assert.deepEqual(Object.keys(pope.categories), ["adversarial", "random"]);
    assert.deepEqual(Object.values(pope.categories), f1);
    assert.equal(pope.value, (f1[0] + f1[1]) / 2);
    assert.equal(pope.submission, null);

    const sqaAlone = llava(["eval", "eval_science_qa", "--base-dir", ".", "--result-file", `answers/${EXPERIMENT}.jsonl`, "--output-file", "o.json", "--output-result", "r.json"], { cwd: path.join(data, "scienceqa") });
    assert.equal(sqaAlone.status, 0, sqaAlone.stderr);
    const [, accuracy, imgAccuracy] = /Accuracy: ([\d.]+)%, IMG-Accuracy: ([\d.]+)%/.exec(sqaAlone.stdout)!;
    assert.equal(sqa.value, Number(imgAccuracy));
    assert.deepEqual(sqa.categories, { "all questions": Number(accuracy) });
    assert.equal(fs.readFileSync(path.join(data, "scienceqa", "answers", `${EXPERIMENT}_result.json`), "utf8"), fs.readFileSync(path.join(data, "scienceqa", "r.json"), "utf8"));
    assert.match(first.stdout, /IMG-Accuracy/, "the scorers' printout is shown");

    runOk(root, ["eval", "report", "--results", "out", "--out", "report"]);
    const md = fs.readFileSync(path.join(root, "report.md"), "utf8");
    assert.match(md, new RegExp(`\\| POPE \\| F1 \\(%\\), mean of categories \\| ${pope.value.toFixed(1)} \\| 85\\.9 \\| 85\\.9 \\|`));
    assert.match(md, new RegExp(`\\| ScienceQA-IMG \\| IMG-Accuracy \\(%\\) \\| ${sqa.value.toFixed(1)} \\| 66\\.8 \\| 71\\.6 \\|`));
    assert.match(md, /\| adversarial \| /);
    const page = fs.readFileSync(path.join(root, "report.html"), "utf8");
    assert.match(page, /<svg /);
    assert.match(page, new RegExp(`<td>${pope.value.toFixed(1)}</td>`));
    assert.doesNotMatch(page, /(src|href)="https?:/, "nothing fetched from the network");
    if (fs.existsSync("/usr/bin/chromium")) {
      const dom = spawnSync("/usr/bin/chromium", ["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", `file://${path.join(root, "report.html")}`], { encoding: "utf8", timeout: 30_000 });
      if (dom.status === 0) assert.match(dom.stdout, /<svg /);
    }

    // interrupted: POPE's result gone and its answers file cut in the middle of its last line
    const answers = fs.readFileSync(popeAnswers, "utf8");
    fs.rmSync(path.join(root, "out", "results", "pope.json"));
    fs.writeFileSync(popeAnswers, answers.slice(0, answers.lastIndexOf("\n", answers.length - 2) + 20));
    const report = fs.readFileSync(path.join(root, "report.md"), "utf8");
    const rerun = runOk(root);
    assert.match(rerun.stderr, /sqa: done before/);
    assert.match(rerun.stderr, /resuming .*3 answer\(s\) kept, 1 to go/);
    assert.deepEqual(readResult(root, "pope"), pope);
    assert.deepEqual(readResult(root, "sqa"), sqa);
    const strip = (text: string) => text.split("\n").map((l) => l.replace(/"answer_id": "[^"]*"/, ""));
    assert.deepEqual(strip(fs.readFileSync(popeAnswers, "utf8")), strip(answers), "the same answers, the torn one asked again");
    runOk(root, ["eval", "report", "--results", "out", "--out", "report"]);
    assert.equal(fs.readFileSync(path.join(root, "report.md"), "utf8"), report);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a run killed while it answers resumes, on rerun, to the results of a run never interrupted", async () => {
  const whole = sample();
  const killed = sample();
  try {
    runOk(whole.root);
    const answers = path.join(killed.data, "pope", "answers", `${EXPERIMENT}.jsonl`);
    const child = spawn(process.execPath, [CLI, ...RUN], { cwd: killed.root, stdio: "ignore" });
    const exited = new Promise<string | null>((resolve) => child.on("exit", (_, signal) => resolve(signal)));
    // killed once its first answer is written
    while (!(fs.existsSync(answers) && fs.readFileSync(answers, "utf8").includes("\n")) && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
    child.kill("SIGKILL");
    assert.equal(await exited, "SIGKILL", "the run was still going when killed");
    assert.ok(!fs.existsSync(path.join(killed.root, "out", "results", "pope.json")));
    runOk(killed.root);
    for (const name of ["pope", "sqa"]) assert.deepEqual(readResult(killed.root, name), readResult(whole.root, name));
  } finally {
    for (const { root } of [whole, killed]) fs.rmSync(root, { recursive: true, force: true });
  }
});

test("MME's tools run in their folders as mme.sh runs them; TextVQA is scored; VQAv2's and MM-Vet's files are written for their servers", () => {
  const { root, data } = sample();
  try {
    runOk(root, ["eval", "run", "--benchmark", "mme,textvqa,vqav2,mmvet", "--model-path", MODEL, "--max-new-tokens", "2", "--out", "out"]);
    const mme = readResult(root, "mme");
    const alone = llava(["eval", "calculation", "--results_dir", path.join("answers", EXPERIMENT)], { cwd: path.join(data, "MME", "eval_tool") });
    assert.equal(alone.status, 0, alone.stderr);
    assert.equal(fs.readFileSync(path.join(root, "out", "results", "mme.txt"), "utf8"), alone.stdout);
    const totals = [...alone.stdout.matchAll(/total score: (\S+)/g)].map((m) => Number(m[1]));
    assert.equal(mme.metric, "Perception score");
    assert.equal(mme.value, totals[0]);
    assert.equal(mme.categories.Cognition, totals[1]);
    assert.deepEqual(Object.keys(mme.categories), ["Cognition", ...MME_TASKS.flatMap(([, tasks]) => tasks)]);

    const textvqa = readResult(root, "textvqa");
    const scorer = llava(["eval", "eval_textvqa", "--annotation-file", "TextVQA_0.5.1_val.json", "--result-file", `answers/${EXPERIMENT}.jsonl`], { cwd: path.join(data, "textvqa") });
    assert.equal(scorer.status, 0, scorer.stderr);
    assert.equal(fs.readFileSync(path.join(root, "out", "results", "textvqa.txt"), "utf8"), scorer.stdout);
    assert.equal(textvqa.value, Number(/Accuracy: ([\d.]+)%/.exec(scorer.stdout)![1]));

    const vqav2 = readResult(root, "vqav2");
    const upload = path.join(data, "vqav2", "answers_upload", "llava_vqav2_mscoco_test-dev2015", `${EXPERIMENT}.json`);
    assert.deepEqual(vqav2.submission, { file: upload, to: "the EvalAI VQAv2 server, test-dev phase (VQA accuracy)" });
    const uploaded = JSON.parse(fs.readFileSync(upload, "utf8"));
    assert.deepEqual(uploaded.map((a: { question_id: number }) => a.question_id), [7, 8, 9]);
    assert.equal(uploaded[2].answer, "", "a test2015 question outside test-dev is submitted empty");
    assert.match(fs.readFileSync(path.join(root, "out", "results", "vqav2.txt"), "utf8"), /^total results: 2, total split: 3, error_line: 0\n$/);

    const mmvet = readResult(root, "mmvet");
    const dst = path.join(data, "mm-vet", "results", `${EXPERIMENT}.json`);
    assert.deepEqual(mmvet.submission, { file: dst, to: "the official MM-Vet GPT-4 grader" });
    assert.equal(mmvet.value, null);
    assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(dst, "utf8"))), ["v1_0", "v1_1"]);

    runOk(root, ["eval", "report", "--results", "out", "--out", path.join("reports", "r")]);
    const md = fs.readFileSync(path.join(root, "reports", "r.md"), "utf8");
    assert.match(md, /\| MME \| Perception score \| [\d.]+ \| 1510\.7 \| 1531\.3 \|/);
    assert.match(md, /\| MM-Vet \| server score \| submission written \| 31\.1 \| 36\.1 \|/);
    assert.ok(md.includes(`submission ${dst} goes to the official MM-Vet GPT-4 grader`));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("LLaVA-Bench is answered, reviewed by the judge and summarised; the relative score is the report's", async () => {
  const { root, data } = sample();
  const dir = path.join(data, "llava-bench-in-the-wild");
  const questions = ["What is this?", "Describe the image.", "Why is it odd?"];
  write(path.join(dir, "images", "a.png"), fs.readFileSync(path.join(IMAGES, "checker_300x500.png")));
  const categories = ["conv", "detail", "complex"];
  write(path.join(dir, "questions.jsonl"), jsonl(questions.map((text, i) => ({ question_id: i, image: "a.png", text, category: categories[i] }))));
  write(path.join(dir, "context.jsonl"), jsonl([{ image: "a.png", caption: ["A checker board."] }]));
  write(path.join(dir, "answers_gpt4.jsonl"), jsonl(questions.map((_, i) => ({ question_id: i, text: "A reference answer.", answer_id: `g${i}`, model_id: "gpt-4" }))));
  write(path.join(root, "llava", "eval", "table", "rule.json"), fs.readFileSync(path.join(ROOT, "test", "eval", "data", "eval_gpt_review_bench", "rule.json")));
  const judge = await startFakeJudge(questions, ["8 6\nok", "10 5\nok", "4 4\nok"]);
  try {
    const r = await llavaAsync(["eval", "run", "--benchmark", "llavabench", "--model-path", MODEL, "--max-new-tokens", "2", "--out", "out", "--judge-api-base", judge.apiBase], root);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(judge.answered.length, 3);
    const result = readResult(root, "llavabench");
    // summarize_gpt_review: round(mean model / mean reference * 100, 1) per category and for all
    assert.deepEqual(result.categories, { llava_bench_complex: 100, llava_bench_conv: 75, llava_bench_detail: 50 });
    assert.equal(result.value, 68.2);
    assert.equal(result.metric, "relative score (%)");
  } finally {
    await judge.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("every benchmark's steps are command lines their commands take, and every benchmark has the published figures", () => {
  const ctx = { dir: "d", model: "m", runnerArgs: ["--model-path", "m", "--temperature", "0"], judgeArgs: ["--api-base", "http://127.0.0.1:1/v1", "--rule", "r.json"] };
  for (const benchmark of BENCHMARKS) {
    for (const step of benchmark.steps(ctx)) assert.doesNotThrow(() => parseArgs(step.command.name, step.argv, step.command.options), `${benchmark.name}: ${step.command.name}`);
    assert.equal(REFERENCE_SCORES[benchmark.name].length, 2, benchmark.name);
    // a scorer that printed nothing is an error, never a score of NaN or 0; a benchmark without a scorer has a submission
    try {
      assert.equal(benchmark.score(""), null, benchmark.name);
      assert.ok(benchmark.submission, benchmark.name);
    } catch (err) {
      assert.ok(err instanceof LlavaError, `${benchmark.name}: ${err}`);
    }
  }
  assert.deepEqual(Object.keys(REFERENCE_SCORES).sort(), BENCHMARKS.map((b) => b.name).sort());
});

test("bad input: an unknown benchmark, a data folder without the benchmark or with none, LLaVA-Bench without a judge, no results or bad ones", () => {
  const { root } = sample();
  try {
    const unknown = llava(["eval", "run", "--benchmark", "pope,nope", "--model-path", MODEL], { cwd: root });
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /^llava: eval run: unknown benchmark "nope"; known: vqav2,/m);
    const noFolder = llava(["eval", "run", "--benchmark", "gqa", "--model-path", MODEL], { cwd: root });
    assert.equal(noFolder.status, 1);
    assert.match(noFolder.stderr, /has no folder for gqa \(gqa\)/);
    const noJudge = llava(["eval", "run", "--benchmark", "llavabench", "--model-path", MODEL], { cwd: root });
    assert.equal(noJudge.status, 1);
    assert.match(noJudge.stderr, /llavabench is scored by a judge model: give --judge-api-base/);
    const empty = llava(["eval", "run", "--benchmark", "all", "--model-path", MODEL, "--data-dir", "out"], { cwd: root });
    assert.equal(empty.status, 1);
    assert.match(empty.stderr, /^llava: eval run: --data-dir .* no such folder/m);
    fs.mkdirSync(path.join(root, "empty"));
    const none = llava(["eval", "run", "--benchmark", "all", "--model-path", MODEL, "--data-dir", "empty"], { cwd: root });
    assert.equal(none.status, 1);
    assert.match(none.stderr, /^llava: eval run: --data-dir .*empty holds none of the benchmark folders vqav2, gqa/m);
    const noResults = llava(["eval", "report", "--results", "nowhere"], { cwd: root });
    assert.equal(noResults.status, 1);
    assert.match(noResults.stderr, /nowhere\/results: no such folder/);
    write(path.join(root, "torn", "results", "pope.json"), '{"benchmark": "pope", "val');
    const torn = llava(["eval", "report", "--results", "torn"], { cwd: root });
    assert.equal(torn.status, 1);
    assert.match(torn.stderr, /^llava: eval report: .*torn\/results\/pope\.json is not JSON/m);
    write(path.join(root, "other", "results", "pope.json"), '{"benchmark": "sqa", "value": 1}');
    const other = llava(["eval", "report", "--results", "other"], { cwd: root });
    assert.equal(other.status, 1);
    assert.match(other.stderr, /other\/results\/pope\.json is not a result of llava eval run/);
    assert.ok(!fs.existsSync(path.join(root, "report.md")), "no report from bad results");
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("a failing benchmark is named and the others still run and are kept", () => {
  const { root, data } = sample();
  try {
    fs.rmSync(path.join(data, "pope", "coco", "coco_pope_random.json"));
    fs.writeFileSync(path.join(data, "pope", "coco", "coco_pope_random.txt"), "");
    const r = llava(RUN, { cwd: root });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^llava: warning: pope stopped: .*coco_pope_random\.txt/m);
    assert.match(r.stderr, /^llava: eval run: 1 of 2 benchmark\(s\) failed: pope/m);
    assert.ok(fs.existsSync(path.join(root, "out", "results", "sqa.json")));
    assert.ok(!fs.existsSync(path.join(root, "out", "results", "pope.json")));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
