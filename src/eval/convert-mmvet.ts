/** `convert_mmvet_for_eval`: answers jsonl -> `{"v1_<question_id>": text}`, the JSON MM-Vet's grader reads. */
import fs from "node:fs";
import { writeFileAtomic } from "../io/files.js";
import type { EvalCommand } from "./commands.js";
import { countedList, duplicates, givenPath, needsKeys, readJsonRows, warn } from "./script-io.js";
import { dumpJson, pyStr, type PyValue } from "../io/python.js";

const NAME = "convert_mmvet_for_eval";

export const convertMmvet: EvalCommand = {
  name: NAME,
  summary: "answers jsonl -> MM-Vet results JSON keyed v1_<question_id>",
  options: { "--src": { type: "str", help: "answers jsonl" }, "--dst": { type: "str", help: "results JSON to write" } },
  async run(args) {
    const src = givenPath(args.src, "--src", NAME);
    const rows = readJsonRows(src, "answers file", needsKeys({ question_id: "any", text: "any" }));
    const dst = givenPath(args.dst, "--dst", NAME);
    // the key is f'v1_{qid}': ids 7 and "7" land on one key, and the later answer replaces the earlier in place
    const key = (id: PyValue) => `v1_${pyStr(id)}`;
    const repeated = duplicates(rows.map(({ row }) => row.get("question_id")!), key).map(key);
    if (repeated.length > 0) warn(NAME, `${src}: answers sharing a key ${countedList(repeated)}; only the last answer of each is graded`);
    const results = new Map<string, PyValue>(rows.map(({ row }) => [key(row.get("question_id")!), row.get("text")!]));
    writeFileAtomic(dst, (fd) => fs.writeSync(fd, dumpJson(results, { indent: 2 })));
  },
};
