/**
 * What the evaluation commands share around the reference's behaviour: reading its inputs as
 * Python reads them (a missing file or a bad line is one clear error naming the file), writing
 * its outputs whole or not at all, reading fields as `dict[key]` does, and the two kinds of
 * report: a warning where the reference would silently score something wrong, a failure where
 * it would stop.
 */
import fs from "node:fs";
import { describeFsError, writeFileAtomic } from "../io/files.js";
import { LlavaError } from "../util/errors.js";
import type { ArgValues } from "./args.js";
import { compareCodePoints, loadJson, pyKey, pyLines, pyRepr, typeName, type PyDict, type PyValue } from "../io/python.js";

/** Most ids or lines one message names; the rest are counted. */
const MAX_LISTED = 20;

/** A text file as `open(file)` reads it: strict UTF-8, "\r\n" and "\r" read as "\n". */
export function readText(file: string, what: string): string {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new LlavaError(`${what} ${file}: ${describeFsError(err)}`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes).replace(/\r\n?/g, "\n");
  } catch {
    throw new LlavaError(`${what} ${file}: not UTF-8 text`);
  }
}

/** A text file's lines as `for line in open(file)` gives them, without their line ends. */
export function readLines(file: string, what: string): string[] {
  const lines = readText(file, what).split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

export const readJson = (file: string, what: string): PyValue => loadJson(readText(file, what), `${what} ${file}`);

/** One line of a jsonl file: its 1-based number and its JSON object. */
export interface JsonLine {
  line: number;
  row: PyDict;
}

/**
 * The objects of a jsonl file, as `json.loads(line)` reads each line (a blank line is malformed,
 * as it is for Python). `check` says what is wrong with a row's fields, or null. Every bad line
 * is reported in one error, where the reference stops at the first of them.
 */
export function readJsonRows(file: string, what: string, check: (row: PyDict) => string | null = () => null): JsonLine[] {
  const rows: JsonLine[] = [];
  const problems: string[] = [];
  pyLines(readText(file, what)).forEach((text, i) => {
    const line = i + 1;
    let value: PyValue;
    try {
      value = loadJson(text, `line ${line}`);
    } catch (err) {
      problems.push((err as Error).message.replace(/: line \d+ column.*$/, ""));
      return;
    }
    const problem = value instanceof Map ? check(value) : `a JSON ${typeName(value)}, not an object`;
    if (problem) problems.push(`line ${line}: ${problem}`);
    else rows.push({ line, row: value as PyDict });
  });
  if (problems.length > 0) {
    throw new LlavaError(`${what} ${file}: ${problems.length} bad line${problems.length > 1 ? "s" : ""}, nothing written: ${problems.slice(0, MAX_LISTED).join("; ")}${problems.length > MAX_LISTED ? "; ..." : ""}`);
  }
  return rows;
}

/** The objects of a jsonl file (see readJsonRows). */
export const readJsonLines = (file: string, what: string): PyDict[] => readJsonRows(file, what).map(({ row }) => row);

/** A check for `readJsonRows`: the keys the script reads, with "str" where it calls a string method. */
export function needsKeys(keys: Record<string, "any" | "str">): (row: PyDict) => string | null {
  return (row) => {
    for (const [key, kind] of Object.entries(keys)) {
      if (!row.has(key)) return `no "${key}"`;
      if (kind === "str" && typeof row.get(key) !== "string") return `"${key}" is not a string (${typeName(row.get(key)!)})`;
    }
    return null;
  };
}

/** "3 (1, 5, 9)" or "25 (1, 2, ... and 5 more)": a count and the items it counts. */
export function countedList(items: readonly string[]): string {
  const shown = items.slice(0, MAX_LISTED).join(", ");
  const more = items.length > MAX_LISTED ? `, ... and ${items.length - MAX_LISTED} more` : "";
  return `${items.length} (${shown}${more})`;
}

/** The names in a folder in Python's sorted() order (code points; os.listdir's own order is arbitrary). */
export function sortedListing(dir: string, what: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw new LlavaError(`${what} ${dir}: ${describeFsError(err)}`);
  }
  return names.sort(compareCodePoints);
}

/** A path option the reference opens without a default: missing, Python's open(None) raises TypeError. */
export function givenPath(value: ArgValues[string], option: string, script: string): string {
  if (typeof value !== "string") throw referenceStops(script, `${option} not given`, "TypeError");
  return value;
}

/** Writes the whole text or nothing. */
export function writeText(file: string, text: string): void {
  writeFileAtomic(file, (fd) => fs.writeSync(fd, text));
}

/** `record[key]` of a JSON object, failing as the reference would (KeyError, TypeError). */
export function field(record: PyValue, key: string, where: string): PyValue {
  if (!(record instanceof Map)) throw new LlavaError(`${where}: expected a JSON object, got ${typeName(record)} (the reference stops with TypeError)`);
  if (!record.has(key)) throw new LlavaError(`${where}: no "${key}" field (the reference stops with KeyError)`);
  return record.get(key)!;
}

/** A field that must be a string (the reference calls string methods on it). */
export function textField(record: PyValue, key: string, where: string): string {
  const v = field(record, key, where);
  if (typeof v !== "string") throw new LlavaError(`${where}: "${key}" is ${typeName(v)}, expected a string (the reference stops with an error)`);
  return v;
}

/** Ids as a message lists them: the first few, then how many more. */
export function listIds(ids: PyValue[], shown = 10): string {
  const head = ids.slice(0, shown).map(pyRepr).join(", ");
  return ids.length > shown ? `${head} and ${ids.length - shown} more` : head;
}

/** A warning on stderr: the reference goes on, with a score it does not flag. */
export function warn(script: string, message: string): void {
  process.stderr.write(`llava: warning: eval ${script}: ${message}\n`);
}

/** The point where the reference stops: one clear line naming the ids concerned and the reference's error. */
export function referenceStops(script: string, message: string, pythonError: string): LlavaError {
  return new LlavaError(`eval ${script}: ${message} (the reference stops here with ${pythonError})`);
}

/** Ids that occur more than once (as dict keys compare them), each once, in order of first repeat. */
export function duplicates(ids: PyValue[], key: (v: PyValue) => string = pyKey): PyValue[] {
  const seen = new Set<string>();
  const repeated = new Map<string, PyValue>();
  for (const id of ids) {
    const k = key(id);
    if (seen.has(k) && !repeated.has(k)) repeated.set(k, id);
    seen.add(k);
  }
  return [...repeated.values()];
}
