/** The TSV reader types cells as pandas' read_table does (test/eval/data/read_table: pandas 1.5's reading of table.tsv). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { floatRepr, PyFloat, pyRepr } from "../../src/io/python.js";
import { readTable, type Cell } from "../../src/eval/tsv.js";
import { LlavaError } from "../../src/util/errors.js";
import { expected } from "./cases.js";

/** A cell as [repr, type name], the way the expected file was written from pandas. */
function view(cell: Cell): [string, string] {
  if (cell instanceof PyFloat) return [floatRepr(cell.value), "float"];
  if (typeof cell === "number") return [String(cell), "int"];
  if (typeof cell === "boolean") return [cell ? "True" : "False", "bool"];
  return [pyRepr(cell), "str"];
}

test("int, int with NaN as float, float, bool, bool with NaN, NA words, quotes, blank lines, CRLF, short rows", () => {
  const want = JSON.parse(expected("read_table", "expected.json")) as { columns: string[]; rows: string[][][] };
  const table = readTable(expected("read_table", "table.tsv"), "table.tsv");
  assert.deepEqual(table.columns, want.columns);
  assert.deepEqual(table.rows.map((row) => row.map(view)), want.rows);
});

test("what pandas cannot parse is one error", () => {
  assert.throws(() => readTable("", "e.tsv"), (e: Error) => e instanceof LlavaError && /no columns to parse/.test(e.message));
  assert.throws(() => readTable("a\tb\n1\t2\t3\n", "w.tsv"), /w\.tsv: row 2 has 3 fields, the header 2 \(pandas fails here: ParserError\)/);
  assert.throws(() => readTable('a\n"open\n', "q.tsv"), /a quoted field is not closed/);
  assert.deepEqual(readTable("a\ta\ta\n1\t2\t3\n", "d.tsv").columns, ["a", "a.1", "a.2"]);
});
