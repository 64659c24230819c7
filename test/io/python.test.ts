/**
 * Python's formatting, checked against what CPython 3.11 printed for the same values
 * (python-cases.json, written by `json.dumps` of repr / '%.Nf' / json.dumps / repr results).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { dumpJson, floatRepr, formatFixed, loadJson, loadJsonLines, PyFloat, pyRepr, pyRound } from "../../src/io/python.js";
import { LlavaError } from "../../src/util/errors.js";
import { ROOT } from "../helpers/paths.js";

const cases = JSON.parse(fs.readFileSync(path.join(ROOT, "test", "io", "python-cases.json"), "utf8")) as {
  repr: Array<[number, string]>;
  fixed: Array<[number, string, string, string]>;
  json_text: string;
  dumps_default: string;
  dumps_indent4: string;
  dumps_indent2_unicode: string;
  dumps_sorted: string;
  repr_obj: string;
  repr_strings: string;
};

test("repr(float): shortest digits, Python's exponent thresholds and format", () => {
  for (const [x, want] of cases.repr) assert.equal(floatRepr(x), want, `repr(${x})`);
  assert.equal(floatRepr(NaN), "nan");
  assert.equal(floatRepr(-Infinity), "-inf");
});

test("'%.Nf': correctly rounded with ties to even on the exact binary value", () => {
  for (const [x, two, zero, three] of cases.fixed) {
    assert.deepEqual([formatFixed(x, 2), formatFixed(x, 0), formatFixed(x, 3)], [two, zero, three], `${x}`);
  }
  assert.equal(pyRound(2.675, 2), 2.67);
  assert.equal(pyRound(0.125, 2), 0.12);
});

test("json.loads then json.dumps give Python's bytes: key order, floats, big ints, escapes, indent, sort_keys", () => {
  const value = loadJson(cases.json_text, "cases");
  assert.equal(dumpJson(value), cases.dumps_default);
  assert.equal(dumpJson(value, { indent: 4 }), cases.dumps_indent4);
  assert.equal(dumpJson(value, { indent: 2, ensureAscii: false }), cases.dumps_indent2_unicode);
  assert.equal(dumpJson(value, { sortKeys: true }), cases.dumps_sorted);
  assert.equal(pyRepr(value), cases.repr_obj);
  assert.equal(pyRepr(["it's", 'say "hi"', "both ' \"", "\u00a0nbsp", "\u200bzw", "caf\u00e9"]), cases.repr_strings);
  const dict = value as Map<string, unknown>;
  assert.deepEqual([...dict.keys()], ["b", "a", "3", "1", "nested", "big", "f"], "insertion order, numeric-looking keys included");
  assert.ok((dict.get("a") as unknown[])[0] instanceof PyFloat, "1.0 stays a float");
  assert.equal(dict.get("big"), 12345678901234567890n);
});

test("json.loads' errors and lenient values", () => {
  assert.equal(dumpJson(loadJson("[NaN, Infinity, -Infinity, 1e5, -0.0]", "x")), "[NaN, Infinity, -Infinity, 100000.0, -0.0]");
  assert.equal(dumpJson(loadJson('{"a": 1, "a": 2}', "x")), '{"a": 2}');
  for (const bad of ["", "[1,]", "{'a': 1}", '{"a" 1}', "[1] 2", '"\\x"', '"unterminated']) {
    assert.throws(() => loadJson(bad, "bad.json"), (e: Error) => e instanceof LlavaError && /^bad\.json: .*line \d+ column \d+/.test(e.message), bad);
  }
  assert.equal(loadJsonLines('{"a": 1}\n\n{"a": 2}\n', "f").length, 2);
  assert.throws(() => loadJsonLines('{"a": 1}\n{"a": \n', "answers.jsonl"), /answers\.jsonl, line 2: Expecting value/);
});
