/**
 * `llava eval synth_accuracy`: exact-match accuracy on the questions of `llava data synth`, overall
 * and per category, each beside its chance level from world.json. Prediction and ground truth are
 * compared after the EvalAI normaliser (lower case, punctuation and articles dropped, number words
 * as digits). A question with no answer counts as wrong and is counted as missing.
 */
import fs from "node:fs";
import path from "node:path";
import type { EvalCommand } from "./commands.js";
import { normalizeAnswer } from "./answer-processor.js";
import { PyFloat, pyKey, type PyDict } from "../io/python.js";
import { listIds, needsKeys, readJson, readJsonRows } from "./script-io.js";
import { SYNTH_FILES } from "../synth/world.js";
import { LlavaError } from "../util/errors.js";

const SCRIPT = "synth_accuracy";

export interface CategoryScore {
  questions: number;
  correct: number;
  missing: number;
  /** correct / questions */
  accuracy: number;
  /** a uniform guess's accuracy, when the world is known */
  chance: number | null;
}

export interface SynthScore {
  overall: CategoryScore;
  categories: Record<string, CategoryScore>;
}

interface Graded {
  category: string;
  correct: boolean;
  missing: boolean;
}

function tally(graded: Graded[], chance: number | null): CategoryScore {
  const correct = graded.filter((g) => g.correct).length;
  return { questions: graded.length, correct, missing: graded.filter((g) => g.missing).length, accuracy: graded.length ? correct / graded.length : 0, chance };
}

/**
 * Scores `predictions` (question id key -> answer text) against `truths` (question id key ->
 * answer and category); `chance` per category, or null when the world is unknown.
 */
export function scoreSynth(truths: Map<string, { answer: string; category: string }>, predictions: Map<string, string>, chance: Record<string, number> | null): SynthScore {
  const graded: Graded[] = [...truths].map(([key, t]) => {
    const prediction = predictions.get(key);
    return { category: t.category, missing: prediction === undefined, correct: prediction !== undefined && normalizeAnswer(prediction) === normalizeAnswer(t.answer) };
  });
  const names = [...new Set(graded.map((g) => g.category))];
  const categories = Object.fromEntries(names.map((c) => [c, tally(graded.filter((g) => g.category === c), chance ? chance[c] ?? null : null)]));
  // overall chance: each question's own chance, averaged
  const overallChance = chance && names.every((c) => categories[c].chance !== null)
    ? names.reduce((sum, c) => sum + categories[c].questions * categories[c].chance!, 0) / Math.max(1, graded.length)
    : null;
  return { overall: tally(graded, overallChance), categories };
}

const percent = (x: number | null) => (x === null ? "-" : (100 * x).toFixed(2));

/** The score as a plain-text table: one row per category, then the overall row. */
export function formatSynthScore(score: SynthScore): string {
  const rows = [...Object.entries(score.categories), ["overall", score.overall] as const].map(([name, s]) => [
    name, String(s.questions), String(s.correct), String(s.missing), percent(s.accuracy), percent(s.chance),
  ]);
  const header = ["category", "questions", "correct", "missing", "accuracy %", "chance %"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

function readTruths(questionFile: string, answerFile: string): Map<string, { answer: string; category: string }> {
  const categories = new Map<string, string>();
  for (const { row } of readJsonRows(questionFile, "question file", needsKeys({ question_id: "any", category: "str" }))) {
    categories.set(pyKey(row.get("question_id")!), row.get("category") as string);
  }
  const truths = new Map<string, { answer: string; category: string }>();
  for (const { row, line } of readJsonRows(answerFile, "ground-truth file", needsKeys({ question_id: "any", answer: "str" }))) {
    const key = pyKey(row.get("question_id")!);
    const category = categories.get(key);
    if (category === undefined) throw new LlavaError(`eval ${SCRIPT}: ${answerFile}, line ${line}: question_id ${JSON.stringify(row.get("question_id"))} is not in ${questionFile}`);
    truths.set(key, { answer: row.get("answer") as string, category });
  }
  const unanswerable = [...categories.keys()].filter((k) => !truths.has(k));
  if (unanswerable.length) throw new LlavaError(`eval ${SCRIPT}: ${unanswerable.length} questions of ${questionFile} have no ground truth in ${answerFile}`);
  return truths;
}

function readPredictions(resultFile: string, truths: Map<string, unknown>): Map<string, string> {
  const predictions = new Map<string, string>();
  const unknown: PyDict[] = [], repeated: PyDict[] = [];
  for (const { row } of readJsonRows(resultFile, "result file", needsKeys({ question_id: "any", text: "str" }))) {
    const key = pyKey(row.get("question_id")!);
    if (!truths.has(key)) unknown.push(row);
    else if (predictions.has(key)) repeated.push(row);
    else predictions.set(key, row.get("text") as string);
  }
  const ids = (rows: PyDict[]) => listIds(rows.map((r) => r.get("question_id")!));
  if (unknown.length) throw new LlavaError(`eval ${SCRIPT}: ${resultFile}: ${unknown.length} answers to questions not in the question file (answers for another file?): ids ${ids(unknown)}`);
  if (repeated.length) throw new LlavaError(`eval ${SCRIPT}: ${resultFile}: ${repeated.length} questions answered more than once: ids ${ids(repeated)}`);
  return predictions;
}

/** world.json's chance levels; null when the default world file is absent. */
function readChance(worldFile: string, given: boolean): Record<string, number> | null {
  if (!given && !fs.existsSync(worldFile)) return null;
  const world = readJson(worldFile, "world file");
  const chance = world instanceof Map ? world.get("chance") : undefined;
  if (!(chance instanceof Map)) throw new LlavaError(`eval ${SCRIPT}: ${worldFile} has no "chance" object (not a world.json of llava data synth)`);
  return Object.fromEntries([...chance].flatMap(([k, v]) => (typeof v === "number" ? [[k, v]] : v instanceof PyFloat ? [[k, v.value]] : [])));
}

export interface SynthScoreFiles {
  /** test.jsonl of llava data synth */
  questionFile: string;
  /** the answers, as model_vqa_loader writes them */
  resultFile: string;
  /** default: test_answers.jsonl beside the question file */
  annotationFile?: string;
  /** default: world.json beside the question file, when there (else no chance levels) */
  worldFile?: string;
}

/** The score of a result file on llava data synth's test. */
export function scoreSynthFiles(files: SynthScoreFiles): SynthScore {
  const beside = (name: string) => path.join(path.dirname(files.questionFile), name);
  const chance = readChance(files.worldFile ?? beside(SYNTH_FILES.world), files.worldFile !== undefined);
  const truths = readTruths(files.questionFile, files.annotationFile ?? beside(SYNTH_FILES.answers));
  if (truths.size === 0) throw new LlavaError(`eval ${SCRIPT}: ${files.questionFile} has no questions`);
  return scoreSynth(truths, readPredictions(files.resultFile, truths), chance);
}

export const synthAccuracy: EvalCommand = {
  name: SCRIPT,
  summary: "llava data synth's test: exact-match accuracy overall and per category, beside chance",
  options: {
    "--question-file": { type: "str", required: true, help: "test.jsonl of llava data synth" },
    "--result-file": { type: "str", required: true, help: "the answers, e.g. of model_vqa_loader" },
    "--annotation-file": { type: "str", help: `the ground truth (default: ${SYNTH_FILES.answers} beside the question file)` },
    "--world": { type: "str", help: `the world's chance levels (default: ${SYNTH_FILES.world} beside the question file, when there)` },
  },
  async run(args) {
    const score = scoreSynthFiles({
      questionFile: args.question_file as string,
      resultFile: args.result_file as string,
      annotationFile: typeof args.annotation_file === "string" ? args.annotation_file : undefined,
      worldFile: typeof args.world === "string" ? args.world : undefined,
    });
    process.stdout.write(`${formatSynthScore(score)}\n${JSON.stringify(score)}\n`);
  },
};
