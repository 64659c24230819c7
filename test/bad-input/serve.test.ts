/**
 * Bad input to `llava serve controller`: requests it refuses with a 400 and a one-line error
 * (the server keeps serving), and command lines it refuses with one line and a non-zero exit.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { buildControllerApp } from "../../src/serve/controller-http.js";
import { listen } from "../../src/serve/http-app.js";
import { assertCleanError, llava } from "../helpers/cli.js";

const { app, controller } = buildControllerApp({ workerTimeoutMs: 300 });
const url = await listen(app, "127.0.0.1", 0);
after(() => app.close());

async function rawPost(path: string, body: string | undefined, contentType = "application/json"): Promise<{ status: number; json: { error?: string } | null }> {
  const res = await fetch(`${url}${path}`, { method: "POST", body, headers: body === undefined ? {} : { "content-type": contentType }, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, json: (await res.json()) as { error?: string } | null };
}

const status = { model_names: ["m"], speed: 1, queue_length: 0 };
const badRequests: Array<[string, string | undefined, RegExp]> = [
  ["/register_worker", "{not json", /not valid JSON/],
  ["/register_worker", undefined, /body: .*expected object/],
  ["/register_worker", "[1, 2]", /expected object, received array/],
  ["/register_worker", JSON.stringify({ check_heart_beat: true }), /worker_name/],
  ["/register_worker", JSON.stringify({ worker_name: "not a url", check_heart_beat: true }), /worker_name: must be an http\(s\) URL/],
  ["/register_worker", JSON.stringify({ worker_name: "file:///etc/passwd", check_heart_beat: true }), /worker_name: must be an http\(s\) URL/],
  ["/register_worker", JSON.stringify({ worker_name: "http://127.0.0.1:9", check_heart_beat: "yes" }), /check_heart_beat/],
  ["/register_worker", JSON.stringify({ worker_name: "http://127.0.0.1:9", check_heart_beat: true, worker_status: { ...status, speed: -1 } }), /worker_status.speed/],
  ["/register_worker", JSON.stringify({ worker_name: "http://127.0.0.1:9", check_heart_beat: true, worker_status: { ...status, model_names: "m" } }), /worker_status.model_names/],
  ["/get_worker_address", "{}", /model/],
  ["/get_worker_address", JSON.stringify({ model: 7 }), /model: .*expected string/],
  ["/receive_heart_beat", JSON.stringify({ worker_name: "http://127.0.0.1:9", queue_length: "3" }), /queue_length/],
  ["/worker_generate_stream", JSON.stringify({ prompt: "no model" }), /model/],
  ["/worker_generate_stream", '{"model": "m",', /not valid JSON/],
];

test("malformed JSON and wrong field types get a 400 with one line naming the problem", async () => {
  for (const [path, body, message] of badRequests) {
    const r = await rawPost(path, body);
    assert.equal(r.status, 400, `${path} ${body}`);
    assert.match(r.json?.error ?? "", message, `${path} ${body}`);
    assert.doesNotMatch(r.json?.error ?? "", /\n/);
  }
  assert.equal(controller.workers.size, 0, "nothing was registered");
  assert.deepEqual((await rawPost("/list_models", undefined)).json, { models: [] }, "the server keeps serving");
});

test("a worker that never answers its status request is not registered, after the timeout", async () => {
  const silent = net.createServer(() => {}); // accepts, reads nothing, answers nothing
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  try {
    const worker = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    const started = Date.now();
    const r = await rawPost("/register_worker", JSON.stringify({ worker_name: worker, check_heart_beat: true }));
    assert.deepEqual(r, { status: 200, json: null }, "the reference's answer either way");
    assert.ok(Date.now() - started >= 250 && Date.now() - started < 5000, "gave up after the 300 ms timeout");
    assert.equal(controller.workers.size, 0);
  } finally {
    silent.close();
  }
});

test("any content type is read as JSON, as FastAPI's request.json() does; unknown routes are a 404", async () => {
  assert.deepEqual(await rawPost("/get_worker_address", JSON.stringify({ model: "m" }), "text/plain"), { status: 200, json: { address: "" } });
  const r = await fetch(`${url}/list_models`, { signal: AbortSignal.timeout(10_000) });
  assert.equal(r.status, 404);
  assert.match(((await r.json()) as { error: string }).error, /no route GET \/list_models/);
});

test("a body over the size limit is a 413 and the server keeps serving", async () => {
  const r = await rawPost("/worker_generate_stream", JSON.stringify({ model: "m", prompt: "x".repeat(65 * 1024 * 1024) }));
  assert.equal(r.status, 413);
  assert.ok(r.json?.error);
  assert.deepEqual((await rawPost("/list_models", undefined)).json, { models: [] });
});

test("bad command lines: one line, non-zero exit, nothing listening", async () => {
  assertCleanError(llava(["serve", "controller", "--dispatch-method", "random"]), /--dispatch-method must be lottery or shortest_queue, got "random"/);
  assertCleanError(llava(["serve", "controller", "--port", "70000"]), /--port must be a whole number from 0 to 65535/);
  assertCleanError(llava(["serve", "controller", "--port", "-1"]), /--port/);
  assertCleanError(llava(["serve", "controller", "--bogus"]), /serve controller: Unknown option '--bogus'/);
  assertCleanError(llava(["serve", "gateway"]), /serve: unknown part "gateway"/);
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
  try {
    const port = (taken.address() as net.AddressInfo).port;
    assertCleanError(llava(["serve", "controller", "--host", "127.0.0.1", "--port", String(port)]), new RegExp(`cannot listen on 127.0.0.1:${port}: the address is in use`));
  } finally {
    taken.close();
  }
});
