/**
 * Bad input to the web UI's server and command: malformed and mistyped requests, uploads that are
 * not images or are too large, unknown models and sessions, a second answer while one streams,
 * bad command lines. Each is a 4xx with one clear line, and the server keeps serving.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { buildWebApp } from "../../src/serve/web-server.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { DEFAULT_SETTINGS, startWebStack, testImage, webPost, type WebStack } from "../helpers/web-stack.js";

const MODEL = "llava-v1.5-7b";
let s: WebStack;
let release!: () => void;
before(async () => {
  // answers wait for `release`, so one can be held open; a small upload limit
  s = await startWebStack([MODEL], { kind: "answer", pieces: ["a", "b"], gate: () => new Promise<void>((r) => (release = r)) }, { maxUploadBytes: 1000 });
});
after(() => s.close());

const chat = (body: unknown) => webPost(`${s.webUrl}/api/web/chat`, body);
const ok = { ...DEFAULT_SETTINGS, model: MODEL, text: "Hi" };

async function assertServing(): Promise<void> {
  assert.equal((await fetch(`${s.webUrl}/api/web/config`)).status, 200);
}

test("malformed JSON and wrong or out-of-range fields are a 400 naming the problem", async () => {
  const cases: Array<[unknown, RegExp]> = [
    ["{not json", /^body is not valid JSON$/],
    ["", /^body: /],
    [{ ...ok, temperature: "hot" }, /^temperature: /],
    [{ ...ok, temperature: 1.5 }, /^temperature: .*1/],
    [{ ...ok, maxNewTokens: 2048 }, /^maxNewTokens: /],
    [{ ...ok, maxNewTokens: 12.5 }, /^maxNewTokens: /],
    [{ ...ok, imageProcessMode: "Stretch" }, /^imageProcessMode: /],
    [{ ...ok, text: 42 }, /^text: /],
    [{ ...ok, model: "" }, /^model: choose a model$/],
    [{ ...ok, text: "" }, /^type a message or add an image$/],
  ];
  for (const [body, message] of cases) {
    const r = await chat(body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.match(r.json!.error!, message);
    assert.doesNotMatch(r.json!.error!, /\n/);
  }
  await assertServing();
});

test("an upload that is not an image, or is over the limit, is refused before the chat changes", async () => {
  const notImage = await chat({ ...ok, image: `data:text/plain;base64,${Buffer.from("hello").toString("base64")}` });
  assert.equal(notImage.status, 400);
  assert.match(notImage.json!.error!, /^the upload is not an image we can read: .*not an image/);
  const garbage = await chat({ ...ok, image: `data:image/png;base64,${Buffer.from("not a png at all").toString("base64")}` });
  assert.equal(garbage.status, 400);
  assert.match(garbage.json!.error!, /^the upload is not an image we can read: image upload: cannot decode/);
  const big = await chat({ ...ok, image: (await testImage(300, 300)).dataUrl });
  assert.equal(big.status, 413);
  assert.match(big.json!.error!, /^the image is [\d,]+ bytes, over the upload limit of 1,000 bytes$/);
  // far over the limit: refused by the body limit, without reading it all
  const huge = await chat({ ...ok, image: `data:image/png;base64,${"A".repeat(4 * 2 ** 20)}` });
  assert.equal(huge.status, 413);
  assert.ok(huge.json!.error);
  assert.equal(s.worker.requests.length, 0);
  await assertServing();
});

test("an unknown model or session is refused; a session answering takes no second request until it is done", async () => {
  const unknown = await chat({ ...ok, model: "no-such-model" });
  assert.deepEqual([unknown.status, unknown.json], [400, { error: `unknown model "no-such-model" (models: ${MODEL}); reload the page for the current list` }]);
  for (const route of ["chat", "regenerate", "clear", "vote"]) {
    const r = await webPost(`${s.webUrl}/api/web/${route}`, { ...ok, session: "no-such-session", type: "upvote" });
    assert.deepEqual([r.status, r.json], [404, { error: "unknown session (it expired or the server restarted); reload the page" }], route);
  }
  assert.equal((await fetch(`${s.webUrl}/api/web/sessions/nope/image`)).status, 404);

  const res = await fetch(`${s.webUrl}/api/web/chat`, { method: "POST", body: JSON.stringify(ok) });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const session = JSON.parse((await reader.read()).value!.split("\n")[0]).session;
  for (const route of ["chat", "regenerate", "clear"]) {
    const r = await webPost(`${s.webUrl}/api/web/${route}`, { ...ok, session });
    assert.deepEqual([r.status, r.json], [409, { error: "an answer is still being generated; stop it first" }], route);
  }
  while (!release) await new Promise((r) => setTimeout(r, 5));
  release();
  while (!(await reader.read()).done);
  assert.equal((await webPost(`${s.webUrl}/api/web/vote`, { session, model: MODEL, type: "flag" })).status, 200);
});

test("the server refuses to start without the built page, and bad command lines are one line and a non-zero exit", async () => {
  const empty = await mkdtemp(path.join(tmpdir(), "llava-web-empty-"));
  try {
    await assert.rejects(buildWebApp({ controllerUrl: s.controllerUrl, logDir: empty, staticDir: empty }), /the web UI is not built .*run npm run build/);
  } finally {
    await rm(empty, { recursive: true, force: true });
  }
  assertCleanError(llava(["serve", "web", "--port", "abc"]), /--port must be a whole number from 0 to 65535, got "abc"/);
  assertCleanError(llava(["serve", "web", "--model-list-mode", "sometimes"]), /--model-list-mode must be once or reload, got "sometimes"/);
  assertCleanError(llava(["serve", "web", "--controller-url", "localhost:21001"]), /--controller-url must be an http\(s\) URL, got "localhost:21001"/);
  assertCleanError(llava(["serve", "web", "--max-upload-mb", "0"]), /--max-upload-mb must be a positive number of megabytes, got "0"/);
  assertCleanError(llava(["serve", "web", "--bogus"]), /serve web: Unknown option '--bogus'/);
});
