/**
 * `convert_gqa_for_eval`: answers jsonl -> the prediction list GQA's official eval.py reads,
 * `[{"questionId", "prediction": text.rstrip('.').lower()}]` in answer order.
 */
import fs from "node:fs";
import { writeFileAtomic } from "../io/files.js";
import type { EvalCommand } from "./commands.js";
import { countedList, duplicates, givenPath, needsKeys, readJsonRows, warn } from "./script-io.js";
import { dumpJson, pyStr, type PyValue } from "../io/python.js";

const NAME = "convert_gqa_for_eval";

/** GQA's prediction text: trailing periods dropped, then lower-cased. */
export const gqaPrediction = (text: string): string => text.replace(/\.+$/, "").toLowerCase();

export const convertGqa: EvalCommand = {
  name: NAME,
  summary: "answers jsonl -> GQA predictions JSON (text without trailing '.', lower-cased)",
  options: { "--src": { type: "str", help: "answers jsonl" }, "--dst": { type: "str", help: "predictions JSON to write" } },
  async run(args) {
    const src = givenPath(args.src, "--src", NAME);
    const rows = readJsonRows(src, "answers file", needsKeys({ question_id: "any", text: "str" }));
    const dst = givenPath(args.dst, "--dst", NAME);
    const repeated = duplicates(rows.map(({ row }) => row.get("question_id")!)).map(pyStr);
    // eval.py keeps the last prediction of a question id: the others are dropped unseen
    if (repeated.length > 0) warn(NAME, `${src}: duplicate question ids ${countedList(repeated)}; GQA's eval.py keeps only the last answer of each`);
    const predictions: PyValue = rows.map(({ row }) => new Map<string, PyValue>([["questionId", row.get("question_id")!], ["prediction", gqaPrediction(row.get("text") as string)]]));
    writeFileAtomic(dst, (fd) => fs.writeSync(fd, dumpJson(predictions)));
  },
};
