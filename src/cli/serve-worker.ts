/** `llava serve worker` and `llava serve openai-worker`: model workers that register with a controller. */
import { modelNameFromPath } from "../llava/conversation.js";
import { BatchEngine } from "../serve/batch-engine.js";
import type { Engine } from "../serve/engine.js";
import { untilStopSignal } from "../serve/http-app.js";
import { OpenAIEngine } from "../serve/openai-worker.js";
import { startWorker, type StartWorkerOptions } from "../serve/worker-http.js";
import { LlavaError } from "../util/errors.js";
import { loadModelFromArgs, loadOptions, parseCommandArgs, type Values } from "./common.js";
import { API_USAGE, apiArgs, apiOptionsFrom, concurrencyFrom, ENGINE_USAGE, engineArgs, engineOptionsFrom, hostFrom, httpUrlFrom, portFrom, serverLog } from "./serve-options.js";

export const WORKER_USAGE = `usage: llava serve worker --model-path DIR [--model-base DIR] [--model-name N] [--load-8bit|--load-4bit|--dtype D]
                          [--controller-address http://localhost:21001] [--host localhost] [--port 21002]
                          [--worker-address URL] [--limit-model-concurrency 5] [--no-register] [--max-batch 8]
                          [--prefix-cache-mb 1024] [--no-api] [--api-key KEY] [--cors-origin ORIGIN ...] [--allow-private-urls]

  the reference's model worker: loads the model, registers with the controller (unless --no-register),
  beats every 15 s and answers /worker_generate_stream and /worker_get_status. The model is named after
  its folder unless --model-name says otherwise; --worker-address (default: the address it listens on)
  is where the controller reaches it; requests beyond --limit-model-concurrency wait their turn.
${ENGINE_USAGE}
${API_USAGE}

usage: llava serve openai-worker --api-base URL --model NAME [--api-key K] [--controller-address URL]
                                 [--host localhost] [--port 21002] [--worker-address URL] [--limit-model-concurrency 5]
                                 [--no-register]

  a worker whose answers come from an OpenAI-compatible server (SGLang, vLLM, llama.cpp, Ollama, llava-ts),
  as the reference's SGLang worker: --api-base is its API root (e.g. http://localhost:30000/v1), --model the
  model it serves, which is also the name the worker registers; the key defaults to OPENAI_API_KEY.
`;

/** The options every worker takes: where it listens, the controller, its concurrency. */
const workerOptions = {
  host: { type: "string" },
  port: { type: "string" },
  "worker-address": { type: "string" },
  "controller-address": { type: "string" },
  "limit-model-concurrency": { type: "string" },
  "no-register": { type: "boolean" },
} as const;

type ServeOptions = Omit<StartWorkerOptions, "engine" | "modelName">;

/** Where the worker listens and whom it registers with, checked before the slow part (loading a model, asking the upstream). */
function serveOptionsFrom(v: Values): ServeOptions {
  return {
    limitModelConcurrency: concurrencyFrom(v),
    host: hostFrom(v, "localhost"),
    port: portFrom(v, "21002"),
    workerUrl: httpUrlFrom(v, "worker-address"),
    controllerUrl: v["no-register"] ? undefined : httpUrlFrom(v, "controller-address", "http://localhost:21001"),
  };
}

/** Serves `engine` as `modelName` until SIGINT or SIGTERM, then lets the streams in flight end. */
async function serveEngine(name: string, opts: ServeOptions, engine: Engine, modelName: string): Promise<void> {
  const log = serverLog(name);
  const running = await startWorker({ ...opts, engine, modelName, log });
  log(`serving ${modelName} on ${running.url}`);
  await untilStopSignal();
  await running.close();
  log("stopped");
}

export async function runWorker(args: string[]): Promise<void> {
  const v = parseCommandArgs("serve worker", args, { ...loadOptions, ...workerOptions, ...engineArgs, ...apiArgs, "model-name": { type: "string" } });
  if (v.help) {
    process.stdout.write(WORKER_USAGE);
    return;
  }
  const serve = { ...serveOptionsFrom(v), api: apiOptionsFrom(v, serverLog("worker")) };
  const engineOptions = engineOptionsFrom(v);
  const loaded = await loadModelFromArgs(v);
  const modelName = typeof v["model-name"] === "string" ? v["model-name"] : modelNameFromPath(loaded.dir);
  await serveEngine("worker", serve, new BatchEngine(loaded, engineOptions), modelName);
}

export async function runOpenAIWorker(args: string[]): Promise<void> {
  const v = parseCommandArgs("serve openai-worker", args, { ...workerOptions, "api-base": { type: "string" }, "api-key": { type: "string" }, model: { type: "string" } });
  if (v.help) {
    process.stdout.write(WORKER_USAGE);
    return;
  }
  const serve = serveOptionsFrom(v);
  const apiBase = httpUrlFrom(v, "api-base");
  if (apiBase === undefined) throw new LlavaError("--api-base URL is required");
  if (typeof v.model !== "string" || v.model === "") throw new LlavaError("--model NAME is required");
  const engine = new OpenAIEngine({ apiBase, model: v.model, apiKey: typeof v["api-key"] === "string" ? v["api-key"] : process.env.OPENAI_API_KEY });
  await engine.check((line) => process.stderr.write(`[WARNING] ${line}\n`));
  await serveEngine("openai-worker", serve, engine, v.model);
}
