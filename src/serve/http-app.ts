/**
 * What every llava-ts server shares: a fastify app that reads any request body as JSON (as
 * FastAPI's `request.json()` does, whatever the content type), refuses bad requests with a 4xx
 * and a one-line `{"error": ...}`, and listens and shuts down gracefully.
 */
import Fastify, { type FastifyInstance } from "fastify";
import type { ServerResponse } from "node:http";
import type { z } from "zod";
import { LlavaError } from "../util/errors.js";

/** The largest request body taken (a generation request carries base64 images). */
export const MAX_BODY_BYTES = 64 * 1024 * 1024;

/** A request the server refuses with `status`. */
export class HttpError extends Error {
  constructor(readonly statusCode: number, message: string) {
    super(message);
  }
}

/** The request body checked against `schema`; a mismatch is a 400 naming the field. */
export function parseBody<T extends z.ZodType>(schema: T, body: unknown): z.infer<T> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue.path.length > 0 ? `${issue.path.join(".")}: ` : "body: ";
  throw new HttpError(400, `${where}${issue.message}`);
}

/** `log` takes the server's own failures (a 500), one line each. */
export function createJsonApp(log: (line: string) => void = () => {}): FastifyInstance {
  const app = Fastify({ bodyLimit: MAX_BODY_BYTES });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "string" }, (_req, text, done) => {
    if (text === "") return done(null, undefined);
    try {
      done(null, JSON.parse(text as string));
    } catch {
      done(new HttpError(400, "body is not valid JSON"), undefined);
    }
  });
  app.setErrorHandler((err: Error & { statusCode?: number }, req, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) log(`internal error on ${req.url}: ${err.message}`);
    return reply.code(status).send({ error: status === 500 ? "internal error" : err.message });
  });
  closeConnectionsWhenDone(app);
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url}` }));
  return app;
}

/**
 * Lets `app.close()` finish as soon as the requests in progress have: then every connection left
 * (kept alive, or opened and never used, which Node would hold for its 60 s headers timeout) is closed.
 */
function closeConnectionsWhenDone(app: FastifyInstance): void {
  let active = 0;
  let closing = false;
  const closeAllIfDone = () => {
    if (closing && active === 0) app.server.closeAllConnections();
  };
  app.server.on("request", (_req, res: ServerResponse) => {
    active++;
    res.on("close", () => {
      active--;
      closeAllIfDone();
    });
  });
  app.addHook("preClose", async () => {
    closing = true;
    closeAllIfDone();
  });
}

/** Listens on host:port; returns the URL it listens on (port 0 picks a free one). */
export async function listen(app: FastifyInstance, host: string, port: number): Promise<string> {
  try {
    await app.listen({ host, port });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === "EADDRINUSE" ? "the address is in use" : e.code === "EACCES" ? "permission denied" : e.code === "ENOTFOUND" || e.code === "EADDRNOTAVAIL" ? "no such local address" : e.message;
    throw new LlavaError(`cannot listen on ${host}:${port}: ${why}`);
  }
  const address = app.server.address();
  const actualPort = typeof address === "object" && address ? address.port : port;
  return `http://${host.includes(":") ? `[${host}]` : host}:${actualPort}`;
}

/** The URL a server listening on every address (0.0.0.0, ::) reaches itself at; other URLs as they are. */
export function loopbackOf(url: string): string {
  return url.replace(/\/\/0\.0\.0\.0(?=:)/, "//127.0.0.1").replace(/\/\/\[::\](?=:)/, "//[::1]");
}

/**
 * Resolves at the first SIGINT or SIGTERM; the caller then closes what it started (a fastify
 * app's close lets the requests in flight, streams included, finish first).
 */
export function untilStopSignal(): Promise<void> {
  return new Promise((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
