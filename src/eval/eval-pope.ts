/**
 * `llava eval eval_pope`: POPE's yes/no scores per category. Each coco_pope_<category>.json label
 * file in --annotation-dir is paired, line by line in order, with the answers whose question has
 * that category; an answer is "no" when its first sentence has the word No, no or not.
 */
import path from "node:path";
import type { EvalCommand } from "./commands.js";
import { floatRepr, formatFixed, pyKey, type PyValue } from "../io/python.js";
import { duplicates, field, givenPath, listIds, readJsonLines, referenceStops, sortedListing, textField, warn } from "./script-io.js";

const SCRIPT = "eval_pope";
const LABEL_PREFIX = "coco_pope_";
const LABEL_SUFFIX = ".json";

/** 0 for no, 1 for yes: words of the text before its first period, commas dropped, split on spaces. */
export function popeAnswer(text: string): 0 | 1 {
  const firstSentence = text.split(".")[0];
  const words = firstSentence.replaceAll(",", "").split(" ");
  return words.includes("No") || words.includes("not") || words.includes("no") ? 0 : 1;
}

const print = (line: string) => process.stdout.write(line + "\n");

interface Answer {
  id: PyValue;
  text: string;
  question: PyValue;
}

function scoreCategory(category: string, answers: Answer[], labelFile: string): void {
  const labelLines = readJsonLines(labelFile, "POPE label file");
  const labels = labelLines.map((l, i) => (field(l, "label", `${labelFile}, line ${i + 1}`) === "no" ? 0 : 1));
  const preds = answers.map((a) => popeAnswer(a.text));
  if (preds.length === 0) throw referenceStops(SCRIPT, `category ${category}: no answers, so the yes ratio divides by zero`, "ZeroDivisionError");
  if (answers.length !== labels.length) {
    warn(SCRIPT, `category ${category}: ${answers.length} answers but ${labels.length} labels; answers and labels are paired by order and only the first ${Math.min(answers.length, labels.length)} are scored`);
  }
  const misaligned = answers
    .slice(0, labels.length)
    .filter((a, i) => {
      const q = a.question instanceof Map ? a.question.get("image") : undefined;
      const l = labelLines[i] instanceof Map ? labelLines[i].get("image") : undefined;
      return typeof q === "string" && typeof l === "string" && q !== l;
    })
    .map((a) => a.id);
  if (misaligned.length) {
    warn(SCRIPT, `category ${category}: ${misaligned.length} answers are paired by order with a label for another image: ids ${listIds(misaligned)}`);
  }

  const yesRatio = preds.filter((p) => p === 1).length / preds.length;
  let tp = 0, fp = 0, tn = 0, fn = 0;
  for (let i = 0; i < Math.min(preds.length, labels.length); i++) {
    if (preds[i] === 1) labels[i] === 1 ? tp++ : fp++;
    else labels[i] === 0 ? tn++ : fn++;
  }
  print("TP\tFP\tTN\tFN\t");
  print(`${tp}\t${fp}\t${tn}\t${fn}`);
  if (tp + fp === 0) throw referenceStops(SCRIPT, `category ${category}: no answer is yes, so precision divides by zero`, "ZeroDivisionError");
  if (tp + fn === 0) throw referenceStops(SCRIPT, `category ${category}: no label is yes, so recall divides by zero`, "ZeroDivisionError");
  const precision = tp / (tp + fp);
  const recall = tp / (tp + fn);
  if (precision + recall === 0) throw referenceStops(SCRIPT, `category ${category}: no true positives, so F1 divides by zero`, "ZeroDivisionError");
  const f1 = (2 * precision * recall) / (precision + recall);
  const acc = (tp + tn) / (tp + tn + fp + fn);
  print(`Accuracy: ${floatRepr(acc)}`);
  print(`Precision: ${floatRepr(precision)}`);
  print(`Recall: ${floatRepr(recall)}`);
  print(`F1 score: ${floatRepr(f1)}`);
  print(`Yes ratio: ${floatRepr(yesRatio)}`);
  print([f1, acc, precision, recall, yesRatio].map((x) => formatFixed(x, 3)).join(", "));
}

export const evalPope: EvalCommand = {
  name: SCRIPT,
  summary: "POPE: accuracy, precision, recall, F1 and yes ratio per category",
  options: {
    "--annotation-dir": { type: "str", help: "folder of coco_pope_<category>.json label files" },
    "--question-file": { type: "str" },
    "--result-file": { type: "str" },
  },
  async run(args) {
    const questionFile = givenPath(args.question_file, "--question-file", SCRIPT);
    const questions = new Map<string, PyValue>();
    readJsonLines(questionFile, "question file").forEach((q, i) => questions.set(pyKey(field(q, "question_id", `${questionFile}, line ${i + 1}`)), q));
    const resultFile = givenPath(args.result_file, "--result-file", SCRIPT);
    const records = readJsonLines(resultFile, "result file");
    const ids = records.map((r, i) => field(r, "question_id", `${resultFile}, line ${i + 1}`));
    const repeated = duplicates(ids, pyKey);
    if (repeated.length) warn(SCRIPT, `${repeated.length} questions are answered more than once, each answer scored: ids ${listIds(repeated)}`);

    // os.listdir(None) lists the working folder.
    const annotationDir = typeof args.annotation_dir === "string" ? args.annotation_dir : ".";
    const scored = new Set<PyValue>();
    // The reference takes os.listdir's arbitrary order; sorted here so the printout is reproducible.
    for (const file of sortedListing(annotationDir, "annotation folder")) {
      if (!file.startsWith(LABEL_PREFIX) || !file.endsWith(LABEL_SUFFIX)) {
        throw referenceStops(SCRIPT, `${annotationDir} holds ${file}, not a ${LABEL_PREFIX}<category>${LABEL_SUFFIX} label file`, "AssertionError");
      }
      const category = file.slice(LABEL_PREFIX.length, -LABEL_SUFFIX.length);
      const unknown = ids.filter((id) => !questions.has(pyKey(id)));
      if (unknown.length) throw referenceStops(SCRIPT, `${unknown.length} answers have a question_id not in the question file: ids ${listIds(unknown)}`, "KeyError");
      const answers: Answer[] = [];
      records.forEach((r, i) => {
        const question = questions.get(pyKey(ids[i]))!;
        if (field(question, "category", `question ${ids[i]}`) !== category) return;
        answers.push({ id: ids[i], text: textField(r, "text", `${resultFile}, line ${i + 1}`), question });
        scored.add(r);
      });
      print(`Category: ${category}, # samples: ${answers.length}`);
      scoreCategory(category, answers, path.join(annotationDir, file));
      print("====================================");
    }
    const unscored = ids.filter((_, i) => !scored.has(records[i]));
    if (unscored.length) warn(SCRIPT, `${unscored.length} answers are in a category without a label file and are not scored: ids ${listIds(unscored)}`);
  },
};
