/**
 * The controller over HTTP, on loopback, with fake workers that register, beat and stream as the
 * reference's workers do: every endpoint, both dispatch methods, a worker that stops beating, one
 * that fails mid-stream, and a client that goes away mid-stream.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { buildControllerApp, type ControllerHttpOptions } from "../../src/serve/controller-http.js";
import { SERVER_ERROR_MSG } from "../../src/serve/protocol.js";
import { lotteryPick } from "../../src/serve/controller.js";
import { listen } from "../../src/serve/http-app.js";
import { spawnServer } from "../helpers/worker-client.js";
import { type FakeWorker, post, startFakeWorker, streamChunks, workerChunk } from "../helpers/fake-worker.js";

const cleanups: Array<() => Promise<unknown>> = [];
after(() => Promise.all(cleanups.map((c) => c())));

async function startController(opts: ControllerHttpOptions = {}) {
  const { app, controller } = buildControllerApp({ workerTimeoutMs: 300, ...opts });
  const url = await listen(app, "127.0.0.1", 0);
  cleanups.push(() => app.close());
  return { url, controller };
}

async function worker(...args: Parameters<typeof startFakeWorker>): Promise<FakeWorker> {
  const w = await startFakeWorker(...args);
  cleanups.push(() => w.close());
  return w;
}

const errorChunk = (code: number) => `{"text": "${SERVER_ERROR_MSG}", "error_code": ${code}}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("workers register (asked for their status when they do not send it), beat, and are dispatched to by shortest queue", async () => {
  const { url } = await startController();
  const a = await worker(["m", "only-a"]);
  const b = await worker(["m"]);
  assert.deepEqual(await post(`${url}/register_worker`, { worker_name: a.url, check_heart_beat: true }), { status: 200, json: null });
  await post(`${url}/register_worker`, { worker_name: b.url, check_heart_beat: true, worker_status: { model_names: ["m"], speed: 1, queue_length: 0 } });
  // a worker that cannot be reached is not registered
  await post(`${url}/register_worker`, { worker_name: "http://127.0.0.1:1", check_heart_beat: true });
  assert.deepEqual((await post(`${url}/list_models`)).json, { models: ["m", "only-a"] });

  const address = async (model: string) => ((await post(`${url}/get_worker_address`, { model })).json as { address: string }).address;
  assert.deepEqual([await address("m"), await address("m"), await address("m")], [a.url, b.url, a.url]);
  assert.equal(await address("only-a"), a.url);
  assert.equal(await address("nobody-serves-this"), "");

  assert.deepEqual((await post(`${url}/receive_heart_beat`, { worker_name: a.url, queue_length: 9 })).json, { exist: true });
  assert.deepEqual((await post(`${url}/receive_heart_beat`, { worker_name: "http://127.0.0.1:2", queue_length: 0 })).json, { exist: false });
  assert.equal(await address("m"), b.url, "a's long queue sends the request to b");

  a.status.queue_length = 2;
  b.status.queue_length = 3;
  assert.deepEqual((await post(`${url}/worker_get_status`)).json, { model_names: ["m", "only-a"], speed: 2, queue_length: 5 });

  // refresh re-reads the statuses and drops a worker that went away
  await b.close();
  assert.deepEqual(await post(`${url}/refresh_all_workers`), { status: 200, json: null });
  assert.equal(await address("m"), a.url);
  assert.deepEqual((await post(`${url}/worker_get_status`)).json, { model_names: ["m", "only-a"], speed: 1, queue_length: 2 });
});

test("the stream is relayed chunk by chunk as the worker writes it, byte for byte", async () => {
  const { url } = await startController();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const w = await worker(["m"], { kind: "stream", texts: ["A", "A b", "A b ✓"], gate: () => gate });
  await post(`${url}/register_worker`, { worker_name: w.url, check_heart_beat: false });

  const request = { model: "m", prompt: "A", temperature: 0.2, images: [] };
  const res = await fetch(`${url}/worker_generate_stream`, { method: "POST", body: JSON.stringify(request), signal: AbortSignal.timeout(10_000) });
  const reader = res.body!.getReader();
  const first = await reader.read();
  // the first chunk arrived while the worker still holds the others back
  assert.equal(Buffer.from(first.value!).toString("utf8"), workerChunk("A"));
  release();
  let rest = "";
  for (let r = await reader.read(); !r.done; r = await reader.read()) rest += Buffer.from(r.value).toString("utf8");
  assert.equal(rest, workerChunk("A b") + workerChunk("A b ✓"));
  assert.deepEqual(w.requests, [request], "the worker gets the request's fields as sent");
});

test("a model nobody serves gets one error-code-2 chunk and no worker is asked", async () => {
  const { url } = await startController();
  const w = await worker(["m"]);
  await post(`${url}/register_worker`, { worker_name: w.url, check_heart_beat: true });
  assert.deepEqual(await streamChunks(`${url}/worker_generate_stream`, { model: "other", prompt: "x" }), [errorChunk(2)]);
  assert.equal(w.requests.length, 0);
});

test("a worker that fails, hangs or dies mid-stream ends the stream with an error-code-3 chunk", async () => {
  for (const behaviour of [{ kind: "status", code: 500 }, { kind: "hang-after-first", text: "x y" }, { kind: "die-after-first", text: "x y" }] as const) {
    const { url } = await startController();
    const w = await worker(["m"], behaviour);
    await post(`${url}/register_worker`, { worker_name: w.url, check_heart_beat: true });
    const started = Date.now();
    const chunks = await streamChunks(`${url}/worker_generate_stream`, { model: "m", prompt: "x" });
    const expected = behaviour.kind === "status" ? [errorChunk(3)] : [workerChunk("x y").slice(0, -1), errorChunk(3)];
    assert.deepEqual(chunks, expected, behaviour.kind);
    assert.ok(Date.now() - started < 5000, `${behaviour.kind}: ended after the 300 ms silence, not later`);
    assert.deepEqual((await post(`${url}/list_models`)).json, { models: ["m"] }, "and the controller keeps serving");
  }
  // a registered address where nothing listens
  const { url } = await startController();
  await post(`${url}/register_worker`, { worker_name: "http://127.0.0.1:1", check_heart_beat: true, worker_status: { model_names: ["m"], speed: 1, queue_length: 0 } });
  assert.deepEqual(await streamChunks(`${url}/worker_generate_stream`, { model: "m" }), [errorChunk(3)]);
});

test("a client that goes away mid-stream takes the worker's request with it", async () => {
  const { url } = await startController({ workerTimeoutMs: 60_000 });
  const w = await worker(["m"], { kind: "hang-after-first", text: "x" });
  await post(`${url}/register_worker`, { worker_name: w.url, check_heart_beat: true });
  const client = new AbortController();
  const res = await fetch(`${url}/worker_generate_stream`, { method: "POST", body: JSON.stringify({ model: "m" }), signal: client.signal });
  const reader = res.body!.getReader();
  assert.equal(Buffer.from((await reader.read()).value!).toString("utf8"), workerChunk("x"));
  client.abort();
  // long before the 60 s idle limit could end it
  const closed = await Promise.race([w.aborted.then(() => true), sleep(5000).then(() => false)]);
  assert.ok(closed, "the upstream request was aborted");
  assert.deepEqual((await post(`${url}/list_models`)).json, { models: ["m"] });
});

test("a worker that stops beating is dropped after the expiry and its requests go to the survivor", async () => {
  const { url, controller } = await startController({ expirationS: 0.3 });
  const stop = controller.startExpiryChecks(50);
  cleanups.push(async () => stop());
  const silent = await worker(["m"], { kind: "stream", texts: ["from silent"] });
  const survivor = await worker(["m"], { kind: "stream", texts: ["from survivor"] });
  const unchecked = await worker(["n"]);
  for (const w of [silent, survivor]) await post(`${url}/register_worker`, { worker_name: w.url, check_heart_beat: true });
  await post(`${url}/register_worker`, { worker_name: unchecked.url, check_heart_beat: false });

  const deadline = Date.now() + 5000;
  while (controller.workers.has(silent.url) && Date.now() < deadline) {
    assert.deepEqual((await post(`${url}/receive_heart_beat`, { worker_name: survivor.url, queue_length: 0 })).json, { exist: true });
    await sleep(50);
  }
  assert.deepEqual([...controller.workers.keys()], [survivor.url, unchecked.url]);
  assert.deepEqual((await post(`${url}/receive_heart_beat`, { worker_name: silent.url, queue_length: 0 })).json, { exist: false }, "told to re-register");
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(await streamChunks(`${url}/worker_generate_stream`, { model: "m" }), [workerChunk("from survivor").slice(0, -1)]);
  }
  assert.equal(silent.requests.length, 0);
});

test("lottery dispatch draws from the injected random source, weighted by speed", async () => {
  // a seeded generator (mulberry32), replayed to compute the expected draws
  const seeded = (seed: number) => () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const { url } = await startController({ dispatchMethod: "lottery", random: seeded(42) });
  const slow = await worker(["m"], undefined, 1);
  const fast = await worker(["m"], undefined, 3);
  for (const w of [slow, fast]) await post(`${url}/register_worker`, { worker_name: w.url, check_heart_beat: true });
  const replay = seeded(42);
  const got: string[] = [];
  const expected: string[] = [];
  for (let i = 0; i < 40; i++) {
    got.push(((await post(`${url}/get_worker_address`, { model: "m" })).json as { address: string }).address);
    expected.push([slow.url, fast.url][lotteryPick([1, 3], replay)]);
  }
  assert.deepEqual(got, expected);
  const fastShare = got.filter((a) => a === fast.url).length / got.length;
  assert.ok(fastShare > 0.5 && fastShare < 0.95, `speed 3 of 4 wins about 3/4 of the draws, got ${fastShare}`);
  assert.equal(((await post(`${url}/get_worker_address`, { model: "x" })).json as { address: string }).address, "");
});

test("llava serve controller listens, serves and stops on SIGTERM", async () => {
  const child = await spawnServer(["serve", "controller", "--host", "127.0.0.1", "--port", "0", "--dispatch-method", "lottery"]);
  try {
    const url = child.url;
    assert.deepEqual(await post(`${url}/list_models`), { status: 200, json: { models: [] } });
    child.kill("SIGTERM");
    assert.equal(await child.exited, 0, child.stderr());
    assert.doesNotMatch(child.stderr(), /llava:/);
  } finally {
    child.kill("SIGKILL");
  }
});

test("closing the controller lets a stream in progress finish, then stops at once", async () => {
  const { app } = buildControllerApp({ workerTimeoutMs: 5000 });
  const url = await listen(app, "127.0.0.1", 0);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const w = await worker(["m"], { kind: "stream", texts: ["a", "a b"], gate: () => gate });
  await post(`${url}/register_worker`, { worker_name: w.url, check_heart_beat: true });
  const res = await fetch(`${url}/worker_generate_stream`, { method: "POST", body: JSON.stringify({ model: "m" }), signal: AbortSignal.timeout(10_000) });
  const reader = res.body!.getReader();
  let text = Buffer.from((await reader.read()).value!).toString("utf8");
  const closed = app.close();
  release();
  for (let r = await reader.read(); !r.done; r = await reader.read()) text += Buffer.from(r.value).toString("utf8");
  assert.equal(text, workerChunk("a") + workerChunk("a b"));
  const started = Date.now();
  await closed;
  assert.ok(Date.now() - started < 2000, "no wait on kept-alive connections");
});
