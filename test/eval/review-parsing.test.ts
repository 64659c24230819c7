/** The review commands' reading rules: Python's float() of the judge's score fields, int() of ids, and argparse's short options and lists. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "../../src/eval/args.js";
import { parseScore } from "../../src/eval/gpt-review.js";
import { floatRepr, parsePyFloat, parsePyInt, PyFloat } from "../../src/io/python.js";
import { UsageError } from "../../src/util/errors.js";
import { ROOT } from "../helpers/paths.js";

test("float(str) as CPython 3.11 reads it (python-float.json: its repr, or its ValueError)", () => {
  const cases = JSON.parse(fs.readFileSync(path.join(ROOT, "test", "eval", "data", "python-float.json"), "utf8")) as Array<[string, string | null]>;
  for (const [s, want] of cases) {
    const got = parsePyFloat(s);
    assert.equal(got === null ? null : floatRepr(got), want, JSON.stringify(s));
  }
});

test("int(str): digits with single underscores, surrounding whitespace, any decimal digits", () => {
  assert.equal(parsePyInt(" 12 "), 12);
  assert.equal(parsePyInt("1_000"), 1000);
  assert.equal(parsePyInt("\u0663"), 3);
  assert.equal(parsePyInt("1.0"), null);
  assert.equal(parsePyInt("x"), null);
  assert.equal(parsePyInt("123456789012345678901234567890"), 123456789012345678901234567890n);
});

test("parse_score: the first line's two fields, commas as spaces, else [-1, -1] and the reference's messages", () => {
  const scores = (r: string) => parseScore(r).tuple.map((x) => (x instanceof PyFloat ? floatRepr(x.value) : x));
  assert.deepEqual(scores("8 7\nbecause"), ["8.0", "7.0"]);
  assert.deepEqual(scores("9,6"), ["9.0", "6.0"]);
  assert.deepEqual(scores("7.5, 8"), [-1, -1]);
  assert.deepEqual(scores("8\t7"), [-1, -1]);
  assert.equal(parseScore("a b\nwhy").printed, "could not convert string to float: 'a'\nerror a b\nwhy\n");
  assert.equal(parseScore("8 7 6").printed, "error 8 7 6\n");
  assert.equal(parseScore(",").printed, "could not convert string to float: ''\nerror ,\n");
});

test("argparse: short aliases, attached values, lists that stop at the next option", () => {
  const specs = {
    "--question": { type: "str" as const, short: "-q" },
    "--answer-list": { type: "str" as const, short: "-a", nargs: "+" as const },
    "--ignore": { type: "str" as const, short: "-i", nargs: "*" as const, default: [] },
    "--max-tokens": { type: "int" as const, default: 1024 },
  };
  assert.deepEqual(parseArgs("x", ["-q", "q.jsonl", "-a", "a1", "a2", "-i", "--max-tokens", "5"], specs), { question: "q.jsonl", answer_list: ["a1", "a2"], ignore: [], max_tokens: 5 });
  assert.deepEqual(parseArgs("x", ["-qq.jsonl", "-i", "-1", "3"], specs), { question: "q.jsonl", answer_list: null, ignore: ["-1", "3"], max_tokens: 1024 });
  assert.deepEqual(parseArgs("x", ["-q=q.jsonl"], specs).question, "q.jsonl");
  assert.throws(() => parseArgs("x", ["-a", "-q", "q"], specs), (e: Error) => e instanceof UsageError && /argument --answer-list: expected at least one argument/.test(e.message));
  assert.throws(() => parseArgs("x", ["-z"], specs), (e: Error) => e instanceof UsageError && /unrecognized arguments: -z/.test(e.message));
});
