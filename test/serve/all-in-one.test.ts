/**
 * `llava serve`, the whole stack in one process on one port, with the tiny fixture model: the
 * official OpenAI and Ollama clients, the reference protocol through its controller, the web UI,
 * another worker joining its controller, an OpenAI-backed worker fronting it, and the command's
 * graceful stop.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import { Ollama } from "ollama";
import { startAllInOne, type AllInOne } from "../../src/serve/all-in-one.js";
import { buildControllerApp } from "../../src/serve/controller-http.js";
import { BatchEngine } from "../../src/serve/batch-engine.js";
import { listen } from "../../src/serve/http-app.js";
import { OpenAIEngine } from "../../src/serve/openai-worker.js";
import type { StreamChunk } from "../../src/serve/protocol.js";
import { startWorker } from "../../src/serve/worker-http.js";
import { answerGeneration } from "../../src/llava/pipeline.js";
import { GRADIENT_PROMPT, IMAGE_BASE64, IMAGE_DATA_URL, MODEL, tinyModel, WatchedEngine } from "../helpers/api-server.js";
import { post, startFakeWorker } from "../helpers/fake-worker.js";
import { MODELS } from "../helpers/paths.js";
import { assertCumulative, spawnServer, streamJson, waitFor } from "../helpers/worker-client.js";

const QUESTION = "What is shown?";
let server: AllInOne;
let engine: WatchedEngine;
let logDir: string;
/** the greedy 12-token answer to the fixture prompt with the gradient image, and its counts */
let expected: { text: string; promptTokens: number };
const cleanups: Array<() => Promise<unknown>> = [];

before(async () => {
  const { loaded, image } = await tinyModel();
  const generation = answerGeneration(loaded, GRADIENT_PROMPT, [image], { maxNewTokens: 12 });
  await generation.complete();
  expected = { text: generation.text, promptTokens: generation.promptTokens };
  logDir = fs.mkdtempSync(path.join(os.tmpdir(), "llava-all-in-one-"));
  engine = new WatchedEngine(new BatchEngine(loaded));
  server = await startAllInOne({ engine, modelName: MODEL, host: "127.0.0.1", port: 0, api: {}, web: { logDir } });
});
after(async () => {
  await Promise.all(cleanups.splice(0).map((c) => c()));
  await server.close();
  fs.rmSync(logDir, { recursive: true, force: true });
});

test("one port serves the OpenAI API from the model's own engine, with its exact counts", async () => {
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0 });
  assert.deepEqual((await client.models.list()).data.map((m) => m.id), [MODEL]);
  const answer = await client.chat.completions.create({
    model: MODEL,
    temperature: 0,
    max_tokens: 12,
    messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: IMAGE_DATA_URL } }, { type: "text", text: QUESTION }] }],
  });
  assert.equal(answer.choices[0].message.content, expected.text);
  assert.deepEqual(answer.usage && [answer.usage.prompt_tokens, answer.usage.completion_tokens], [expected.promptTokens, 12]);

  const ollama = new Ollama({ host: server.url });
  assert.deepEqual((await ollama.list()).models.map((m) => m.name), [MODEL]);
  const reply = await ollama.chat({ model: MODEL, stream: false, options: { temperature: 0, num_predict: 12 }, messages: [{ role: "user", content: QUESTION, images: [IMAGE_BASE64] }] });
  assert.equal(reply.message.content, expected.text);
});

test("the reference protocol: the controller lists the embedded worker and relays its stream", async () => {
  assert.deepEqual((await post(`${server.url}/list_models`)).json, { models: [MODEL] });
  assert.deepEqual((await post(`${server.url}/get_worker_address`, { model: MODEL })).json, { address: `${server.url}/worker` });
  const request = { model: MODEL, prompt: GRADIENT_PROMPT, images: [IMAGE_BASE64], temperature: 0, max_new_tokens: 12 };
  const chunks = await streamJson(`${server.url}/worker_generate_stream`, request);
  assert.equal(assertCumulative(chunks, GRADIENT_PROMPT), GRADIENT_PROMPT + expected.text);
  assert.deepEqual(chunks.at(-1)?.usage, { prompt_tokens: expected.promptTokens, completion_tokens: 12 });
});

test("the web UI's page and its model list come from the same port", async () => {
  const page = await fetch(server.url);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<html/i);
  const config = (await (await fetch(`${server.url}/api/web/config`)).json()) as { models: string[] };
  assert.deepEqual(config.models, [MODEL]);
});

test("a worker that registers with the embedded controller is served by the APIs too", async () => {
  const fake = await startFakeWorker(["other-model"], { kind: "answer", pieces: ["Hel", "lo"] });
  cleanups.push(() => fake.close());
  await post(`${server.url}/register_worker`, { worker_name: fake.url, check_heart_beat: false, worker_status: fake.status });
  try {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0 });
    assert.deepEqual((await client.models.list()).data.map((m) => m.id).sort(), [MODEL, "other-model"].sort());
    const answer = await client.chat.completions.create({ model: "other-model", messages: [{ role: "user", content: "Hi" }] });
    assert.equal(answer.choices[0].message.content, "Hello");
    assert.equal(fake.requests.length, 1);
  } finally {
    server.controller.workers.delete(fake.url);
  }
});

test("an OpenAI-backed worker fronting llava serve streams the reference protocol through another controller", async () => {
  const { app, controller } = buildControllerApp();
  const controllerUrl = await listen(app, "127.0.0.1", 0);
  cleanups.push(() => app.close());
  const fronting = await startWorker({
    engine: new OpenAIEngine({ apiBase: `${server.url}/v1`, model: MODEL, apiKey: "none" }),
    modelName: "fronted",
    host: "127.0.0.1",
    port: 0,
    controllerUrl,
  });
  cleanups.push(() => fronting.close());
  assert.deepEqual(controller.listModels(), ["fronted"]);
  const before = engine.outcomes.length;
  const prompt = "USER: <image>\nWhat is shown? ASSISTANT:";
  const chunks: StreamChunk[] = await streamJson(`${controllerUrl}/worker_generate_stream`, { model: "fronted", prompt, images: [IMAGE_BASE64], temperature: 0, max_new_tokens: 5 });
  const text = assertCumulative(chunks, prompt);
  assert.ok(text.length > prompt.length, "an answer came back");
  await waitFor("the upstream request to end", () => engine.outcomes.length > before);
  assert.equal(engine.outcomes.at(-1), "done");
});

test("llava serve: one command prints the URL, and SIGTERM lets the answer in flight end", async () => {
  const child = await spawnServer(["serve", "--model-path", path.join(MODELS, "tiny-llava-1.5-mha"), "--port", "0", "--log-dir", logDir]);
  try {
    assert.match(child.stderr(), /serve: OpenAI API at http:\/\/127\.0\.0\.1:\d+\/v1, Ollama API at .*\/api\n/);
    const res = await fetch(`${child.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny-llava-1.5-mha", stream: true, temperature: 0, max_tokens: 150, messages: [{ role: "user", content: "Hello" }] }),
    });
    const reader = res.body!.getReader();
    await reader.read(); // the stream has started
    child.kill("SIGTERM");
    let text = "";
    for (let r = await reader.read(); !r.done; r = await reader.read()) text += Buffer.from(r.value).toString("utf8");
    assert.match(text, /data: \[DONE\]\n\n$/, "the stream ran to its end");
    assert.equal(await child.exited, 0, child.stderr());
    assert.match(child.stderr(), /serve: stopped\n$/);
  } finally {
    child.kill("SIGKILL");
  }
});
