/**
 * `calculation` (MME's eval_tool/calculation.py, which the reference's mme.sh runs): per subtask,
 * acc (questions right) + acc+ (images with both questions right), in percent; printed per
 * subtask and summed for Perception and Cognition. An answer counts as yes or no when it is
 * that word or its first four characters hold it ("yes" checked first), else as neither.
 */
import path from "node:path";
import { LlavaError } from "../util/errors.js";
import type { EvalCommand } from "./commands.js";
import { countedList, readText, warn } from "./script-io.js";
import { MME_TASKS } from "./mme.js";
import { floatRepr, pyLines, pyRepr } from "../io/python.js";

const NAME = "calculation";
const fail = (message: string): never => {
  throw new LlavaError(`eval ${NAME}: ${message}`);
};

/** MME's reading of an answer (already lower-cased, its line break still on). */
function answerLabel(answer: string): "yes" | "no" | "other" {
  if (answer === "yes" || answer === "no") return answer;
  const prefix = [...answer].slice(0, 4).join(""); // Python slices code points
  return prefix.includes("yes") ? "yes" : prefix.includes("no") ? "no" : "other";
}

/** A subtask's score: acc + acc+ in percent, from its answers file. */
function taskScore(file: string): number {
  const lines = pyLines(readText(file, "MME answers file"));
  if (lines.length === 0) fail(`${file} is empty (the reference fails here: ZeroDivisionError)`);
  let correct = 0;
  let bothCorrect = 0;
  const mispaired: string[] = [];
  for (let i = 0; i < lines.length; i += 2) {
    if (i + 1 === lines.length) fail(`${file} has ${lines.length} lines, not two per image (the reference fails here: AssertionError)`);
    const pair = lines.slice(i, i + 2).map((line, j) => {
      const fields = line.split("\t");
      if (fields.length !== 4) fail(`${file}:${i + j + 1} has ${fields.length} tab-separated fields, not 4 (the reference fails here: ValueError)`);
      const truth = fields[2].toLowerCase();
      if (truth !== "yes" && truth !== "no") fail(`${file}:${i + j + 1}: ground truth ${JSON.stringify(fields[2])} is not yes or no (the reference fails here: AssertionError)`);
      return { image: fields[0], right: answerLabel(fields[3].toLowerCase()) === truth };
    });
    correct += pair.filter((q) => q.right).length;
    if (pair.every((q) => q.right)) bothCorrect++;
    if (pair[0].image !== pair[1].image) mispaired.push(`${i + 1}-${i + 2}`);
  }
  if (mispaired.length > 0) warn(NAME, `${file}: line pairs of two different images: ${countedList(mispaired)}; their acc+ is not MME's`);
  // the reference adds acc then acc+ to an int 0, in this order
  return 0 + (correct / lines.length) * 100 + (bothCorrect / (lines.length / 2)) * 100;
}

export const mmeCalculation: EvalCommand = {
  name: NAME,
  summary: "MME scores (acc + acc+ per subtask, Perception and Cognition totals) from eval_tool answer files",
  options: { "--results_dir": { type: "str", default: "", help: "folder of <subtask>.txt answer files" } },
  async run(args) {
    const resultsDir = args.results_dir as string;
    const out = (line: string) => process.stdout.write(`${line}\n`);
    out(`Namespace(results_dir=${pyRepr(resultsDir)})`);
    for (const [kind, tasks] of MME_TASKS) {
      out(`=========== ${kind} ===========`);
      let total = 0;
      const scores = tasks.map((task) => {
        const score = taskScore(path.join(resultsDir, `${task}.txt`));
        total += score;
        return score;
      });
      out(`total score: ${floatRepr(total)} \n`);
      tasks.forEach((task, i) => out(`\t ${task}  score: ${floatRepr(scores[i])}`));
      out("\n");
    }
  },
};
