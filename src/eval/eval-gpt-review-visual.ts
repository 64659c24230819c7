/**
 * `llava eval eval_gpt_review_visual`: the judge's review of LLaVA-Bench (COCO) answers, as
 * llava/eval/eval_gpt_review_visual.py makes it: the context is the image's captions, a blank
 * line and one `category: [x1, y1, x2, y2]` line per object; the rule is the category itself.
 * The reference writes the output afresh (no resume) once every review is in, and prints
 * parse_score's messages then. Its Ray workers' "success!" lines carry a process id and are
 * not printed.
 */
import type { EvalCommand } from "./commands.js";
import { field, ItemProblem, joinLines, reviewOptions, runReviews, type ReviewFlavour } from "./gpt-review.js";
import { pyStr, type PyValue } from "../io/python.js";

function context(record: Map<string, PyValue>): string {
  const what = `the context of ${pyStr(record.get("image")!)}`;
  const captions = joinLines(field(record, "captions", what), "its captions");
  const instances = field(record, "instances", what);
  if (!Array.isArray(instances)) throw new ItemProblem(`${what}: "instances" is not a list`);
  const boxes = instances.map((instance, k) => {
    const where = `${what}: instance ${k}`;
    return `${pyStr(field(instance, "category", where))}: ${pyStr(field(instance, "bbox", where))}`;
  });
  return `${captions}\n\n${boxes.join("\n")}`;
}

const visual: ReviewFlavour = {
  name: "eval_gpt_review_visual",
  resume: false,
  context,
  ruleKey: (category: PyValue) => {
    // a category that is not a string is never among the rule file's keys
    if (typeof category !== "string") throw new ItemProblem(`Visual QA category not found in rule file: ${pyStr(category)}.`);
    return category;
  },
};

export const evalGptReviewVisual: EvalCommand = {
  name: "eval_gpt_review_visual",
  summary: "LLaVA-Bench (COCO) review by a judge model (OpenAI-compatible endpoint)",
  options: reviewOptions(),
  run: (args) => runReviews(args, visual),
};
