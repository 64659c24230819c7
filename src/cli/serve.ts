/** `llava serve <part>`: the reference's serving processes (src/serve). */
import type { ApiOptions } from "../serve/api-common.js";
import { controllerBackend } from "../serve/chat-backend.js";
import { buildControllerApp } from "../serve/controller-http.js";
import { DISPATCH_METHODS, type DispatchMethod } from "../serve/controller.js";
import { closeOnSignal, listen } from "../serve/http-app.js";
import { registerOllamaApi } from "../serve/ollama-api.js";
import { registerOpenAiApi } from "../serve/openai-api.js";
import { LlavaError } from "../util/errors.js";
import { parseCommandArgs, type Values } from "./common.js";
import { runOpenAIWorker, runWorker, WORKER_USAGE } from "./serve-worker.js";

const USAGE = `usage: llava serve controller [--host localhost] [--port 21001] [--dispatch-method shortest_queue|lottery]
                              [--no-api] [--api-key KEY] [--cors-origin ORIGIN ...] [--allow-private-urls]

  the reference's controller: model workers register with it and it sends each request to one of them
  (shortest_queue: the least busy for its speed; lottery: at random, weighted by speed); a worker that
  checks its heart beat and is silent for 30 s is dropped. It runs until SIGINT or SIGTERM.

  It also serves the workers' models through the OpenAI-compatible API (/v1) and Ollama's API (/api),
  unless --no-api: --api-key makes them require "Authorization: Bearer KEY"; --cors-origin lets browser
  pages from ORIGIN ("*": any; repeatable) call them; --allow-private-urls lets image URLs point at
  private and loopback addresses.

${WORKER_USAGE}`;

const apiArgs = {
  "no-api": { type: "boolean" },
  "api-key": { type: "string" },
  "cors-origin": { type: "string", multiple: true },
  "allow-private-urls": { type: "boolean" },
} as const;

/** The API options the command line asks for; undefined with --no-api. */
function apiOptionsFrom(v: Values, log: (line: string) => void): ApiOptions | undefined {
  if (v["no-api"]) return undefined;
  const apiKey = v["api-key"] as string | undefined;
  if (apiKey !== undefined && apiKey.trim() === "") throw new LlavaError("--api-key must not be empty");
  return { apiKey, corsOrigins: v["cors-origin"] as string[] | undefined, allowPrivateUrls: v["allow-private-urls"] === true, log };
}

export function portFrom(v: Values, fallback = "21001"): number {
  const raw = v.port ?? fallback;
  const port = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || port > 65535) throw new LlavaError(`--port must be a whole number from 0 to 65535, got "${String(raw)}"`);
  return port;
}

function dispatchMethodFrom(v: Values): DispatchMethod {
  const method = v["dispatch-method"] ?? "shortest_queue";
  if (!DISPATCH_METHODS.includes(method as DispatchMethod)) {
    throw new LlavaError(`--dispatch-method must be ${DISPATCH_METHODS.join(" or ")}, got "${String(method)}"`);
  }
  return method as DispatchMethod;
}

async function runController(args: string[]): Promise<void> {
  const v = parseCommandArgs("serve controller", args, { host: { type: "string" }, port: { type: "string" }, "dispatch-method": { type: "string" }, ...apiArgs });
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  const port = portFrom(v);
  const dispatchMethod = dispatchMethodFrom(v);
  const log = (line: string) => process.stderr.write(`controller: ${line}\n`);
  const api = apiOptionsFrom(v, log);
  const { app, controller } = buildControllerApp({ dispatchMethod, log });
  if (api) {
    const backend = controllerBackend(controller);
    await registerOpenAiApi(app, backend, api);
    await registerOllamaApi(app, backend, api);
  }
  const url = await listen(app, typeof v.host === "string" ? v.host : "localhost", port);
  const stopExpiry = controller.startExpiryChecks();
  log(`listening on ${url} (dispatch: ${dispatchMethod}${api ? `; OpenAI API at ${url}/v1, Ollama API at ${url}/api` : ""})`);
  await closeOnSignal(app, stopExpiry);
  log("stopped");
}

export async function runServe(argv: string[]): Promise<void> {
  const [part, ...rest] = argv;
  if (!part || part === "-h" || part === "--help") {
    process.stdout.write(USAGE);
    return;
  }
  const parts: Record<string, (args: string[]) => Promise<void>> = { controller: runController, worker: runWorker, "openai-worker": runOpenAIWorker };
  if (!Object.hasOwn(parts, part)) throw new LlavaError(`serve: unknown part "${part}" (parts: ${Object.keys(parts).join(", ")}; see llava serve --help)`);
  await parts[part](rest);
}
