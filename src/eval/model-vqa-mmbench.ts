/**
 * `llava eval model_vqa_mmbench` (llava/eval/model_vqa_mmbench.py): MMBench's TSV (index,
 * question, hint, A-D, image as base64...). The question is the hint (when there is one), the
 * question and the options up to the first missing one, lettered A, B, ...; `--all-rounds` asks it
 * once per option, rotating the options one place each round (the letters in the prompt stay
 * A, B, ...; the answer line's `options` and `option_char` rotate together).
 */
import { type AnswerScript, type Question, runAnswers, runnerOptions, SAMPLING_OPTIONS, type Slot } from "./answer-runner.js";
import type { ArgValues } from "./args.js";
import type { EvalCommand } from "./commands.js";
import { dumpJson, PyFloat, type PyValue } from "../io/python.js";
import { QuestionError, SINGLE_PRED_PROMPT, withImage } from "./questions.js";
import { readText } from "./script-io.js";
import { type Cell, readTable } from "./tsv.js";

const ALL_OPTIONS = ["A", "B", "C", "D"];

/** The `--lang cn` multiple-choice suffix. */
const SINGLE_PRED_PROMPT_CN = "请直接回答选项字母。";

/** The reference's is_none: NaN, None, or the text "nan" / "none" in any case. */
function isNone(v: Cell): boolean {
  if (v instanceof PyFloat) return Number.isNaN(v.value);
  return typeof v === "string" && (v.toLowerCase() === "nan" || v.toLowerCase() === "none");
}

/** A row as pandas gives it: `row[column]` fails for a column the table lacks. */
type Row = (column: string) => Cell;

/** `a + b` of Python strings: a number in a text column's place is the reference's TypeError. */
function text(v: Cell, what: string): string {
  if (typeof v !== "string") throw new QuestionError(`${what} is ${v instanceof PyFloat && Number.isNaN(v.value) ? "missing" : "a number"}, not text (TypeError)`);
  return v;
}

/** The options of a row: A, B, ... up to the first missing one. */
function optionsOf(row: Row): Cell[] {
  const options: Cell[] = [];
  for (const letter of ALL_OPTIONS) {
    const v = row(letter);
    if (isNone(v)) break;
    options.push(v);
  }
  return options;
}

/** The answer-line and model questions of one row: one, or one per option with --all-rounds. */
function rowQuestions(row: Row, args: ArgValues): Question[] {
  let options = optionsOf(row);
  let optionChars = ALL_OPTIONS.slice(0, options.length);
  const rounds = args.all_rounds ? options.length : 1;
  const questions: Question[] = [];
  for (let round = 0; round < rounds; round++) {
    const hint = row("hint");
    let question = isNone(hint) ? row("question") : `${text(hint, "the hint")}\n${text(row("question"), "the question")}`;
    options.forEach((option, k) => (question = `${text(question, "the question")}\n${ALL_OPTIONS[k]}. ${text(option, `option ${ALL_OPTIONS[k]}`)}`));
    const prompt = text(question, "the question");
    const suffix = !args.single_pred_prompt ? "" : `\n${args.lang === "cn" ? SINGLE_PRED_PROMPT_CN : SINGLE_PRED_PROMPT}`;
    questions.push({
      head: [["question_id", row("index") as PyValue], ["round_id", round], ["prompt", prompt]],
      extra: [["options", options as PyValue[]], ["option_char", optionChars]],
      userText: withImage(prompt) + suffix,
      image: Buffer.from(text(row("image"), "the image"), "base64"),
    });
    options = [...options.slice(1), ...options.slice(0, 1)];
    optionChars = [...optionChars.slice(1), ...optionChars.slice(0, 1)];
  }
  return questions;
}

function mmbenchSlots(entries: unknown[], args: ArgValues): Slot[] {
  return (entries as Row[]).flatMap((row, n): Slot[] => {
    let label = `row ${n + 1} of the chunk`;
    try {
      label = `index ${dumpJson(row("index") as PyValue)}`;
      return rowQuestions(row, args).map((question) => ({ label, question }));
    } catch (err) {
      if (err instanceof QuestionError) return [{ label, problem: err.message }];
      throw err;
    }
  });
}

/** The rows of the table, each read by column name. */
function readRows(file: string): Row[] {
  const { columns, rows } = readTable(readText(file, "question file"), `question file ${file}`);
  return rows.map((cells) => (column) => {
    const c = columns.indexOf(column);
    if (c < 0) throw new QuestionError(`the table has no column "${column}" (KeyError)`);
    return cells[c];
  });
}

export const mmbenchScript: AnswerScript = { name: "model_vqa_mmbench", mmtagSwitch: true, readQuestions: readRows, slots: mmbenchSlots };

export const modelVqaMmbench: EvalCommand = {
  name: "model_vqa_mmbench",
  summary: "answers MMBench / MMBench-CN (a TSV with base64 images)",
  options: {
    ...runnerOptions({ questionFile: "tables/question.jsonl", convMode: "llava_v1", maxNewTokens: 1024 }),
    ...SAMPLING_OPTIONS,
    "--all-rounds": { type: "flag" },
    "--single-pred-prompt": { type: "flag" },
    "--lang": { type: "str", default: "en" },
  },
  run: (args) => runAnswers(mmbenchScript, args),
};
