/**
 * What the reference's answer scripts (llava/eval/model_vqa*.py) share: the questions chunked as
 * they chunk them, one conversation per question, the answer written as one JSON line with their
 * fields. Beyond the reference: a progress bar with an ETA, an answers file that a rerun resumes
 * (answers already there are kept, the rest are added, the file ends in question order), and bad
 * questions counted and reported with their ids instead of ending the run halfway.
 */
import { AnswersFile } from "./answers-file.js";
import type { ArgSpec, ArgValues } from "./args.js";
import { getChunk } from "./chunks.js";
import { Progress } from "./progress.js";
import { expandUser } from "./pypath.js";
import { warn } from "./script-io.js";
import { dumpJson, pyStrip, type PyDict, type PyValue } from "../io/python.js";
import { shortUuid } from "./shortuuid.js";
import { loadImage } from "../image/decode.js";
import { convTemplateNames, convTemplates, getConvTemplate, modelNameFromPath } from "../llava/conversation.js";
import { type LoadedLlava, loadLlava } from "../llava/load.js";
import { answerGeneration } from "../llava/pipeline.js";
import { LlavaError } from "../util/errors.js";

/** One question ready to ask. */
export interface Question {
  /** the answer line's fields before "text" (question_id, [round_id], prompt): they identify the answer */
  head: Array<[string, PyValue]>;
  /** fields between "text" and "answer_id" (MMBench's options) */
  extra?: Array<[string, PyValue]>;
  /** the user's turn as the model sees it, with a plain <image> (the model wraps it if it must) */
  userText: string;
  /** an image file, an encoded image, or null for a text-only question */
  image: string | Uint8Array | null;
}

/** A question of the chunk, or why it cannot be asked (where the reference would stop with an exception). */
export type Slot = { label: string; question: Question } | { label: string; problem: string };

export interface AnswerScript {
  /** the script's name, for messages */
  name: string;
  /** the loader and MMBench scripts switch a plain (pretraining) model to a `_mmtag` template */
  mmtagSwitch: boolean;
  /** the question file's entries, in order; a file that cannot be read as the reference reads it fails here */
  readQuestions(file: string): unknown[];
  /** the chunk's entries as questions */
  slots(entries: unknown[], args: ArgValues): Slot[];
}

/** Options every answer script has, with the reference's defaults. */
export function runnerOptions(defaults: { questionFile: string; convMode: string; maxNewTokens: number }): Record<string, ArgSpec> {
  return {
    "--model-path": { type: "str", default: "facebook/opt-350m" },
    "--model-base": { type: "str", default: null },
    "--image-folder": { type: "str", default: "" },
    "--question-file": { type: "str", default: defaults.questionFile },
    "--answers-file": { type: "str", default: "answer.jsonl" },
    "--conv-mode": { type: "str", default: defaults.convMode },
    "--num-chunks": { type: "int", default: 1 },
    "--chunk-idx": { type: "int", default: 0 },
    "--temperature": { type: "float", default: 0.2, help: "0: greedy" },
    // the loader's option; the other scripts fix the budget at this default
    "--max_new_tokens": { type: "int", default: defaults.maxNewTokens },
    // as llava run's: the accuracy of a quantized model, measured by the same script
    "--load-8bit": { type: "flag", help: "quantize the language model's Linear weights to 8 bits (q8_0)" },
    "--load-4bit": { type: "flag", help: "the same with 4 bits (q4_0)" },
  };
}

/** The options of the scripts that pass top_p and num_beams to generate. */
export const SAMPLING_OPTIONS: Record<string, ArgSpec> = {
  "--top_p": { type: "float", default: null },
  "--num_beams": { type: "int", default: 1, help: "only 1: beam search is not implemented" },
};



/** The JSON key of an answer's identity: its leading fields and the model that gave it. */
const identity = (head: Array<[string, PyValue]>, modelId: PyValue) => dumpJson(new Map([...head, ["model_id", modelId]]));

export async function runAnswers(script: AnswerScript, args: ArgValues): Promise<void> {
  const modelPath = expandUser(String(args.model_path));
  const modelName = modelNameFromPath(modelPath);
  const temperature = Number(args.temperature);
  const topP = args.top_p === null || args.top_p === undefined ? 1 : Number(args.top_p);
  if ((args.num_beams ?? 1) !== 1) throw new LlavaError(`--num_beams ${args.num_beams}: beam search is not implemented (only 1)`);
  if (temperature > 0 && !(topP >= 0 && topP <= 1)) throw new LlavaError(`--top_p must be a float in [0, 1] (transformers refuses ${args.top_p})`);
  const maxNewTokens = Number(args.max_new_tokens);
  if (!(maxNewTokens >= 1)) throw new LlavaError(`--max_new_tokens must be at least 1, got ${maxNewTokens}`);

  const questionFile = expandUser(String(args.question_file));
  const entries = getChunk(script.readQuestions(questionFile), Number(args.num_chunks), Number(args.chunk_idx));
  const slots = script.slots(entries, args);
  warnDuplicates(script.name, slots, questionFile);

  const convMode = templateFor(script, String(args.conv_mode), modelName);
  const answersFile = AnswersFile.open(expandUser(String(args.answers_file)), (message) => warn(script.name, message));
  try {
    const order = matchExisting(slots, answersFile, modelName); // the slot of each line, in file order
    const lines = new Map(answersFile.existing.map((a, k) => [order[k], a.line]));
    const problems = slots.flatMap((s) => ("problem" in s ? [`${s.label}: ${s.problem}`] : []));
    const todo = slots.flatMap((s, i) => ("question" in s && !lines.has(i) ? [i] : []));
    // a finished file costs no model load
    if (args.load_8bit && args.load_4bit) throw new LlavaError("--load-8bit and --load-4bit exclude each other");
    const quantize = args.load_8bit ? "q8_0" : args.load_4bit ? "q4_0" : undefined;
    const loaded = todo.length ? await loadLlava(modelPath, { modelBase: args.model_base === null ? undefined : expandUser(String(args.model_base)), quantize }) : null;
    if (answersFile.existing.length) process.stderr.write(`resuming ${answersFile.file}: ${answersFile.existing.length} answer(s) kept, ${todo.length} to go\n`);
    const progress = new Progress(slots.length - todo.length - problems.length, slots.length - problems.length);
    for (const i of todo) {
      const slot = slots[i] as { label: string; question: Question };
      let text: string;
      try {
        text = await answer(loaded!, convMode, slot.question, { temperature, topP, maxNewTokens });
      } catch (err) {
        if (!(err instanceof LlavaError)) throw err;
        problems.push(`${slot.label}: ${err.message}`);
        continue;
      }
      const record: PyDict = new Map([
        ...slot.question.head, ["text", text], ...(slot.question.extra ?? []),
        ["answer_id", shortUuid()], ["model_id", modelName], ["metadata", new Map()],
      ]);
      const line = dumpJson(record);
      answersFile.append(line);
      order.push(i);
      lines.set(i, line);
      progress.tick();
    }
    progress.end();
    // answers resumed after a skipped question come after it in the file: put them back in question order
    if (order.some((slot, k) => k > 0 && slot < order[k - 1])) answersFile.rewrite([...order].sort((a, b) => a - b).map((i) => lines.get(i)!));
    if (problems.length) {
      throw new LlavaError(`${problems.length} of ${slots.length} question(s) not answered (the reference stops at the first): ${problems.join("; ")}`);
    }
  } finally {
    answersFile.close();
  }
}

/**
 * The template named by --conv-mode, switched to its `_mmtag` variant for a plain (pretraining)
 * model as the loader and MMBench scripts do, with the line they print.
 */
function templateFor(script: AnswerScript, chosen: string, modelName: string): string {
  let convMode = chosen;
  if (script.mmtagSwitch && modelName.includes("plain") && !modelName.toLowerCase().includes("finetune") && !convMode.includes("mmtag")) {
    convMode += "_mmtag";
    process.stdout.write(`It seems that this is a plain model, but it is not using a mmtag prompt, auto switching to ${convMode}.\n`);
  }
  if (!Object.hasOwn(convTemplates, convMode)) {
    throw new LlavaError(`--conv-mode "${convMode}" is not a template (the reference fails with KeyError); valid names: ${convTemplateNames().join(", ")}`);
  }
  return convMode;
}

/** The prompt the model is given: the question as the user's turn of a fresh `convMode` conversation. */
export function conversationPrompt(convMode: string, q: Question): string {
  const conv = getConvTemplate(convMode);
  conv.appendMessage(conv.roles[0], q.userText);
  conv.appendMessage(conv.roles[1], null);
  return conv.getPrompt();
}

/** The model's answer, stripped; no stop string: the reference's scripts stop at EOS or the budget only. */
async function answer(loaded: LoadedLlava, convMode: string, q: Question, opts: { temperature: number; topP: number; maxNewTokens: number }): Promise<string> {
  const images = q.image === null ? [] : [await loadImage(q.image, typeof q.image === "string" ? {} : { what: "from the base64 column" })];
  const generation = await answerGeneration(loaded, conversationPrompt(convMode, q), images, opts).complete();
  return pyStrip(generation.text);
}

/**
 * The slot each answer already in the file answers, in file order (matched by its leading fields
 * and model; the n-th copy of a duplicated question answers its n-th occurrence). Answers to
 * nothing in this chunk mean the file belongs to another run: it is refused rather than overwritten.
 */
function matchExisting(slots: Slot[], file: AnswersFile, modelName: string): number[] {
  const open = new Map<string, number[]>();
  slots.forEach((s, i) => {
    if (!("question" in s)) return;
    const key = identity(s.question.head, modelName);
    open.set(key, [...(open.get(key) ?? []), i]);
  });
  const head = slots.find((s): s is { label: string; question: Question } => "question" in s)?.question.head ?? [];
  const order: number[] = [];
  const foreign: string[] = [];
  file.existing.forEach(({ record }, line) => {
    const slot = record instanceof Map ? open.get(identity(head.map(([k]) => [k, record.get(k) ?? null]), record.get("model_id") ?? null))?.shift() : undefined;
    if (slot !== undefined) order.push(slot);
    else foreign.push(`line ${line + 1}${record instanceof Map && record.has("question_id") ? ` (question_id ${dumpJson(record.get("question_id")!)})` : ""}`);
  });
  if (foreign.length) {
    throw new LlavaError(
      `${file.file}: ${foreign.length} answer(s) are not this model's answers to this chunk's questions: ${foreign.join(", ")}; ` +
        `the file is from another question file, chunk, prompt or model: remove it or choose another --answers-file`,
    );
  }
  return order;
}

/** Questions asked twice: each is answered (as the reference does), but scorers keyed by id keep one. */
function warnDuplicates(script: string, slots: Slot[], source: string): void {
  const seen = new Map<string, number>();
  for (const s of slots) {
    if (!("question" in s)) continue;
    const key = s.question.head.filter(([k]) => k !== "prompt").map(([k, v]) => `${k} ${dumpJson(v)}`).join(" ");
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  const dups = [...seen].filter(([, n]) => n > 1).map(([key, n]) => `${key} (${n} times)`);
  if (dups.length) warn(script, `${source}: ${dups.length} question id(s) appear more than once: ${dups.join(", ")}; each is answered, but a scorer that keys answers by id keeps only one`);
}
