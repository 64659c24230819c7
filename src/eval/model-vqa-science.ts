/**
 * `llava eval model_vqa_science` (llava/eval/model_vqa_science.py): ScienceQA in LLaVA's
 * conversation format, a JSON list of `{id, image?, conversations}`. The question is the first
 * turn without its `<image>` marker; a question with an image is asked, and recorded, as
 * `<image>\n` + question, one without is asked as text alone.
 */
import { type AnswerScript, runAnswers, runnerOptions, type Slot } from "./answer-runner.js";
import type { ArgValues } from "./args.js";
import type { EvalCommand } from "./commands.js";
import { pathJoin } from "./pypath.js";
import type { PyValue } from "../io/python.js";
import { field, labelOf, QuestionError, readJsonList, SINGLE_PRED_PROMPT, stringField, withImage } from "./questions.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import { pyStrip } from "../io/python.js";

function scienceSlots(entries: unknown[], args: ArgValues): Slot[] {
  return (entries as PyValue[]).map((entry, n) => {
    const label = labelOf(entry, "id", `question ${n + 1} of the chunk`);
    try {
      const id = field(entry, "id");
      const turns = field(entry, "conversations");
      if (!Array.isArray(turns) || turns.length === 0) throw new QuestionError(`"conversations" has no first turn`);
      let question = pyStrip(stringField(turns[0], "value").replaceAll(IMAGE_TOKEN, ""));
      let image: string | null = null;
      if ((entry as Map<string, PyValue>).has("image")) {
        image = pathJoin(String(args.image_folder), stringField(entry, "image"));
        question = withImage(question);
      }
      if (args.single_pred_prompt) question += `\n${SINGLE_PRED_PROMPT}`;
      return { label, question: { head: [["question_id", id], ["prompt", question]], userText: question, image } };
    } catch (err) {
      if (err instanceof QuestionError) return { label, problem: err.message };
      throw err;
    }
  });
}

export const scienceScript: AnswerScript = { name: "model_vqa_science", mmtagSwitch: false, readQuestions: readJsonList, slots: scienceSlots };

export const modelVqaScience: EvalCommand = {
  name: "model_vqa_science",
  summary: "answers ScienceQA in LLaVA's conversation format",
  options: {
    ...runnerOptions({ questionFile: "tables/question.json", convMode: "llava_v0", maxNewTokens: 1024 }),
    "--answer-prompter": { type: "flag", help: "accepted and unused, as in the reference" },
    "--single-pred-prompt": { type: "flag" },
  },
  run: (args) => runAnswers(scienceScript, args),
};
