/**
 * Training data as LLaVA writes it: a JSON array of records (the reference's `json.load` of the
 * whole file) or JSON lines, each `{id, image | images, conversations: [{from, value}, ...]}`.
 * Every record is checked here, so a malformed one is an error naming the file, the record and
 * the field before any work starts.
 */
import fs from "node:fs";
import { describeFsError } from "../io/files.js";
import { LlavaError } from "../util/errors.js";

/** Who speaks a turn: the reference's v1 / llama_2 / mpt paths know only these two (a KeyError otherwise). */
export const SPEAKERS = ["human", "gpt"] as const;
export type Speaker = (typeof SPEAKERS)[number];

export interface Turn {
  from: Speaker;
  value: string;
}

export interface TrainingRecord {
  /** position in the file, from 0 */
  index: number;
  /** the record's `id` (a number becomes its decimal text; none: the index) */
  id: string;
  /** image paths as written, relative to the image folder; empty for a text-only sample */
  images: string[];
  conversations: Turn[];
}

/** Reads and checks every record of a LLaVA JSON (array) or JSON-lines file. */
export function readTrainingData(file: string): TrainingRecord[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new LlavaError(`training data ${file}: ${describeFsError(err)}`);
  }
  return parseRecords(text, file).map((raw, index) => checkRecord(raw, index, file));
}

/** The raw records: a JSON array when the text starts with `[`, else one JSON value per non-empty line. */
function parseRecords(text: string, file: string): unknown[] {
  const body = text.replace(/^\uFEFF/, "");
  if (body.trimStart().startsWith("[")) {
    try {
      return JSON.parse(body) as unknown[];
    } catch (err) {
      throw new LlavaError(`training data ${file}: not valid JSON (${(err as Error).message})`);
    }
  }
  const records: unknown[] = [];
  body.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    try {
      records.push(JSON.parse(line));
    } catch (err) {
      throw new LlavaError(`training data ${file}: line ${i + 1} is not valid JSON (${(err as Error).message})`);
    }
  });
  if (!records.length) throw new LlavaError(`training data ${file}: no records (expected a JSON array or JSON lines)`);
  return records;
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

function checkRecord(raw: unknown, index: number, file: string): TrainingRecord {
  const where = (id: string | null) => `training data ${file}: record ${index}${id === null ? "" : ` (id ${JSON.stringify(id)})`}`;
  if (!isObject(raw)) throw new LlavaError(`${where(null)} is not an object`);
  const rawId = raw["id"];
  if (rawId !== undefined && typeof rawId !== "string" && typeof rawId !== "number") throw new LlavaError(`${where(null)}: id must be a string or a number`);
  const id = rawId === undefined ? String(index) : String(rawId);
  const fail = (field: string, rule: string): never => {
    throw new LlavaError(`${where(id)}: ${field} ${rule}`);
  };
  const images = recordImages(raw, fail);
  const conversations = raw["conversations"];
  if (!Array.isArray(conversations) || conversations.length === 0) fail("conversations", "must be a non-empty list of turns");
  const turns = (conversations as unknown[]).map((turn, i): Turn => {
    if (!isObject(turn)) return fail(`conversations[${i}]`, "must be an object {from, value}");
    const { from, value } = turn;
    if (!SPEAKERS.includes(from as Speaker)) fail(`conversations[${i}].from`, `is ${JSON.stringify(from)}; expected "human" or "gpt"`);
    if (typeof value !== "string") fail(`conversations[${i}].value`, "must be a string");
    return { from: from as Speaker, value: value as string };
  });
  return { index, id, images, conversations: turns };
}

/** `image` (a path, or a list as LLaVA-NeXT writes) or `images` (a list); not both. */
function recordImages(raw: Record<string, unknown>, fail: (field: string, rule: string) => never): string[] {
  if (raw["image"] !== undefined && raw["images"] !== undefined) fail("image", "and images are both given; use one");
  const field = raw["image"] !== undefined ? "image" : "images";
  const value = raw[field];
  if (value === undefined || value === null) return [];
  const list = typeof value === "string" && field === "image" ? [value] : value;
  if (!Array.isArray(list)) fail(field, field === "image" ? "must be a path or a list of paths" : "must be a list of paths");
  (list as unknown[]).forEach((p, i) => {
    if (typeof p !== "string" || p === "") fail(`${field}[${i}]`, "must be a non-empty path");
  });
  return list as string[];
}
