/**
 * One chat of the web UI, following the reference's gradio_web_server.py: `add_text` (text cut,
 * one image per conversation on its first turn), `regenerate`, `clear`, and `http_bot` (template
 * picked from the model name on the first round, worker found through the controller, the
 * reference request streamed from it, and the finished chat logged).
 */
import { z } from "zod";
import {
  defaultConversation,
  getConvTemplate,
  gradioStopString,
  type Conversation,
  webConvModeForModelName,
} from "../llava/conversation.js";
import { postForJson, postJson, nulDelimited } from "./http-client.js";
import { REQUEST_TIMEOUT_MS, SERVER_ERROR_MSG, streamChunkSchema, transportBase64 } from "./protocol.js";
import { processImage, type ImageProcessMode, type WebImage } from "./web-image.js";
import type { ConversationLog } from "./web-log.js";
import { compareCodePoints, pyStrip } from "../io/python.js";
import { IMAGE_TOKEN } from "../llava/spec.js";

/** The reference's sliders: range, step and default. */
export const PARAMETERS = {
  temperature: { min: 0, max: 1, step: 0.1, default: 0.2 },
  topP: { min: 0, max: 1, step: 0.1, default: 0.7 },
  maxNewTokens: { min: 0, max: 1024, step: 64, default: 512 },
} as const;

/** add_text's hard cut-offs of the typed text, without and with an image. */
const MAX_TEXT_CHARS = 1536;
const MAX_TEXT_CHARS_WITH_IMAGE = 1200;
/** http_bot's own cap on max_new_tokens (above the slider's range, so it only guards). */
const MAX_NEW_TOKENS_CAP = 1536;
/** http_bot's `timeout=10` on the worker request. */
const WORKER_TIMEOUT_MS = 10_000;
/** Shown after the text while an answer streams. */
const CURSOR = "▌";

/** The generation settings a request carries (the UI's model selector and sliders). */
export interface ChatSettings {
  model: string;
  temperature: number;
  topP: number;
  maxNewTokens: number;
}

/** One row of the chat window: the user's turn (with an image or not) and the answer so far. */
export interface ChatRow {
  user: string | null;
  hasImage: boolean;
  assistant: string | null;
}

/**
 * What the browser gets after each step of an answer: the whole chat window, and whether the
 * answer streams on, finished (votes open), failed (its text says why), or was stopped.
 */
export interface ChatUpdate {
  rows: ChatRow[];
  status: "streaming" | "done" | "error" | "stopped";
  /** why an error happened, where the reference's chat text does not say */
  notice?: string;
}

export interface AnswerContext {
  controllerUrl: string;
  log: ConversationLog;
  ip: string;
  signal: AbortSignal;
  /** the server's own log line for failures */
  serverLog: (line: string) => void;
}

const addressSchema = z.object({ address: z.string() });

export class WebChat {
  conv: Conversation<WebImage> = defaultConversation<WebImage>();
  /** an answer is being generated */
  busy = false;
  /** the last answer completed, so it can be voted on */
  answered = false;
  /** counts uploads, so a browser never shows an older image from its cache */
  imageVersion = 0;

  /** The reference's add_text: returns false (nothing to do) for empty text without an image. */
  addText(typed: string, image?: WebImage): boolean {
    if (typed.length === 0 && !image) return false;
    let text = Array.from(typed).slice(0, image ? MAX_TEXT_CHARS_WITH_IMAGE : MAX_TEXT_CHARS).join("");
    if (image) {
      if (!text.includes(IMAGE_TOKEN)) text += `\n${IMAGE_TOKEN}`;
      // one image per conversation: an upload starts a new one
      this.conv = defaultConversation<WebImage>();
      this.imageVersion++;
    }
    this.conv.appendMessage(this.conv.roles[0], image ? { text, images: [image] } : text);
    this.conv.appendMessage(this.conv.roles[1], null);
    this.answered = false;
    return true;
  }

  /** The reference's regenerate: drops the last answer and takes the image mode chosen now. */
  regenerate(mode: ImageProcessMode): boolean {
    const { messages } = this.conv;
    if (messages.length - this.conv.offset < 2) return false;
    this.conv.updateLastMessage(null);
    const human = messages[messages.length - 2][1];
    if (human !== null && typeof human === "object") for (const img of human.images) img.mode = mode;
    this.answered = false;
    return true;
  }

  clear(): void {
    this.conv = defaultConversation<WebImage>();
    this.answered = false;
  }

  rows(): ChatRow[] {
    const first = this.conv.messages[this.conv.offset]?.[1];
    const firstHasImage = first !== undefined && first !== null && typeof first === "object";
    return this.conv.toChat().map(([user, assistant], i) => ({ user, hasImage: i === 0 && firstHasImage, assistant }));
  }

  /** The image shown in the chat window (the reference shows it in mode Default). */
  displayImage(): WebImage | undefined {
    return this.conv.getImages()[0];
  }

  /** The reference's http_bot: generates the open turn's answer, yielding the chat window as it grows. */
  async *answer(settings: ChatSettings, ctx: AnswerContext): AsyncGenerator<ChatUpdate> {
    const start = Date.now() / 1000;
    const conv = this.firstRoundTemplate(settings.model);
    const fail = (text: string, notice?: string): ChatUpdate => {
      conv.updateLastMessage(text);
      return { rows: this.rows(), status: "error", notice };
    };

    const found = addressSchema.safeParse(await postForJson(`${ctx.controllerUrl}/get_worker_address`, { model: settings.model }, { idleTimeoutMs: REQUEST_TIMEOUT_MS, signal: ctx.signal }));
    if (!found.success) {
      yield fail(SERVER_ERROR_MSG, `cannot reach the controller at ${ctx.controllerUrl}`);
      return;
    }
    if (found.data.address === "") {
      yield fail(SERVER_ERROR_MSG, `no worker serves the model "${settings.model}" now`);
      return;
    }
    const worker = found.data.address;

    const prompt = conv.getPrompt();
    const images = conv.getImages().map((img) => processImage(img.image, img.mode));
    const hashes = await Promise.all(images.map((img) => ctx.log.saveImage(img)));
    const payload = {
      model: settings.model,
      prompt,
      temperature: settings.temperature,
      top_p: settings.topP,
      max_new_tokens: Math.min(Math.trunc(settings.maxNewTokens), MAX_NEW_TOKENS_CAP),
      stop: gradioStopString(conv),
      images: await Promise.all(images.map(transportBase64)),
    };
    conv.updateLastMessage(CURSOR);
    yield { rows: this.rows(), status: "streaming" };

    try {
      const res = await postJson(`${worker}/worker_generate_stream`, payload, { idleTimeoutMs: WORKER_TIMEOUT_MS, signal: ctx.signal });
      if (res.statusCode !== 200) {
        res.resume();
        throw new Error(`it answered HTTP ${res.statusCode}`);
      }
      for await (const raw of nulDelimited(res)) {
        const chunk = streamChunkSchema.safeParse(JSON.parse(raw.toString("utf8")));
        if (!chunk.success) throw new Error("it sent a chunk that is not the reference's {text, error_code}");
        if (chunk.data.error_code !== 0) {
          yield fail(`${chunk.data.text} (error_code: ${chunk.data.error_code})`);
          return;
        }
        // Python slices code points; the worker's text starts with the prompt
        conv.updateLastMessage(pyStrip(Array.from(chunk.data.text).slice(Array.from(prompt).length).join("")) + CURSOR);
        yield { rows: this.rows(), status: "streaming" };
      }
    } catch (err) {
      if (!ctx.signal.aborted) {
        ctx.serverLog(`worker ${worker} failed: ${(err as Error).message}`);
        yield fail(SERVER_ERROR_MSG, `the worker at ${worker} failed: ${(err as Error).message}`);
        return;
      }
    }
    const last = conv.messages[conv.messages.length - 1][1] as string;
    conv.updateLastMessage(last.slice(0, -CURSOR.length));
    if (ctx.signal.aborted) {
      yield { rows: this.rows(), status: "stopped" };
      return;
    }
    this.answered = true;
    try {
      await ctx.log.chat({ model: settings.model, start, finish: Date.now() / 1000, state: conv.dict(), images: hashes, ip: ctx.ip });
    } catch (err) {
      ctx.serverLog(`cannot write the conversation log: ${(err as Error).message}`);
    }
    yield { rows: this.rows(), status: "done" };
  }

  /** On the first round the reference rebuilds the conversation from the model's template. */
  private firstRoundTemplate(model: string): Conversation<WebImage> {
    if (this.conv.messages.length === this.conv.offset + 2) {
      const fresh = getConvTemplate<WebImage>(webConvModeForModelName(model));
      fresh.appendMessage(fresh.roles[0], this.conv.messages[this.conv.messages.length - 2][1]);
      fresh.appendMessage(fresh.roles[1], null);
      this.conv = fresh;
    }
    return this.conv;
  }
}

/** The reference's model list order: a small priority map, then the names themselves. */
const PRIORITY: Readonly<Record<string, string>> = { "vicuna-13b": "aaaaaaa", "koala-13b": "aaaaaab" };

export function sortModels(models: string[]): string[] {
  const key = (m: string) => PRIORITY[m] ?? m;
  return [...models].sort((a, b) => compareCodePoints(key(a), key(b)));
}

/** The reference's get_model_list: the controller refreshes its workers, then lists their models. */
export async function fetchModelList(controllerUrl: string): Promise<string[]> {
  const refreshed = await postJson(`${controllerUrl}/refresh_all_workers`, {}, { idleTimeoutMs: 2 * REQUEST_TIMEOUT_MS });
  refreshed.resume();
  if (refreshed.statusCode !== 200) throw new Error(`/refresh_all_workers answered HTTP ${refreshed.statusCode}`);
  const listed = z.object({ models: z.array(z.string()) }).safeParse(await postForJson(`${controllerUrl}/list_models`, {}, { idleTimeoutMs: REQUEST_TIMEOUT_MS }));
  if (!listed.success) throw new Error("/list_models gave no model list");
  return sortModels(listed.data.models);
}
