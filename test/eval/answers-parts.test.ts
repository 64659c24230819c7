/** The answer runners' parts: pandas' reading of a TSV, the reference's chunking, answer ids, Python's path rules, the progress line. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { DATA } from "./answers-helpers.js";
import { getChunk } from "../../src/eval/chunks.js";
import { progressLine } from "../../src/eval/progress.js";
import { dirName, pathJoin } from "../../src/eval/pypath.js";
import { floatRepr, PyFloat } from "../../src/io/python.js";
import { shortUuid } from "../../src/eval/shortuuid.js";
import { readTable } from "../../src/eval/tsv.js";

test("a TSV reads as pandas' read_table reads it (quotes, blank lines, missing words, column types)", () => {
  const dir = path.join(DATA, "tsv");
  const table = readTable(fs.readFileSync(path.join(dir, "tricky.tsv"), "utf8"), "tricky.tsv");
  const want = JSON.parse(fs.readFileSync(path.join(dir, "tricky.expected.json"), "utf8"));
  assert.deepEqual(table.columns, want.columns);
  const described = table.rows.map((row) =>
    row.map((cell) => (cell instanceof PyFloat ? ["float", Number.isNaN(cell.value) ? null : floatRepr(cell.value)] : [typeof cell === "number" ? "int" : "str", cell])),
  );
  assert.deepEqual(described, want.rows);
});

test("chunks are split_list's: ceil(n/k) contiguous questions, Python's indexing, the reference's failures", () => {
  const items = [1, 2, 3, 4, 5];
  assert.deepEqual([0, 1, 2].map((k) => getChunk(items, 3, k)), [[1, 2], [3, 4], [5]]);
  assert.deepEqual(getChunk(items, 2, -1), [4, 5]);
  assert.deepEqual(getChunk(items, 1, 0), items);
  assert.deepEqual(getChunk([1, 2, 3], 5, 2), [3]);
  assert.throws(() => getChunk([1, 2, 3], 5, 3), /IndexError/); // 3 questions make only 3 chunks of 1
  assert.throws(() => getChunk(items, 0, 0), /ZeroDivisionError/);
  assert.throws(() => getChunk([], 1, 0), /ValueError/);
});

test("answer ids are shortuuid's: 22 characters of its 57-letter alphabet, all different", () => {
  const ids = Array.from({ length: 200 }, shortUuid);
  for (const id of ids) assert.match(id, /^[2-9A-HJ-NP-Za-km-z]{22}$/);
  assert.equal(new Set(ids).size, ids.length);
});

test("os.path.join and dirname as the reference's file names need them", () => {
  assert.equal(pathJoin("", "a.png"), "a.png");
  assert.equal(pathJoin("imgs", "a.png"), "imgs/a.png");
  assert.equal(pathJoin("imgs/", "a.png"), "imgs/a.png");
  assert.equal(pathJoin("imgs", "/abs/a.png"), "/abs/a.png");
  assert.equal(dirName("answer.jsonl"), "");
  assert.equal(dirName("out/x/a.jsonl"), "out/x");
  assert.equal(dirName("/a.jsonl"), "/");
});

test("the progress line shows the count, the rate and the time left", () => {
  assert.equal(progressLine(4, 10, 8000, 4), " 40%|########            | 4/10 [00:08<00:12, 2.00s/it]");
  assert.equal(progressLine(3, 10, 0, 0), " 30%|######              | 3/10 [00:00<?, ?it/s]");
  assert.equal(progressLine(10, 10, 2000, 8), "100%|####################| 10/10 [00:02<00:00, 4.00it/s]");
});
