/** The reference scripts' argparse options: dashes or underscores, `=` or a separate value, types, flags, exit status 2. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseArgs } from "../../src/eval/args.js";
import { UsageError } from "../../src/util/errors.js";
import { llava } from "../helpers/cli.js";

const specs = {
  "--question-file": { type: "str" as const, default: "tables/question.jsonl" },
  "--num-chunks": { type: "int" as const, default: 1 },
  "--temperature": { type: "float" as const, default: 0.2 },
  "--single-pred-prompt": { type: "flag" as const },
  "--result-file": { type: "str" as const, required: true },
};

test("argparse's spellings, types and defaults", () => {
  assert.deepEqual(parseArgs("x", ["--result-file", "r.jsonl"], specs), {
    question_file: "tables/question.jsonl", num_chunks: 1, temperature: 0.2, single_pred_prompt: false, result_file: "r.jsonl",
  });
  const v = parseArgs("x", ["--result_file=r", "--num_chunks", "4", "--temperature=0", "--single-pred-prompt", "--question-file", "q"], specs);
  assert.deepEqual(v, { question_file: "q", num_chunks: 4, temperature: 0, single_pred_prompt: true, result_file: "r" });
});

test("what argparse refuses is a UsageError (exit status 2)", () => {
  for (const [argv, message] of [
    [["--result-file", "r", "--num-chunks", "two"], /argument --num-chunks: invalid int value: 'two'/],
    [["--result-file", "r", "--bogus", "1"], /unrecognized arguments: --bogus/],
    [["--result-file"], /argument --result-file: expected one argument/],
    [[], /the following arguments are required: --result-file/],
    [["--result-file", "r", "--single-pred-prompt=yes"], /ignored explicit argument 'yes'/],
  ] as const) {
    assert.throws(() => parseArgs("x", [...argv], specs), (e: Error) => e instanceof UsageError && message.test(e.message));
  }
  const r = llava(["eval", "no-such-script"]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^llava: eval: unknown script "no-such-script"/);
});
