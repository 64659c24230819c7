/**
 * `llava eval model_vqa` and `model_vqa_loader` (llava/eval/model_vqa.py, model_vqa_loader.py):
 * a JSON-lines file of `{question_id, image, text}`, each asked as `<image>\n` + text; the answer
 * line's prompt is the text alone. The loader differs only in its default budget (its
 * --max_new_tokens, 128; model_vqa generates up to 1024) and its switch of plain models to `_mmtag`.
 */
import { type AnswerScript, runAnswers, runnerOptions, SAMPLING_OPTIONS, type Slot } from "./answer-runner.js";
import type { ArgValues } from "./args.js";
import type { EvalCommand } from "./commands.js";
import { pathJoin } from "./pypath.js";
import type { PyValue } from "../io/python.js";
import { field, labelOf, QuestionError, readJsonLines, stringField, withImage } from "./questions.js";

function vqaSlots(entries: unknown[], args: ArgValues): Slot[] {
  return (entries as PyValue[]).map((entry, n) => {
    const label = labelOf(entry, "question_id", `question ${n + 1} of the chunk`);
    try {
      const questionId = field(entry, "question_id");
      const image = stringField(entry, "image");
      const text = stringField(entry, "text");
      return { label, question: { head: [["question_id", questionId], ["prompt", text]], userText: withImage(text), image: pathJoin(String(args.image_folder), image) } };
    } catch (err) {
      if (err instanceof QuestionError) return { label, problem: err.message };
      throw err;
    }
  });
}

export const modelVqaScript: AnswerScript = { name: "model_vqa", mmtagSwitch: false, readQuestions: readJsonLines, slots: vqaSlots };
export const modelVqaLoaderScript: AnswerScript = { ...modelVqaScript, name: "model_vqa_loader", mmtagSwitch: true };

function vqaCommand(name: string, script: AnswerScript, maxNewTokens: number, summary: string): EvalCommand {
  return {
    name,
    summary,
    options: { ...runnerOptions({ questionFile: "tables/question.jsonl", convMode: "llava_v1", maxNewTokens }), ...SAMPLING_OPTIONS },
    run: (args) => runAnswers(script, args),
  };
}

export const modelVqa = vqaCommand("model_vqa", modelVqaScript, 1024, "answers a JSON-lines question file (LLaVA-Bench, MM-Vet)");
export const modelVqaLoader = vqaCommand("model_vqa_loader", modelVqaLoaderScript, 128, "answers a JSON-lines question file (VQAv2, GQA, TextVQA, POPE, MME, SEED...)");
