/**
 * The evaluation commands: `llava eval <name>`, one per reference script (named by the script's
 * file stem) and the project's own. Each is its own module with its options and its run.
 */
import type { ArgSpec, ArgValues } from "./args.js";
import { convertVizwizForSubmission, convertVqav2ForSubmission } from "./convert-vqa-submission.js";
import { evalPope } from "./eval-pope.js";
import { evalScienceQa } from "./eval-science-qa.js";
import { evalTextvqa } from "./eval-textvqa.js";
import { evalGptReviewBench } from "./eval-gpt-review-bench.js";
import { evalGptReviewVisual } from "./eval-gpt-review-visual.js";
import { summarizeGptReview } from "./summarize-gpt-review.js";
import { convertGqa } from "./convert-gqa.js";
import { convertAnswerToMme } from "./convert-mme.js";
import { convertMmbench } from "./convert-mmbench.js";
import { convertMmvet } from "./convert-mmvet.js";
import { convertSeed } from "./convert-seed.js";
import { mmeCalculation } from "./mme-calculation.js";
import { modelVqa, modelVqaLoader } from "./model-vqa.js";
import { modelVqaMmbench } from "./model-vqa-mmbench.js";
import { modelVqaScience } from "./model-vqa-science.js";
import { evalRun } from "./run.js";
import { evalReport } from "./report.js";
import { synthAccuracy } from "./synth-accuracy.js";

export interface EvalCommand {
  /** the reference script's file stem, e.g. "eval_pope" */
  name: string;
  /** one line for `llava eval --help` */
  summary: string;
  /** the options as the script spells them */
  options: Record<string, ArgSpec>;
  run(args: ArgValues): Promise<void>;
}

/** Every command, in the order `llava eval --help` lists them. */
export const EVAL_COMMANDS: EvalCommand[] = [
  modelVqa,
  modelVqaLoader,
  modelVqaScience,
  modelVqaMmbench,
  evalPope,
  evalScienceQa,
  evalTextvqa,
  convertVqav2ForSubmission,
  convertVizwizForSubmission,
  convertGqa,
  convertSeed,
  convertMmvet,
  convertAnswerToMme,
  mmeCalculation,
  convertMmbench,
  evalGptReviewBench,
  evalGptReviewVisual,
  summarizeGptReview,
  evalRun,
  evalReport,
  synthAccuracy,
];
