/**
 * `convert_gqa_for_eval`: answers jsonl -> the prediction list GQA's official eval.py reads,
 * `[{"questionId", "prediction": text.rstrip('.').lower()}]` in answer order.
 */
import fs from "node:fs";
import { writeFileAtomic } from "../io/files.js";
import type { EvalCommand } from "./commands.js";
import { countedList, duplicates, needsKeys, readJsonLines, requiredPath, warn } from "./inputs.js";
import { dumpJson, type PyValue } from "./python.js";

const NAME = "convert_gqa_for_eval";

/** GQA's prediction text: trailing periods dropped, then lower-cased. */
export const gqaPrediction = (text: string): string => text.replace(/\.+$/, "").toLowerCase();

export const convertGqa: EvalCommand = {
  name: NAME,
  summary: "answers jsonl -> GQA predictions JSON (text without trailing '.', lower-cased)",
  options: { "--src": { type: "str", help: "answers jsonl" }, "--dst": { type: "str", help: "predictions JSON to write" } },
  async run(args) {
    const src = requiredPath(args.src, "--src", NAME);
    const rows = readJsonLines(src, "answers file", needsKeys({ question_id: "any", text: "str" }));
    const dst = requiredPath(args.dst, "--dst", NAME);
    const repeated = duplicates(rows.map(({ row }) => row.get("question_id")!));
    // eval.py keeps the last prediction of a question id: the others are dropped unseen
    if (repeated.length > 0) warn(`${src}: duplicate question ids ${countedList(repeated)}; GQA's eval.py keeps only the last answer of each`);
    const predictions: PyValue = rows.map(({ row }) => new Map<string, PyValue>([["questionId", row.get("question_id")!], ["prediction", gqaPrediction(row.get("text") as string)]]));
    writeFileAtomic(dst, (fd) => fs.writeSync(fd, dumpJson(predictions)));
  },
};
