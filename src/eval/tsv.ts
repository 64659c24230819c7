/**
 * A tab-separated table as pandas' `read_table(file)` reads it with its defaults: '"' quotes
 * fields (doubled inside), blank lines skipped, short rows padded with NaN, pandas' NA words,
 * and each column's type inferred from all its cells: int, else float (an int column with a
 * NaN is float), else bool, else text.
 */
import { LlavaError } from "../util/errors.js";
import { PyFloat, pyFloat } from "../io/python.js";

/** A cell as pandas holds it: int (number), float (PyFloat; NaN for a missing value), bool, or text. */
export type Cell = number | PyFloat | boolean | string;

export interface Table {
  columns: string[];
  rows: Cell[][];
}

/** read_table's default na_values (pandas 1.5; pandas 2 adds "None"). */
const NA_WORDS = new Set(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"]);
const INT = /^ *[+-]?\d+ *$/;
const FLOAT = /^ *[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity) *$/i;
const BOOL: Record<string, boolean> = { True: true, TRUE: true, true: true, False: false, FALSE: false, false: false };

export const NAN = pyFloat(NaN);

/** The rows of fields of a tab-separated text, as pandas' C tokenizer splits them. */
function tokenize(text: string, file: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let i = 0;
  const endRow = () => {
    if (row.length > 0 || field !== "") rows.push([...row, field]); // a blank line is skipped
    row = [];
    field = "";
  };
  const plain = /[^\t\n\r"]+/y; // a run of ordinary characters, taken at once
  while (i < text.length) {
    plain.lastIndex = i;
    const run = plain.exec(text);
    if (run) {
      field += run[0];
      i = plain.lastIndex;
      continue;
    }
    const c = text[i];
    if (c === '"' && field === "") {
      // a quoted field: up to the lone closing quote; what follows it up to the tab is kept too
      for (i++; ; ) {
        const close = text.indexOf('"', i);
        if (close < 0) throw new LlavaError(`${file}: a quoted field is not closed (pandas fails here: EOF inside string)`);
        field += text.slice(i, close);
        i = close + 1;
        if (text[i] !== '"') break;
        field += '"'; // a doubled quote
        i++;
      }
      continue;
    }
    if (c === "\t") {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      endRow();
    } else field += c;
    i++;
  }
  endRow();
  return rows;
}

/** A column's cells, typed as pandas infers the column's type. */
function inferColumn(raw: Array<string | null>): Cell[] {
  const present = raw.filter((v): v is string => v !== null);
  const hasNa = present.length < raw.length;
  if (present.length > 0 && present.every((v) => INT.test(v))) return raw.map((v) => (v === null ? NAN : hasNa ? pyFloat(Number(v)) : Number(v)));
  if (present.length > 0 && present.every((v) => FLOAT.test(v))) {
    return raw.map((v) => (v === null ? NAN : pyFloat(/inf/i.test(v) ? (v.includes("-") ? -Infinity : Infinity) : Number(v))));
  }
  if (present.length > 0 && present.every((v) => v in BOOL)) return raw.map((v) => (v === null ? NAN : BOOL[v]));
  return raw.map((v) => v ?? NAN);
}

/** pandas' names for repeated column names: a, a.1, a.2. */
function dedupe(names: string[]): string[] {
  const seen = new Map<string, number>();
  return names.map((name) => {
    const n = seen.get(name) ?? 0;
    seen.set(name, n + 1);
    return n === 0 ? name : `${name}.${n}`;
  });
}

export function readTable(text: string, file: string): Table {
  const [header, ...body] = tokenize(text, file);
  if (!header) throw new LlavaError(`${file}: no columns to parse (pandas fails here: EmptyDataError)`);
  const long = body.findIndex((r) => r.length > header.length);
  if (long >= 0) throw new LlavaError(`${file}: row ${long + 2} has ${body[long].length} fields, the header ${header.length} (pandas fails here: ParserError)`);
  const columns = header.map((_, c) => inferColumn(body.map((r) => (c < r.length && !NA_WORDS.has(r[c]) ? r[c] : null))));
  return { columns: dedupe(header), rows: body.map((_, r) => columns.map((col) => col[r])) };
}
