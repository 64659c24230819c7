/**
 * Chat messages (OpenAI's or Ollama's, reduced to role, text and images) to the rendered prompt a
 * LLaVA model expects: the conversation template the reference CLI picks for the model name, a
 * system message in place of the template's system text, each user turn's images as `<image>`
 * markers at the start of its turn (`<image>\n` + text, as the reference places the first image).
 */
import { convModeForModelName, getConvTemplate, stopString } from "../llava/conversation.js";
import { pyStrip } from "../io/python.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import { HttpError } from "./http-app.js";

export type ChatRole = "system" | "user" | "assistant";

export interface ChatTurn<I> {
  role: ChatRole;
  text: string;
  images: I[];
}

export interface RenderedChat<I> {
  /** the template's text with one `<image>` marker per image */
  prompt: string;
  /** the images in the order of their markers */
  images: I[];
  /** where the answer ends: the template's stop string */
  stop: string[];
}

/** MPT-style templates keep their system text inside this header */
const CHATML_SYSTEM = "<|im_start|>system\n";

/** Renders `turns` for `model`; a conversation the templates cannot hold is a 400 saying why. */
export function renderChat<I>(model: string, turns: ChatTurn<I>[]): RenderedChat<I> {
  const conv = getConvTemplate<I>(convModeForModelName(model));
  const system = turns.filter((t) => t.role === "system");
  if (system.some((t) => t.images.length > 0)) throw new HttpError(400, "messages: images are taken only in user messages");
  if (system.length > 0) {
    const text = system.map((t) => t.text).join("\n");
    conv.system = conv.system.startsWith(CHATML_SYSTEM) ? CHATML_SYSTEM + text : text;
  }
  const dialogue = mergeSameRole(turns.filter((t) => t.role !== "system"));
  if (dialogue.length === 0 || dialogue[0].role !== "user") throw new HttpError(400, "messages: the conversation must start with a user message (after any system message)");
  if (dialogue[dialogue.length - 1].role !== "user") throw new HttpError(400, "messages: the last message must be the user's");
  for (const turn of dialogue) {
    if (turn.role === "assistant" && turn.images.length > 0) throw new HttpError(400, "messages: images are taken only in user messages");
    // markers come only from images: a literal `<image>` in the text would leave one without its image
    const text = pyStrip(turn.text.replaceAll(IMAGE_TOKEN, ""));
    const role = conv.roles[turn.role === "user" ? 0 : 1];
    conv.appendMessage(role, turn.images.length > 0 ? { text: `${IMAGE_TOKEN}\n`.repeat(turn.images.length) + text, images: turn.images } : text);
  }
  conv.appendMessage(conv.roles[1], null);
  return { prompt: conv.getPrompt(), images: conv.getImages(), stop: [stopString(conv)] };
}

/** Consecutive turns of one role become one turn (the templates alternate user and assistant). */
function mergeSameRole<I>(turns: ChatTurn<I>[]): ChatTurn<I>[] {
  const merged: ChatTurn<I>[] = [];
  for (const turn of turns) {
    const last = merged[merged.length - 1];
    if (last?.role === turn.role) merged[merged.length - 1] = { role: turn.role, text: `${last.text}\n${turn.text}`, images: [...last.images, ...turn.images] };
    else merged.push(turn);
  }
  return merged;
}
