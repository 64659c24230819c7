/**
 * The controller's HTTP endpoints, wire-compatible with the reference's FastAPI app: every route
 * is a POST with a JSON body, and /worker_generate_stream relays the chosen worker's NUL-delimited
 * JSON chunks as they come. Bad requests get a 400 with a one-line `error`; the server keeps serving.
 */
import type { FastifyInstance } from "fastify";
import { Readable } from "node:stream";
import { z } from "zod";
import { Controller, type ControllerOptions } from "./controller.js";
import { createJsonApp, parseBody } from "./http-app.js";
import { nulDelimited, postForJson, postJson } from "./http-client.js";
import { ErrorCode, errorChunk, REQUEST_TIMEOUT_MS, workerStatusSchema } from "./protocol.js";

const workerUrl = z.string().refine((s) => URL.canParse(s) && /^https?:$/.test(new URL(s).protocol), "must be an http(s) URL");

/** Python's falsy empty dict counts as no status, as in the reference's `if not worker_status`. */
const noEmptyObject = (v: unknown) => (v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0 ? undefined : v);

const schemas = {
  register: z.object({
    worker_name: workerUrl,
    check_heart_beat: z.boolean(),
    worker_status: z.preprocess(noEmptyObject, workerStatusSchema.nullish()),
  }),
  model: z.object({ model: z.string() }),
  /** the worker's own fields go through as sent */
  generate: z.looseObject({ model: z.string() }),
  heartBeat: z.object({ worker_name: z.string(), queue_length: z.number().finite() }),
};

export interface ControllerHttpOptions extends Omit<ControllerOptions, "fetchStatus"> {
  /** the wait for a worker to connect or to send its next bytes */
  workerTimeoutMs?: number;
}

/** The controller with its routes, not yet listening. */
export function buildControllerApp(opts: ControllerHttpOptions = {}): { app: FastifyInstance; controller: Controller } {
  const app = createJsonApp(opts.log);
  return { app, controller: addControllerRoutes(app, opts) };
}

/** A controller whose routes are added to `app` (one made by createJsonApp), e.g. beside a worker and the UI on one port. */
export function addControllerRoutes(app: FastifyInstance, opts: ControllerHttpOptions = {}): Controller {
  const idleTimeoutMs = opts.workerTimeoutMs ?? REQUEST_TIMEOUT_MS;
  const fetchStatus = async (worker: string) => {
    const parsed = workerStatusSchema.safeParse(await postForJson(`${worker}/worker_get_status`, {}, { idleTimeoutMs }));
    return parsed.success ? parsed.data : undefined;
  };
  const controller = new Controller({ ...opts, fetchStatus });

  // FastAPI answers a handler that returns nothing with JSON null
  app.post("/register_worker", async (req) => {
    const { worker_name, check_heart_beat, worker_status } = parseBody(schemas.register, req.body);
    await controller.registerWorker(worker_name, check_heart_beat, worker_status ?? undefined);
    return null;
  });
  app.post("/refresh_all_workers", async () => {
    await controller.refreshAllWorkers();
    return null;
  });
  app.post("/list_models", async () => ({ models: controller.listModels() }));
  app.post("/get_worker_address", async (req) => ({ address: controller.getWorkerAddress(parseBody(schemas.model, req.body).model) }));
  app.post("/receive_heart_beat", async (req) => {
    const { worker_name, queue_length } = parseBody(schemas.heartBeat, req.body);
    return { exist: controller.receiveHeartBeat(worker_name, queue_length) };
  });
  app.post("/worker_get_status", async () => controller.aggregateStatus());

  app.post("/worker_generate_stream", async (req, reply) => {
    const params = parseBody(schemas.generate, req.body);
    // a client that goes away takes the worker's request with it
    const abort = new AbortController();
    reply.raw.on("close", () => abort.abort());
    const address = controller.getWorkerAddress(params.model);
    return reply.send(Readable.from(relay(address, params, idleTimeoutMs, abort.signal, opts.log)));
  });

  return controller;
}

/**
 * The worker's stream, chunk by chunk; error code 2 when no worker serves the model, 3 when the
 * worker cannot be reached, answers with an error status, or goes silent or away mid-stream.
 */
async function* relay(address: string, params: object, idleTimeoutMs: number, signal: AbortSignal, log?: (line: string) => void): AsyncGenerator<Buffer> {
  if (!address) {
    // The reference goes on to request the empty address after this chunk (and so adds an error
    // code 3 chunk); the stream ends here instead.
    log?.(`no worker: ${(params as { model: string }).model}`);
    yield errorChunk(ErrorCode.NO_WORKER);
    return;
  }
  try {
    const res = await postJson(`${address}/worker_generate_stream`, params, { idleTimeoutMs, signal });
    // the reference relays an error page's body as if it were chunks; it is a worker failure
    if (res.statusCode !== 200) {
      res.resume();
      throw new Error(`status ${res.statusCode}`);
    }
    for await (const chunk of nulDelimited(res)) yield Buffer.concat([chunk, Buffer.from([0])]);
  } catch (err) {
    if (signal.aborted) return; // nobody is listening
    log?.(`worker failed: ${address}: ${(err as Error).message}`);
    yield errorChunk(ErrorCode.WORKER_FAILED);
  }
}
