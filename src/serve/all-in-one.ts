/**
 * `llava serve`: everything a new user needs in one process on one port. The reference's
 * controller (so more workers, ours or the reference's, can join), one model worker at `/worker`
 * registered with it, the web UI, and the OpenAI and Ollama APIs. The APIs answer the local model
 * straight from its engine and any other registered model through the controller's workers.
 */
import type { FastifyInstance } from "fastify";
import type { ApiOptions } from "./api-common.js";
import { registerChatApis } from "./chat-apis.js";
import { combinedBackend, controllerBackend, engineBackend } from "./chat-backend.js";
import { addControllerRoutes } from "./controller-http.js";
import type { Controller } from "./controller.js";
import type { Engine } from "./engine.js";
import { createJsonApp, listen, loopbackOf } from "./http-app.js";
import { registerWebUi, type WebServerOptions } from "./web-server.js";
import { ModelWorker } from "./worker.js";
import { addWorkerRoutes } from "./worker-http.js";
import { ControllerLink } from "./worker-registration.js";

/** Where the embedded worker's endpoints live on the one port. */
export const EMBEDDED_WORKER_PATH = "/worker";

export interface AllInOneOptions {
  engine: Engine;
  modelName: string;
  host: string;
  port: number;
  /** the worker's --limit-model-concurrency */
  limitModelConcurrency?: number;
  /** undefined: no APIs */
  api?: ApiOptions;
  web: Pick<WebServerOptions, "logDir" | "embed" | "maxUploadBytes" | "staticDir">;
  log?: (line: string) => void;
}

export interface AllInOne {
  /** the address it listens on */
  url: string;
  app: FastifyInstance;
  controller: Controller;
  /** stops the heart beats and expiry checks, lets the streams in flight end, then closes the engine */
  close(): Promise<void>;
}

/** Builds the server, listens, and registers the embedded worker with the embedded controller. */
export async function startAllInOne(opts: AllInOneOptions): Promise<AllInOne> {
  const log = opts.log ?? (() => {});
  const app = createJsonApp(log);
  const controller = addControllerRoutes(app, { log });
  let link: ControllerLink | undefined;
  const worker = new ModelWorker({ engine: opts.engine, modelName: opts.modelName, limitModelConcurrency: opts.limitModelConcurrency, log, onRequestEdge: () => link?.beatSoon() });
  await app.register(async (scope) => addWorkerRoutes(scope, worker), { prefix: EMBEDDED_WORKER_PATH });
  if (opts.api) {
    await registerChatApis(app, combinedBackend(engineBackend(opts.engine, opts.modelName), controllerBackend(controller)), opts.api);
  }
  // the server talks to itself on loopback, whatever address it listens on
  let self = "";
  await registerWebUi(app, { ...opts.web, controllerUrl: () => self, modelListMode: "reload", log });

  const url = await listen(app, opts.host, opts.port);
  self = loopbackOf(url);
  const stopExpiry = controller.startExpiryChecks();
  link = new ControllerLink({ controllerUrl: self, workerUrl: self + EMBEDDED_WORKER_PATH, status: () => worker.status(), log });
  try {
    await link.register();
  } catch (err) {
    stopExpiry();
    await app.close();
    throw err;
  }
  link.start();
  return {
    url,
    app,
    controller,
    async close() {
      link?.stop();
      stopExpiry();
      await app.close();
      await opts.engine.close();
    },
  };
}

