/**
 * The chat APIs on a real loopback server for tests: the tiny fixture model behind a serial
 * engine (or any backend), with both APIs mounted on one fastify app.
 */
import path from "node:path";
import fs from "node:fs";
import { loadImage, type RgbImage } from "../../src/image/decode.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import type { ApiOptions } from "../../src/serve/api-common.js";
import { type ChatBackend, engineBackend } from "../../src/serve/chat-backend.js";
import { BatchEngine, type BatchEngineOptions } from "../../src/serve/batch-engine.js";
import type { Engine, EngineOutput, EngineRequest } from "../../src/serve/engine.js";
import { createJsonApp, listen } from "../../src/serve/http-app.js";
import { registerChatApis } from "../../src/serve/chat-apis.js";
import { CASES, IMAGES, MODELS } from "./paths.js";
import { throughPieces } from "./worker-client.js";

/** A name that picks the llava_v1 template, the one the fixtures' prompts were rendered with. */
export const MODEL = "llava-v1.5-tiny";
export const IMAGE_PATH = path.join(IMAGES, "gradient_640x480.png");
export const IMAGE_BASE64 = fs.readFileSync(IMAGE_PATH).toString("base64");
export const IMAGE_DATA_URL = `data:image/png;base64,${IMAGE_BASE64}`;
/** The fixture's rendered prompt for the image and "What is shown?". */
export const GRADIENT_PROMPT = fs.readFileSync(path.join(CASES, "tiny-llava-1.5-mha", "gradient", "prompt.txt"), "utf8");

let model: Promise<{ loaded: LoadedLlava; image: RgbImage }> | undefined;

/** The tiny model and the gradient image, loaded once per test file. */
export function tinyModel(): Promise<{ loaded: LoadedLlava; image: RgbImage }> {
  model ??= (async () => ({ loaded: await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha")), image: await loadImage(IMAGE_PATH) }))();
  return model;
}

/** An engine that notes how each request ended: "done", the abort's reason, or the error's message. */
export class WatchedEngine implements Engine {
  readonly outcomes: string[] = [];
  constructor(private readonly inner: Engine) {}
  get queueLength() {
    return this.inner.queueLength;
  }
  generate(request: EngineRequest): EngineOutput {
    const outcomes = this.outcomes;
    return throughPieces(this.inner.generate(request), async function* (output) {
      let outcome = "left early";
      try {
        yield* output;
        outcome = "done";
      } catch (err) {
        outcome = (err as Error).message;
        throw err;
      } finally {
        // an abort may end the request by its error or by the consumer leaving between pieces
        const reason = request.signal?.aborted ? (request.signal.reason as Error).message : undefined;
        outcomes.push(outcome === "done" ? outcome : (reason ?? outcome));
      }
    });
  }
  close() {
    return this.inner.close();
  }
}

export interface ApiServer {
  url: string;
  engine: WatchedEngine;
  close(): Promise<void>;
}

/** Both APIs over `backend` (default: the tiny model's batching engine as MODEL) on 127.0.0.1, port 0. */
export async function startApiServer(opts: ApiOptions & { engine?: BatchEngineOptions; backend?: ChatBackend } = {}): Promise<ApiServer> {
  const { loaded } = await tinyModel();
  const engine = new WatchedEngine(new BatchEngine(loaded, opts.engine));
  const backend = opts.backend ?? engineBackend(engine, MODEL);
  const app = createJsonApp();
  await registerChatApis(app, backend, opts);
  const url = await listen(app, "127.0.0.1", 0);
  return { url, engine, close: () => app.close() };
}

/** Waits (bounded) until `cond` holds. */
export async function eventually(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
