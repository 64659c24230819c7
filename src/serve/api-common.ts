/**
 * What the OpenAI and Ollama APIs share: their options, the API key and CORS on every route of
 * their scope, the HTTP status (and OpenAI error code) of each failure, and the handling of an
 * answer's start and of a client that goes away.
 */
import cors from "@fastify/cors";
import type { FastifyInstance, FastifyReply } from "fastify";
import { timingSafeEqual } from "node:crypto";
import { imageLimits } from "../image/decode.js";
import { PromptTooLongError } from "../llava/generate.js";
import { LlavaError } from "../util/errors.js";
import { ModelNotFoundError, WorkerError } from "./chat-backend.js";
import { QueueFullError } from "./engine.js";
import { HttpError } from "./http-app.js";
import { DEFAULT_MAX_IMAGE_BYTES, DEFAULT_URL_TIMEOUT_MS, type ImageInputOptions } from "./image-input.js";

export interface ApiOptions {
  /** when set, every request must carry `Authorization: Bearer <apiKey>` */
  apiKey?: string;
  /** origins browsers may call the API from ("*": any); none: no CORS headers */
  corsOrigins?: string[];
  /** encoded bytes of one image (default 20 MiB) */
  maxImageBytes?: number;
  /** let image URLs point at private, loopback and link-local addresses */
  allowPrivateUrls?: boolean;
  /** the download of one image URL (default 10 s) */
  imageUrlTimeoutMs?: number;
  /** the server's own failures, one line each */
  log?: (line: string) => void;
}

/** A failure as a client sees it. */
export interface ApiFailure {
  status: number;
  message: string;
  /** OpenAI's machine-readable code, where there is one */
  code: string | null;
  retryAfterS?: number;
}

/** Why a request was aborted: its client closed the connection before the answer was whole. */
export class ClientGoneError extends Error {
  constructor() {
    super("the client went away");
  }
}

/** The wait suggested to a client turned away as busy: about one answer's time. */
const BUSY_RETRY_AFTER_S = 5;

/** The status and code of `err`; the server's own failures are logged and reported without detail. */
export function failureOf(err: unknown, log: (line: string) => void): ApiFailure {
  const message = (err as Error)?.message ?? String(err);
  // nobody reads the answer: nothing to log (499: nginx's "client closed request")
  if (err instanceof ClientGoneError) return { status: 499, message, code: null };
  if (err instanceof ModelNotFoundError) return { status: 404, message, code: "model_not_found" };
  if (err instanceof QueueFullError) return { status: 503, message, code: "server_busy", retryAfterS: BUSY_RETRY_AFTER_S };
  if (err instanceof PromptTooLongError) return { status: 400, message, code: "context_length_exceeded" };
  if (err instanceof WorkerError) {
    log(message);
    return { status: 502, message, code: "worker_failed" };
  }
  if (err instanceof LlavaError) return { status: 400, message, code: null };
  // HttpError, and fastify's own refusals (a body over the size limit: 413)
  const status = (err as { statusCode?: number })?.statusCode;
  if (status !== undefined && status >= 400 && status < 500) return { status, message, code: status === 401 ? "invalid_api_key" : null };
  log(`internal error: ${message}`);
  return { status: 500, message: "internal error", code: null };
}

/** Sends `failure` as `body` with its status (and Retry-After when busy). */
export function sendFailure(reply: FastifyReply, failure: ApiFailure, body: unknown): FastifyReply {
  if (failure.retryAfterS !== undefined) reply.header("retry-after", String(failure.retryAfterS));
  return reply.code(failure.status).send(body);
}

/**
 * Sets up an API's encapsulated scope: CORS, the API key, and failures (bad JSON, bad fields,
 * unknown routes, refusals) in the API's own error format.
 */
export async function setUpApiScope(scope: FastifyInstance, opts: ApiOptions, errorBody: (failure: ApiFailure) => unknown): Promise<void> {
  const log = opts.log ?? (() => {});
  if (opts.corsOrigins?.length) await scope.register(cors, { origin: opts.corsOrigins.includes("*") ? "*" : opts.corsOrigins });
  const apiKey = opts.apiKey;
  if (apiKey) {
    scope.addHook("onRequest", async (req) => {
      // a browser's CORS preflight carries no credentials
      if (req.method !== "OPTIONS" && !bearerMatches(req.headers.authorization, apiKey)) {
        throw new HttpError(401, "a valid API key is required: send the header Authorization: Bearer <key>");
      }
    });
  }
  scope.setErrorHandler((err, _req, reply) => {
    const failure = failureOf(err, log);
    return sendFailure(reply, failure, errorBody(failure));
  });
  scope.setNotFoundHandler((req, reply) => {
    const failure = { status: 404, message: `no route ${req.method} ${req.url}`, code: null };
    return sendFailure(reply, failure, errorBody(failure));
  });
}

function bearerMatches(header: string | undefined, key: string): boolean {
  const given = Buffer.from(/^Bearer\s+(.+)$/i.exec(header ?? "")?.[1]?.trim() ?? "");
  const wanted = Buffer.from(key);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

/** The image options of one request: the API's limits and the request's own abort. */
export function imageOptionsOf(opts: ApiOptions, signal: AbortSignal): ImageInputOptions {
  return {
    maxImageBytes: opts.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES,
    allowPrivateUrls: opts.allowPrivateUrls ?? false,
    urlTimeoutMs: opts.imageUrlTimeoutMs ?? DEFAULT_URL_TIMEOUT_MS,
    pixelBudget: { left: imageLimits().maxPixels },
    signal,
  };
}

/** Aborts when the client closes the connection before the whole answer was sent. */
export function clientGoneSignal(reply: FastifyReply): AbortSignal {
  const abort = new AbortController();
  reply.raw.on("close", () => {
    if (!reply.raw.writableFinished) abort.abort(new ClientGoneError());
  });
  return abort.signal;
}

/**
 * Waits for the first piece of an answer, so that a failure before any text (an unknown model, a
 * prompt too long, a busy server) is still an HTTP error instead of a stream that breaks; returns
 * the whole answer, first piece included. Leaving it early ends the answer.
 */
export async function startAnswer(answer: AsyncIterable<string>): Promise<AsyncGenerator<string>> {
  const pieces = answer[Symbol.asyncIterator]();
  const first = await pieces.next();
  return (async function* () {
    try {
      for (let next = first; !next.done; next = await pieces.next()) yield next.value;
    } finally {
      await pieces.return?.();
    }
  })();
}

/** The whole answer as one text. */
export async function collectAnswer(answer: AsyncIterable<string>): Promise<string> {
  let text = "";
  for await (const piece of answer) text += piece;
  return text;
}
