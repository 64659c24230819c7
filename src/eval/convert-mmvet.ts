/** `convert_mmvet_for_eval`: answers jsonl -> `{"v1_<question_id>": text}`, the JSON MM-Vet's grader reads. */
import fs from "node:fs";
import { writeFileAtomic } from "../io/files.js";
import type { EvalCommand } from "./commands.js";
import { countedList, duplicates, needsKeys, readJsonLines, requiredPath, warn } from "./inputs.js";
import { dumpJson, pyStr, type PyValue } from "./python.js";

const NAME = "convert_mmvet_for_eval";

export const convertMmvet: EvalCommand = {
  name: NAME,
  summary: "answers jsonl -> MM-Vet results JSON keyed v1_<question_id>",
  options: { "--src": { type: "str", help: "answers jsonl" }, "--dst": { type: "str", help: "results JSON to write" } },
  async run(args) {
    const src = requiredPath(args.src, "--src", NAME);
    const rows = readJsonLines(src, "answers file", needsKeys({ question_id: "any", text: "any" }));
    const dst = requiredPath(args.dst, "--dst", NAME);
    // the key is f'v1_{qid}': ids 7 and "7" land on one key, and the later answer replaces the earlier in place
    const key = (id: PyValue) => `v1_${pyStr(id)}`;
    const repeated = duplicates(rows.map(({ row }) => row.get("question_id")!), key);
    if (repeated.length > 0) warn(`${src}: answers sharing a key ${countedList(repeated)}; only the last answer of each is graded`);
    const results = new Map<string, PyValue>(rows.map(({ row }) => [key(row.get("question_id")!), row.get("text")!]));
    writeFileAtomic(dst, (fd) => fs.writeSync(fd, dumpJson(results, { indent: 2 })));
  },
};
