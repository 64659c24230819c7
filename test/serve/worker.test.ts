/**
 * The model worker over HTTP with the tiny fixture model, on loopback, registered with a real
 * controller: the reference's stream directly and through the controller, two workers with
 * dispatch, a worker that dies, a controller that restarts, a client that goes away mid-stream,
 * and the command's graceful stop.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import fs from "node:fs";
import path from "node:path";
import { buildControllerApp, type ControllerHttpOptions } from "../../src/serve/controller-http.js";
import { BatchEngine } from "../../src/serve/batch-engine.js";
import { listen } from "../../src/serve/http-app.js";
import { PROMPT_TOO_LONG_MSG, type StreamChunk } from "../../src/serve/protocol.js";
import { startWorker, type StartWorkerOptions } from "../../src/serve/worker-http.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import { loadImage } from "../../src/image/decode.js";
import { streamAnswer } from "../../src/llava/pipeline.js";
import { post, streamChunks } from "../helpers/fake-worker.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";
import { assertCumulative, pacedEngine, spawnServer, streamJson, waitFor } from "../helpers/worker-client.js";

const PROMPT = fs.readFileSync(path.join(CASES, "tiny-llava-1.5-mha", "gradient", "prompt.txt"), "utf8");
const IMAGE_FILE = path.join(IMAGES, "gradient_640x480.png");
const IMAGE_B64 = fs.readFileSync(IMAGE_FILE).toString("base64");
const MODEL = "tiny-llava";

let loaded: LoadedLlava;
/** the greedy answer to PROMPT with the image, 12 tokens */
let answer: string;
const cleanups: Array<() => Promise<unknown>> = [];

before(async () => {
  loaded = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"));
  answer = "";
  for await (const piece of streamAnswer(loaded, PROMPT, [await loadImage(IMAGE_FILE)], { maxNewTokens: 12 })) answer += piece;
});
after(() => Promise.all(cleanups.splice(0).map((c) => c())));

async function startController(opts: ControllerHttpOptions = {}, port = 0) {
  const { app, controller } = buildControllerApp({ workerTimeoutMs: 5000, ...opts });
  const url = await listen(app, "127.0.0.1", port);
  cleanups.push(() => app.close());
  return { url, app, controller };
}

async function worker(opts: Partial<StartWorkerOptions> = {}) {
  const w = await startWorker({ engine: new BatchEngine(loaded), modelName: MODEL, host: "127.0.0.1", port: 0, ...opts });
  cleanups.push(() => w.close());
  return w;
}

const request = (extra: object = {}) => ({ model: MODEL, prompt: PROMPT, images: [IMAGE_B64], temperature: 0, max_new_tokens: 12, ...extra });

test("a worker registers and streams the prompt plus the greedy answer, directly and through the controller", async () => {
  const { url: controllerUrl, controller } = await startController();
  const w = await worker({ controllerUrl });
  assert.deepEqual((await post(`${controllerUrl}/list_models`)).json, { models: [MODEL] });
  assert.equal(controller.workers.get(w.url)?.checkHeartBeat, true);

  const raw = await streamChunks(`${w.url}/worker_generate_stream`, request());
  assert.match(raw[0], /^\{"text": ".*", "error_code": 0\}$/s, "Python's json.dumps layout");
  const direct = raw.map((c) => JSON.parse(c));
  assert.equal(assertCumulative(direct, PROMPT), PROMPT + answer);
  assert.deepEqual(direct.at(-1), { text: PROMPT + answer, error_code: 0, finish_reason: "length", usage: { prompt_tokens: direct.at(-1).usage.prompt_tokens, completion_tokens: 12 } });
  assert.ok(direct.at(-1).usage.prompt_tokens > 16, "the image features count as prompt tokens");

  const relayed = await streamJson(`${controllerUrl}/worker_generate_stream`, request());
  assert.deepEqual(relayed, direct);

  // at or below 0.001 the reference decodes greedily
  assert.equal(assertCumulative(await streamJson(`${w.url}/worker_generate_stream`, request({ temperature: 0.001 })), PROMPT), PROMPT + answer);
  // the answer ends before its stop string
  const stop = answer.slice(4, 8);
  const stopped = await streamJson(`${w.url}/worker_generate_stream`, request({ stop }));
  assert.equal(assertCumulative(stopped, PROMPT), PROMPT + answer.slice(0, answer.indexOf(stop)));
  assert.equal(stopped.at(-1)?.finish_reason, "stop");
  // the reference answers a budget below 1 as it answers a full context
  assert.deepEqual(await streamJson(`${w.url}/worker_generate_stream`, request({ max_new_tokens: 0 })), [{ text: PROMPT + PROMPT_TOO_LONG_MSG, error_code: 0 }]);
  // a text-only prompt
  const text = await streamJson(`${w.url}/worker_generate_stream`, { prompt: "USER: Hello ASSISTANT:", temperature: 0, max_new_tokens: 3 });
  assert.equal(text.at(-1)?.usage?.completion_tokens, 3);

  assert.deepEqual((await post(`${w.url}/worker_get_status`)).json, { model_names: [MODEL], speed: 1, queue_length: 0 });
});

test("two workers share the requests; one that dies is dropped after the expiry and the survivor answers", async () => {
  const { url: controllerUrl, controller } = await startController({ expirationS: 1.5 });
  const stopChecks = controller.startExpiryChecks(50);
  cleanups.push(async () => stopChecks());
  const beats = { heartBeatIntervalMs: 100, retryIntervalMs: 100 };
  // answers that take a while, so the requests sent together are all dispatched before one ends
  const engines = [pacedEngine(new BatchEngine(loaded), 50), pacedEngine(new BatchEngine(loaded), 50)];
  const [a, b] = [await worker({ controllerUrl, engine: engines[0], heartBeat: beats }), await worker({ controllerUrl, engine: engines[1], heartBeat: beats })];

  const answers = await Promise.all([0, 1, 2, 3].map(() => streamJson(`${controllerUrl}/worker_generate_stream`, request())));
  for (const chunks of answers) assert.equal(assertCumulative(chunks, PROMPT), PROMPT + answer);
  // heart beats overwrite the controller's own count with each worker's, so the split is not always 2 + 2
  const served = engines.map((e) => e.outputs.length);
  assert.ok(served[0] >= 1 && served[1] >= 1 && served[0] + served[1] === 4, `shortest queue uses both workers: ${served}`);

  await a.close();
  await waitFor("the controller to drop the dead worker", () => !controller.workers.has(a.url));
  assert.ok(controller.workers.has(b.url), "the survivor keeps beating");
  for (let i = 0; i < 2; i++) {
    assert.equal(assertCumulative(await streamJson(`${controllerUrl}/worker_generate_stream`, request()), PROMPT), PROMPT + answer);
  }
  assert.equal(engines[1].outputs.length, served[1] + 2, "the survivor answered");
});

test("a restarted controller gets its worker back on the worker's next heart beat", async () => {
  const first = await startController();
  const w = await worker({ controllerUrl: first.url, heartBeat: { heartBeatIntervalMs: 100, retryIntervalMs: 100 } });
  await first.app.close();
  await new Promise((r) => setTimeout(r, 250)); // a few beats fail meanwhile
  const port = Number(new URL(first.url).port);
  const second = await startController({}, port);
  await waitFor("the worker to register again", () => second.controller.workers.has(w.url));
  assert.deepEqual((await post(`${second.url}/list_models`)).json, { models: [MODEL] });
  assert.equal(assertCumulative(await streamJson(`${second.url}/worker_generate_stream`, request()), PROMPT), PROMPT + answer);
});

test("requests beyond the concurrency limit wait; a client that goes away, running or waiting, leaves the queue", async () => {
  const { url: controllerUrl, controller } = await startController();
  const engine = pacedEngine(new BatchEngine(loaded), 20);
  // no periodic beats: what the controller knows comes from the beats at each request's start and end
  const w = await worker({ controllerUrl, engine, limitModelConcurrency: 1, heartBeat: { heartBeatIntervalMs: 60_000 } });
  const status = async () => ((await post(`${w.url}/worker_get_status`)).json as { queue_length: number }).queue_length;

  const running = new AbortController();
  const waiting = new AbortController();
  const body = JSON.stringify(request({ max_new_tokens: 400 }));
  const res = await fetch(`${w.url}/worker_generate_stream`, { method: "POST", body, signal: running.signal });
  const reader = res.body!.getReader();
  assert.match(Buffer.from((await reader.read()).value!).toString("utf8"), /^\{"text": /);
  const second = fetch(`${w.url}/worker_generate_stream`, { method: "POST", body, signal: waiting.signal }).catch(() => undefined);
  await waitFor("the second request to wait", async () => (await status()) === 2);
  await waitFor("the start beat to reach the controller", () => controller.workers.get(w.url)?.queueLength === 1 || controller.workers.get(w.url)?.queueLength === 2);
  assert.equal(engine.outputs.length, 1, "the second request waits for a slot");

  waiting.abort();
  await second;
  await waitFor("the waiting request to leave", async () => (await status()) === 1);
  running.abort();
  await waitFor("the running request to leave", async () => (await status()) === 0);
  await waitFor("the end beat to reach the controller", () => controller.workers.get(w.url)?.queueLength === 0);
  assert.equal(engine.outputs.length, 1, "the request that left while waiting never reached the engine");
  assert.equal(engine.outputs[0].finishReason, null, "the generation stopped before its end");
  assert.ok(engine.outputs[0].completionTokens < 400);

  // the slot is free again
  assert.equal(assertCumulative(await streamJson(`${w.url}/worker_generate_stream`, request({ max_new_tokens: 2 })), PROMPT).length > PROMPT.length, true);
});

test("a single worker serves the OpenAI and Ollama APIs over its own engine", async () => {
  // a llava_v1 name, so the API renders the fixture's prompt with its template
  const w = await worker({ api: {}, modelName: "llava-v1.5-tiny" });
  const client = new OpenAI({ baseURL: `${w.url}/v1`, apiKey: "none", maxRetries: 0 });
  assert.deepEqual((await client.models.list()).data.map((m) => m.id), ["llava-v1.5-tiny"]);
  const reply = await client.chat.completions.create({
    model: "llava-v1.5-tiny",
    temperature: 0,
    max_tokens: 12,
    messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/png;base64,${IMAGE_B64}` } }, { type: "text", text: "What is shown?" }] }],
  });
  assert.equal(reply.choices[0].message.content, answer);
  assert.equal((await fetch(`${w.url}/api/tags`)).status, 200);
});

test("llava serve worker: SIGTERM lets the stream in flight end, then the worker stops", async () => {
  const server = await spawnServer(["serve", "worker", "--model-path", path.join(MODELS, "tiny-llava-1.5-mha"), "--no-register", "--host", "127.0.0.1", "--port", "0"]);
  try {
    const res = await fetch(`${server.url}/worker_generate_stream`, { method: "POST", body: JSON.stringify({ prompt: "USER: Hello ASSISTANT:", temperature: 0, max_new_tokens: 200 }) });
    const reader = res.body!.getReader();
    await reader.read(); // the stream has started
    server.kill("SIGTERM");
    let text = "";
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += Buffer.from(r.value).toString("utf8");
    const last = JSON.parse(text.split("\0").filter(Boolean).at(-1)!) as StreamChunk;
    assert.equal(last.usage?.completion_tokens, 200, "the stream ran to its end");
    assert.equal(await server.exited, 0, server.stderr());
    assert.match(server.stderr(), /worker: stopped\n$/);
  } finally {
    server.kill("SIGKILL");
  }
});
