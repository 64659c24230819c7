/** Reading the answer scripts' question files as the reference reads them, and the prompt rules they share. */
import { dumpJson, loadJson, type PyValue, typeName } from "../io/python.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import { LlavaError } from "../util/errors.js";
import { readJson, readLines } from "./script-io.js";

/** The multiple-choice suffix of `--single-pred-prompt` (ScienceQA and MMBench in English). */
export const SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly.";

/** The user's turn: the image first, on a line of its own, as every answer script puts it. */
export const withImage = (text: string) => `${IMAGE_TOKEN}\n${text}`;

/**
 * A JSON-lines question file as `[json.loads(q) for q in open(file)]` reads it: every line, blank
 * ones included, must be JSON (Python's text mode also splits lines at a lone \r). All bad lines
 * are listed at once, before anything runs.
 */
export function readJsonLines(file: string): PyValue[] {
  const lines = readLines(file, "question file");
  const bad: string[] = [];
  const entries = lines.map((line, n) => {
    try {
      return loadJson(line, `line ${n + 1}`);
    } catch (err) {
      bad.push((err as Error).message);
      return null;
    }
  });
  if (bad.length) throw new LlavaError(`question file ${file}: ${bad.length} line(s) are not JSON (the reference fails with JSONDecodeError): ${bad.join("; ")}`);
  return entries;
}

/** A JSON question file holding a list (`json.load`, then chunked as a list). */
export function readJsonList(file: string): PyValue[] {
  const value = readJson(file, "question file");
  if (!Array.isArray(value)) throw new LlavaError(`question file ${file}: holds a ${typeName(value)}, not a list of questions (the reference fails chunking it)`);
  return value;
}

/** Why a question cannot be asked as the reference asks it (the exception the reference would raise). */
export class QuestionError extends Error {}

/** `entry[key]`, failing as Python would (TypeError on a non-dict, KeyError on a missing key). */
export function field(entry: PyValue, key: string): PyValue {
  if (!(entry instanceof Map)) throw new QuestionError(`is a ${typeName(entry)}, not a JSON object`);
  if (!entry.has(key)) throw new QuestionError(`has no "${key}" (KeyError)`);
  return entry.get(key)!;
}

/** `entry[key]` where the reference concatenates or joins it as a string. */
export function stringField(entry: PyValue, key: string): string {
  const v = field(entry, key);
  if (typeof v !== "string") throw new QuestionError(`"${key}" is a ${typeName(v)}, not a string (TypeError)`);
  return v;
}

/** How a question is named in messages: by its id where it has one, else by its place. */
export function labelOf(entry: PyValue, idKey: string, place: string): string {
  return entry instanceof Map && entry.has(idKey) ? `${idKey} ${dumpJson(entry.get(idKey)!)}` : place;
}
