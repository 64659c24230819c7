/**
 * `llava eval eval_science_qa`: ScienceQA accuracy. An answer counts when it parses to the right
 * option letter: the letter alone, "X. ..." at the start, or exactly one "The answer is X."
 * anywhere; anything else (and a question without an answer) is FAILED, which scores wrong.
 * Prints overall and IMG accuracy (questions whose prompt has an image) and writes the
 * per-question analysis (--output-file) and the result summary (--output-result).
 */
import path from "node:path";
import type { EvalCommand } from "./commands.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import { dumpJson, formatFixed, pyFloat, pyKey, typeName, type PyDict, type PyValue } from "../io/python.js";
import { duplicates, field, givenPath, listIds, readJson, readJsonLines, referenceStops, textField, warn, writeText } from "./script-io.js";

const SCRIPT = "eval_science_qa";
const DEFAULT_OPTIONS = ["A", "B", "C", "D", "E"];
const FAILED = "FAILED";
const ANSWER_IS = /The answer is ([A-Z])[^\n]/gu;

/** The option letter an answer gives, or FAILED. */
export function parseOption(text: string, options: string[]): string {
  if (options.includes(text)) return text;
  const chars = [...text];
  if (chars.length >= 3 && options.includes(chars[0]) && chars[1] + chars[2] === ". ") return chars[0];
  const found = [...text.matchAll(ANSWER_IS)];
  return found.length === 1 ? found[0][1] : FAILED;
}

/** The index of the parsed letter among the question's choices, or -1. */
const optionIndex = (letter: string, choiceCount: number, options: string[]) => options.slice(0, choiceCount).indexOf(letter);

/** len(x) of a JSON value. */
function pyLen(v: PyValue, where: string): number {
  if (Array.isArray(v)) return v.length;
  if (typeof v === "string") return [...v].length;
  if (v instanceof Map) return v.size;
  throw referenceStops(SCRIPT, `${where}: ${typeName(v)} has no length`, "TypeError");
}

/** options[i] with Python's negative indexing. */
function groundTruth(options: string[], answer: PyValue, where: string): string {
  const i = typeof answer === "boolean" ? Number(answer) : answer;
  if (typeof i !== "number" || !Number.isInteger(i)) throw referenceStops(SCRIPT, `${where}: answer ${typeName(answer)} is not an option index`, "TypeError");
  const letter = options[i < 0 ? options.length + i : i];
  if (letter === undefined) throw referenceStops(SCRIPT, `${where}: answer ${i} is out of the options' range`, "IndexError");
  return letter;
}

export const evalScienceQa: EvalCommand = {
  name: SCRIPT,
  summary: "ScienceQA: accuracy and IMG-accuracy of option-letter answers",
  options: {
    "--base-dir": { type: "str", help: "folder of pid_splits.json and problems.json" },
    "--result-file": { type: "str" },
    "--output-file": { type: "str" },
    "--output-result": { type: "str" },
    "--split": { type: "str", default: "test" },
    "--options": { type: "str", help: "the option letters, one string (argparse's type=list)" },
  },
  async run(args) {
    // argparse's type=list makes a given string a list of its characters.
    const options = typeof args.options === "string" ? [...args.options] : DEFAULT_OPTIONS;
    const baseDir = givenPath(args.base_dir, "--base-dir", SCRIPT);
    const splitsFile = path.join(baseDir, "pid_splits.json");
    const splitIds = field(readJson(splitsFile, "ScienceQA splits"), String(args.split), splitsFile);
    const problemsFile = path.join(baseDir, "problems.json");
    const problems = readJson(problemsFile, "ScienceQA problems");
    const resultFile = givenPath(args.result_file, "--result-file", SCRIPT);
    const records = readJsonLines(resultFile, "result file");
    const predictions = new Map<string, PyValue>();
    const answeredIds = records.map((r, i) => field(r, "question_id", `${resultFile}, line ${i + 1}`));
    records.forEach((r, i) => predictions.set(pyKey(answeredIds[i]), r));

    if (!Array.isArray(splitIds)) throw referenceStops(SCRIPT, `${splitsFile}: split ${args.split} is ${typeName(splitIds)}, not a list of ids`, "an error");
    if (!(problems instanceof Map)) throw referenceStops(SCRIPT, `${problemsFile}: ${typeName(problems)}, not an object of problems`, "TypeError");
    const notProblems = splitIds.filter((id) => typeof id !== "string" || !problems.has(id));
    if (notProblems.length) throw referenceStops(SCRIPT, `${notProblems.length} ids of split ${args.split} are not in problems.json: ${listIds(notProblems)}`, "KeyError");
    const splitProblems = new Map(splitIds.map((id) => [id as string, problems.get(id as string)!]));

    const repeated = duplicates(answeredIds, pyKey);
    if (repeated.length) warn(SCRIPT, `${repeated.length} questions are answered more than once, the last answer kept: ids ${listIds(repeated)}`);
    const unanswered = [...splitProblems.keys()].filter((id) => !predictions.has(pyKey(id)));
    if (unanswered.length) warn(SCRIPT, `${unanswered.length} questions of split ${args.split} have no answer and are scored wrong: ids ${listIds(unanswered)}`);
    const splitKeys = new Set([...splitProblems.keys()].map(pyKey));
    const outside = answeredIds.filter((id) => !splitKeys.has(pyKey(id)));
    if (outside.length) warn(SCRIPT, `${outside.length} answers are for questions outside split ${args.split} and are ignored: ids ${listIds(outside)}`);

    const correct: PyDict[] = [];
    const incorrect: PyDict[] = [];
    const indices: PyDict = new Map();
    const outputs: PyDict = new Map();
    for (const [id, problem] of splitProblems) {
      const where = `question ${id}`;
      const prediction = predictions.get(pyKey(id)) ?? new Map<string, PyValue>([["text", FAILED], ["prompt", "Unknown"]]);
      const text = textField(prediction, "text", where);
      const answer = parseOption(text, options);
      const predicted = optionIndex(answer, pyLen(field(problem, "choices", where), `${where} choices`), options);
      const truth = field(problem, "answer", where);
      const prompt = textField(prediction, "prompt", where);
      const analysis: PyDict = new Map<string, PyValue>([
        ["question_id", id],
        ["parsed_ans", answer],
        ["ground_truth", groundTruth(options, truth, where)],
        ["question", prompt],
        ["pred", text],
        ["is_multimodal", prompt.includes(IMAGE_TOKEN)],
      ]);
      indices.set(id, predicted);
      outputs.set(id, text);
      (predicted === Number(truth) ? correct : incorrect).push(analysis);
    }

    const total = correct.length + incorrect.length;
    const imageCorrect = correct.filter((a) => a.get("is_multimodal")).length;
    const imageTotal = imageCorrect + incorrect.filter((a) => a.get("is_multimodal")).length;
    if (total === 0) throw referenceStops(SCRIPT, `split ${args.split} has no questions, so accuracy divides by zero`, "ZeroDivisionError");
    if (imageTotal === 0) throw referenceStops(SCRIPT, `no question of the split has ${IMAGE_TOKEN} in its prompt, so IMG-Accuracy divides by zero`, "ZeroDivisionError");
    const percent = (n: number, d: number) => formatFixed((n / d) * 100, 2);
    process.stdout.write(`Total: ${total}, Correct: ${correct.length}, Accuracy: ${percent(correct.length, total)}%, IMG-Accuracy: ${percent(imageCorrect, imageTotal)}%\n`);

    const summary: PyDict = new Map<string, PyValue>([
      ["acc", pyFloat((correct.length / total) * 100)],
      ["correct", correct.length],
      ["count", total],
      ["results", indices],
      ["outputs", outputs],
    ]);
    writeText(givenPath(args.output_file, "--output-file", SCRIPT), dumpJson(new Map([["correct", correct], ["incorrect", incorrect]]), { indent: 2 }));
    writeText(givenPath(args.output_result, "--output-result", SCRIPT), dumpJson(summary, { indent: 2 }));
  },
};
