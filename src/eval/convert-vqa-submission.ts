/**
 * `llava eval convert_vqav2_for_submission` and `convert_vizwiz_for_submission`: answers as the
 * EvalAI servers take them, each normalised (answer-processor.ts), in the order of the split's
 * question file. Lines of the answers file that are not JSON are counted (error_line) and skipped.
 */
import fs from "node:fs";
import path from "node:path";
import { LlavaError } from "../util/errors.js";
import { describeFsError } from "../io/files.js";
import { normalizeAnswer } from "./answer-processor.js";
import type { EvalCommand } from "./commands.js";
import { dumpJson, loadJson, pyKey, pyLines, type PyDict, type PyValue } from "../io/python.js";
import { duplicates, field, listIds, readJsonLines, readText, referenceStops, textField, warn, writeText } from "./script-io.js";

interface Answers {
  /** question id key -> the answer record */
  byId: Map<string, PyValue>;
  ids: PyValue[];
  badLines: number[];
}

function readAnswers(script: string, file: string): Answers {
  const records: PyValue[] = [];
  const ids: PyValue[] = [];
  const badLines: number[] = [];
  pyLines(readText(file, "answers file")).forEach((line, i) => {
    let record: PyValue;
    try {
      record = loadJson(line, `${file}, line ${i + 1}`);
    } catch (err) {
      if (!(err instanceof LlavaError)) throw err;
      badLines.push(i + 1);
      return;
    }
    ids.push(field(record, "question_id", `${file}, line ${i + 1}`));
    field(record, "text", `${file}, line ${i + 1}`);
    records.push(record);
  });
  const byId = new Map(records.map((r, i) => [pyKey(ids[i]), r]));
  if (badLines.length) warn(script, `${badLines.length} lines of ${file} are not JSON and their answers are lost: lines ${badLines.join(", ")}`);
  const repeated = duplicates(ids, pyKey);
  if (repeated.length) warn(script, `${repeated.length} questions are answered more than once, the last answer kept: ids ${listIds(repeated)}`);
  return { byId, ids, badLines };
}

function readSplit(file: string): { split: PyValue[]; ids: PyValue[] } {
  const split = readJsonLines(file, "question file");
  return { split, ids: split.map((q, i) => field(q, "question_id", `${file}, line ${i + 1}`)) };
}

function reportCounts(answers: Answers, splitSize: number): void {
  process.stdout.write(`total results: ${answers.byId.size}, total split: ${splitSize}, error_line: ${answers.badLines.length}\n`);
}

function warnOutside(script: string, answers: Answers, splitIds: PyValue[]): void {
  const inSplit = new Set(splitIds.map(pyKey));
  const outside = answers.ids.filter((id) => !inSplit.has(pyKey(id)));
  if (outside.length) warn(script, `${outside.length} answers are for questions outside the split and are ignored: ids ${listIds(outside)}`);
}

const answerOf = (record: PyValue, id: PyValue) => normalizeAnswer(textField(record, "text", `answer to ${String(id)}`));

function makeFolder(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new LlavaError(`cannot create folder ${dir}: ${describeFsError(err)}`);
  }
}

const VQAV2 = "convert_vqav2_for_submission";

export const convertVqav2ForSubmission: EvalCommand = {
  name: VQAV2,
  summary: "VQAv2: answers/<split>/<ckpt>/merge.jsonl -> answers_upload/<split>/<ckpt>.json for EvalAI",
  options: {
    "--dir": { type: "str", default: "./playground/data/eval/vqav2" },
    "--ckpt": { type: "str", required: true },
    "--split": { type: "str", required: true },
  },
  async run(args) {
    const dir = String(args.dir);
    const ckpt = String(args.ckpt);
    const src = path.join(dir, "answers", String(args.split), ckpt, "merge.jsonl");
    // The full test2015 question file: test-dev answers are padded to it, unanswered ones empty.
    const splitFile = path.join(dir, "llava_vqav2_mscoco_test2015.jsonl");
    const dst = path.join(dir, "answers_upload", String(args.split), `${ckpt}.json`);
    makeFolder(path.dirname(dst));
    const answers = readAnswers(VQAV2, src);
    const { split, ids } = readSplit(splitFile);
    reportCounts(answers, split.length);
    warnOutside(VQAV2, answers, ids);
    const unanswered = ids.filter((id) => !answers.byId.has(pyKey(id)));
    if (unanswered.length) warn(VQAV2, `${unanswered.length} questions have no answer and are submitted empty: ids ${listIds(unanswered)}`);
    const upload = ids.map((id): PyDict => {
      const record = answers.byId.get(pyKey(id));
      return new Map<string, PyValue>([["question_id", id], ["answer", record === undefined ? "" : answerOf(record, id)]]);
    });
    writeText(dst, dumpJson(upload));
  },
};

const VIZWIZ = "convert_vizwiz_for_submission";

export const convertVizwizForSubmission: EvalCommand = {
  name: VIZWIZ,
  summary: "VizWiz: answers -> [{image, answer}] JSON for EvalAI",
  options: {
    "--annotation-file": { type: "str", required: true },
    "--result-file": { type: "str", required: true },
    "--result-upload-file": { type: "str", required: true },
  },
  async run(args) {
    const uploadFile = String(args.result_upload_file);
    // Python's os.path.dirname of a bare file name is "", and os.makedirs("") fails.
    if (!uploadFile.includes("/")) throw referenceStops(VIZWIZ, `--result-upload-file ${uploadFile} names no folder`, "FileNotFoundError from os.makedirs('')");
    makeFolder(path.dirname(uploadFile));
    const answers = readAnswers(VIZWIZ, String(args.result_file));
    const annotationFile = String(args.annotation_file);
    const { split, ids } = readSplit(annotationFile);
    reportCounts(answers, split.length);
    warnOutside(VIZWIZ, answers, ids);
    const unanswered = ids.filter((id) => !answers.byId.has(pyKey(id)));
    if (unanswered.length) throw referenceStops(VIZWIZ, `${unanswered.length} questions have no answer: ids ${listIds(unanswered)}`, "AssertionError");
    const upload = split.map((q, i): PyDict => new Map<string, PyValue>([
      ["image", field(q, "image", `${annotationFile}, line ${i + 1}`)],
      ["answer", answerOf(answers.byId.get(pyKey(ids[i]))!, ids[i])],
    ]));
    writeText(uploadFile, dumpJson(upload));
  },
};
