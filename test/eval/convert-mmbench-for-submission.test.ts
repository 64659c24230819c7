/**
 * `llava eval convert_mmbench_for_submission` writes an .xlsx whose cells read back with the
 * values and types of the reference's (expected-cells.json: the reference's file as openpyxl
 * reads it, [repr(value), type, data_type]); xlsx bytes differ by zip timestamps.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import ExcelJS from "exceljs";
import { floatRepr, pyRepr } from "../../src/io/python.js";
import { assertCleanError } from "../helpers/cli.js";
import { assertFails, assertSuccess, expected, runEval, sampleCopy } from "./cases.js";

const SCRIPT = "convert_mmbench_for_submission";
const args = (annotation: string, experiment = "llava-test") => ["--annotation-file", annotation, "--result-dir", "answers", "--upload-dir", "upload", "--experiment", experiment];

/** A cell as openpyxl reads it back: a number is an int unless its text has a '.' or an exponent (exceljs writes JavaScript's). */
function openpyxlView(value: ExcelJS.CellValue): [string, string, string | null] {
  if (value === null || value === undefined) return ["None", "NoneType", null];
  if (typeof value === "string") return [pyRepr(value), "str", "s"];
  if (typeof value === "boolean") return [value ? "True" : "False", "bool", "b"];
  if (typeof value === "number") return Number.isInteger(value) && Math.abs(value) < 1e21 ? [String(value), "int", "n"] : [floatRepr(value), "float", "n"];
  if (typeof value === "object" && "formula" in value) return [pyRepr(`=${value.formula}`), "str", "f"];
  throw new Error(`unexpected cell ${JSON.stringify(value)}`);
}

async function readCells(file: string): Promise<{ sheet: string; rows: Array<Array<[string, string, string | null]>> }> {
  const workbook = new ExcelJS.Workbook();
  await workbook.xlsx.readFile(file);
  const sheet = workbook.worksheets[0];
  const width = sheet.getRow(1).cellCount;
  const rows = [];
  for (let r = 1; r <= sheet.rowCount; r++) rows.push(Array.from({ length: width }, (_, c) => openpyxlView(sheet.getRow(r).getCell(c + 1).value)));
  return { sheet: sheet.name, rows };
}

test("columns dropped, prediction 7th, cells as pandas types them (int, float as int, NaN and NA empty, quoted fields, formulas, CJK)", async () => {
  const dir = sampleCopy(SCRIPT);
  fs.mkdirSync(path.join(dir, "upload"));
  const r = runEval(SCRIPT, args("mmbench_sample.tsv"), dir);
  assertSuccess(r, expected(SCRIPT, "expected-stdout.txt"));
  assert.deepEqual(await readCells(path.join(dir, "upload", "llava-test.xlsx")), JSON.parse(expected(SCRIPT, "expected-cells.json")));
  assert.match(r.stderr, /^llava: warning: eval \w+: answers\/llava-test\.jsonl: duplicate question ids 1 \(2\); only the last answer of each is submitted$/m);
  assert.match(r.stderr, /^llava: warning: eval \w+: answers\/llava-test\.jsonl: answers to no index of mmbench_sample\.tsv: 2 \(4, 999\); they are not submitted$/m);
  assert.match(r.stderr, /^llava: warning: eval \w+: answers\/llava-test\.jsonl: questions without an answer, submitted with an empty prediction: 2 \(4, 5\)$/m);
});

test("an annotation without MMBench's columns, an answer openpyxl cannot write, a missing upload folder: one line, no file", () => {
  const dir = sampleCopy(SCRIPT);
  fs.mkdirSync(path.join(dir, "upload"));
  const tsv = fs.readFileSync(path.join(dir, "mmbench_sample.tsv"), "utf8");
  fs.writeFileSync(path.join(dir, "no-hint.tsv"), tsv.replace("\thint\t", "\thint2\t"));
  assertCleanError(runEval(SCRIPT, args("no-hint.tsv"), dir), /no-hint\.tsv has no column hint \(the reference fails here: KeyError\)/);
  fs.writeFileSync(path.join(dir, "answers", "bell.jsonl"), '{"question_id": 0, "text": "ring\\u0007"}\n');
  assertCleanError(runEval(SCRIPT, args("mmbench_sample.tsv", "bell"), dir), /line 1: "text" holds a control character openpyxl cannot write/);
  fs.writeFileSync(path.join(dir, "unclosed.tsv"), `${tsv}7\t"never closed\n`);
  assertCleanError(runEval(SCRIPT, args("unclosed.tsv"), dir), /unclosed\.tsv: a quoted field is not closed/);
  assert.deepEqual(fs.readdirSync(path.join(dir, "upload")), []);
  fs.rmSync(path.join(dir, "upload"), { recursive: true });
  assertFails(runEval(SCRIPT, args("mmbench_sample.tsv"), dir), /cannot write upload\/llava-test\.xlsx: file not found/);
});
