/**
 * `convert_seed_for_submission`: SEED-Bench accuracy by exact match of the answer text with the
 * annotation's answer letter, per question type and for image and video questions, and the
 * upload jsonl `{"question_id", "prediction"}` in annotation order.
 */
import fs from "node:fs";
import { writeFileAtomic } from "../io/files.js";
import { LlavaError } from "../util/errors.js";
import type { EvalCommand } from "./commands.js";
import { countedList, duplicates, givenPath, readJsonRows, readText, warn } from "./script-io.js";
import { compareCodePoints, dumpJson, formatFixed, loadJson, type PyDict, pyEquals, pyInt, pyKey, pyStr, type PyValue, typeName } from "../io/python.js";

const NAME = "convert_seed_for_submission";
const fail = (message: string): never => {
  throw new LlavaError(`eval ${NAME}: ${message}`);
};

function field(dict: PyDict, key: string, where: string): PyValue {
  if (!dict.has(key)) fail(`${where} has no "${key}" (the reference fails here: KeyError)`);
  return dict.get(key)!;
}

/** The annotation's questions and its type names by type id (the file maps names to ids). */
function readAnnotation(file: string): { questions: PyDict[]; typeNames: Map<string, string> } {
  const data = loadJson(readText(file, "annotation file"), file);
  if (!(data instanceof Map)) return fail(`${file} holds a JSON ${typeName(data)}, not an object`);
  const types = field(data, "question_type", file);
  const questions = field(data, "questions", file);
  if (!(types instanceof Map)) return fail(`${file}: "question_type" is a ${typeName(types)}, not an object`);
  if (!Array.isArray(questions) || !questions.every((q) => q instanceof Map)) return fail(`${file}: "questions" is not a list of objects`);
  const typeNames = new Map([...types].map(([name, id]) => [pyKey(id), name]));
  return { questions: questions as PyDict[], typeNames };
}

/** How messages name a question or an answer. */
const named = (dict: PyDict, what: string) => (dict.has("question_id") ? `${what} ${pyStr(dict.get("question_id")!)}` : `a ${what}`);

/** The id an answer is looked up by: int(question_id) where Python's int() takes it. */
function lookupId(q: PyDict): PyValue {
  const id = field(q, "question_id", "a question");
  return pyInt(id) ?? id;
}

/** Python's sorted() of the type ids: numbers by value, strings by code point, never the two mixed. */
function sortedTypeIds(ids: PyValue[]): PyValue[] {
  const kinds = new Set(ids.map((id) => (typeof id === "string" ? "str" : typeName(id))));
  if (kinds.has("str") && kinds.size > 1) fail(`question_type_id mixes strings and numbers (the reference fails sorting them: TypeError)`);
  if ([...kinds].some((k) => !["str", "int", "float", "bool"].includes(k))) fail(`a question_type_id is neither a string nor a number (the reference fails sorting them)`);
  return [...ids].sort((a, b) => (typeof a === "string" ? compareCodePoints(a, b as string) : Number(a) - Number(b)));
}

/**
 * The reference's eval_single: counts per type (all questions, or one data_type), printing the
 * per-type and total lines, or one "<type> accuracy" line. A question without an answer counts
 * as wrong, as in the reference.
 */
function evalSingle(questions: PyDict[], answers: Map<string, PyDict>, typeNames: Map<string, string>, onlyType: string | null): void {
  const counts = new Map<string, { id: PyValue; total: number; correct: number | null }>();
  for (const q of questions) {
    if (onlyType !== null && !pyEquals(field(q, "data_type", named(q, "question")), onlyType)) continue;
    const typeId = field(q, "question_type_id", named(q, "question"));
    const entry = counts.get(pyKey(typeId)) ?? { id: typeId, total: 0, correct: null };
    counts.set(pyKey(typeId), entry);
    entry.total++;
    const answer = answers.get(pyKey(lookupId(q)));
    if (answer === undefined) entry.correct ??= 0;
    else if (pyEquals(field(answer, "text", named(answer, "answer")), field(q, "answer", named(q, "question")))) entry.correct = (entry.correct ?? 0) + 1;
  }
  let total = 0;
  let correct = 0;
  for (const id of sortedTypeIds([...counts.values()].map((c) => c.id))) {
    const entry = counts.get(pyKey(id))!;
    const name = typeNames.get(pyKey(id));
    // the reference only records a type's correct count on a correct or a missing answer
    if (entry.correct === null) fail(`question type ${pyStr(id)}${name === undefined ? "" : ` (${name})`} has answers but none correct (the reference fails here: KeyError)`);
    if (onlyType === null) {
      if (name === undefined) fail(`question type ${pyStr(id)} is not in the annotation's question_type (the reference fails here: KeyError)`);
      process.stdout.write(`${name}: ${formatFixed((entry.correct! / entry.total) * 100, 2)}%\n`);
    }
    total += entry.total;
    correct += entry.correct!;
  }
  if (total === 0) fail(`no ${onlyType ?? ""}${onlyType ? " " : ""}questions to score (the reference fails here: ZeroDivisionError)`);
  process.stdout.write(`${onlyType === null ? "Total" : onlyType} accuracy: ${formatFixed((correct / total) * 100, 2)}%\n`);
}

export const convertSeed: EvalCommand = {
  name: NAME,
  summary: "SEED-Bench accuracy per question type, image and video; upload jsonl",
  options: {
    "--annotation-file": { type: "str", help: "SEED-Bench annotation JSON" },
    "--result-file": { type: "str", help: "answers jsonl" },
    "--result-upload-file": { type: "str", help: "upload jsonl to write" },
  },
  async run(args) {
    const annotationFile = givenPath(args.annotation_file, "--annotation-file", NAME);
    const { questions, typeNames } = readAnnotation(annotationFile);
    const resultFile = givenPath(args.result_file, "--result-file", NAME);
    const lines = readJsonRows(resultFile, "answers file", (row) => {
      if (!row.has("question_id")) return `no "question_id"`;
      try {
        pyKey(row.get("question_id")!);
        return null;
      } catch (err) {
        return `question_id: ${(err as Error).message}`;
      }
    });
    const answers = new Map(lines.map(({ row }) => [pyKey(row.get("question_id")!), row]));
    const repeated = duplicates(lines.map(({ row }) => row.get("question_id")!)).map(pyStr);
    if (repeated.length > 0) warn(NAME, `${resultFile}: duplicate question ids ${countedList(repeated)}; only the last answer of each is scored`);
    const asked = new Set(questions.map((q) => pyKey(lookupId(q))));
    const strangers = lines.map(({ row }) => row.get("question_id")!).filter((id) => !asked.has(pyKey(id)));
    if (strangers.length > 0) warn(NAME, `${resultFile}: answers matching no question of ${annotationFile} (by int(question_id)): ${countedList(strangers.map(pyStr))}; the accuracy does not count them`);

    evalSingle(questions, answers, typeNames, null);
    evalSingle(questions, answers, typeNames, "image");
    evalSingle(questions, answers, typeNames, "video");

    const uploadFile = givenPath(args.result_upload_file, "--result-upload-file", NAME);
    const missing: string[] = [];
    const upload = questions.map((q) => {
      const qid = q.get("question_id")!;
      const answer = answers.get(pyKey(qid)) ?? answers.get(pyKey(lookupId(q)));
      if (answer === undefined) missing.push(pyStr(qid));
      return answer && dumpJson(new Map([["question_id", qid], ["prediction", field(answer, "text", named(answer, "answer"))]])) + "\n";
    });
    if (missing.length > 0) fail(`questions without an answer in ${resultFile}: ${countedList(missing)}, ${uploadFile} not written (the reference fails here: KeyError)`);
    writeFileAtomic(uploadFile, (fd) => fs.writeSync(fd, upload.join("")));
  },
};
