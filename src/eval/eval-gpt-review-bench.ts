/**
 * `llava eval eval_gpt_review_bench`: the judge's review of LLaVA-Bench (in-the-wild) answers, as
 * llava/eval/eval_gpt_review_bench.py makes it: the context is the image's caption, the rule
 * `llava_bench_{category}`; reviews are appended to the output, and a rerun skips those it holds.
 */
import type { EvalCommand } from "./commands.js";
import { field, ItemProblem, joinLines, reviewOptions, runReviews, type ReviewFlavour } from "./gpt-review.js";
import { pyStr, typeName, type PyValue } from "../io/python.js";

const bench: ReviewFlavour = {
  name: "eval_gpt_review_bench",
  resume: true,
  context: (record) => joinLines(field(record, "caption", `the context of ${pyStr(record.get("image")!)}`), "its caption"),
  ruleKey: (category: PyValue) => {
    if (typeof category !== "string") throw new ItemProblem(`can only concatenate str (not "${typeName(category)}") to str: the category is not a string`);
    return `llava_bench_${category}`;
  },
  contextWarning: (contexts) => {
    const strings = contexts.filter((c) => typeof c.get("caption") === "string").map((c) => pyStr(c.get("image")!));
    if (strings.length === 0) return null;
    return `the captions of images ${strings.join(", ")} are strings, not lists: the reference's '\\n'.join puts a newline between their characters, and so does this command`;
  },
};

export const evalGptReviewBench: EvalCommand = {
  name: "eval_gpt_review_bench",
  summary: "LLaVA-Bench (in-the-wild) review by a judge model (OpenAI-compatible endpoint), resumable",
  options: reviewOptions(),
  run: (args) => runReviews(args, bench),
};
