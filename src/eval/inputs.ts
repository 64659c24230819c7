/**
 * Reading the reference scripts' inputs as Python's `open()` reads them (UTF-8, universal
 * newlines), and reporting what is wrong with them: every bad line at once, with the ids
 * concerned, before anything is written.
 */
import fs from "node:fs";
import { describeFsError } from "../io/files.js";
import { LlavaError } from "../util/errors.js";
import { loadJson, pyStr, typeName, type PyDict, type PyValue } from "./python.js";

/** Most ids or lines one message names; the rest are counted. */
const MAX_LISTED = 20;

/** "3 (1, 5, 9)" or "25 (1, 2, ... and 5 more)": a count and the items it counts. */
export function countedList(items: readonly string[]): string {
  const shown = items.slice(0, MAX_LISTED).join(", ");
  const more = items.length > MAX_LISTED ? `, ... and ${items.length - MAX_LISTED} more` : "";
  return `${items.length} (${shown}${more})`;
}

/** One line on stderr for input the reference would score silently wrong. */
export function warn(message: string): void {
  process.stderr.write(`llava: warning: ${message}\n`);
}

/** A script option the reference opens without a default: Python fails on open(None). */
export function requiredPath(value: string | number | boolean | null, option: string, script: string): string {
  if (typeof value !== "string") throw new LlavaError(`eval ${script}: ${option} is not given (the reference fails opening None)`);
  return value;
}

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

/** The lines `for line in f` yields: each keeps its "\n" (the last may have none). */
export function pyLines(text: string): string[] {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/** One answer line: its 1-based number and its JSON object. */
export interface JsonLine {
  line: number;
  row: PyDict;
}

/**
 * The lines of a jsonl file as `json.loads(line)` reads each of them (a blank line is malformed,
 * as it is for Python). `check` returns what is wrong with a row's fields, or null. Every bad
 * line is reported in one error, the reference stopping at the first of them.
 */
export function readJsonLines(file: string, what: string, check: (row: PyDict) => string | null): JsonLine[] {
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

/** A check for `readJsonLines`: the keys the script reads, with "str" where it calls a string method. */
export function needsKeys(keys: Record<string, "any" | "str">): (row: PyDict) => string | null {
  return (row) => {
    for (const [key, kind] of Object.entries(keys)) {
      if (!row.has(key)) return `no "${key}"`;
      if (kind === "str" && typeof row.get(key) !== "string") return `"${key}" is not a string (${typeName(row.get(key)!)})`;
    }
    return null;
  };
}

/** Ids that occur more than once (by `key`), each named once by `label`, in first-seen order. */
export function duplicates(ids: Iterable<PyValue>, key: (id: PyValue) => string = pyStr, label: (id: PyValue) => string = key): string[] {
  const seen = new Map<string, { id: PyValue; n: number }>();
  for (const id of ids) {
    const entry = seen.get(key(id)) ?? { id, n: 0 };
    seen.set(key(id), { id: entry.id, n: entry.n + 1 });
  }
  return [...seen.values()].filter(({ n }) => n > 1).map(({ id }) => label(id));
}
