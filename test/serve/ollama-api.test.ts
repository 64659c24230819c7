/**
 * Ollama's API through the official `ollama` client: chat and generate with base64 images,
 * streamed and whole, counts equal to the generation loop's; and the workers of a controller.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { Ollama } from "ollama";
import { answerGeneration } from "../../src/llava/pipeline.js";
import { controllerBackend } from "../../src/serve/chat-backend.js";
import { renderChat } from "../../src/serve/chat-prompt.js";
import { buildControllerApp } from "../../src/serve/controller-http.js";
import { listen } from "../../src/serve/http-app.js";
import { registerOllamaApi } from "../../src/serve/ollama-api.js";
import { GRADIENT_PROMPT, IMAGE_BASE64, IMAGE_PATH, MODEL, startApiServer, tinyModel } from "../helpers/api-server.js";
import { startFakeWorker } from "../helpers/fake-worker.js";

const { loaded, image } = await tinyModel();
const server = await startApiServer();
after(() => server.close());
const ollama = new Ollama({ host: server.url });
const greedy = { temperature: 0, num_predict: 12 };

async function expected(prompt: string, images = [image], maxNewTokens = 12, stop = ["</s>"]) {
  const generation = answerGeneration(loaded, prompt, images, { maxNewTokens, temperature: 0, stop });
  await generation.complete();
  return { text: generation.text, promptTokens: generation.promptTokens, completionTokens: generation.tokens.length };
}

test("tags, version and show describe the served model", async () => {
  const { models } = await ollama.list();
  assert.deepEqual(models.map((m) => m.name), [MODEL]);
  assert.match((await ollama.version()).version, /^\d+\.\d+\.\d+$/);
  const shown = await ollama.show({ model: `${MODEL}:latest` });
  assert.equal(shown.template, "llava_v1");
  assert.ok(shown.capabilities.includes("vision"));
});

test("chat with a base64 image, whole and streamed, equals the generation loop's answer with its counts", async () => {
  const want = await expected(GRADIENT_PROMPT);
  const messages = [{ role: "user", content: "What is shown?", images: [IMAGE_BASE64] }];
  const whole = await ollama.chat({ model: MODEL, messages, options: greedy });
  assert.equal(whole.message.role, "assistant");
  assert.equal(whole.message.content, want.text);
  assert.deepEqual([whole.done, whole.done_reason, whole.prompt_eval_count, whole.eval_count], [true, "length", want.promptTokens, want.completionTokens]);
  for (const d of [whole.total_duration, whole.prompt_eval_duration, whole.eval_duration]) assert.ok(Number.isInteger(d) && d > 0, "durations in ns");
  assert.ok(whole.total_duration >= whole.prompt_eval_duration + whole.eval_duration);

  // a file path is read and sent as base64 by the client
  const parts = await ollama.chat({ model: MODEL, messages: [{ ...messages[0], images: [IMAGE_PATH] }], options: greedy, stream: true });
  const chunks = [];
  for await (const part of parts) chunks.push(part);
  assert.equal(chunks.map((c) => c.message.content).join(""), want.text);
  assert.ok(chunks.length >= 4);
  assert.deepEqual(chunks.map((c) => c.done), [...Array(chunks.length - 1).fill(false), true]);
  assert.equal(chunks[chunks.length - 1].eval_count, want.completionTokens);
});

test("generate renders the prompt as one user turn (with the system text given), or takes it raw", async () => {
  const want = await expected(GRADIENT_PROMPT);
  const got = await ollama.generate({ model: MODEL, prompt: "What is shown?", images: [IMAGE_BASE64], options: greedy });
  assert.equal(got.response, want.text);
  assert.equal(got.prompt_eval_count, want.promptTokens);

  const system = "Be brief.";
  const withSystem = renderChat(MODEL, [{ role: "system", text: system, images: [] }, { role: "user", text: "hi", images: [] }]).prompt;
  assert.equal(withSystem, "Be brief. USER: hi ASSISTANT:");
  const short = await ollama.generate({ model: MODEL, prompt: "hi", system, options: { temperature: 0, num_predict: 5 } });
  assert.equal(short.response, (await expected(withSystem, [], 5)).text);

  const raw = await ollama.generate({ model: MODEL, prompt: GRADIENT_PROMPT, raw: true, images: [IMAGE_BASE64], options: greedy, stream: true });
  let text = "";
  for await (const part of raw) text += part.response;
  assert.equal(text, (await expected(GRADIENT_PROMPT, [image], 12, [])).text);
});

test("the options stop, seed and num_predict apply; the default stream is NDJSON", async () => {
  const prompt = renderChat(MODEL, [{ role: "user", text: "Tell me a joke.", images: [] }]).prompt;
  const want = await expected(prompt, [], 12);
  const stop = want.text.slice(5, 8);
  const got = await ollama.chat({ model: MODEL, messages: [{ role: "user", content: "Tell me a joke." }], options: { ...greedy, stop: [stop] } });
  assert.equal(got.message.content, want.text.slice(0, want.text.indexOf(stop)));
  assert.equal(got.done_reason, "stop");
  const sampled = () => ollama.chat({ model: MODEL, messages: [{ role: "user", content: "Tell me a joke." }], options: { seed: 99, num_predict: 8 } });
  assert.equal((await sampled()).message.content, (await sampled()).message.content);

  const res = await fetch(`${server.url}/api/generate`, { method: "POST", body: JSON.stringify({ model: MODEL, prompt: "hi", options: { num_predict: 3 } }) });
  assert.equal(res.headers.get("content-type"), "application/x-ndjson");
  const lines = (await res.text()).trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines[lines.length - 1].done, true);
  assert.equal(lines[lines.length - 1].eval_count, 3);
});

test("through a controller: the worker's cumulative text comes back as NDJSON pieces", async () => {
  const prompt = renderChat("llava-v1.5-7b", [{ role: "user", text: "What is shown?", images: [image] }]).prompt;
  const worker = await startFakeWorker(["llava-v1.5-7b"], { kind: "stream", texts: [prompt + "It", prompt + "It is", prompt + "It is red"] });
  const { app, controller } = buildControllerApp();
  await registerOllamaApi(app, controllerBackend(controller));
  const url = await listen(app, "127.0.0.1", 0);
  try {
    await controller.registerWorker(worker.url, true);
    const client = new Ollama({ host: url });
    assert.deepEqual((await client.list()).models.map((m) => m.name), ["llava-v1.5-7b"]);
    const parts = await client.chat({ model: "llava-v1.5-7b", messages: [{ role: "user", content: "What is shown?", images: [IMAGE_BASE64] }], stream: true, options: { num_predict: 3 } });
    const pieces: string[] = [];
    let last;
    for await (const part of parts) (pieces.push(part.message.content), (last = part));
    assert.deepEqual(pieces, ["It", " is", " red", ""]);
    assert.deepEqual([last?.done_reason, last?.eval_count], ["length", 3]);
    assert.equal((worker.requests[0] as { prompt: string }).prompt, prompt);
    await assert.rejects(client.chat({ model: "llava-v1.5-13b", messages: [{ role: "user", content: "x" }] }), (err: Error & { status_code?: number }) => err.status_code === 404 && /llava-v1.5-13b/.test(err.message));
  } finally {
    await app.close();
    await worker.close();
  }
});
