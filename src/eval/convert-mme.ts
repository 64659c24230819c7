/**
 * `convert_answer_to_mme` (from the reference's MME eval kit), run in `playground/data/eval/MME`:
 * answers/<experiment>.jsonl -> eval_tool/answers/<experiment>/<subtask>.txt, each question
 * restored to MME's wording and given its ground truth from MME_Benchmark_release_version.
 */
import fs from "node:fs";
import path from "node:path";
import { pyLines, pyStrip } from "../io/python.js";
import { isDirectory, writeFileAtomic } from "../io/files.js";
import { LlavaError } from "../util/errors.js";
import type { EvalCommand } from "./commands.js";
import { countedList, needsKeys, readJsonRows, readText, warn } from "./script-io.js";
import { mmeLine } from "./mme.js";

const NAME = "convert_answer_to_mme";
const GT_ROOT = "MME_Benchmark_release_version";
/** The answer-format suffix the LLaVA question file put where MME's own suffix was. */
const SHORT_ANSWER = "Answer the question using a single word or phrase.";
const YES_NO = "Please answer yes or no.";

const fail = (message: string): never => {
  throw new LlavaError(`eval ${NAME}: ${message}`);
};
const gtKey = (category: string, file: string, question: string) => JSON.stringify([category, file, question]);

/** Folder names in sorted order (the reference takes os.listdir's arbitrary order). */
function listSorted(dir: string): string[] {
  try {
    return fs.readdirSync(dir).sort();
  } catch {
    return fail(`${dir}: no such folder (run in the MME folder that holds ${GT_ROOT})`);
  }
}

/** Ground truth by (category, question file, question), as MME's question files give it. */
function readGroundTruth(): Map<string, string> {
  const truth = new Map<string, string>();
  const bad: string[] = [];
  for (const category of listSorted(GT_ROOT)) {
    const categoryDir = path.join(GT_ROOT, category);
    if (!isDirectory(categoryDir)) continue;
    // categories with an images/ folder keep their questions in questions_answers_YN/
    const nested = fs.existsSync(path.join(categoryDir, "images"));
    for (const dir of nested ? [path.join(categoryDir, "images"), path.join(categoryDir, "questions_answers_YN")] : [categoryDir]) {
      if (!isDirectory(dir)) fail(`${dir} is not a folder (the reference fails here: AssertionError)`);
    }
    const qaDir = nested ? path.join(categoryDir, "questions_answers_YN") : categoryDir;
    for (const file of listSorted(qaDir).filter((f) => f.endsWith(".txt"))) {
      pyLines(readText(path.join(qaDir, file), "MME question file")).forEach((line, i) => {
        const fields = pyStrip(line).split("\t");
        if (fields.length === 2) truth.set(gtKey(category, file, fields[0]), fields[1]);
        else bad.push(`${path.join(qaDir, file)}:${i + 1}`);
      });
    }
  }
  if (bad.length > 0) fail(`question lines that are not "question<TAB>answer": ${countedList(bad)} (the reference fails here: ValueError)`);
  return truth;
}

/** MME's wording of a LLaVA prompt: the short-answer suffix out, MME's yes/no suffix (one space or two, as MME has it) in. */
function mmeQuestion(prompt: string, has: (question: string) => boolean): string {
  let question = prompt.includes(SHORT_ANSWER) ? pyStrip(prompt.replaceAll(SHORT_ANSWER, "")) : prompt;
  if (!question.includes(YES_NO)) {
    question = `${question} ${YES_NO}`;
    if (!has(question)) question = question.replaceAll(` ${YES_NO}`, `  ${YES_NO}`);
  }
  return question;
}

export const convertAnswerToMme: EvalCommand = {
  name: NAME,
  summary: "MME answers jsonl -> eval_tool/answers/<experiment>/<subtask>.txt with ground truth",
  options: { "--experiment": { type: "str", required: true, help: "answers/<experiment>.jsonl" } },
  async run(args) {
    const experiment = args.experiment as string;
    const truth = readGroundTruth();
    const answersFile = path.join("answers", `${experiment}.jsonl`);
    const rows = readJsonRows(answersFile, "answers file", needsKeys({ question_id: "str", prompt: "str", text: "str" }));

    const files = new Map<string, string[]>(); // category -> lines, in first-answered order
    const unknown: string[] = [];
    const answered = new Set<string>();
    const repeated: string[] = [];
    const multiline: string[] = [];
    for (const { row } of rows) {
      const id = row.get("question_id") as string;
      const category = id.split("/")[0];
      const file = `${id.split("/").at(-1)!.split(".")[0]}.txt`;
      const question = mmeQuestion(row.get("prompt") as string, (q) => truth.has(gtKey(category, file, q)));
      const key = gtKey(category, file, question);
      if (!truth.has(key)) unknown.push(`${id}: ${JSON.stringify(question)}`);
      if (answered.has(key)) repeated.push(`${id}: ${JSON.stringify(question)}`);
      answered.add(key);
      if (/[\t\n\r]/.test(row.get("text") as string)) multiline.push(id);
      if (!files.has(category)) files.set(category, []);
      files.get(category)!.push(mmeLine(file, question, truth.get(key) ?? "", row.get("text") as string));
    }
    if (unknown.length > 0) fail(`answers to questions ${GT_ROOT} does not have: ${countedList(unknown)}; nothing written (the reference fails here: KeyError)`);
    // calculation pairs consecutive lines as the two questions of one image: a gap or a repeat shifts every later pair
    if (repeated.length > 0) warn(NAME, `${answersFile}: questions answered more than once: ${countedList(repeated)}; calculation will pair the wrong lines`);
    if (multiline.length > 0) warn(NAME, `${answersFile}: answers holding a tab or a line break: ${countedList(multiline)}; calculation will misread their lines`);
    const unanswered = [...truth.keys()].filter((k) => files.has(JSON.parse(k)[0]) && !answered.has(k)).map((k) => (JSON.parse(k) as string[]).slice(0, 2).join("/"));
    if (unanswered.length > 0) warn(NAME, `${answersFile}: questions of answered subtasks without an answer: ${countedList(unanswered)}`);

    const resultDir = path.join("eval_tool", "answers", experiment);
    try {
      fs.mkdirSync(resultDir, { recursive: true });
    } catch (err) {
      fail(`cannot create ${resultDir}: ${(err as Error).message}`);
    }
    for (const [category, lines] of files) writeFileAtomic(path.join(resultDir, `${category}.txt`), (fd) => fs.writeSync(fd, lines.join("")));
  },
};
