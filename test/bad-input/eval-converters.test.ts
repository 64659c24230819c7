/** Bad input to the GQA, SEED, MM-Vet, MME and MMBench converters: one line, the right exit status, nothing written. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertCleanError, llava } from "../helpers/cli.js";
import { tempDir } from "../helpers/tmp.js";

const scratch = () => tempDir("llava-eval-bad-");

test("an answers file that is not UTF-8, holds a blank line, or is a folder", () => {
  const dir = scratch();
  fs.writeFileSync(path.join(dir, "latin1.jsonl"), Buffer.from('{"question_id": 1, "text": "caf\xe9"}\n', "latin1"));
  fs.writeFileSync(path.join(dir, "blank.jsonl"), '{"question_id": 1, "text": "a"}\n\n{"question_id": 2, "text": "b"}\n');
  for (const script of ["convert_gqa_for_eval", "convert_mmvet_for_eval"]) {
    assertCleanError(llava(["eval", script, "--src", "latin1.jsonl", "--dst", "o.json"], { cwd: dir }), /answers file latin1\.jsonl: not UTF-8 text/);
    assertCleanError(llava(["eval", script, "--src", "blank.jsonl", "--dst", "o.json"], { cwd: dir }), /1 bad line, nothing written: line 2: Expecting value/);
    assertCleanError(llava(["eval", script, "--src", ".", "--dst", "o.json"], { cwd: dir }), /answers file \.: is a directory/);
  }
  assert.deepEqual(fs.readdirSync(dir).sort(), ["blank.jsonl", "latin1.jsonl"]);
});

test("required options are refused as argparse refuses them (exit status 2)", () => {
  for (const [script, option] of [["convert_answer_to_mme", "--experiment"], ["convert_mmbench_for_submission", "--annotation-file"]]) {
    const r = llava(["eval", script], { cwd: scratch() });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^llava: eval ${script}: the following arguments are required: ${option}`));
  }
});

test("an output path that cannot be written leaves nothing behind", () => {
  const dir = scratch();
  fs.writeFileSync(path.join(dir, "a.jsonl"), '{"question_id": 1, "text": "a"}\n');
  assertCleanError(llava(["eval", "convert_mmvet_for_eval", "--src", "a.jsonl", "--dst", "no/such/dir/o.json"], { cwd: dir }), /cannot write no\/such\/dir\/o\.json/);
  assert.deepEqual(fs.readdirSync(dir), ["a.jsonl"]);
});
