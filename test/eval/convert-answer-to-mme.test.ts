/** `llava eval convert_answer_to_mme` writes the reference's subtask files byte for byte. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { assertCleanError } from "../helpers/cli.js";
import { assertSuccess, DATA, expected, runEval, sampleCopy } from "./cases.js";

const SCRIPT = "convert_answer_to_mme";
const OUT = path.join("eval_tool", "answers", "llava-test");

test("MME's wording restored (short-answer suffix out, one or two spaces before its own), ground truth added, files per subtask", () => {
  const dir = sampleCopy(SCRIPT);
  fs.rmSync(path.join(dir, "expected"), { recursive: true });
  const r = runEval(SCRIPT, ["--experiment", "llava-test"], dir);
  assertSuccess(r, expected(SCRIPT, "expected/stdout.txt"));
  const want = fs.readdirSync(path.join(DATA, SCRIPT, "expected", OUT)).sort();
  assert.deepEqual(fs.readdirSync(path.join(dir, OUT)).sort(), want);
  for (const file of want) assert.equal(fs.readFileSync(path.join(dir, OUT, file), "utf8"), expected(SCRIPT, path.join("expected", OUT, file)), file);
  assert.match(r.stderr, /^llava: warning: eval \w+: answers\/llava-test\.jsonl: questions of answered subtasks without an answer: 2 \(landmark\/lan0002\.txt, landmark\/lan0002\.txt\)$/m);
});

test("answers MME does not have, and answers that break calculation's pairs, are named; nothing is written on failure", () => {
  const dir = sampleCopy(SCRIPT);
  const answers = path.join(dir, "answers", "llava-test.jsonl");
  const lines = fs.readFileSync(answers, "utf8").split("\n");
  const stranger = JSON.stringify({ question_id: "count/cou9999.jpg", prompt: "Is it?\nAnswer the question using a single word or phrase.", text: "Yes" });
  fs.writeFileSync(path.join(dir, "answers", "bad.jsonl"), [stranger, ...lines].join("\n"));
  const r = runEval(SCRIPT, ["--experiment", "bad"], dir);
  assertCleanError(r, /answers to questions MME_Benchmark_release_version does not have: 1 \(count\/cou9999\.jpg: "Is it\?  Please answer yes or no\."\); nothing written \(the reference fails here: KeyError\)/);
  assert.equal(fs.existsSync(path.join(dir, "eval_tool", "answers", "bad")), false);

  const withTab = JSON.parse(lines[0]);
  withTab.text = "Yes\tindeed";
  fs.writeFileSync(path.join(dir, "answers", "twice.jsonl"), [lines[0], JSON.stringify(withTab), ...lines.slice(1)].join("\n"));
  const twice = runEval(SCRIPT, ["--experiment", "twice"], dir);
  assert.equal(twice.status, 0, twice.stderr);
  assert.match(twice.stderr, /questions answered more than once: 1 \(existence\/exi0000\.jpg: "Is there a existence thing number 0\? Please answer yes or no\."\); calculation will pair the wrong lines/);
  assert.match(twice.stderr, /answers holding a tab or a line break: 1 \(existence\/exi0000\.jpg\)/);

  assertCleanError(runEval(SCRIPT, ["--experiment", "llava-test"], path.join(dir, "answers")), /MME_Benchmark_release_version: no such folder/);
});
