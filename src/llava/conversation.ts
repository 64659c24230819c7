/**
 * Conversation templates: a port of the reference `llava/conversation.py` (haotian-liu/LLaVA,
 * HEAD c121f0432da2). The rendered prompt text must match the reference byte for byte, because
 * token ids (and therefore every numeric result) depend on it.
 *
 * Also here: the reference's choice of template from a model name (`llava/serve/cli.py`,
 * `llava/eval/run_llava.py`, `llava/serve/gradio_web_server.py`), `get_model_name_from_path`
 * (`llava/mm_utils.py`) and the two stop-string conventions.
 *
 * Images are opaque to this module (type parameter `I`): it only places the `<image>` marker in
 * the text and hands the images back in order. Where the reference stores one image per message
 * as `(text, PIL image, process_mode)`, a message here is `{ text, images }`; a serving layer that
 * needs the process mode keeps it inside its own image type.
 */
import { IMAGE_TOKEN } from "./spec.js";
import { pyStrip } from "../io/python.js";
import { LlavaError, check } from "../util/errors.js";

/** How turns are joined (reference `SeparatorStyle`). */
export enum SeparatorStyle {
  SINGLE = "SINGLE",
  TWO = "TWO",
  MPT = "MPT",
  PLAIN = "PLAIN",
  LLAMA_2 = "LLAMA_2",
}

/** A user turn that carries images (the reference's `(text, image, process_mode)` tuple). */
export interface ImageMessage<I> {
  text: string;
  images: I[];
}

/** `null` marks the open turn the model is to complete (the reference's `None`). */
export type MessageContent<I> = string | null | ImageMessage<I>;

export type Message<I> = [role: string, content: MessageContent<I>];

/** `Conversation.dict()`: the `state` object the reference writes to its serving logs. */
export interface ConversationDict {
  system: string;
  roles: string[];
  messages: [string, string | null][];
  offset: number;
  sep: string;
  sep2: string | null;
}

/** One chat-window row: [user text, assistant text or null while it is pending]. */
export type ChatRow = [user: string | null, assistant: string | null];

export interface ConversationInit<I> {
  system: string;
  roles: readonly [string, string];
  messages?: Message<I>[];
  offset?: number;
  sepStyle?: SeparatorStyle;
  sep?: string;
  sep2?: string | null;
  version?: string;
  skipNext?: boolean;
}

export function isImageMessage<I>(content: MessageContent<I>): content is ImageMessage<I> {
  return content !== null && typeof content === "object";
}

/** The text of a message whatever its kind (`null` stays `null`). */
export function messageText<I>(content: MessageContent<I>): string | null {
  return isImageMessage(content) ? content.text : content;
}

export class Conversation<I = unknown> {
  system: string;
  roles: readonly [string, string];
  messages: Message<I>[];
  /** Leading messages (few-shot examples) that the chat window does not show. */
  offset: number;
  sepStyle: SeparatorStyle;
  sep: string;
  sep2: string | null;
  version: string;
  /** Set by the web UI when the next generation must be skipped (invalid input). */
  skipNext: boolean;

  constructor(init: ConversationInit<I>) {
    this.system = init.system;
    this.roles = init.roles;
    this.messages = init.messages ?? [];
    this.offset = init.offset ?? 0;
    this.sepStyle = init.sepStyle ?? SeparatorStyle.SINGLE;
    this.sep = init.sep ?? "###";
    this.sep2 = init.sep2 ?? null;
    this.version = init.version ?? "Unknown";
    this.skipNext = init.skipNext ?? false;
  }

  appendMessage(role: string, content: MessageContent<I>): void {
    this.messages.push([role, content]);
  }

  /** Replaces the content of the last message (the reference's `conv.messages[-1][-1] = ...`). */
  updateLastMessage(content: MessageContent<I>): void {
    check(this.messages.length > 0, "conversation: there is no message to update");
    this.messages[this.messages.length - 1][1] = content;
  }

  /** The full prompt text, exactly as the reference `get_prompt` renders it. */
  getPrompt(): string {
    const turns = this.promptTurns();
    switch (this.sepStyle) {
      case SeparatorStyle.SINGLE: {
        let ret = this.system + this.sep;
        for (const [role, text] of turns) ret += text !== null ? role + ": " + text + this.sep : role + ":";
        return ret;
      }
      case SeparatorStyle.TWO: {
        let ret = this.system + this.sep;
        turns.forEach(([role, text], i) => {
          ret += text !== null ? role + ": " + text + this.alternatingSep(i) : role + ":";
        });
        return ret;
      }
      case SeparatorStyle.MPT: {
        // Roles already hold "<|im_start|>user\n"; no newline follows the sep, unlike standard ChatML.
        let ret = this.system + this.sep;
        for (const [role, text] of turns) ret += text !== null ? role + text + this.sep : role;
        return ret;
      }
      case SeparatorStyle.LLAMA_2:
        return this.llama2Prompt(turns);
      case SeparatorStyle.PLAIN: {
        let ret = this.system;
        turns.forEach(([, text], i) => {
          if (text !== null) ret += text + this.alternatingSep(i);
        });
        return ret;
      }
      default:
        throw new LlavaError(`conversation: invalid separator style ${String(this.sepStyle)}`);
    }
  }

  /**
   * The images of the user turns, in order (reference `get_images`: every other message from
   * `offset` on). Resizing for transport is the serving layer's job.
   */
  getImages(): I[] {
    const images: I[] = [];
    this.messages.slice(this.offset).forEach(([, content], i) => {
      if (i % 2 === 0 && isImageMessage(content)) images.push(...content.images);
    });
    return images;
  }

  /**
   * Rows for a chat window (reference `to_gradio_chatbot`), hiding the first `offset` messages.
   * An image turn shows `renderImage(image)` for each image (the reference: an `<img>` tag with
   * a JPEG data URL) followed by its text without the `<image>` marker.
   */
  toChat(renderImage: (image: I) => string = () => ""): ChatRow[] {
    const rows: ChatRow[] = [];
    this.messages.slice(this.offset).forEach(([, content], i) => {
      if (i % 2 === 0) {
        const user = isImageMessage(content)
          ? content.images.map(renderImage).join("") + pyStrip(content.text.replaceAll(IMAGE_TOKEN, ""))
          : content;
        rows.push([user, null]);
      } else if (rows.length > 0) {
        rows[rows.length - 1][1] = messageText(content);
      } else {
        rows.push([null, messageText(content)]);
      }
    });
    return rows;
  }

  /** A copy with its own message list (reference `copy`; like it, `skipNext` is not carried). */
  copy(): Conversation<I> {
    return new Conversation<I>({
      system: this.system,
      roles: this.roles,
      messages: this.messages.map(([role, content]) => [role, content]),
      offset: this.offset,
      sepStyle: this.sepStyle,
      sep: this.sep,
      sep2: this.sep2,
      version: this.version,
    });
  }

  /**
   * Reference `dict()`: image messages reduced to their text. (The reference keeps messages as
   * they are when the user turns hold no image; an image anywhere else would not be JSON at all,
   * so reducing every image message is the only serialisable reading.)
   */
  dict(): ConversationDict {
    return {
      system: this.system,
      roles: [...this.roles],
      messages: this.messages.map(([role, content]) => [role, messageText(content)]),
      offset: this.offset,
      sep: this.sep,
      sep2: this.sep2,
    };
  }

  /**
   * The turns as the renderers see them: role and text, `null` where the reference's message is
   * falsy (None or "": an open turn). When the first message carries images, their markers move
   * to its start: `<image>\n` + text, or for `mmtag` versions two synthetic turns first.
   */
  private promptTurns(): [string, string | null][] {
    const messages: Message<I>[] = this.messages.slice();
    const first = messages[0];
    if (first !== undefined && isImageMessage(first[1])) {
      const text = pyStrip(first[1].text.replaceAll(IMAGE_TOKEN, ""));
      // The reference holds exactly one image per message; one marker per image generalises it.
      const count = first[1].images.length;
      check(count > 0, "conversation: a message with images must carry at least one image");
      if (this.version.includes("mmtag")) {
        messages[0] = [first[0], text];
        messages.unshift([this.roles[0], "<Image><image></Image>".repeat(count)], [this.roles[1], "Received."]);
      } else {
        messages[0] = [first[0], "<image>\n".repeat(count) + text];
      }
    }
    // Python truthiness: an image tuple is always truthy, an empty string is not.
    return messages.map(([role, content]) => [role, isImageMessage(content) ? content.text : content || null]);
  }

  private alternatingSep(index: number): string {
    if (index % 2 === 0) return this.sep;
    // The reference would fail concatenating None here (e.g. an answered turn in `plain`).
    if (this.sep2 === null) {
      throw new LlavaError(
        `conversation (${this.version}, ${this.sepStyle}): an answered turn cannot be rendered because sep2 is unset`,
      );
    }
    return this.sep2;
  }

  private llama2Prompt(turns: [string, string | null][]): string {
    const wrapSys = (msg: string) => (msg.length > 0 ? `<<SYS>>\n${msg}\n<</SYS>>\n\n` : msg);
    const wrapInst = (msg: string) => `[INST] ${msg} [/INST]`;
    let ret = "";
    turns.forEach(([role, text], i) => {
      if (i === 0) {
        check(text !== null, `conversation (${this.version}): the first message must not be empty`);
        check(role === this.roles[0], `conversation (${this.version}): the first message must come from ${this.roles[0]}`);
      }
      if (text === null) return;
      const message = i === 0 ? wrapSys(this.system) + text : text;
      if (i % 2 === 0) ret += this.sep + wrapInst(message);
      else ret += " " + message + " " + this.sep2;
    });
    // Python's lstrip takes a character set: "<s>" strips any leading '<', 's', '>'.
    return pyLstripChars(ret, this.sep);
  }
}

/** Python's `str.lstrip(chars)`; an empty `chars` strips nothing. */
function pyLstripChars(s: string, chars: string): string {
  const set = new Set(Array.from(chars));
  const cps = Array.from(s);
  let start = 0;
  while (start < cps.length && set.has(cps[start])) start++;
  return cps.slice(start).join("");
}

// ---------------------------------------------------------------------------------------------
// Templates (verbatim from the reference).

const SYSTEM_HUMAN =
  "A chat between a curious human and an artificial intelligence assistant. " +
  "The assistant gives helpful, detailed, and polite answers to the human's questions.";

const SYSTEM_USER =
  "A chat between a curious user and an artificial intelligence assistant. " +
  "The assistant gives helpful, detailed, and polite answers to the user's questions.";

const SYSTEM_MMTAG =
  "A chat between a curious user and an artificial intelligence assistant. " +
  "The assistant is able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language." +
  "The visual content will be provided with the following format: <Image>visual content</Image>.";

const SYSTEM_LLAMA_2 =
  "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. If you don't know the answer to a question, please don't share false information.";

const SYSTEM_LLAVA_LLAMA_2 =
  "You are a helpful language and vision assistant. " +
  "You are able to understand the visual content that the user provides, " +
  "and assist the user with a variety of tasks using natural language.";

const VICUNA_V0_QUESTION = "What are the key differences between renewable and non-renewable energy sources?";

const VICUNA_V0_ANSWER =
  "Renewable energy sources are those that can be replenished naturally in a relatively " +
  "short amount of time, such as solar, wind, hydro, geothermal, and biomass. " +
  "Non-renewable energy sources, on the other hand, are finite and will eventually be " +
  "depleted, such as coal, oil, and natural gas. Here are some key differences between " +
  "renewable and non-renewable energy sources:\n" +
  "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable " +
  "energy sources are finite and will eventually run out.\n" +
  "2. Environmental impact: Renewable energy sources have a much lower environmental impact " +
  "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, " +
  "and other negative effects.\n" +
  "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically " +
  "have lower operational costs than non-renewable sources.\n" +
  "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote " +
  "locations than non-renewable sources.\n" +
  "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different " +
  "situations and needs, while non-renewable sources are more rigid and inflexible.\n" +
  "6. Sustainability: Renewable energy sources are more sustainable over the long term, while " +
  "non-renewable sources are not, and their depletion can lead to economic and social instability.\n";

const CHATML_ROLES = ["<|im_start|>user\n", "<|im_start|>assistant\n"] as const;

/** Builds a fresh conversation of one template; each call returns a new, independent object. */
export type ConversationFactory = <I = unknown>() => Conversation<I>;

const convVicunaV0: ConversationFactory = () =>
  new Conversation({
    system: SYSTEM_HUMAN,
    roles: ["Human", "Assistant"],
    messages: [
      ["Human", VICUNA_V0_QUESTION],
      ["Assistant", VICUNA_V0_ANSWER],
    ],
    offset: 2,
    sepStyle: SeparatorStyle.SINGLE,
    sep: "###",
  });

const convVicunaV1: ConversationFactory = () =>
  new Conversation({
    system: SYSTEM_USER,
    roles: ["USER", "ASSISTANT"],
    version: "v1",
    sepStyle: SeparatorStyle.TWO,
    sep: " ",
    sep2: "</s>",
  });

const convLlama2: ConversationFactory = () =>
  new Conversation({
    system: SYSTEM_LLAMA_2,
    roles: ["USER", "ASSISTANT"],
    version: "llama_v2",
    sepStyle: SeparatorStyle.LLAMA_2,
    sep: "<s>",
    sep2: "</s>",
  });

const convLlavaLlama2: ConversationFactory = () =>
  new Conversation({
    system: SYSTEM_LLAVA_LLAMA_2,
    roles: ["USER", "ASSISTANT"],
    version: "llama_v2",
    sepStyle: SeparatorStyle.LLAMA_2,
    sep: "<s>",
    sep2: "</s>",
  });

const convMpt: ConversationFactory = () =>
  new Conversation({
    system:
      "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers.",
    roles: CHATML_ROLES,
    version: "mpt",
    sepStyle: SeparatorStyle.MPT,
    sep: "<|im_end|>",
  });

const convLlavaPlain: ConversationFactory = () =>
  new Conversation({ system: "", roles: ["", ""], sepStyle: SeparatorStyle.PLAIN, sep: "\n" });

const convLlavaV0: ConversationFactory = () =>
  new Conversation({ system: SYSTEM_HUMAN, roles: ["Human", "Assistant"], sepStyle: SeparatorStyle.SINGLE, sep: "###" });

const convLlavaV0Mmtag: ConversationFactory = () =>
  new Conversation({
    system: SYSTEM_MMTAG,
    roles: ["Human", "Assistant"],
    sepStyle: SeparatorStyle.SINGLE,
    sep: "###",
    version: "v0_mmtag",
  });

const convLlavaV1: ConversationFactory = () =>
  new Conversation({
    system: SYSTEM_HUMAN,
    roles: ["USER", "ASSISTANT"],
    version: "v1",
    sepStyle: SeparatorStyle.TWO,
    sep: " ",
    sep2: "</s>",
  });

const convLlavaV1Mmtag: ConversationFactory = () =>
  new Conversation({
    system: SYSTEM_MMTAG,
    roles: ["USER", "ASSISTANT"],
    sepStyle: SeparatorStyle.TWO,
    sep: " ",
    sep2: "</s>",
    version: "v1_mmtag",
  });

const convMistralInstruct: ConversationFactory = () =>
  new Conversation({
    system: "",
    roles: ["USER", "ASSISTANT"],
    version: "llama_v2",
    sepStyle: SeparatorStyle.LLAMA_2,
    sep: "",
    sep2: "</s>",
  });

const convChatmlDirect: ConversationFactory = () =>
  new Conversation({
    system: "<|im_start|>system\nAnswer the questions.",
    roles: CHATML_ROLES,
    version: "mpt",
    sepStyle: SeparatorStyle.MPT,
    sep: "<|im_end|>",
  });

/** Every key of the reference `conv_templates`, mapped to a factory of a fresh conversation. */
export const convTemplates: Readonly<Record<string, ConversationFactory>> = Object.freeze({
  default: convVicunaV0,
  v0: convVicunaV0,
  v1: convVicunaV1,
  vicuna_v1: convVicunaV1,
  llama_2: convLlama2,
  mistral_instruct: convMistralInstruct,
  chatml_direct: convChatmlDirect,
  mistral_direct: convChatmlDirect,

  plain: convLlavaPlain,
  v0_plain: convLlavaPlain,
  llava_v0: convLlavaV0,
  v0_mmtag: convLlavaV0Mmtag,
  llava_v1: convLlavaV1,
  v1_mmtag: convLlavaV1Mmtag,
  llava_llama_2: convLlavaLlama2,

  mpt: convMpt,
});

export function convTemplateNames(): string[] {
  return Object.keys(convTemplates);
}

/** A fresh conversation of the named template (`conv_templates[name].copy()`). */
export function getConvTemplate<I = unknown>(name: string): Conversation<I> {
  if (!Object.hasOwn(convTemplates, name)) {
    throw new LlavaError(
      `unknown conversation template "${name}"; valid names: ${convTemplateNames().join(", ")}`,
    );
  }
  return convTemplates[name]<I>();
}

/**
 * The reference `default_conversation` (conv_vicuna_v1, what the web UI starts from). Note that
 * the registry key "default" is a different template (conv_vicuna_v0 with its few-shot example).
 */
export function defaultConversation<I = unknown>(): Conversation<I> {
  return convVicunaV1<I>();
}

// ---------------------------------------------------------------------------------------------
// Stop strings and template selection.

/** Stop string as `llava/serve/cli.py` and the eval scripts pick it: sep2 for TWO, else sep. */
export function stopString(conv: Conversation<unknown>): string {
  if (conv.sepStyle !== SeparatorStyle.TWO) return conv.sep;
  check(conv.sep2 !== null, `conversation (${conv.version}): TWO style without sep2 has no stop string`);
  return conv.sep2;
}

/** Stop string as the gradio web server sends it to the worker: sep for SINGLE/MPT, else sep2. */
export function gradioStopString(conv: Conversation<unknown>): string | null {
  return conv.sepStyle === SeparatorStyle.SINGLE || conv.sepStyle === SeparatorStyle.MPT ? conv.sep : conv.sep2;
}

/** Template the reference CLI (`cli.py`, `run_llava.py`) infers from a model name. */
export function convModeForModelName(modelName: string): string {
  const name = modelName.toLowerCase();
  if (name.includes("llama-2")) return "llava_llama_2";
  if (name.includes("mistral")) return "mistral_instruct";
  if (name.includes("v1.6-34b")) return "chatml_direct";
  if (name.includes("v1")) return "llava_v1";
  if (name.includes("mpt")) return "mpt";
  return "llava_v0";
}

/**
 * Keys that `gradio_web_server.py` names but `conv_templates` lacks (the reference raises
 * KeyError), mapped to the closest existing template: LLaVA forks define `mistral_orca` as a
 * ChatML/MPT-style template like chatml_direct, and `mpt_text` as the text-only MPT chat.
 */
const WEB_MISSING_TEMPLATE_FALLBACK: Readonly<Record<string, string>> = Object.freeze({
  mistral_orca: "chatml_direct",
  mpt_text: "mpt",
});

/** The template name the gradio web server's first round picks, as the reference spells it. */
export function webConvModeReferenceName(modelName: string): string {
  const lower = modelName.toLowerCase();
  const plainNotFinetuned = lower.includes("plain") && !lower.includes("finetune");
  if (lower.includes("llava")) {
    if (lower.includes("llama-2")) return "llava_llama_2";
    if (lower.includes("mistral") || lower.includes("mixtral")) {
      if (lower.includes("orca")) return "mistral_orca";
      if (lower.includes("hermes")) return "chatml_direct";
      return "mistral_instruct";
    }
    if (lower.includes("llava-v1.6-34b")) return "chatml_direct";
    if (lower.includes("v1")) return lower.includes("mmtag") || plainNotFinetuned ? "v1_mmtag" : "llava_v1";
    if (lower.includes("mpt")) return "mpt";
    return lower.includes("mmtag") || plainNotFinetuned ? "v0_mmtag" : "llava_v0";
  }
  // The reference tests these two case-sensitively.
  if (modelName.includes("mpt")) return "mpt_text";
  if (modelName.includes("llama-2")) return "llama_2";
  return "vicuna_v1";
}

/** The gradio web server's template choice, with nonexistent reference keys replaced (see above). */
export function webConvModeForModelName(modelName: string): string {
  const name = webConvModeReferenceName(modelName);
  return WEB_MISSING_TEMPLATE_FALLBACK[name] ?? name;
}

/** Role labels the reference CLI prints: plain `user`/`assistant` for MPT-named models. */
export function cliDisplayRoles(conv: Conversation<unknown>, modelName: string): readonly [string, string] {
  return modelName.toLowerCase().includes("mpt") ? ["user", "assistant"] : conv.roles;
}

/**
 * Reference `get_model_name_from_path`: the last path component, or `parent_checkpoint-N` for a
 * training checkpoint folder. Leading and trailing slashes are ignored.
 */
export function modelNameFromPath(modelPath: string): string {
  const parts = modelPath.replace(/^\/+|\/+$/g, "").split("/");
  const last = parts[parts.length - 1];
  if (last.startsWith("checkpoint-")) {
    check(parts.length >= 2, `model path "${modelPath}": a checkpoint folder needs a parent folder to name the model`);
    return parts[parts.length - 2] + "_" + last;
  }
  return last;
}
