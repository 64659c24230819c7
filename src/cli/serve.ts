/** `llava serve <part>`: the reference's serving processes (src/serve). */
import { buildControllerApp } from "../serve/controller-http.js";
import { DISPATCH_METHODS, type DispatchMethod } from "../serve/controller.js";
import { closeOnSignal, listen } from "../serve/http-app.js";
import { buildWebApp, DEFAULT_MAX_UPLOAD_BYTES, MODEL_LIST_MODES, type ModelListMode } from "../serve/web-server.js";
import { LlavaError } from "../util/errors.js";
import { parseCommandArgs, type Values } from "./common.js";

const USAGE = `usage: llava serve controller [--host localhost] [--port 21001] [--dispatch-method shortest_queue|lottery]
       llava serve web [--controller-url http://localhost:21001] [--host 127.0.0.1] [--port 7860]
                       [--model-list-mode once|reload] [--log-dir .] [--embed] [--max-upload-mb 20]

  controller: the reference's controller: model workers register with it and it sends each request to one
  of them (shortest_queue: the least busy for its speed; lottery: at random, weighted by speed); a worker
  that checks its heart beat and is silent for 30 s is dropped.
  web: the chat page for the controller's models (the model list is fetched once at start, or on every
  page load with reload); it logs each answer and vote to {log-dir}/{date}-conv.json and the images to
  {log-dir}/serve_images/. --embed leaves out the title and terms, for a page shown inside another.
  Both run until SIGINT or SIGTERM.
`;

function portFrom(v: Values, fallback = "21001"): number {
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
  const v = parseCommandArgs("serve controller", args, { host: { type: "string" }, port: { type: "string" }, "dispatch-method": { type: "string" } });
  if (v.help) {
    process.stdout.write(USAGE);
    return;
  }
  const port = portFrom(v);
  const dispatchMethod = dispatchMethodFrom(v);
  const log = (line: string) => process.stderr.write(`controller: ${line}\n`);
  const { app, controller } = buildControllerApp({ dispatchMethod, log });
  const url = await listen(app, typeof v.host === "string" ? v.host : "localhost", port);
  const stopExpiry = controller.startExpiryChecks();
  log(`listening on ${url} (dispatch: ${dispatchMethod})`);
  await closeOnSignal(app, stopExpiry);
  log("stopped");
}

function choiceFrom<T extends string>(v: Values, option: string, choices: readonly T[], fallback: T): T {
  const value = v[option] ?? fallback;
  if (!choices.includes(value as T)) throw new LlavaError(`--${option} must be ${choices.join(" or ")}, got "${String(value)}"`);
  return value as T;
}

function httpUrlFrom(v: Values, option: string, fallback: string): string {
  const raw = v[option] ?? fallback;
  if (typeof raw !== "string" || !/^https?:\/\/[^/]/i.test(raw) || !URL.canParse(raw)) throw new LlavaError(`--${option} must be an http(s) URL, got "${String(raw)}"`);
  return raw.replace(/\/+$/, "");
}

function megabytesFrom(v: Values, option: string, fallbackBytes: number): number {
  const raw = v[option];
  if (raw === undefined) return fallbackBytes;
  const mb = Number(raw);
  if (typeof raw !== "string" || !(mb > 0) || !Number.isFinite(mb)) throw new LlavaError(`--${option} must be a positive number of megabytes, got "${String(raw)}"`);
  return Math.round(mb * 2 ** 20);
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
  const log = (line: string) => process.stderr.write(`web: ${line}\n`);
  const app = await buildWebApp({
    controllerUrl, modelListMode, maxUploadBytes, log, embed: v.embed === true, logDir: typeof v["log-dir"] === "string" ? v["log-dir"] : ".",
  });
  const url = await listen(app, typeof v.host === "string" ? v.host : "127.0.0.1", port);
  log(`open ${url} (models from ${controllerUrl})`);
  await closeOnSignal(app);
  log("stopped");
}

export async function runServe(argv: string[]): Promise<void> {
  const [part, ...rest] = argv;
  if (!part || part === "-h" || part === "--help") {
    process.stdout.write(USAGE);
    return;
  }
  const parts: Record<string, (args: string[]) => Promise<void>> = { controller: runController, web: runWeb };
  if (!Object.hasOwn(parts, part)) throw new LlavaError(`serve: unknown part "${part}" (parts: ${Object.keys(parts).join(", ")}; see llava serve --help)`);
  await parts[part](rest);
}
