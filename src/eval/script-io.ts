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
import { loadJson, loadJsonLines, pyRepr, typeName, type PyValue } from "./python.js";

export function readText(file: string, what: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new LlavaError(`${what} ${file}: ${describeFsError(err)}`);
  }
}

export const readJson = (file: string, what: string): PyValue => loadJson(readText(file, what), `${what} ${file}`);

export const readJsonLines = (file: string, what: string): PyValue[] => loadJsonLines(readText(file, what), `${what} ${file}`);

/** The names in a folder in Python's sorted() order (code points; os.listdir's own order is arbitrary). */
export function sortedListing(dir: string, what: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw new LlavaError(`${what} ${dir}: ${describeFsError(err)}`);
  }
  return names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
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

/** Ids that occur more than once, each once, in order of first repeat. */
export function duplicates(ids: PyValue[], key: (v: PyValue) => string): PyValue[] {
  const seen = new Set<string>();
  const repeated = new Map<string, PyValue>();
  for (const id of ids) {
    const k = key(id);
    if (seen.has(k) && !repeated.has(k)) repeated.set(k, id);
    seen.add(k);
  }
  return [...repeated.values()];
}
