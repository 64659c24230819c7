/**
 * `llava eval summarize_gpt_review`: the table of llava/eval/summarize_gpt_review.py over review
 * files: per file (sorted), per category and `all`, the mean score pair (numpy's mean: summed
 * in order, then divided), each mean rounded to 3 places, then printed as
 * `category relative% reference×10 model×10`, each rounded to 1 place.
 */
import fs from "node:fs";
import path from "node:path";
import type { EvalCommand } from "./commands.js";
import type { ArgValues } from "./args.js";
import { floatRepr, loadJson, numberOf, parsePyInt, PyFloat, pyRepr, pyRound, pyStr, typeName, type PyValue } from "../io/python.js";
import { describeFsError } from "../io/files.js";
import { LlavaError } from "../util/errors.js";
import { readLines } from "./script-io.js";

/** The number a question id is equal to in Python (ints, floats and bools compare as numbers), or null. */
function numericId(v: PyValue): number | null {
  return typeof v === "number" || typeof v === "boolean" || typeof v === "bigint" || v instanceof PyFloat ? numberOf(v) : null;
}

/** Python's sort of str: by code point. */
const byCodePoint = (a: string, b: string) => {
  const [x, y] = [[...a].map((c) => c.codePointAt(0)!), [...b].map((c) => c.codePointAt(0)!)];
  for (let k = 0; k < Math.min(x.length, y.length); k++) if (x[k] !== y[k]) return x[k] - y[k];
  return x.length - y.length;
};

/** The review files the reference reads: -f's, else the matching .jsonl files of -d. */
function reviewFiles(args: ArgValues): string[] {
  const files = (args.files as string[]) ?? [];
  if (files.length > 0) return files;
  const dir = args.dir as string | null;
  let names: string[];
  try {
    names = fs.readdirSync(dir ?? ".");
  } catch (err) {
    throw new LlavaError(`review folder ${dir ?? "."}: ${describeFsError(err)}`);
  }
  return names.filter((x) => {
    if (!x.endsWith(".jsonl")) return false;
    if (x.startsWith("gpt4_text") || x.startsWith("reviews_") || x.startsWith("review_")) return true;
    if (dir === null) throw new LlavaError("summarize_gpt_review: give -d/--dir or -f/--files (the reference fails testing 'review' in a missing --dir)");
    return dir.includes("review");
  });
}

/** The score pairs of one file by category ('all' too), in file order. */
function readScores(file: string, ignore: number[]): { scores: Map<string, PyValue[]>; unscored: PyValue[] } {
  const lines = readLines(file, "review file");
  const scores = new Map<string, PyValue[]>();
  const add = (key: string, v: PyValue) => scores.set(key, [...(scores.get(key) ?? []), v]);
  const unscored: PyValue[] = [];
  lines.forEach((line, n) => {
    const where = `review file ${file}, line ${n + 1}`;
    const review = loadJson(line, where);
    if (!(review instanceof Map)) throw new LlavaError(`${where}: a JSON ${typeName(review)}, not a review`);
    const need = (key: string) => {
      if (!review.has(key)) throw new LlavaError(`${where}: no "${key}" (the reference fails with KeyError)`);
      return review.get(key)!;
    };
    const questionId = need("question_id");
    const id = numericId(questionId);
    if (id !== null && ignore.includes(id)) return;
    if (review.has("category")) {
      const category = review.get("category")!;
      if (typeof category !== "string") throw new LlavaError(`${where}: the category is a ${typeName(category)}, not a string (the reference fails sorting it with 'all')`);
      add(category, need("tuple"));
      add("all", need("tuple"));
    } else {
      add("all", review.has("tuple") ? review.get("tuple")! : need("score"));
    }
    const pair = review.get("tuple") ?? review.get("score");
    if (Array.isArray(pair) && pair.every((x) => typeof x === "number" && x === -1)) unscored.push(questionId);
  });
  return { scores, unscored };
}

/** np.asarray(v).mean(0).tolist() for a list of equal-length number lists. */
function columnMeans(rows: PyValue[], where: string): number[] {
  const width = Array.isArray(rows[0]) ? rows[0].length : -1;
  const fail = (): never => {
    throw new LlavaError(`${where}: the scores are not pairs of numbers of one length (the reference fails averaging them)`);
  };
  if (width < 2) fail();
  const sums = new Array<number>(width).fill(0);
  for (const row of rows) {
    if (!Array.isArray(row) || row.length !== width) fail();
    (row as PyValue[]).forEach((x, k) => {
      if (typeof x === "string" || x === null || Array.isArray(x) || x instanceof Map) fail();
      sums[k] += numberOf(x);
    });
  }
  return sums.map((s) => s / rows.length);
}


export async function runSummary(args: ArgValues): Promise<void> {
  const ignore = ((args.ignore as string[] | null) ?? []).map((x) => {
    const n = parsePyInt(x);
    if (n === null) throw new LlavaError(`summarize_gpt_review: -i/--ignore: invalid literal for int() with base 10: ${pyRepr(x)} (the reference fails)`);
    return Number(n);
  });
  const select = args.select as string[] | null;
  const dir = args.dir as string | null;
  let report = "";
  const unscored: string[] = [];
  for (const file of reviewFiles(args).sort(byCodePoint)) {
    const config = path.posix.basename(file).replaceAll("gpt4_text_", "").replaceAll(".jsonl", "");
    if (select !== null && select.some((x) => !config.includes(x))) continue;
    const version = config.includes("0613") ? "0613" : "0314";
    if (args.version !== null && args.version !== version) continue;
    report += `${config}\n`;
    const source = dir !== null ? path.join(dir, file) : file;
    const { scores, unscored: missing } = readScores(source, ignore);
    if (missing.length > 0) unscored.push(`${source} (questions ${missing.map(pyStr).join(", ")})`);
    for (const category of [...scores.keys()].sort(byCodePoint)) {
      const stats = columnMeans(scores.get(category)!, `${source}, category ${category}`).map((x) => pyRound(x, 3));
      if (stats[0] === 0) throw new LlavaError(`${source}: the mean reference score of ${category} is 0 (the reference fails: float division by zero)`);
      report += `${category} ${floatRepr(pyRound((stats[1] / stats[0]) * 100, 1))} ${floatRepr(pyRound(stats[0] * 10, 1))} ${floatRepr(pyRound(stats[1] * 10, 1))}\n`;
    }
    report += "=================================\n";
  }
  process.stdout.write(report);
  if (unscored.length > 0) {
    process.stderr.write(`llava: warning: reviews without a score ([-1, -1], the judge's first line was not two numbers) are averaged in, as the reference does: ${unscored.join("; ")}\n`);
  }
}

export const summarizeGptReview: EvalCommand = {
  name: "summarize_gpt_review",
  summary: "per-category table of GPT review files (relative score, reference and model scores)",
  options: {
    "--dir": { type: "str", short: "-d", default: null, help: "folder of review files (gpt4_text*, review_*, reviews_*; all .jsonl where its name holds 'review')" },
    "--version": { type: "str", short: "-v", default: null, help: "only the judge version 0314 or 0613 (by file name)" },
    "--select": { type: "str", short: "-s", nargs: "*", default: null, help: "only files whose name holds every word" },
    "--files": { type: "str", short: "-f", nargs: "*", default: [], help: "these review files instead of a folder's" },
    "--ignore": { type: "str", short: "-i", nargs: "*", default: [], help: "question ids to leave out" },
  },
  run: runSummary,
};
