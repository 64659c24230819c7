/**
 * The answer runners' end-to-end checks: a working folder laid out as the reference was run in to
 * make the expected files (test/eval/data/<script>/<case>/: args.txt, stdout.txt, answers.jsonl,
 * prompts.jsonl, made by the reference script with its model replaced by a stub that answers
 * "answer N"), and the comparison of an answers file with the reference's.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { conversationPrompt, type AnswerScript } from "../../src/eval/answer-runner.js";
import { getChunk } from "../../src/eval/chunks.js";
import { dumpJson, loadJson, type PyDict } from "../../src/io/python.js";
import { llava, type CliResult } from "../helpers/cli.js";
import { IMAGES, MODELS, ROOT } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";

export const DATA = path.join(ROOT, "test", "eval", "data");
/** A short budget keeps the tests fast; the reference's own budget only changes the answers' length. */
export const BUDGET = ["--max_new_tokens", "4"];
const ANSWER_ID = /^[2-9A-HJ-NP-Za-km-z]{22}$/;

/** A folder holding data/ (the sample inputs), images/ and models/ (a plain-named copy too). */
export function workspace(): string {
  const dir = tempDir("llava-eval-answers-");
  fs.symlinkSync(DATA, path.join(dir, "data"));
  fs.symlinkSync(IMAGES, path.join(dir, "images"));
  fs.mkdirSync(path.join(dir, "models"));
  for (const name of ["tiny-llava-1.5-orig", "tiny-clip-vit-56"]) fs.symlinkSync(path.join(MODELS, name), path.join(dir, "models", name));
  fs.symlinkSync(path.join(MODELS, "tiny-llava-1.5-mha"), path.join(dir, "models", "tiny-llava-plain"));
  return dir;
}

export interface Case {
  args: string[];
  stdout: string;
  answers: string | null;
  prompts: string[];
}

export function expected(script: string, name: string): Case {
  const dir = path.join(DATA, script, name);
  const read = (f: string) => (fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f), "utf8") : null);
  return {
    args: read("args.txt")!.split("\n").slice(0, -1),
    stdout: read("stdout.txt")!,
    answers: read("answers.jsonl"),
    prompts: (read("prompts.jsonl") ?? "").split("\n").filter(Boolean).map((l) => JSON.parse(l) as string),
  };
}

/** Runs the case's command line in `cwd`, answers to out/answers.jsonl. */
export function runCase(script: string, c: Case, cwd: string, extra: string[] = []): CliResult {
  return llava(["eval", script, ...c.args, "--answers-file", "out/answers.jsonl", ...BUDGET, ...extra], { cwd });
}

/**
 * The answers file is the reference's byte for byte, but for the model's answers ("text") and
 * the random answer ids; returns the answer texts.
 */
export function assertSameAnswers(ours: string, reference: string): string[] {
  const oursLines = ours.split("\n");
  const refLines = reference.split("\n");
  assert.equal(oursLines.length, refLines.length, `answer lines:\n${ours}`);
  return oursLines.slice(0, -1).map((line, i) => {
    const mine = loadJson(line, "ours") as PyDict;
    const theirs = loadJson(refLines[i], "reference") as PyDict;
    assert.match(String(mine.get("answer_id")), ANSWER_ID);
    const text = mine.get("text") as string;
    assert.equal(typeof text, "string");
    mine.set("text", theirs.get("text")!).set("answer_id", theirs.get("answer_id")!);
    assert.equal(dumpJson(mine), refLines[i], `line ${i + 1}`);
    return text;
  });
}

/** The prompts our runner gives the model are the reference's, question by question. */
export function assertSamePrompts(script: AnswerScript, c: Case, cwd: string, convMode: string): void {
  const opt = (name: string) => {
    const i = c.args.indexOf(name);
    return i < 0 ? null : c.args[i + 1];
  };
  const args = {
    image_folder: opt("--image-folder") ?? "",
    single_pred_prompt: c.args.includes("--single-pred-prompt"),
    all_rounds: c.args.includes("--all-rounds"),
    lang: opt("--lang") ?? "en",
  };
  const entries = getChunk(script.readQuestions(path.join(cwd, opt("--question-file")!)), Number(opt("--num-chunks") ?? 1), Number(opt("--chunk-idx") ?? 0));
  const prompts = script.slots(entries, args).map((s) => {
    assert.ok("question" in s, JSON.stringify(s));
    return conversationPrompt(convMode, s.question);
  });
  assert.deepEqual(prompts, c.prompts);
}
