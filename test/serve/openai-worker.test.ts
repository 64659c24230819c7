/**
 * The OpenAI-backed worker in front of a fake OpenAI-compatible server (a real node:http server on
 * loopback that streams chat completions as server-sent events and records what it was asked),
 * registered with a real controller, in-process and as the `llava serve openai-worker` command.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { buildControllerApp } from "../../src/serve/controller-http.js";
import { listen } from "../../src/serve/http-app.js";
import { chatContent, OpenAIEngine } from "../../src/serve/openai-worker.js";
import { SERVER_ERROR_MSG } from "../../src/serve/protocol.js";
import { startWorker } from "../../src/serve/worker-http.js";
import { loadImage } from "../../src/image/decode.js";
import { post } from "../helpers/fake-worker.js";
import { IMAGES } from "../helpers/paths.js";
import { startLoopbackServer } from "../helpers/loopback-server.js";
import { assertCumulative, spawnServer, streamJson, waitFor } from "../helpers/worker-client.js";

const IMAGE_FILE = path.join(IMAGES, "gradient_640x480.png");
const IMAGE_B64 = fs.readFileSync(IMAGE_FILE).toString("base64");
const PROMPT = "A chat between a curious human and an artificial intelligence assistant. USER: <image>\nWhat is shown? ASSISTANT:";
const MODEL = "upstream-llava";

type Behaviour = { kind: "stream"; pieces: string[] } | { kind: "error"; status: number; message: string } | { kind: "hang-after-first"; piece: string };

interface FakeUpstream {
  url: string;
  behaviour: Behaviour;
  /** the chat completion requests it got */
  requests: Array<Record<string, unknown>>;
  /** how many chat completion connections closed before the answer ended */
  cutOff: number;
  close(): Promise<void>;
}

const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;
const delta = (content: string | null, finish: string | null = null) => ({
  id: "chatcmpl-1", object: "chat.completion.chunk", created: 0, model: MODEL,
  choices: [{ index: 0, delta: content === null ? {} : { role: "assistant", content }, finish_reason: finish }],
});

async function startUpstream(behaviour: Behaviour): Promise<FakeUpstream> {
  const upstream: FakeUpstream = { url: "", behaviour, requests: [], cutOff: 0, close: () => server.close() };
  const server = await startLoopbackServer((req, body, res) => {
    res.setHeader("content-type", "application/json");
    if (req.method === "GET" && req.url === "/v1/models") {
      res.end(JSON.stringify({ object: "list", data: [{ id: MODEL, object: "model", created: 0, owned_by: "test" }] }));
      return;
    }
    if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
      res.statusCode = 404;
      res.end(JSON.stringify({ error: { message: "not found", type: "invalid_request_error" } }));
      return;
    }
    upstream.requests.push(JSON.parse(body.toString("utf8")));
    res.on("close", () => {
      if (!res.writableFinished) upstream.cutOff++;
    });
    const b = upstream.behaviour;
    if (b.kind === "error") {
      res.statusCode = b.status;
      res.end(JSON.stringify({ error: { message: b.message, type: "invalid_request_error", param: null, code: null } }));
      return;
    }
    res.setHeader("content-type", "text/event-stream");
    if (b.kind === "hang-after-first") {
      res.write(sse(delta(b.piece))); // then nothing, until the client goes away
      return;
    }
    for (const piece of b.pieces) res.write(sse(delta(piece)));
    res.write(sse(delta(null, "stop")));
    res.write(sse({ ...delta(null), choices: [], usage: { prompt_tokens: 601, completion_tokens: b.pieces.length, total_tokens: 601 + b.pieces.length } }));
    res.end("data: [DONE]\n\n");
  });
  upstream.url = server.url;
  return upstream;
}

const cleanups: Array<() => Promise<unknown>> = [];
after(() => Promise.all(cleanups.splice(0).map((c) => c())));

async function setup(behaviour: Behaviour) {
  const upstream = await startUpstream(behaviour);
  cleanups.push(() => upstream.close());
  const { app, controller } = buildControllerApp({ workerTimeoutMs: 5000 });
  const controllerUrl = await listen(app, "127.0.0.1", 0);
  cleanups.push(() => app.close());
  const logged: string[] = [];
  const engine = new OpenAIEngine({ apiBase: `${upstream.url}/v1`, model: MODEL, apiKey: "sk-test" });
  const w = await startWorker({ engine, modelName: MODEL, host: "127.0.0.1", port: 0, controllerUrl, log: (l) => logged.push(l) });
  cleanups.push(() => w.close());
  return { upstream, controllerUrl, controller, engine, w, logged };
}

test("a request through the controller becomes one streamed chat completion, answered as the reference's cumulative chunks", async () => {
  const { upstream, controllerUrl, w } = await setup({ kind: "stream", pieces: ["A", " gradient", "."] });
  assert.deepEqual((await post(`${controllerUrl}/list_models`)).json, { models: [MODEL] });
  const body = { model: MODEL, prompt: PROMPT, images: [IMAGE_B64], temperature: 0.0005, top_p: 0.7, max_new_tokens: 5000, stop: "</s>" };
  const chunks = await streamJson(`${controllerUrl}/worker_generate_stream`, body);
  assert.deepEqual(chunks.map((c) => c.text), [PROMPT + "A", PROMPT + "A gradient", PROMPT + "A gradient.", PROMPT + "A gradient."]);
  assertCumulative(chunks, PROMPT);
  assert.deepEqual(chunks.at(-1), { text: PROMPT + "A gradient.", error_code: 0, finish_reason: "stop", usage: { prompt_tokens: 601, completion_tokens: 3 } });

  assert.equal(upstream.requests.length, 1);
  const { messages, ...rest } = upstream.requests[0] as { messages: Array<{ role: string; content: Array<Record<string, unknown>> }> };
  assert.deepEqual(rest, { model: MODEL, stream: true, stream_options: { include_usage: true }, max_tokens: 1024, temperature: 0, top_p: 0.7, stop: ["</s>"] });
  assert.equal(messages.length, 1);
  assert.equal(messages[0].role, "user");
  const [before, image, afterImage] = messages[0].content;
  assert.deepEqual(before, { type: "text", text: "A chat between a curious human and an artificial intelligence assistant. USER:" });
  assert.deepEqual(afterImage, { type: "text", text: "What is shown? ASSISTANT:" });
  const url = (image as { type: string; image_url: { url: string } }).image_url.url;
  assert.equal(image.type, "image_url");
  assert.match(url, /^data:image\/png;base64,/);
  assert.deepEqual(await loadImage(url), await loadImage(IMAGE_FILE), "the image reaches the upstream pixel for pixel");
  assert.deepEqual((await post(`${w.url}/worker_get_status`)).json, { model_names: [MODEL], speed: 1, queue_length: 0 });
});

test("an upstream error is one error chunk with code 1, the upstream's message on the log", async () => {
  const { controllerUrl, w, logged } = await setup({ kind: "error", status: 400, message: "This model's maximum context length is 4096 tokens" });
  const chunks = await streamJson(`${controllerUrl}/worker_generate_stream`, { model: MODEL, prompt: "USER: Hi ASSISTANT:" });
  assert.deepEqual(chunks, [{ text: SERVER_ERROR_MSG, error_code: 1 }]);
  assert.equal(logged.filter((l) => l.startsWith("generation failed")).length, 1);
  assert.match(logged.find((l) => l.startsWith("generation failed"))!, /400 .*maximum context length is 4096 tokens/);
  assert.equal(w.worker.queueLength, 0);
});

test("a client that goes away mid-stream cancels the upstream request and leaves the queue", async () => {
  const { upstream, w } = await setup({ kind: "hang-after-first", piece: "Hel" });
  const gone = new AbortController();
  const res = await fetch(`${w.url}/worker_generate_stream`, { method: "POST", body: JSON.stringify({ prompt: "USER: Hi ASSISTANT:" }), signal: gone.signal });
  const reader = res.body!.getReader();
  assert.equal(Buffer.from((await reader.read()).value!).toString("utf8"), '{"text": "USER: Hi ASSISTANT:Hel", "error_code": 0}\0');
  assert.equal(w.worker.queueLength, 1);
  gone.abort();
  await waitFor("the upstream request to be cut off", () => upstream.cutOff === 1);
  await waitFor("the queue to empty", () => w.worker.queueLength === 0);
});

test("the upstream's models are checked at start; the prompt's pieces and images interleave as the SGLang worker does", async () => {
  const upstream = await startUpstream({ kind: "stream", pieces: [] });
  cleanups.push(() => upstream.close());
  const warnings: string[] = [];
  await new OpenAIEngine({ apiBase: `${upstream.url}/v1`, model: MODEL }).check((l) => warnings.push(l));
  assert.equal(warnings.length, 0);
  await new OpenAIEngine({ apiBase: `${upstream.url}/v1`, model: "other" }).check((l) => warnings.push(l));
  assert.match(warnings[0], /does not list the model "other" \(it lists: upstream-llava\)/);
  await assert.rejects(new OpenAIEngine({ apiBase: "http://127.0.0.1:1/v1", model: MODEL }).check(() => {}), /cannot list the models of http:\/\/127\.0\.0\.1:1\/v1/);

  assert.deepEqual(chatContent("<image>\nA <image>\nB<image>", ["u1", "u2", "u3"]), [
    { type: "image_url", image_url: { url: "u1" } },
    { type: "text", text: "\nA" },
    { type: "image_url", image_url: { url: "u2" } },
    { type: "text", text: "B" },
    { type: "image_url", image_url: { url: "u3" } },
  ]);
  assert.throws(() => chatContent("<image>", []), /0 images for 1 <image> markers/);
});

test("llava serve openai-worker registers with the controller and relays the upstream's answer", async () => {
  const upstream = await startUpstream({ kind: "stream", pieces: ["Hi", "!"] });
  cleanups.push(() => upstream.close());
  const { app, controller } = buildControllerApp({ workerTimeoutMs: 5000 });
  const controllerUrl = await listen(app, "127.0.0.1", 0);
  cleanups.push(() => app.close());
  const server = await spawnServer(["serve", "openai-worker", "--api-base", `${upstream.url}/v1`, "--model", MODEL, "--api-key", "sk-test", "--controller-address", controllerUrl, "--host", "127.0.0.1", "--port", "0"]);
  try {
    assert.ok(controller.workers.has(server.url), server.stderr());
    const chunks = await streamJson(`${controllerUrl}/worker_generate_stream`, { model: MODEL, prompt: "USER: Hello ASSISTANT:", temperature: 0 });
    assert.equal(assertCumulative(chunks, "USER: Hello ASSISTANT:"), "USER: Hello ASSISTANT:Hi!");
    assert.equal(upstream.requests.length, 1);
    server.kill("SIGTERM");
    assert.equal(await server.exited, 0, server.stderr());
  } finally {
    server.kill("SIGKILL");
  }
});
