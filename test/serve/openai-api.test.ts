/**
 * The OpenAI-compatible API through the official `openai` client: the tiny model behind a serial
 * engine (answers and counts equal the generation loop's for the fixture's rendered prompt), and
 * the workers of a controller.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { answerGeneration } from "../../src/llava/pipeline.js";
import { loadImage } from "../../src/image/decode.js";
import { controllerBackend } from "../../src/serve/chat-backend.js";
import { PROMPT_TOO_LONG_MSG } from "../../src/serve/protocol.js";
import { renderChat } from "../../src/serve/chat-prompt.js";
import { buildControllerApp } from "../../src/serve/controller-http.js";
import { listen } from "../../src/serve/http-app.js";
import { registerOpenAiApi } from "../../src/serve/openai-api.js";
import { GRADIENT_PROMPT, IMAGE_DATA_URL, MODEL, startApiServer, tinyModel } from "../helpers/api-server.js";
import { spawnServer } from "../helpers/worker-client.js";
import { startFakeWorker, type FakeWorker } from "../helpers/fake-worker.js";

const { loaded, image } = await tinyModel();
const server = await startApiServer();
after(() => server.close());
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "unused", maxRetries: 0 });

/** The generation loop's own answer to `prompt`, greedy, with the template's stop string. */
async function expected(prompt: string, images = [image], maxNewTokens = 12) {
  const generation = answerGeneration(loaded, prompt, images, { maxNewTokens, temperature: 0, stop: ["</s>"] });
  await generation.complete();
  return { text: generation.text, promptTokens: generation.promptTokens, completionTokens: generation.tokens.length, finishReason: generation.finishReason };
}

const imageQuestion: OpenAI.ChatCompletionMessageParam[] = [
  { role: "user", content: [{ type: "image_url", image_url: { url: IMAGE_DATA_URL } }, { type: "text", text: "What is shown?" }] },
];

test("the model list names the served model", async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => [m.id, m.object]), [[MODEL, "model"]]);
  assert.equal((await client.models.retrieve(MODEL)).id, MODEL);
  await assert.rejects(client.models.retrieve("other"), (err: InstanceType<typeof OpenAI.APIError>) => err.status === 404 && err.code === "model_not_found");
});

test("a chat completion with an image equals the generation loop's answer to the fixture's prompt, usage included", async () => {
  assert.equal(renderChat(MODEL, [{ role: "user", text: "What is shown?", images: [image] }]).prompt, GRADIENT_PROMPT);
  const want = await expected(GRADIENT_PROMPT);
  const got = await client.chat.completions.create({ model: MODEL, messages: imageQuestion, temperature: 0, max_tokens: 12 });
  assert.equal(got.object, "chat.completion");
  assert.equal(got.choices.length, 1);
  assert.equal(got.choices[0].message.role, "assistant");
  assert.equal(got.choices[0].message.content, want.text);
  assert.equal(got.choices[0].finish_reason, want.finishReason === "length" ? "length" : "stop");
  assert.deepEqual(got.usage, { prompt_tokens: want.promptTokens, completion_tokens: want.completionTokens, total_tokens: want.promptTokens + want.completionTokens });
  assert.ok(want.text.length > 0 && want.promptTokens > 16, "the image's 16 features count as prompt tokens");
});

test("a streamed completion sends the role first, the same text in pieces, the finish reason, the usage when asked, and [DONE]", async () => {
  const want = await expected(GRADIENT_PROMPT, [image], 10);
  for (const includeUsage of [true, false]) {
    const stream = await client.chat.completions.create({ model: MODEL, messages: imageQuestion, temperature: 0, max_completion_tokens: 10, stream: true, stream_options: { include_usage: includeUsage } });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.equal(chunks[0].choices[0].delta.role, "assistant");
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
    const withChoice = chunks.filter((c) => c.choices.length > 0);
    assert.equal(withChoice.map((c) => c.choices[0].delta.content ?? "").join(""), want.text);
    assert.ok(withChoice.length >= 4, "the text comes in pieces");
    assert.deepEqual(withChoice.map((c) => c.choices[0].finish_reason), [...Array(withChoice.length - 1).fill(null), "length"]);
    const usage = chunks.filter((c) => c.usage);
    if (includeUsage) {
      assert.deepEqual(usage.map((c) => [c.choices.length, c.usage]), [[0, { prompt_tokens: want.promptTokens, completion_tokens: 10, total_tokens: want.promptTokens + 10 }]]);
      assert.equal(chunks[chunks.length - 1], usage[0], "usage comes last");
    } else assert.equal(usage.length, 0);
  }
  const raw = await fetch(`${server.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true }) });
  assert.match(raw.headers.get("content-type") ?? "", /^text\/event-stream/);
  assert.match(await raw.text(), /\n\ndata: \[DONE\]\n\n$/);
});

test("stop strings end the answer before them; a seed repeats a sampled answer; a system message replaces the template's", async () => {
  const textPrompt = renderChat(MODEL, [{ role: "user", text: "Tell me a joke.", images: [] }]).prompt;
  const want = await expected(textPrompt, [], 12);
  const stop = want.text.slice(6, 9);
  const cut = want.text.slice(0, want.text.indexOf(stop));
  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Tell me a joke." }];
  for (const stops of [stop, ["never there", stop]]) {
    const got = await client.chat.completions.create({ model: MODEL, messages, temperature: 0, max_tokens: 12, stop: stops });
    assert.equal(got.choices[0].message.content, cut);
    assert.equal(got.choices[0].finish_reason, "stop");
  }
  const sampled = () => client.chat.completions.create({ model: MODEL, messages, temperature: 1, top_p: 0.9, seed: 1234, max_tokens: 12 });
  const [a, b] = [await sampled(), await sampled()];
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.notEqual(a.choices[0].message.content, want.text, "sampling at temperature 1 leaves the greedy path");

  const system = "You describe images.";
  const withSystem = renderChat(MODEL, [{ role: "system", text: system, images: [] }, ...[{ role: "user" as const, text: "Tell me a joke.", images: [] }]]).prompt;
  assert.equal(withSystem, `${system} USER: Tell me a joke. ASSISTANT:`);
  const got = await client.chat.completions.create({ model: MODEL, messages: [{ role: "system", content: system }, ...messages], temperature: 0, max_tokens: 6 });
  assert.equal(got.choices[0].message.content, (await expected(withSystem, [], 6)).text);
});

test("a multi-turn chat renders every turn, each image at the start of its own turn", async () => {
  const second = await loadImage(IMAGE_DATA_URL);
  const turns = [
    { role: "user" as const, text: "What is shown?", images: [image] },
    { role: "assistant" as const, text: "A gradient.", images: [] },
    { role: "user" as const, text: "And here? <image>", images: [second] },
  ];
  const { prompt, images } = renderChat(MODEL, turns);
  assert.equal(prompt, `${GRADIENT_PROMPT} A gradient.</s>USER: <image>\nAnd here? ASSISTANT:`);
  assert.equal(images.length, 2);
  const got = await client.chat.completions.create({
    model: MODEL,
    temperature: 0,
    max_tokens: 5,
    messages: [...imageQuestion, { role: "assistant", content: "A gradient." }, { role: "user", content: [{ type: "text", text: "And here? <image>" }, { type: "image_url", image_url: { url: IMAGE_DATA_URL, detail: "auto" } }] }],
  });
  const want = await expected(prompt, images, 5);
  assert.equal(got.choices[0].message.content, want.text);
  assert.equal(got.usage?.prompt_tokens, want.promptTokens);
});

test("the API key is required on every endpoint when set, and CORS preflights pass without it", async () => {
  const guarded = await startApiServer({ apiKey: "sesame", corsOrigins: ["https://app.example"] });
  try {
    const good = new OpenAI({ baseURL: `${guarded.url}/v1`, apiKey: "sesame", maxRetries: 0 });
    const bad = new OpenAI({ baseURL: `${guarded.url}/v1`, apiKey: "wrong", maxRetries: 0 });
    assert.equal((await good.models.list()).data[0].id, MODEL);
    const got = await good.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    assert.equal(got.usage?.completion_tokens, 2);
    for (const call of [() => bad.models.list(), () => bad.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }] })]) {
      await assert.rejects(call(), (err: InstanceType<typeof OpenAI.APIError>) => err.status === 401 && err.code === "invalid_api_key" && /API key/.test(err.message));
    }
    const preflight = await fetch(`${guarded.url}/v1/chat/completions`, { method: "OPTIONS", headers: { origin: "https://app.example", "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" } });
    assert.ok(preflight.status < 300, `preflight status ${preflight.status}`);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "https://app.example");
    const listed = await fetch(`${guarded.url}/v1/models`, { headers: { origin: "https://app.example", authorization: "Bearer sesame" } });
    assert.equal(listed.headers.get("access-control-allow-origin"), "https://app.example");
    const other = await fetch(`${guarded.url}/v1/models`, { headers: { origin: "https://evil.example", authorization: "Bearer sesame" } });
    assert.equal(other.headers.get("access-control-allow-origin"), null);
  } finally {
    await guarded.close();
  }
});

/** A controller with one fake worker that answers the reference way: the prompt and the answer so far in every chunk. */
async function controllerWithWorker(texts: (prompt: string) => string[], prompt: string): Promise<{ url: string; worker: FakeWorker; close: () => Promise<void> }> {
  const worker = await startFakeWorker(["llava-v1.5-7b"], { kind: "stream", texts: texts(prompt) });
  const { app, controller } = buildControllerApp({ workerTimeoutMs: 2000 });
  await registerOpenAiApi(app, controllerBackend(controller, { workerTimeoutMs: 2000 }));
  const url = await listen(app, "127.0.0.1", 0);
  await controller.registerWorker(worker.url, true);
  return { url, worker, close: async () => (await app.close(), await worker.close()) };
}

test("through a controller: the worker gets the reference request (prompt, base64 PNG, stop) and its cumulative text comes back as deltas", async () => {
  const prompt = renderChat("llava-v1.5-7b", [{ role: "user", text: "What is shown?", images: [image] }]).prompt;
  const served = await controllerWithWorker((p) => [p + "A", p + "A grad", p + "A gradient.", p + "A gradient.</s>"], prompt);
  try {
    const c = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: "unused", maxRetries: 0 });
    assert.deepEqual((await c.models.list()).data.map((m) => m.id), ["llava-v1.5-7b"]);
    const got = await c.chat.completions.create({ model: "llava-v1.5-7b", messages: imageQuestion, temperature: 0.5, top_p: 0.7, max_tokens: 100 });
    assert.equal(got.choices[0].message.content, "A gradient.");
    assert.equal(got.choices[0].finish_reason, "stop");
    assert.equal(got.usage?.completion_tokens, 4);
    const sent = served.worker.requests[0] as { prompt: string; images: string[]; stop: string; temperature: number; top_p: number; max_new_tokens: number; model: string };
    assert.deepEqual([sent.model, sent.prompt, sent.stop, sent.temperature, sent.top_p, sent.max_new_tokens], ["llava-v1.5-7b", prompt, "</s>", 0.5, 0.7, 100]);
    const decoded = await loadImage(Buffer.from(sent.images[0], "base64"));
    assert.deepEqual([decoded.width, decoded.height], [image.width, image.height]);
    assert.ok(Buffer.from(decoded.data).equals(Buffer.from(image.data)), "the PNG carries the exact pixels");

    const stream = await c.chat.completions.create({ model: "llava-v1.5-7b", messages: imageQuestion, stream: true });
    const pieces: string[] = [];
    for await (const chunk of stream) pieces.push(chunk.choices[0]?.delta.content ?? "");
    assert.deepEqual(pieces.filter(Boolean), ["A", " grad", "ient."]);

    await assert.rejects(c.chat.completions.create({ model: "llava-v1.5-13b", messages: imageQuestion }), (err: InstanceType<typeof OpenAI.APIError>) => err.status === 404);
    served.worker.behaviour = { kind: "die-after-first", text: prompt + "A" };
    const broken = await c.chat.completions.create({ model: "llava-v1.5-7b", messages: imageQuestion, stream: true });
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const chunk of broken) seen.push(chunk.choices[0]?.delta.content ?? "");
      })(),
      (err: InstanceType<typeof OpenAI.APIError>) => /worker .* failed mid-answer/.test(err.message),
    );
    assert.deepEqual(seen, ["", "A"], "the text before the failure arrives, then the error event");
    served.worker.behaviour = { kind: "stream", texts: [prompt + PROMPT_TOO_LONG_MSG] };
    await assert.rejects(c.chat.completions.create({ model: "llava-v1.5-7b", messages: imageQuestion }), (err: InstanceType<typeof OpenAI.APIError>) => err.status === 400 && err.code === "context_length_exceeded");
    served.worker.behaviour = { kind: "status", code: 500 };
    await assert.rejects(c.chat.completions.create({ model: "llava-v1.5-7b", messages: imageQuestion }), (err: InstanceType<typeof OpenAI.APIError>) => err.status === 502 && /answered HTTP 500/.test(err.message));
    await served.worker.close();
    await assert.rejects(c.chat.completions.create({ model: "llava-v1.5-7b", messages: imageQuestion }), (err: InstanceType<typeof OpenAI.APIError>) => err.status === 502 && /cannot be reached/.test(err.message));
  } finally {
    await served.close();
  }
});

test("llava serve controller serves the APIs, with the API key it is given", async () => {
  const child = await spawnServer(["serve", "controller", "--host", "127.0.0.1", "--port", "0", "--api-key", "k1"]);
  try {
    const url = child.url;
    assert.deepEqual((await new OpenAI({ baseURL: `${url}/v1`, apiKey: "k1", maxRetries: 0 }).models.list()).data, []);
    assert.equal((await fetch(`${url}/api/tags`)).status, 401);
    assert.deepEqual(await (await fetch(`${url}/api/tags`, { headers: { authorization: "Bearer k1" } })).json(), { models: [] });
    child.kill("SIGTERM");
    assert.equal(await child.exited, 0, child.stderr());
  } finally {
    child.kill("SIGKILL");
  }
});
