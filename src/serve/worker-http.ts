/**
 * A model worker's HTTP endpoints, wire-compatible with the reference's FastAPI worker: POST
 * /worker_get_status and /worker_generate_stream (NUL-delimited JSON chunks). A request that does
 * not fit (bad JSON, wrong types, images that do not decode or do not match the `<image>` markers)
 * is a 400 with a one-line `error`; a client that goes away aborts its generation.
 */
import type { FastifyInstance } from "fastify";
import { Readable } from "node:stream";
import { LlavaError } from "../util/errors.js";
import type { ApiOptions } from "./api-common.js";
import { registerChatApis } from "./chat-apis.js";
import { engineBackend } from "./chat-backend.js";
import { createJsonApp, HttpError, listen, loopbackOf, parseBody } from "./http-app.js";
import { generateParamsSchema, ModelWorker, type ModelWorkerOptions } from "./worker.js";
import { ControllerLink, type ControllerLinkOptions } from "./worker-registration.js";

/** The worker's routes on a new app, not yet listening. */
export function buildWorkerApp(worker: ModelWorker, log?: (line: string) => void): FastifyInstance {
  const app = createJsonApp(log);
  addWorkerRoutes(app, worker);
  return app;
}

/** Adds the worker's routes to `app` (a `createJsonApp`, possibly serving more than the worker). */
export function addWorkerRoutes(app: FastifyInstance, worker: ModelWorker): void {
  app.post("/worker_get_status", async () => worker.status());
  app.post("/worker_generate_stream", async (req, reply) => {
    const params = parseBody(generateParamsSchema, req.body);
    const gone = new AbortController();
    reply.raw.on("close", () => gone.abort(new Error("the client went away")));
    const request = await worker.prepare(params, gone.signal).catch((err: Error) => {
      throw err instanceof LlavaError ? new HttpError(400, err.message) : err;
    });
    return reply.send(Readable.from(worker.stream(request)));
  });
}

export interface StartWorkerOptions extends Omit<ModelWorkerOptions, "onRequestEdge"> {
  host: string;
  port: number;
  /** where the controller reaches this worker (default: the address it listens on) */
  workerUrl?: string;
  /** the controller to register with and beat to; none: the worker serves on its own */
  controllerUrl?: string;
  heartBeat?: Pick<ControllerLinkOptions, "heartBeatIntervalMs" | "retryIntervalMs">;
  /** the OpenAI and Ollama APIs over the worker's engine; none: not served */
  api?: ApiOptions;
}

export interface RunningWorker {
  /** the address it listens on */
  url: string;
  app: FastifyInstance;
  worker: ModelWorker;
  /** present when registered with a controller */
  link?: ControllerLink;
  /** stops the heart beats, lets the streams in flight end, then closes the engine */
  close(): Promise<void>;
}

/**
 * Listens, then registers with the controller and starts the heart beats. A controller that
 * cannot be reached is a LlavaError (nothing is left listening).
 */
export async function startWorker(opts: StartWorkerOptions): Promise<RunningWorker> {
  let link: ControllerLink | undefined;
  const worker = new ModelWorker({ ...opts, onRequestEdge: () => link?.beatSoon() });
  const app = buildWorkerApp(worker, opts.log);
  if (opts.api) await registerChatApis(app, engineBackend(opts.engine, opts.modelName), opts.api);
  const url = await listen(app, opts.host, opts.port);
  const close = async () => {
    link?.stop();
    await app.close();
    await worker.engine.close();
  };
  if (opts.controllerUrl !== undefined) {
    const workerUrl = opts.workerUrl ?? loopbackOf(url);
    link = new ControllerLink({ controllerUrl: opts.controllerUrl, workerUrl, status: () => worker.status(), log: opts.log, ...opts.heartBeat });
    try {
      await link.register();
    } catch (err) {
      await app.close();
      throw err;
    }
    link.start();
  }
  return { url, app, worker, link, close };
}
