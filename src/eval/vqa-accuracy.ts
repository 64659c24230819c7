/**
 * VQA soft accuracy as the reference's TextVQAAccuracyEvaluator computes it: an answer's score
 * is the mean, over the 10 ways of leaving one human answer out, of min(1, matches / 3), where
 * matches counts the remaining human answers equal to it after normalisation.
 */
import { normalizeAnswer } from "./answer-processor.js";

export const HUMAN_ANSWERS = 10;

/** The soft score of `prediction` against the human answers (there must be HUMAN_ANSWERS of them). */
export function softScore(prediction: string, humanAnswers: string[]): number {
  const answers = humanAnswers.map(normalizeAnswer);
  const predicted = normalizeAnswer(prediction);
  const count = answers.filter((a) => a === predicted).length;
  if (count === 0) return 0;
  // Summed in the reference's order, so the float result is the same.
  let sum = 0;
  for (const left of answers) sum += Math.min(1, (count - (left === predicted ? 1 : 0)) / 3);
  return sum / answers.length;
}

/** The mean soft score of a list, summed in order as Python's sum() does. */
export function meanSoftScore(entries: Array<{ prediction: string; humanAnswers: string[] }>): number {
  let sum = 0;
  for (const e of entries) sum += softScore(e.prediction, e.humanAnswers);
  return sum / entries.length;
}
