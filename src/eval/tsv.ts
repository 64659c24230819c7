/**
 * A tab-separated table as pandas' `read_table` reads it with its defaults: a header row, fields
 * quoted with `"` (doubled inside) that may hold tabs and newlines, blank lines skipped, pandas'
 * default missing-value words as NaN, and a column whose values all read as numbers holding
 * numbers (ints, or floats where one is missing). Booleans and dates stay text, a simplification.
 */
import { pyFloat, type PyFloat } from "./python.js";
import { LlavaError } from "../util/errors.js";

/** A cell: text, an int, or a float (NaN where missing). */
export type Cell = string | number | PyFloat;

export interface Table {
  columns: string[];
  rows: Cell[][];
}

/** pandas 2's default missing-value words (pandas 1 reads "None" as text) */
const NA_WORDS = new Set([
  "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]);
const INT = /^\s*[-+]?\d+\s*$/;
const FLOAT = /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?inf(inity)?\s*$/i;

/** Splits the text into records of raw fields, each with the line it starts on; blank lines are skipped. */
function records(text: string, source: string): Array<{ line: number; fields: string[] }> {
  const out: Array<{ line: number; fields: string[] }> = [];
  let fields: string[] = [];
  let field = "";
  let read = false; // anything (a character, a tab, a quote) since the record began
  let quoted = false;
  let line = 1;
  let start = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') i++;
      else if (c === '"') {
        quoted = false;
        continue;
      } else if (c === "\n") line++;
      field += c;
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      if (read) out.push({ line: start, fields: [...fields, field] });
      [fields, field, read, start] = [[], "", false, ++line];
    } else {
      if (c === '"' && field === "") quoted = true;
      else if (c === "\t") fields.push(field), (field = "");
      else field += c;
      read = true;
    }
  }
  if (quoted) throw new LlavaError(`${source}: a quoted field starting on line ${start} never ends (the reference's pandas fails with ParserError: EOF inside string)`);
  if (read) out.push({ line: start, fields: [...fields, field] });
  return out;
}

export function readTable(text: string, source: string): Table {
  const [header, ...body] = records(text, source);
  if (!header) throw new LlavaError(`${source}: empty table (the reference's pandas fails with EmptyDataError)`);
  const columns = header.fields;
  const bad = body.filter((r) => r.fields.length > columns.length);
  if (bad.length) {
    throw new LlavaError(
      `${source}: ${bad.length} line(s) with more fields than the ${columns.length} columns (the reference's pandas fails with ParserError): ` +
        bad.map((r) => `line ${r.line} has ${r.fields.length}`).join(", "),
    );
  }
  const raw = body.map((r) => columns.map((_, c) => r.fields[c] ?? ""));
  const typed = columns.map((_, c) => typeColumn(raw.map((row) => row[c])));
  return { columns, rows: raw.map((_, r) => typed.map((col) => col[r])) };
}

/** One column's cells, typed as pandas infers the column. */
function typeColumn(values: string[]): Cell[] {
  const present = values.filter((v) => !NA_WORDS.has(v));
  const missing = present.length < values.length;
  if (present.length && present.every((v) => INT.test(v)) && !missing) return values.map(Number);
  if (present.every((v) => FLOAT.test(v))) return values.map((v) => pyFloat(NA_WORDS.has(v) ? NaN : Number(v.trim().replace(/^([-+]?)inf(inity)?$/i, "$1Infinity"))));
  return values.map((v) => (NA_WORDS.has(v) ? pyFloat(NaN) : v));
}
