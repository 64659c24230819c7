/**
 * Python's string and key rules the eval commands rely on, checked against what CPython 3.11
 * gave for the same inputs (python-strings-cases.json): str.strip() and str.split() whitespace,
 * the lines of a text-mode file, os.path.splitext of a basename, dict-key equality.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { pyFloat, pyKey, pyLines, pySplit, pyStrip, type PyValue } from "../../src/io/python.js";
import { pathStem } from "../../src/eval/pypath.js";
import { ROOT } from "../helpers/paths.js";

const cases = JSON.parse(fs.readFileSync(path.join(ROOT, "test", "eval", "python-strings-cases.json"), "utf8")) as {
  strip: Array<[string, string]>;
  split: Array<[string, string[]]>;
  lines: Array<[string, string[]]>;
  stem: Array<[string, string]>;
  key_groups: number[][];
};

test("str.strip() and str.split() cut on Python's whitespace, not JavaScript's", () => {
  for (const [s, want] of cases.strip) assert.equal(pyStrip(s), want, JSON.stringify(s));
  for (const [s, want] of cases.split) assert.deepEqual(pySplit(s), want, JSON.stringify(s));
});

test("the lines of a text file with universal newlines", () => {
  for (const [s, want] of cases.lines) assert.deepEqual(pyLines(s), want, JSON.stringify(s));
});

test("os.path.splitext(os.path.basename(p))[0]", () => {
  for (const [p, want] of cases.stem) assert.equal(pathStem(p), want, p);
});

test("dict keys: 1, 1.0 and True are one key; '1', 2.5, None and big ints their own", () => {
  const keys: PyValue[] = [1, pyFloat(1), true, "1", pyFloat(2.5), null, 10n ** 20n];
  const groups = keys.map((k) => keys.flatMap((other, i) => (pyKey(other) === pyKey(k) ? [i] : [])));
  assert.deepEqual(groups, cases.key_groups);
  assert.throws(() => pyKey([1]), /unhashable type: 'list'/);
});
