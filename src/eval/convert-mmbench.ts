/**
 * `convert_mmbench_for_submission`: the MMBench annotation TSV without its hint, category,
 * source, image, comment and l2-category columns, a `prediction` column inserted as the 7th,
 * filled from the answers by `index`, written as the .xlsx the OpenCompass server takes. Cells
 * have the values and types pandas' to_excel (openpyxl) gives them.
 */
import path from "node:path";
import fs from "node:fs";
import ExcelJS from "exceljs";
import { writeFileAtomic } from "../io/files.js";
import { LlavaError } from "../util/errors.js";
import type { EvalCommand } from "./commands.js";
import { countedList, duplicates, readJsonRows, readText, warn } from "./script-io.js";
import { PyFloat, pyKey, pyStr, type PyValue, typeName } from "../io/python.js";
import { NAN, readTable, type Cell } from "./tsv.js";

const NAME = "convert_mmbench_for_submission";
const DROPPED = ["hint", "category", "source", "image", "comment", "l2-category"];
const PREDICTION_AT = 6;
/** openpyxl refuses these in a string (IllegalCharacterError) and cuts strings at 32767 characters. */
const ILLEGAL = /[\x00-\x08\x0b\x0c\x0e-\x1f]/;
const MAX_STRING = 32767;

const fail = (message: string): never => {
  throw new LlavaError(`eval ${NAME}: ${message}`);
};

/** What openpyxl stores for a pandas cell: NaN empty, infinities as pandas' "inf" text, a text starting "=" as a formula. */
function excelValue(cell: Cell | PyValue): ExcelJS.CellValue {
  if (cell instanceof PyFloat) return Number.isNaN(cell.value) ? null : Number.isFinite(cell.value) ? cell.value : cell.value > 0 ? "inf" : "-inf";
  if (typeof cell === "bigint") return Number(cell);
  if (typeof cell !== "string") return cell as number | boolean | null;
  const text = [...cell].slice(0, MAX_STRING).join("");
  return text.length > 1 && text.startsWith("=") ? { formula: text.slice(1) } : text;
}

export const convertMmbench: EvalCommand = {
  name: NAME,
  summary: "MMBench annotation TSV + answers jsonl -> submission .xlsx with a prediction column",
  options: {
    "--annotation-file": { type: "str", required: true, help: "MMBench .tsv" },
    "--result-dir": { type: "str", required: true, help: "folder of <experiment>.jsonl" },
    "--upload-dir": { type: "str", required: true, help: "folder to write <experiment>.xlsx in" },
    "--experiment": { type: "str", required: true },
  },
  async run(args) {
    const annotationFile = args.annotation_file as string;
    const table = readTable(readText(annotationFile, "annotation file"), annotationFile);
    const missing = DROPPED.filter((c) => !table.columns.includes(c));
    if (missing.length > 0) fail(`${annotationFile} has no column ${missing.join(", ")} (the reference fails here: KeyError)`);
    const kept = table.columns.map((name, c) => ({ name, c })).filter(({ name }) => !DROPPED.includes(name));
    if (kept.length < PREDICTION_AT) fail(`${annotationFile} keeps ${kept.length} columns, too few to insert prediction as the 7th (the reference fails here: IndexError)`);
    if (kept.some(({ name }) => name === "prediction")) fail(`${annotationFile} already has a prediction column (the reference fails here: ValueError)`);

    const answersFile = path.join(args.result_dir as string, `${args.experiment}.jsonl`);
    const answers = readJsonRows(answersFile, "answers file", (row) => {
      for (const key of ["question_id", "text"]) if (!row.has(key)) return `no "${key}"`;
      const text = row.get("text")!;
      if (Array.isArray(text) || text instanceof Map) return `"text" is a ${typeName(text)}`;
      if (typeof text === "string" && ILLEGAL.test(text)) return `"text" holds a control character openpyxl cannot write (IllegalCharacterError)`;
      return null;
    });
    const indexColumn = table.columns.indexOf("index");
    if (answers.length > 0 && indexColumn < 0) fail(`${annotationFile} has no index column (the reference fails here: KeyError)`);

    // each answer fills the rows whose index equals its question_id; a later answer replaces an earlier one
    const rowsByIndex = new Map<string, number[]>();
    if (indexColumn >= 0) table.rows.forEach((cells, r) => {
      const index = cells[indexColumn];
      if (index instanceof PyFloat && Number.isNaN(index.value)) return; // NaN equals nothing
      const key = pyKey(index);
      rowsByIndex.set(key, [...(rowsByIndex.get(key) ?? []), r]);
    });
    const predictions: Array<PyValue | undefined> = table.rows.map(() => undefined);
    const strangers = new Set<string>();
    for (const { row } of answers) {
      const id = row.get("question_id")!;
      const rows = Array.isArray(id) || id instanceof Map ? undefined : rowsByIndex.get(pyKey(id));
      for (const r of rows ?? []) predictions[r] = row.get("text")!;
      if (!rows) strangers.add(pyStr(id));
    }
    const ids = answers.map(({ row }) => row.get("question_id")!);
    const repeated = duplicates(ids.filter((id) => !(Array.isArray(id) || id instanceof Map))).map(pyStr);
    if (repeated.length > 0) warn(NAME, `${answersFile}: duplicate question ids ${countedList(repeated)}; only the last answer of each is submitted`);
    if (strangers.size > 0) warn(NAME, `${answersFile}: answers to no index of ${annotationFile}: ${countedList([...strangers])}; they are not submitted`);
    const unanswered = table.rows.flatMap((cells, r) => (predictions[r] === undefined ? [pyStr(indexColumn < 0 ? r : (cells[indexColumn] as PyValue))] : []));
    if (unanswered.length > 0) warn(NAME, `${answersFile}: questions without an answer, submitted with an empty prediction: ${countedList(unanswered)}`);

    const header = kept.map(({ name }) => name);
    header.splice(PREDICTION_AT, 0, "prediction");
    const bad = header.filter((h) => ILLEGAL.test(h));
    table.rows.forEach((cells) => kept.forEach(({ c }) => typeof cells[c] === "string" && ILLEGAL.test(cells[c] as string) && bad.push(pyStr(cells[indexColumn] ?? NAN))));
    if (bad.length > 0) fail(`${annotationFile}: cells with control characters openpyxl cannot write, in rows ${countedList(bad)} (the reference fails here: IllegalCharacterError)`);

    const workbook = new ExcelJS.Workbook();
    const sheet = workbook.addWorksheet("Sheet1");
    sheet.addRow(header).font = { bold: true }; // pandas' header style
    table.rows.forEach((cells, r) => {
      const values = kept.map(({ c }) => excelValue(cells[c]));
      values.splice(PREDICTION_AT, 0, excelValue(predictions[r] ?? null));
      sheet.addRow(values);
    });
    const bytes = new Uint8Array(await workbook.xlsx.writeBuffer());
    writeFileAtomic(path.join(args.upload_dir as string, `${args.experiment}.xlsx`), (fd) => fs.writeSync(fd, bytes));
  },
};
