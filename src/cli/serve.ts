/** `llava serve <part>`: the reference's serving processes (src/serve). */
import { modelNameFromPath } from "../llava/conversation.js";
import { startAllInOne } from "../serve/all-in-one.js";
import { registerChatApis } from "../serve/chat-apis.js";
import { controllerBackend } from "../serve/chat-backend.js";
import { BatchEngine } from "../serve/batch-engine.js";
import { buildControllerApp } from "../serve/controller-http.js";
import { DISPATCH_METHODS, type DispatchMethod } from "../serve/controller.js";
import { listen, untilStopSignal } from "../serve/http-app.js";
import { buildWebApp, DEFAULT_MAX_UPLOAD_BYTES, MODEL_LIST_MODES, type ModelListMode } from "../serve/web-server.js";
import { LlavaError } from "../util/errors.js";
import { loadModelFromArgs, loadOptions, parseCommandArgs } from "./common.js";
import { API_USAGE, apiArgs, apiOptionsFrom, choiceFrom, concurrencyFrom, ENGINE_USAGE, engineArgs, engineOptionsFrom, hostFrom, httpUrlFrom, megabytesFrom, portFrom, serverLog } from "./serve-options.js";
import { runOpenAIWorker, runWorker, WORKER_USAGE } from "./serve-worker.js";

const USAGE = `usage: llava serve [--model-path DIR] [--model-base DIR] [--model-name N] [--load-8bit|--load-4bit|--dtype D]
                   [--host 127.0.0.1] [--port 8000] [--limit-model-concurrency 5] [--max-batch 8] [--prefix-cache-mb 1024]
                   [--log-dir .] [--embed] [--max-upload-mb 20] [--no-api] [--api-key KEY] [--cors-origin ORIGIN ...]
                   [--allow-private-urls]

  everything in one process on one port: the web UI (at /), the OpenAI API (/v1), Ollama's API (/api),
  a controller that more workers can register with, and the model's own worker (/worker). It prints
  the URL to open and runs until SIGINT or SIGTERM, letting the answers in progress finish.
${ENGINE_USAGE}

usage: llava serve controller [--host localhost] [--port 21001] [--dispatch-method shortest_queue|lottery]
                              [--no-api] [--api-key KEY] [--cors-origin ORIGIN ...] [--allow-private-urls]

  the reference's controller: model workers register with it and it sends each request to one of them
  (shortest_queue: the least busy for its speed; lottery: at random, weighted by speed); a worker that
  checks its heart beat and is silent for 30 s is dropped. It runs until SIGINT or SIGTERM.
${API_USAGE}

${WORKER_USAGE}
usage: llava serve web [--controller-url http://localhost:21001] [--host 127.0.0.1] [--port 7860]
                       [--model-list-mode once|reload] [--log-dir .] [--embed] [--max-upload-mb 20]

  the chat page for the controller's models (the model list is fetched once at start, or on every
  page load with reload); it logs each answer and vote to {log-dir}/{date}-conv.json and the images to
  {log-dir}/serve_images/. --embed leaves out the title and terms, for a page shown inside another.
  It runs until SIGINT or SIGTERM.
`;

async function runController(args: string[]): Promise<void> {
  const v = parseCommandArgs("serve controller", args, { host: { type: "string" }, port: { type: "string" }, "dispatch-method": { type: "string" }, ...apiArgs });
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  const port = portFrom(v, "21001");
  const dispatchMethod = choiceFrom<DispatchMethod>(v, "dispatch-method", DISPATCH_METHODS, "shortest_queue");
  const log = serverLog("controller");
  const api = apiOptionsFrom(v, log);
  const { app, controller } = buildControllerApp({ dispatchMethod, log });
  if (api) {
    await registerChatApis(app, controllerBackend(controller), api);
  }
  const url = await listen(app, hostFrom(v, "localhost"), port);
  const stopExpiry = controller.startExpiryChecks();
  log(`listening on ${url} (dispatch: ${dispatchMethod}${api ? `; OpenAI API at ${url}/v1, Ollama API at ${url}/api` : ""})`);
  await untilStopSignal();
  stopExpiry();
  await app.close();
  log("stopped");
}

async function runWeb(args: string[]): Promise<void> {
  const v = parseCommandArgs("serve web", args, {
    "controller-url": { type: "string" }, host: { type: "string" }, port: { type: "string" }, "model-list-mode": { type: "string" },
    "log-dir": { type: "string" }, embed: { type: "boolean" }, "max-upload-mb": { type: "string" },
  });
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  const port = portFrom(v, "7860");
  const controllerUrl = httpUrlFrom(v, "controller-url", "http://localhost:21001");
  const modelListMode = choiceFrom<ModelListMode>(v, "model-list-mode", MODEL_LIST_MODES, "once");
  const maxUploadBytes = megabytesFrom(v, "max-upload-mb", DEFAULT_MAX_UPLOAD_BYTES);
  const log = serverLog("web");
  const app = await buildWebApp({
    controllerUrl, modelListMode, maxUploadBytes, log, embed: v.embed === true, logDir: typeof v["log-dir"] === "string" ? v["log-dir"] : ".",
  });
  const url = await listen(app, hostFrom(v, "127.0.0.1"), port);
  log(`open ${url} (models from ${controllerUrl})`);
  await untilStopSignal();
  await app.close();
  log("stopped");
}

async function runAllInOne(args: string[]): Promise<void> {
  const v = parseCommandArgs("serve", args, {
    ...loadOptions, "model-name": { type: "string" }, host: { type: "string" }, port: { type: "string" }, "limit-model-concurrency": { type: "string" },
    "log-dir": { type: "string" }, embed: { type: "boolean" }, "max-upload-mb": { type: "string" }, ...apiArgs, ...engineArgs,
  });
  const host = hostFrom(v, "127.0.0.1");
  const port = portFrom(v, "8000");
  const limitModelConcurrency = concurrencyFrom(v);
  const engineOptions = engineOptionsFrom(v);
  const maxUploadBytes = megabytesFrom(v, "max-upload-mb", DEFAULT_MAX_UPLOAD_BYTES);
  const log = serverLog("serve");
  const api = apiOptionsFrom(v, log);
  const loaded = await loadModelFromArgs(v);
  const modelName = typeof v["model-name"] === "string" ? v["model-name"] : modelNameFromPath(loaded.dir);
  const server = await startAllInOne({
    engine: new BatchEngine(loaded, engineOptions), modelName, host, port, limitModelConcurrency, api, log,
    web: { logDir: typeof v["log-dir"] === "string" ? v["log-dir"] : ".", embed: v.embed === true, maxUploadBytes },
  });
  if (api) log(`OpenAI API at ${server.url}/v1, Ollama API at ${server.url}/api`);
  log(`serving ${modelName}: open the chat page on ${server.url}`);
  await untilStopSignal();
  await server.close();
  log("stopped");
}

export async function runServe(argv: string[]): Promise<void> {
  const [part, ...rest] = argv;
  if (!part || part === "-h" || part === "--help") {
    process.stdout.write(USAGE);
    return;
  }
  if (part.startsWith("-")) return runAllInOne(argv);
  const parts: Record<string, (args: string[]) => Promise<void>> = { controller: runController, worker: runWorker, "openai-worker": runOpenAIWorker, web: runWeb };
  if (!Object.hasOwn(parts, part)) throw new LlavaError(`serve: unknown part "${part}" (parts: ${Object.keys(parts).join(", ")}; see llava serve --help)`);
  await parts[part](rest);
}
