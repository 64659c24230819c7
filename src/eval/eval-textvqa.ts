/**
 * `llava eval eval_textvqa`: TextVQA soft accuracy. Each answer is matched to its annotation by
 * (image id, question), the question recovered from the prompt the model saw; the prediction is
 * scored against the 10 human answers (vqa-accuracy.ts).
 */
import path from "node:path";
import type { EvalCommand } from "./commands.js";
import { formatFixed, pyKey, typeName, type PyValue } from "../io/python.js";
import { pathStem } from "./pypath.js";
import { duplicates, field, givenPath, listIds, readJson, readJsonLines, referenceStops, sortedListing, textField, warn } from "./script-io.js";
import { HUMAN_ANSWERS, meanSoftScore } from "./vqa-accuracy.js";

const SCRIPT = "eval_textvqa";
const OLD_OCR_PREFIX = "OCR tokens: ";
const OLD_QUESTION = /Question: (.*?) Short answer:/s;
const OCR_MARK = "Reference OCR token: ";

/**
 * The question inside a prompt, lower-cased: the old "OCR tokens: ... Question: q Short answer:"
 * format; three lines with a "Reference OCR token: " line (the question is the other first
 * line); or two lines (question, answer-format suffix). Null for any other prompt.
 */
export function questionOfPrompt(prompt: string): string | null {
  const lines = prompt.split("\n");
  let question: string | undefined;
  if (prompt.startsWith(OLD_OCR_PREFIX)) question = OLD_QUESTION.exec(prompt)?.[1];
  else if (prompt.includes(OCR_MARK) && lines.length === 3) question = prompt.startsWith(OCR_MARK.trimEnd()) ? lines[1] : lines[0];
  else if (lines.length === 2) question = lines[0];
  return question === undefined ? null : question.toLowerCase();
}

const annotationKey = (imageId: PyValue, question: string) => `${pyKey(imageId)}\n${question}`;

function evalSingle(annotationFile: string | null, resultFile: string): void {
  process.stdout.write(pathStem(resultFile) + "\n");
  const file = givenPath(annotationFile, "--annotation-file", SCRIPT);
  const data = field(readJson(file, "TextVQA annotation file"), "data", file);
  if (!Array.isArray(data)) throw referenceStops(SCRIPT, `${file}: "data" is ${typeName(data)}, not a list`, "TypeError");
  const annotations = new Map<string, PyValue>();
  data.forEach((a, i) => {
    const where = `${file}, annotation ${i}`;
    annotations.set(annotationKey(field(a, "image_id", where), textField(a, "question", where).toLowerCase()), a);
  });

  const results = readJsonLines(resultFile, "result file");
  const ids = results.map((r, i) => field(r, "question_id", `${resultFile}, line ${i + 1}`));
  const keys = results.map((r, i) => {
    const question = questionOfPrompt(textField(r, "prompt", `${resultFile}, line ${i + 1}`));
    return question === null ? null : annotationKey(ids[i], question);
  });
  const unparsed = ids.filter((_, i) => keys[i] === null);
  if (unparsed.length) throw referenceStops(SCRIPT, `${unparsed.length} answers have a prompt with no recognisable question: ids ${listIds(unparsed)}`, "AssertionError");
  const unmatched = ids.filter((_, i) => !annotations.has(keys[i]!));
  if (unmatched.length) throw referenceStops(SCRIPT, `${unmatched.length} answers match no annotation by image id and question (answers for another question file?): ids ${listIds(unmatched)}`, "KeyError");
  const repeated = duplicates(keys.map((k) => k!), (k) => k as string);
  if (repeated.length) warn(SCRIPT, `${repeated.length} questions are answered more than once, each answer scored: ids ${listIds(ids.filter((_, i) => repeated.includes(keys[i]!)))}`);

  const entries = results.map((r, i) => {
    const where = `${resultFile}, line ${i + 1}`;
    const humanAnswers = field(annotations.get(keys[i]!)!, "answers", `annotation of ${ids[i]}`);
    return { prediction: textField(r, "text", where), humanAnswers: Array.isArray(humanAnswers) ? humanAnswers : [] };
  });
  const notTen = ids.filter((_, i) => entries[i].humanAnswers.length !== HUMAN_ANSWERS || entries[i].humanAnswers.some((a) => typeof a !== "string"));
  if (notTen.length) throw referenceStops(SCRIPT, `${notTen.length} annotations do not hold ${HUMAN_ANSWERS} answer strings: ids ${listIds(notTen)}`, "AssertionError");
  if (entries.length === 0) throw referenceStops(SCRIPT, `${resultFile} has no answers, so accuracy divides by zero`, "ZeroDivisionError");
  const accuracy = meanSoftScore(entries.map((e) => ({ prediction: e.prediction, humanAnswers: e.humanAnswers as string[] })));
  process.stdout.write(`Samples: ${entries.length}\nAccuracy: ${formatFixed(100 * accuracy, 2)}%\n\n`);
}

export const evalTextvqa: EvalCommand = {
  name: SCRIPT,
  summary: "TextVQA: VQA soft accuracy of a result file, or of every .jsonl in a folder",
  options: {
    "--annotation-file": { type: "str", help: "TextVQA_0.5.1_val.json" },
    "--result-file": { type: "str" },
    "--result-dir": { type: "str" },
  },
  async run(args) {
    const annotationFile = typeof args.annotation_file === "string" ? args.annotation_file : null;
    if (typeof args.result_file === "string") evalSingle(annotationFile, args.result_file);
    if (typeof args.result_dir === "string") {
      for (const name of sortedListing(args.result_dir, "result folder")) {
        if (!name.endsWith(".jsonl")) process.stdout.write(`Skipping ${name}\n`);
        else evalSingle(annotationFile, path.join(args.result_dir, name));
      }
    }
  },
};
