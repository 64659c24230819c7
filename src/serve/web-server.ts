/**
 * The web UI's server: the built page (static files, no CDN) and the small JSON API it calls.
 *
 * Each browser tab's conversation lives here, keyed by a session id the server hands out with
 * the first answer, as Gradio keeps its `gr.State` on the server: the image is uploaded once,
 * and what the log records as a conversation is what the model was really asked, not what a
 * client claims.
 *
 *   GET  /api/web/config                 models (refreshed from the controller), sliders, modes
 *   POST /api/web/chat                   {session?, model, text, image? (data URL), imageProcessMode, temperature, topP, maxNewTokens}
 *   POST /api/web/regenerate             {session, model, imageProcessMode, temperature, topP, maxNewTokens}
 *        both answer NDJSON: one line per step, {session, rows, status, notice?}
 *   POST /api/web/clear                  {session}
 *   POST /api/web/vote                   {session, model, type: upvote|downvote|flag}
 *   GET  /api/web/sessions/:id/image     the conversation's image as the chat shows it (JPEG)
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { z } from "zod";
import { loadImage } from "../image/decode.js";
import { LlavaError } from "../util/errors.js";
import { createJsonApp, HttpError, parseBody } from "./http-app.js";
import { fetchModelList, PARAMETERS, WebChat, type ChatSettings, type ChatUpdate } from "./web-chat.js";
import { encodeJpeg, IMAGE_PROCESS_MODES, processImage } from "./web-image.js";
import { ConversationLog, VOTE_TYPES } from "./web-log.js";

export const MODEL_LIST_MODES = ["once", "reload"] as const;
export type ModelListMode = (typeof MODEL_LIST_MODES)[number];

/** The largest image upload taken by default. */
export const DEFAULT_MAX_UPLOAD_BYTES = 20 * 2 ** 20;

/** Sessions kept at most, and the image bytes they hold at most; the least recently used idle ones go first. */
const MAX_SESSIONS = 1000;
const MAX_HELD_IMAGE_BYTES = 2 * 2 ** 30;

/** Where the build puts the page: dist/web beside dist/src. */
const BUILT_PAGE_DIR = fileURLToPath(new URL("../../web", import.meta.url));

export interface WebServerOptions {
  /** the controller's URL, or where to ask for it (a server that is its own controller knows its URL only once it listens) */
  controllerUrl: string | (() => string);
  /** where the conversation log and its images go */
  logDir: string;
  /** once: the model list is fetched at start (again only while it is empty); reload: on every page load */
  modelListMode?: ModelListMode;
  /** hides the title, terms of use and licence, for a page embedded in another */
  embed?: boolean;
  maxUploadBytes?: number;
  staticDir?: string;
  /** the server's own failures, one line each */
  log?: (line: string) => void;
}

const settingsShape = {
  model: z.string().min(1, "choose a model"),
  temperature: z.number().min(PARAMETERS.temperature.min).max(PARAMETERS.temperature.max),
  topP: z.number().min(PARAMETERS.topP.min).max(PARAMETERS.topP.max),
  maxNewTokens: z.number().int().min(PARAMETERS.maxNewTokens.min).max(PARAMETERS.maxNewTokens.max),
  imageProcessMode: z.enum(IMAGE_PROCESS_MODES),
};
const schemas = {
  chat: z.object({ ...settingsShape, session: z.string().optional(), text: z.string(), image: z.string().optional() }),
  regenerate: z.object({ ...settingsShape, session: z.string() }),
  clear: z.object({ session: z.string() }),
  vote: z.object({ session: z.string(), model: z.string(), type: z.enum(VOTE_TYPES) }),
};

const size = (bytes: number) => (bytes >= 2 ** 20 ? `${Math.round((bytes / 2 ** 20) * 10) / 10} MB` : `${bytes.toLocaleString("en-US")} bytes`);

/** The web UI as a server of its own. */
export async function buildWebApp(opts: WebServerOptions): Promise<FastifyInstance> {
  const app = createJsonApp(opts.log);
  await registerWebUi(app, opts);
  return app;
}

/** Adds the page and its API to `app` (one made by createJsonApp), e.g. beside other APIs on one port. */
export async function registerWebUi(app: FastifyInstance, opts: WebServerOptions): Promise<void> {
  const log = opts.log ?? (() => {});
  const maxUploadBytes = opts.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const staticDir = opts.staticDir ?? BUILT_PAGE_DIR;
  if (!existsSync(`${staticDir}/index.html`)) throw new LlavaError(`the web UI is not built (no ${staticDir}/index.html): run npm run build`);
  const convLog = new ConversationLog(opts.logDir);
  const given = opts.controllerUrl;
  const controllerUrl = typeof given === "string" ? () => given : given;
  const models = new ModelList(controllerUrl, opts.modelListMode ?? "once", log);
  await models.startUp();
  const sessions = new Sessions();

  await app.register(fastifyStatic, { root: staticDir });

  app.get("/api/web/config", async () => ({
    models: await models.forPageLoad(),
    embed: opts.embed ?? false,
    parameters: PARAMETERS,
    imageProcessModes: IMAGE_PROCESS_MODES,
    maxUploadBytes,
  }));

  // the body carries the image as base64, a third larger than the bytes
  app.post("/api/web/chat", { bodyLimit: Math.ceil((maxUploadBytes * 4) / 3) + 2 ** 20 }, async (req, reply) => {
    const body = parseBody(schemas.chat, req.body);
    const settings = models.checked(body);
    const image = body.image === undefined ? undefined : { image: await decodeUpload(body.image, maxUploadBytes), mode: body.imageProcessMode };
    const { id, chat } = body.session === undefined ? sessions.create() : sessions.get(body.session);
    refuseWhileBusy(chat);
    if (!chat.addText(body.text, image)) throw new HttpError(400, "type a message or add an image");
    sessions.trim(id);
    return streamAnswer(req, reply, id, chat, settings);
  });

  app.post("/api/web/regenerate", async (req, reply) => {
    const body = parseBody(schemas.regenerate, req.body);
    const { id, chat } = sessions.get(body.session);
    const settings = models.checked(body);
    refuseWhileBusy(chat);
    if (!chat.regenerate(body.imageProcessMode)) throw new HttpError(409, "there is no answer to regenerate");
    return streamAnswer(req, reply, id, chat, settings);
  });

  app.post("/api/web/clear", async (req) => {
    const { chat } = sessions.get(parseBody(schemas.clear, req.body).session);
    refuseWhileBusy(chat);
    chat.clear();
    return { rows: chat.rows() };
  });

  app.post("/api/web/vote", async (req) => {
    const body = parseBody(schemas.vote, req.body);
    const { chat } = sessions.get(body.session);
    if (chat.busy || !chat.answered) throw new HttpError(409, "there is no finished answer to vote on");
    await convLog.vote({ type: body.type, model: body.model, state: chat.conv.dict(), ip: req.ip });
    return { ok: true };
  });

  app.get<{ Params: { id: string } }>("/api/web/sessions/:id/image", async (req, reply) => {
    const image = sessions.get(req.params.id).chat.displayImage();
    if (!image) throw new HttpError(404, "this conversation has no image");
    return reply.type("image/jpeg").header("cache-control", "private, max-age=3600").send(await encodeJpeg(processImage(image.image, "Default")));
  });

  async function streamAnswer(req: FastifyRequest, reply: FastifyReply, id: string, chat: WebChat, settings: ChatSettings): Promise<FastifyReply> {
    chat.busy = true;
    // a stop (the browser drops the request) ends the worker's request too
    const abort = new AbortController();
    reply.raw.on("close", () => abort.abort());
    reply.hijack();
    reply.raw.writeHead(200, { "content-type": "application/x-ndjson; charset=utf-8", "cache-control": "no-store" });
    const send = (update: ChatUpdate) => {
      if (!reply.raw.destroyed) reply.raw.write(JSON.stringify(lineFor(id, chat, update)) + "\n");
    };
    try {
      for await (const update of chat.answer(settings, { controllerUrl: controllerUrl(), log: convLog, ip: req.ip, signal: abort.signal, serverLog: log })) send(update);
    } catch (err) {
      log(`internal error while answering: ${(err as Error).message}`);
      send({ rows: chat.rows(), status: "error", notice: "internal error of the web server" });
    } finally {
      chat.busy = false;
      reply.raw.end();
    }
    return reply;
  }

  function refuseWhileBusy(chat: WebChat): void {
    if (chat.busy) throw new HttpError(409, "an answer is still being generated; stop it first");
  }
}

/** A line of the answer stream: the rows with the image as a URL the page can show. */
function lineFor(id: string, chat: WebChat, update: ChatUpdate) {
  const rows = update.rows.map(({ user, hasImage, assistant }) => ({
    user,
    image: hasImage ? `api/web/sessions/${id}/image?v=${chat.imageVersion}` : undefined,
    assistant,
  }));
  return { session: id, ...update, rows };
}

/** An uploaded image (a data URL), refused when over the limit or not an image. */
async function decodeUpload(dataUrl: string, maxBytes: number) {
  const comma = dataUrl.indexOf(",");
  const bytes = Buffer.byteLength(comma >= 0 ? dataUrl.slice(comma + 1) : dataUrl, "base64");
  if (bytes > maxBytes) throw new HttpError(413, `the image is ${size(bytes)}, over the upload limit of ${size(maxBytes)}`);
  try {
    return await loadImage(dataUrl, { what: "upload" });
  } catch (err) {
    if (err instanceof LlavaError) throw new HttpError(400, `the upload is not an image we can read: ${err.message}`);
    throw err;
  }
}

/** The controller's model list, as the reference's --model-list-mode refreshes it. */
class ModelList {
  private models: string[] = [];

  constructor(private readonly controllerUrl: () => string, private readonly mode: ModelListMode, private readonly log: (line: string) => void) {}

  /** "once" fetches the list now; "reload" at each page load */
  async startUp(): Promise<void> {
    if (this.mode === "once") await this.refresh();
  }

  async forPageLoad(): Promise<string[]> {
    if (this.mode === "reload" || this.models.length === 0) await this.refresh();
    return this.models;
  }

  /** The request's settings, if its model is one the page could have offered. */
  checked(body: ChatSettings): ChatSettings {
    if (!this.models.includes(body.model)) {
      const known = this.models.length > 0 ? `models: ${this.models.join(", ")}` : "no model is being served";
      throw new HttpError(400, `unknown model "${body.model}" (${known}); reload the page for the current list`);
    }
    return { model: body.model, temperature: body.temperature, topP: body.topP, maxNewTokens: body.maxNewTokens };
  }

  private async refresh(): Promise<void> {
    try {
      this.models = await fetchModelList(this.controllerUrl());
    } catch (err) {
      this.log(`cannot get the model list from the controller at ${this.controllerUrl()}: ${(err as Error).message}`);
    }
  }
}

/** The conversations of the open pages, least recently used first. */
export class Sessions {
  private readonly chats = new Map<string, WebChat>();

  constructor(private readonly maxSessions = MAX_SESSIONS, private readonly maxHeldImageBytes = MAX_HELD_IMAGE_BYTES) {}

  get size(): number {
    return this.chats.size;
  }

  create(): { id: string; chat: WebChat } {
    const id = randomUUID();
    const chat = new WebChat();
    this.chats.set(id, chat);
    return { id, chat };
  }

  /** Drops the least recently used idle sessions (never `keep`) while there are too many or they hold too much. */
  trim(keep: string): void {
    const held = (chat: WebChat) => chat.displayImage()?.image.data.length ?? 0;
    let bytes = [...this.chats.values()].reduce((sum, chat) => sum + held(chat), 0);
    for (const [id, chat] of this.chats) {
      if (this.chats.size <= this.maxSessions && bytes <= this.maxHeldImageBytes) break;
      if (id === keep || chat.busy) continue;
      bytes -= held(chat);
      this.chats.delete(id);
    }
  }

  get(id: string): { id: string; chat: WebChat } {
    const chat = this.chats.get(id);
    if (!chat) throw new HttpError(404, "unknown session (it expired or the server restarted); reload the page");
    this.chats.delete(id);
    this.chats.set(id, chat);
    return { id, chat };
  }
}
