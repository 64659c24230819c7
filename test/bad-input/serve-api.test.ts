/**
 * Bad input to the OpenAI and Ollama APIs: each is refused with a 4xx (503 + Retry-After when
 * busy) and one clear line in the API's own error format, and the server keeps serving; a client
 * that goes away mid-answer takes its request out of the engine.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { encodePng } from "../../src/image/decode.js";
import { IMAGE_BASE64, IMAGE_DATA_URL, MODEL, eventually, startApiServer } from "../helpers/api-server.js";
import { assertCleanError, llava } from "../helpers/cli.js";

const server = await startApiServer();
after(() => server.close());

const user = (content: unknown) => [{ role: "user", content }];
const chat = (extra: object) => JSON.stringify({ model: MODEL, max_tokens: 2, messages: user("hi"), ...extra });

async function send(url: string, path: string, body: string | undefined, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}${path}`, { method: "POST", body, headers: { "content-type": "application/json", ...headers }, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, headers: res.headers, json: (await res.json()) as { error: { message: string; type: string; code: string | null } } };
}

/** Asserts an OpenAI error object with one line matching `message`, then that the server at `url` still answers. */
async function assertOpenAiError(r: Awaited<ReturnType<typeof send>>, status: number, message: RegExp, url: string | null = server.url): Promise<void> {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.match(r.json.error.message, message);
  assert.doesNotMatch(r.json.error.message, /\n/);
  assert.equal(r.json.error.type, status < 500 ? "invalid_request_error" : "server_error");
  if (url !== null) assert.equal((await send(url, "/v1/chat/completions", chat({}))).status, 200, "the server keeps serving");
}

const tinyPng = (await encodePng({ width: 8, height: 8, data: new Uint8Array(8 * 8 * 3).fill(200) })).toString("base64");

test("malformed and mistyped chat completion requests get a 400 naming the problem", async () => {
  const cases: Array<[string | undefined, RegExp]> = [
    ["{not json", /not valid JSON/],
    [undefined, /body: .*expected object/],
    ["[1]", /expected object/],
    [JSON.stringify({ messages: user("hi") }), /model/],
    [chat({ messages: "hi" }), /messages/],
    [chat({ messages: [] }), /messages/],
    [chat({ messages: [{ role: "tool", content: "x" }] }), /messages\.0\.role/],
    [chat({ messages: user([{ type: "input_audio", input_audio: {} }]) }), /messages\.0\.content/],
    [chat({ temperature: "hot" }), /temperature/],
    [chat({ temperature: 3 }), /temperature/],
    [chat({ max_tokens: 0 }), /max_tokens/],
    [chat({ max_completion_tokens: 1.5 }), /max_completion_tokens/],
    [chat({ stop: 7 }), /stop/],
    [chat({ n: 2 }), /n: only n = 1 is supported/],
    [chat({ messages: [{ role: "assistant", content: "hello" }] }), /must start with a user message/],
    [chat({ messages: [...user("hi"), { role: "assistant", content: "hello" }] }), /last message must be the user's/],
  ];
  for (const [body, message] of cases) await assertOpenAiError(await send(server.url, "/v1/chat/completions", body), 400, message);
  const missing = await send(server.url, "/v1/chat/completions", chat({ model: "gpt-4o" }));
  assert.equal(missing.json.error.code, "model_not_found");
  await assertOpenAiError(missing, 404, /"gpt-4o" is not served/);
  await assertOpenAiError(await send(server.url, "/v1/embeddings", "{}"), 404, /no route/);
});

test("bad images: not an image, undecodable, a bad scheme, oversized, too many for the context", async () => {
  const image = (url: string) => chat({ messages: user([{ type: "image_url", image_url: { url } }, { type: "text", text: "what?" }]) });
  await assertOpenAiError(await send(server.url, "/v1/chat/completions", image("data:text/plain;base64,aGVsbG8=")), 400, /image_url: data URL is not an image/);
  await assertOpenAiError(await send(server.url, "/v1/chat/completions", image("data:image/png;base64,bm90IGEgcG5nIGF0IGFsbA==")), 400, /image_url: cannot decode/);
  await assertOpenAiError(await send(server.url, "/v1/chat/completions", image("file:///etc/passwd")), 400, /expected a data: or http\(s\): URL/);
  const many = chat({ messages: user([...Array(40).fill({ type: "image_url", image_url: { url: `data:image/png;base64,${tinyPng}` } }), { type: "text", text: "compare" }]) });
  const tooMany = await send(server.url, "/v1/chat/completions", many);
  assert.equal(tooMany.json.error.code, "context_length_exceeded");
  await assertOpenAiError(tooMany, 400, /the prompt fills \d+ positions .* context holds 512/);
  process.env.LLAVA_MAX_IMAGE_PIXELS = "100";
  try {
    await assertOpenAiError(await send(server.url, "/v1/chat/completions", many), 400, /content\.1\.image_url: 8x8 is 64 pixels, over the limit of 36 pixels per request/);
  } finally {
    delete process.env.LLAVA_MAX_IMAGE_PIXELS;
  }
  const long = await send(server.url, "/v1/chat/completions", chat({ messages: user("word ".repeat(3000)) }));
  assert.equal(long.json.error.code, "context_length_exceeded");

  const small = await startApiServer({ maxImageBytes: 1000 });
  try {
    await assertOpenAiError(await send(small.url, "/v1/chat/completions", image(IMAGE_DATA_URL)), 413, /bytes is over the limit of 1000 bytes per image/, small.url);
    const r = await fetch(`${small.url}/api/chat`, { method: "POST", body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "x", images: [IMAGE_BASE64] }] }) });
    assert.equal(r.status, 413);
    assert.match(((await r.json()) as { error: string }).error, /messages\.0\.images\.0: .* over the limit/);
  } finally {
    await small.close();
  }
});

test("image URLs: a loopback address is refused unless allowed; a server that never answers times out", async () => {
  const png = Buffer.from(tinyPng, "base64");
  const images = http.createServer((req, res) => {
    if (req.url === "/hang") return; // never answers
    if (req.url === "/redirect") return res.writeHead(302, { location: "/image.png" }).end();
    if (req.url === "/missing") return res.writeHead(404).end();
    if (req.url === "/big") return res.writeHead(200, { "content-length": 5000 }).end(Buffer.alloc(5000));
    if (req.url === "/big-chunked") {
      res.writeHead(200);
      for (let i = 0; i < 5; i++) res.write(Buffer.alloc(1000));
      return res.end();
    }
    res.writeHead(200, { "content-type": "image/png" }).end(png);
  });
  await new Promise<void>((resolve) => images.listen(0, "127.0.0.1", resolve));
  const port = (images.address() as AddressInfo).port;
  const image = (url: string) => chat({ messages: user([{ type: "image_url", image_url: { url } }]) });
  const open = await startApiServer({ allowPrivateUrls: true, imageUrlTimeoutMs: 300, maxImageBytes: 1000 });
  try {
    await assertOpenAiError(await send(server.url, "/v1/chat/completions", image(`http://127.0.0.1:${port}/image.png`)), 400, /127\.0\.0\.1 is a private address/);
    await assertOpenAiError(await send(server.url, "/v1/chat/completions", image(`http://[::ffff:127.0.0.1]:${port}/image.png`)), 400, /is a private address/);
    await assertOpenAiError(await send(server.url, "/v1/chat/completions", image(`http://localhost:${port}/image.png`)), 400, /localhost resolves to the private address/);
    for (const path of ["/image.png", "/redirect"]) assert.equal((await send(open.url, "/v1/chat/completions", image(`http://localhost:${port}${path}`))).status, 200, path);
    for (const path of ["/big", "/big-chunked"]) await assertOpenAiError(await send(open.url, "/v1/chat/completions", image(`http://localhost:${port}${path}`)), 413, /over the limit of 1000 bytes per image/, open.url);
    await assertOpenAiError(await send(open.url, "/v1/chat/completions", image(`http://localhost:${port}/missing`)), 400, /the image server answered HTTP 404/, open.url);
    const started = Date.now();
    await assertOpenAiError(await send(open.url, "/v1/chat/completions", image(`http://127.0.0.1:${port}/hang`)), 400, /did not arrive within 300 ms/, open.url);
    assert.ok(Date.now() - started < 5000);
  } finally {
    images.closeAllConnections();
    images.close();
    await open.close();
  }
});

test("a bad API key is a 401 on both APIs", async () => {
  const guarded = await startApiServer({ apiKey: "right" });
  try {
    for (const auth of [undefined, "Bearer wrong", "right", "Bearer righter"]) {
      const headers: Record<string, string> = auth ? { authorization: auth } : {};
      const refused = await send(guarded.url, "/v1/chat/completions", chat({}), headers);
      assert.equal(refused.json.error.code, "invalid_api_key");
      await assertOpenAiError(refused, 401, /valid API key is required/, null);
      const tags = await fetch(`${guarded.url}/api/tags`, { headers });
      assert.equal(tags.status, 401);
      assert.match(((await tags.json()) as { error: string }).error, /API key/);
    }
    assert.equal((await send(guarded.url, "/v1/chat/completions", chat({}), { authorization: "Bearer right" })).status, 200);
  } finally {
    await guarded.close();
  }
});

test("Ollama: bad JSON, fields, images, marker counts and models get {error} with a 4xx", async () => {
  const cases: Array<[string, string, number, RegExp]> = [
    ["/api/chat", "{oops", 400, /not valid JSON/],
    ["/api/chat", JSON.stringify({ model: MODEL, messages: "hi" }), 400, /messages/],
    ["/api/chat", JSON.stringify({ model: MODEL, messages: [{ role: "user", content: 5 }] }), 400, /messages\.0\.content/],
    ["/api/chat", JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "x" }], options: { temperature: "warm" } }), 400, /options\.temperature/],
    ["/api/chat", JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "x", images: ["bm90IGFuIGltYWdl"] }] }), 400, /messages\.0\.images\.0: cannot decode/],
    ["/api/generate", JSON.stringify({ model: MODEL, prompt: "<image>\nwhat?", raw: true, images: [tinyPng, tinyPng] }), 400, /1 image marker\(s\) but 2 image\(s\)/],
    ["/api/generate", JSON.stringify({ model: "llama3", prompt: "x" }), 404, /"llama3" is not served/],
    ["/api/show", JSON.stringify({ model: "llama3" }), 404, /llama3/],
    ["/api/pull", JSON.stringify({ model: "llama3" }), 404, /no route/],
  ];
  for (const [path, body, status, message] of cases) {
    const res = await fetch(`${server.url}${path}`, { method: "POST", body, signal: AbortSignal.timeout(10_000) });
    assert.equal(res.status, status, `${path} ${body}`);
    const json = (await res.json()) as { error: string };
    assert.match(json.error, message);
    assert.doesNotMatch(json.error, /\n/);
  }
  const ok = await fetch(`${server.url}/api/generate`, { method: "POST", body: JSON.stringify({ model: MODEL, prompt: "x", stream: false, options: { num_predict: 1 } }) });
  assert.equal(ok.status, 200, "the server keeps serving");
});

/** Starts a streamed request, reads its first bytes, then goes away. */
async function leaveMidStream(url: string, path: string, body: object): Promise<void> {
  const abort = new AbortController();
  const res = await fetch(`${url}${path}`, { method: "POST", body: JSON.stringify(body), signal: abort.signal });
  assert.equal(res.status, 200);
  await res.body!.getReader().read();
  abort.abort();
}

test("a client that goes away mid-answer ends its request: the engine's queue is empty again, and nothing is logged as a failure", async () => {
  const logged: string[] = [];
  const watched = await startApiServer({ log: (line) => logged.push(line) });
  const { engine } = watched;
  const long = { model: MODEL, messages: user("Tell me a long story."), stream: true, temperature: 0 };
  const leaveWhole = async (path: string, body: object) => {
    const abort = new AbortController();
    const res = fetch(`${watched.url}${path}`, { method: "POST", body: JSON.stringify(body), signal: abort.signal }).catch(() => undefined);
    await eventually(() => engine.queueLength > 0, "the answer starts");
    abort.abort();
    await res;
  };
  const ways: Array<() => Promise<void>> = [
    () => leaveMidStream(watched.url, "/v1/chat/completions", long),
    () => leaveMidStream(watched.url, "/api/chat", { ...long, options: { temperature: 0 } }),
    () => leaveWhole("/v1/chat/completions", { ...long, stream: false }),
    () => leaveWhole("/api/generate", { model: MODEL, prompt: "Tell me a long story.", stream: false, options: { temperature: 0 } }),
  ];
  try {
    for (const leave of ways) {
      const before = engine.outcomes.length;
      await leave();
      await eventually(() => engine.outcomes.length > before && engine.queueLength === 0, "the request leaves the engine");
      assert.equal(engine.outcomes[before], "the client went away", "the answer was cut short, not finished");
    }
    assert.equal((await send(watched.url, "/v1/chat/completions", chat({}))).status, 200);
    assert.deepEqual(logged, []);
  } finally {
    await watched.close();
  }
});

test("a full queue is a 503 with Retry-After", async () => {
  const busy = await startApiServer({ engine: { maxBatch: 1, maxQueue: 0 } });
  try {
    const abort = new AbortController();
    const res = await fetch(`${busy.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: MODEL, messages: user("Tell me a long story."), stream: true, temperature: 0 }), signal: abort.signal });
    const reader = res.body!.getReader();
    await reader.read();
    const refused = await send(busy.url, "/v1/chat/completions", chat({}));
    assert.equal(refused.status, 503);
    assert.match(refused.headers.get("retry-after") ?? "", /^\d+$/);
    assert.match(refused.json.error.message, /busy/);
    const ollama = await fetch(`${busy.url}/api/generate`, { method: "POST", body: JSON.stringify({ model: MODEL, prompt: "x" }) });
    assert.equal(ollama.status, 503);
    abort.abort();
    await eventually(() => busy.engine.queueLength === 0, "the first request ends");
    assert.equal((await send(busy.url, "/v1/chat/completions", chat({}))).status, 200);
  } finally {
    await busy.close();
  }
});

test("1,000 concurrent connections are each answered, 200 or 503 with Retry-After, and the server keeps serving", async () => {
  const crowded = await startApiServer({ engine: { maxBatch: 8, maxQueue: 8 } });
  try {
    const agent = new http.Agent({ maxSockets: Infinity });
    const one = () =>
      new Promise<{ status: number; retryAfter?: string; body: string }>((resolve, reject) => {
        const req = http.request(`${crowded.url}/v1/chat/completions`, { method: "POST", agent, headers: { "content-type": "application/json" } }, (res) => {
          let body = "";
          res.on("data", (d: Buffer) => (body += d.toString("utf8")));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] as string | undefined, body }));
        });
        req.setTimeout(60_000, () => req.destroy(new Error("no answer within 60 s")));
        req.on("error", reject);
        req.end(chat({ temperature: 0 }));
      });
    const answers = await Promise.all(Array.from({ length: 1000 }, one));
    const served = answers.filter((a) => a.status === 200);
    const refused = answers.filter((a) => a.status === 503);
    assert.equal(served.length + refused.length, 1000, `other statuses: ${[...new Set(answers.map((a) => a.status))].join(", ")}`);
    assert.ok(served.length >= 8, `at least a batch was served (${served.length})`);
    for (const r of refused) {
      assert.match(r.retryAfter ?? "", /^\d+$/);
      assert.match(JSON.parse(r.body).error.message, /busy/);
    }
    assert.equal(JSON.parse(served[0].body).choices[0].message.role, "assistant");
    agent.destroy();
    await eventually(() => crowded.engine.queueLength === 0, "the crowd is served", 30_000);
    assert.equal((await send(crowded.url, "/v1/chat/completions", chat({}))).status, 200);
  } finally {
    await crowded.close();
  }
});

test("bad command lines for the APIs are refused with one line", () => {
  assertCleanError(llava(["serve", "controller", "--api-key", " "]), /--api-key must not be empty/);
  assertCleanError(llava(["serve", "controller", "--cors-origin"]), /serve controller: Option '--cors-origin <value>' argument missing/);
  assertCleanError(llava(["serve", "controller", "--allow-private-urls=yes"]), /allow-private-urls/);
});
