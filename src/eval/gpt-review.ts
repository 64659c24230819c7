/**
 * The reference's GPT-assisted review of two answer files against a judge model
 * (llava/eval/eval_gpt_review_bench.py and eval_gpt_review_visual.py): line i of the question
 * file and of both answer files make one review, whose prompt holds the image's context, the
 * question, both answers and the category's rule; the judge's first line holds the two scores.
 *
 * Inputs the reference would stop on with an exception are all found before the first request
 * and reported together; inputs it would silently mis-score get a warning on stderr.
 */
import fs from "node:fs";
import { askJudge, JudgeFailure, judgeOptions, judgeSettings, type JudgeSettings } from "./judge.js";
import type { ArgSpec, ArgValues } from "./args.js";
import { dumpJson, loadJson, numberOf, parsePyFloat, PyFloat, pyFloat, pyRepr, pyStr, typeName, type PyDict, type PyValue } from "../io/python.js";
import { describeFsError, writeFileAtomic, writeFully } from "../io/files.js";
import { LlavaError } from "../util/errors.js";
import { readJson, readLines } from "./script-io.js";

/** The reference's judge settings. */
const REVIEW_MODEL = "gpt-4-0314";
const REVIEW_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer.";
const REVIEW_TEMPERATURE = 0.2;

/** The reference scripts' options, then the judge's. */
export function reviewOptions(): Record<string, ArgSpec> {
  return {
    "--question": { type: "str", short: "-q", help: "questions (jsonl)" },
    "--context": { type: "str", short: "-c", help: "the images' context (jsonl)" },
    "--answer-list": { type: "str", short: "-a", nargs: "+", default: null, help: "the reference answers, then the model's (jsonl)" },
    "--rule": { type: "str", short: "-r", help: "the rules by category (the reference's llava/eval/table/rule.json)" },
    "--output": { type: "str", short: "-o", help: "the reviews (jsonl)" },
    "--max-tokens": { type: "int", default: 1024, help: "maximum number of tokens produced in the output" },
    ...judgeOptions(REVIEW_MODEL),
  };
}

/** What differs between the two scripts. */
export interface ReviewFlavour {
  /** the command's name, for messages */
  name: string;
  /** the text under [Context] for one context record; throws ItemProblem where the reference fails */
  context(record: PyDict): string;
  /** the rule key of a question's category; throws ItemProblem where the reference fails */
  ruleKey(category: PyValue): string;
  /** bench: appends to the output and skips reviews it already holds; visual: rewrites it */
  resume: boolean;
  /** a warning about the context file the reference would use silently, or null */
  contextWarning?(contexts: PyDict[]): string | null;
}

/** Why one item cannot be reviewed: where the reference raises. */
export class ItemProblem extends Error {}

/** One review to make: the output line's first fields and the judge's prompt. */
interface ReviewItem {
  head: PyDict;
  questionId: PyValue;
  prompt: string;
}

/** The value of `key` in a JSON object, as `d[key]` in Python (KeyError / TypeError otherwise). */
export function field(d: PyValue, key: string, what: string): PyValue {
  if (!(d instanceof Map)) throw new ItemProblem(`${what} is a JSON ${typeName(d)}, not an object`);
  if (!d.has(key)) throw new ItemProblem(`${what} has no "${key}"`);
  return d.get(key)!;
}

/** '\n'.join(value) in Python: a list of str, or the characters of a str. */
export function joinLines(value: PyValue, what: string): string {
  if (typeof value === "string") return [...value].join("\n");
  if (!Array.isArray(value)) throw new ItemProblem(`${what} is a ${typeName(value)}, not a list of strings`);
  const bad = value.findIndex((x) => typeof x !== "string");
  if (bad >= 0) throw new ItemProblem(`${what}[${bad}] is a ${typeName(value[bad])}, not a string`);
  return value.join("\n");
}

function parseLine(line: string, where: string): PyValue {
  try {
    return loadJson(line, where);
  } catch (err) {
    throw new ItemProblem((err as Error).message);
  }
}

/** A value as Python's == and dict keys compare it: 1, 1.0 and True alike; strings apart from numbers. */
function keyOf(v: PyValue): string {
  if (typeof v === "string") return `s${v}`;
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint" || v instanceof PyFloat) return `n${numberOf(v)}`;
  return `v${pyRepr(v)}`;
}

/**
 * The score pair in the judge's first line, as the reference's parse_score reads it, and what
 * it prints: commas become spaces, the line must split on single spaces into exactly two fields,
 * each read by Python's float(); anything else is [-1, -1].
 */
export function parseScore(review: string): { tuple: PyValue[]; printed: string } {
  const fields = review.split("\n")[0].replaceAll(",", " ").split(" ");
  if (fields.length !== 2) return { tuple: [-1, -1], printed: `error ${review}\n` };
  const scores = fields.map(parsePyFloat);
  const bad = scores.indexOf(null);
  if (bad >= 0) return { tuple: [-1, -1], printed: `could not convert string to float: ${pyRepr(fields[bad])}\nerror ${review}\n` };
  return { tuple: scores.map((x) => pyFloat(x!)), printed: "" };
}

const listIds = (ids: PyValue[]) => (ids.length > 10 ? `${ids.slice(0, 10).map(pyStr).join(", ")}, ... (${ids.length} in all)` : ids.map(pyStr).join(", "));

const warn = (message: string) => process.stderr.write(`llava: warning: ${message}\n`);

/** Reads every input and builds every review, or throws one line naming all items the reference would fail on. */
function prepare(args: ArgValues, flavour: ReviewFlavour): ReviewItem[] {
  for (const [key, option] of [["question", "-q/--question"], ["context", "-c/--context"], ["rule", "-r/--rule"], ["output", "-o/--output"]] as const) {
    if (args[key] === null) throw new LlavaError(`${flavour.name}: ${option} is required (the reference fails without it)`);
  }
  const answerFiles = (args.answer_list as string[] | null) ?? [];
  if (answerFiles.length < 2) throw new LlavaError(`${flavour.name}: -a/--answer-list needs two answer files (reference answers, then the model's), got ${answerFiles.length}`);
  if (answerFiles.length > 2) warn(`-a/--answer-list: only the first two files are reviewed, as the reference does; ignored: ${answerFiles.slice(2).join(", ")}`);

  const questions = readLines(args.question as string, "question file");
  const answers1 = readLines(answerFiles[0], "answer file");
  const answers2 = readLines(answerFiles[1], "answer file");
  const rules = readJson(args.rule as string, "rule file");
  if (!(rules instanceof Map)) throw new LlavaError(`rule file ${args.rule}: a JSON ${typeName(rules)}, expected an object of rules`);
  const contexts = readLines(args.context as string, "context file").map((line, n) => {
    try {
      const record = parseLine(line, `context file ${args.context}, line ${n + 1}`);
      field(record, "image", `context line ${n + 1}`);
      return record as PyDict;
    } catch (err) {
      throw new LlavaError(`context file ${args.context}: ${(err as Error).message} (the reference fails reading it)`);
    }
  });
  const contextWarning = flavour.contextWarning?.(contexts);
  if (contextWarning) warn(contextWarning);
  const imageToContext = new Map(contexts.map((c) => [keyOf(c.get("image")!), c]));

  const count = Math.min(questions.length, answers1.length, answers2.length);
  if (questions.length !== answers1.length || questions.length !== answers2.length) {
    warn(
      `the question file has ${questions.length} lines, the answer files ${answers1.length} and ${answers2.length}: ` +
        `only the first ${count} are reviewed, as the reference pairs them line by line`,
    );
  }
  const items: ReviewItem[] = [];
  const problems: string[] = [];
  const mismatched: PyValue[] = [];
  const seen = new Map<string, number>();
  const duplicates: PyValue[] = [];
  for (let i = 0; i < count; i++) {
    let questionId: PyValue = null;
    try {
      const ques = parseLine(questions[i], `question file line ${i + 1}`);
      if (ques instanceof Map && ques.has("question_id")) questionId = ques.get("question_id")!;
      const ans1 = parseLine(answers1[i], `answer file 1 line ${i + 1}`);
      const ans2 = parseLine(answers2[i], `answer file 2 line ${i + 1}`);
      const image = field(ques, "image", "the question");
      const record = imageToContext.get(keyOf(image));
      if (!record) throw new ItemProblem(`image ${pyStr(image)} is not in the context file`);
      const context = flavour.context(record);
      const key = flavour.ruleKey(field(ques, "category", "the question"));
      if (!rules.has(key)) throw new ItemProblem(`Visual QA category not found in rule file: ${key}.`);
      const rule = rules.get(key)!;
      const prompt = pyStr(field(rule, "prompt", `rule ${key}`));
      const role = pyStr(field(rule, "role", `rule ${key}`));
      const text = (d: PyValue, what: string) => pyStr(field(d, "text", what));
      const user =
        `[Context]\n${context}\n\n` +
        `[Question]\n${text(ques, "the question")}\n\n` +
        `[${role} 1]\n${text(ans1, "answer 1")}\n\n[End of ${role} 1]\n\n` +
        `[${role} 2]\n${text(ans2, "answer 2")}\n\n[End of ${role} 2]\n\n` +
        `[System]\n${prompt}\n\n`;
      // ans.get('answer_id', ans['question_id']): Python evaluates the fallback first, so it must exist
      const answer1Id = field(ans1, "question_id", "answer 1");
      const answer2Id = field(ans2, "answer_id", "answer 2");
      const head: PyDict = new Map<string, PyValue>([
        ["id", i + 1],
        ["question_id", field(ques, "question_id", "the question")],
        ["answer1_id", (ans1 as PyDict).has("answer_id") ? (ans1 as PyDict).get("answer_id")! : answer1Id],
        ["answer2_id", answer2Id],
        ["category", key],
      ]);
      if (keyOf(answer1Id) !== keyOf(questionId) || ((ans2 as PyDict).has("question_id") && keyOf((ans2 as PyDict).get("question_id")!) !== keyOf(questionId))) {
        mismatched.push(questionId);
      }
      const at = seen.get(keyOf(questionId));
      if (at !== undefined) duplicates.push(questionId);
      seen.set(keyOf(questionId), i);
      items.push({ head, questionId, prompt: user });
    } catch (err) {
      if (!(err instanceof ItemProblem)) throw err;
      problems.push(`line ${i + 1}${questionId === null ? "" : ` (question ${pyStr(questionId)})`}: ${err.message}`);
    }
  }
  if (problems.length > 0) {
    throw new LlavaError(
      `${flavour.name}: ${problems.length} of ${count} reviews cannot be made (the reference stops with an exception at the first; nothing was sent): ` +
        problems.slice(0, 5).join("; ") + (problems.length > 5 ? `; ... (${problems.length - 5} more)` : ""),
    );
  }
  if (mismatched.length > 0) warn(`the answer files' question ids differ from the question file's on the lines of questions ${listIds(mismatched)}: the reference pairs answers by line, so these reviews compare answers to other questions`);
  if (duplicates.length > 0) warn(`duplicate question ids in the question file: ${listIds(duplicates)}`);
  return items;
}

/** The reviews an existing output file holds, by id (the bench script resumes from them). */
function existingReviews(output: string, items: ReviewItem[]): Map<number, PyDict> {
  if (!fs.existsSync(output)) return new Map();
  const lines = readLines(output, "output file");
  const byId = new Map<number, PyDict>();
  const wrong: PyValue[] = [];
  lines.forEach((line, n) => {
    const where = `output file ${output}, line ${n + 1}`;
    let review: PyValue;
    try {
      review = loadJson(line, where);
    } catch (err) {
      throw new LlavaError(`${(err as Error).message} (a partly written line? the reference fails reading it too; remove it to resume)`);
    }
    const id = review instanceof Map ? review.get("id") : undefined;
    if (typeof id !== "number" || !Number.isInteger(id)) throw new LlavaError(`${where}: not a review line (no integer "id"); is -o/--output the right file?`);
    byId.set(id, review as PyDict);
    const item = items[id - 1];
    if (item && keyOf((review as PyDict).get("question_id") ?? null) !== keyOf(item.questionId)) wrong.push(item.questionId);
  });
  if (wrong.length > 0) warn(`${output} holds reviews of other questions at the places of questions ${listIds(wrong)} (another question file?); they are kept, as the reference keeps them`);
  return byId;
}

/** Runs one review command: the reviews, the output file, the reference's printed lines. */
export async function runReviews(args: ArgValues, flavour: ReviewFlavour): Promise<void> {
  const judge = judgeSettings(args);
  const items = prepare(args, flavour);
  const output = args.output as string;
  const done = flavour.resume ? existingReviews(output, items) : new Map<number, PyDict>();
  const maxTokens = args.max_tokens as number;

  const written: PyDict[] = [];
  const unscored: PyValue[] = [];
  const failed: Array<{ questionId: PyValue; message: string }> = [];
  const out = flavour.resume ? openForAppend(output) : null;
  let deferredPrints = "";
  try {
    for (const [idx, item] of items.entries()) {
      if (done.has(idx + 1)) {
        process.stdout.write(`Skipping ${idx} as we already have it.\n`);
      } else {
        const review = await reviewOne(judge, item, maxTokens, failed);
        if (review !== null) {
          const { tuple, printed } = parseScore(review);
          if (printed) unscored.push(item.questionId);
          const line = new Map(item.head).set("content", review).set("tuple", tuple);
          written.push(line);
          if (out !== null) {
            process.stdout.write(printed);
            writeFully(out, Buffer.from(dumpJson(line) + "\n"));
          } else {
            deferredPrints += printed;
          }
        }
      }
      if (flavour.resume) process.stdout.write(`${idx + 1}\n`);
    }
  } finally {
    if (out !== null) fs.closeSync(out);
  }
  if (flavour.resume) {
    keepIdOrder(output);
  } else {
    // the visual script writes every line (and prints parse_score's messages) after the last review
    process.stdout.write(deferredPrints);
    writeFileAtomic(output, (fd) => writeFully(fd, Buffer.from(written.map((l) => dumpJson(l) + "\n").join(""))));
  }
  if (unscored.length > 0) warn(`the judge's first line held no score pair for questions ${listIds(unscored)}: their tuple is [-1, -1], which summarize_gpt_review averages in`);
  if (failed.length > 0) {
    throw new LlavaError(
      `${flavour.name}: ${failed.length} of ${items.length} reviews failed (questions ${listIds(failed.map((f) => f.questionId))}): ${failed[failed.length - 1].message}; ` +
        (flavour.resume ? "the others are written; rerun the same command to review the missing ones" : "the others are written; rerun to review all again (this script, as the reference, starts over)"),
    );
  }
}

async function reviewOne(judge: JudgeSettings, item: ReviewItem, maxTokens: number, failed: Array<{ questionId: PyValue; message: string }>): Promise<string | null> {
  const request = { system: REVIEW_SYSTEM, user: item.prompt, temperature: REVIEW_TEMPERATURE, maxTokens };
  const what = `review ${pyStr(item.head.get("id")!)} (question ${pyStr(item.questionId)})`;
  try {
    return await askJudge(judge, request, (problem) => warn(`${what}: ${problem}; trying again`));
  } catch (err) {
    if (!(err instanceof JudgeFailure)) throw err;
    warn(`${what}: ${err.message}; counted as failed`);
    failed.push({ questionId: item.questionId, message: err.message });
    return null;
  }
}

function openForAppend(file: string): number {
  try {
    return fs.openSync(file, "a");
  } catch (err) {
    throw new LlavaError(`cannot write ${file}: ${describeFsError(err)}`);
  }
}

/**
 * After a resumed run filled a review missing from the middle (one that had failed), the
 * appended line stands after later ones: the file is rewritten in id order, as an
 * uninterrupted run writes it.
 */
function keepIdOrder(output: string): void {
  const lines = readLines(output, "output file");
  const ids = lines.map((line) => (loadJson(line, output) as PyDict).get("id") as number);
  if (ids.every((id, k) => k === 0 || ids[k - 1] <= id)) return;
  const order = ids.map((id, k) => [id, k]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  writeFileAtomic(output, (fd) => writeFully(fd, Buffer.from(order.map(([, k]) => lines[k] + "\n").join(""))));
}
