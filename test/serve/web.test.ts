/**
 * The web UI's server over HTTP on loopback, with a real controller and a fake worker: the model
 * list, a streamed multi-turn chat and the exact request the worker gets, regenerate with another
 * image mode, clear, votes, stop, the conversation log in the reference's layout, and failures
 * (an error chunk, a failing worker, no worker, the controller gone) shown in the chat.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { loadImage } from "../../src/image/decode.js";
import { SERVER_ERROR_MSG } from "../../src/serve/protocol.js";
import { imageMd5 } from "../../src/serve/web-image.js";
import { ConversationLog } from "../../src/serve/web-log.js";
import { sortModels } from "../../src/serve/web-chat.js";
import { Sessions } from "../../src/serve/web-server.js";
import { CLI } from "../helpers/cli.js";
import { DEFAULT_SETTINGS, startWebStack, testImage, webPost, type WebStack } from "../helpers/web-stack.js";

const stacks: WebStack[] = [];
after(() => Promise.all(stacks.map((s) => s.close())));
async function stack(...args: Parameters<typeof startWebStack>): Promise<WebStack> {
  const s = await startWebStack(...args);
  stacks.push(s);
  return s;
}

const S_HUMAN = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";
const MODEL = "llava-v1.5-7b";

function logLines(s: WebStack): Array<Record<string, unknown>> {
  const file = new ConversationLog(s.logDir).fileFor();
  return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l)) : [];
}

test("the page and its config: the controller's models in the reference's priority order, the sliders' ranges and defaults", async () => {
  const s = await stack(["zeta", "koala-13b", MODEL, "vicuna-13b"], { kind: "answer", pieces: ["x"] });
  const page = await fetch(s.webUrl);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>LLaVA<\/title>/);
  const config = (await (await fetch(`${s.webUrl}/api/web/config`)).json()) as Record<string, unknown>;
  assert.deepEqual(config.models, ["vicuna-13b", "koala-13b", MODEL, "zeta"]);
  assert.deepEqual(config.parameters, {
    temperature: { min: 0, max: 1, step: 0.1, default: 0.2 },
    topP: { min: 0, max: 1, step: 0.1, default: 0.7 },
    maxNewTokens: { min: 0, max: 1024, step: 64, default: 512 },
  });
  assert.deepEqual(config.imageProcessModes, ["Crop", "Resize", "Pad", "Default"]);
  assert.equal(config.maxUploadBytes, 20 * 2 ** 20);
  assert.deepEqual(sortModels(["c", "b", "koala-13b"]), ["koala-13b", "b", "c"]);
});

test("a chat with an image streams the answer, sends the worker the reference's request, and logs it in the reference's layout", async () => {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const s = await stack([MODEL], { kind: "answer", pieces: [" A", " cat", ".\n"], gate: () => gate });
  const { image, dataUrl } = await testImage();

  const res = await fetch(`${s.webUrl}/api/web/chat`, { method: "POST", body: JSON.stringify({ ...DEFAULT_SETTINGS, model: MODEL, text: "What is this?", image: dataUrl }) });
  assert.equal(res.headers.get("content-type"), "application/x-ndjson; charset=utf-8");
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let received = "";
  while (received.split("\n").length < 3) received += (await reader.read()).value;
  // two lines before the worker may go on: the cursor alone, then the first piece
  const [first, second] = received.split("\n").slice(0, 2).map((l) => JSON.parse(l));
  assert.equal(first.status, "streaming");
  assert.deepEqual(first.rows, [{ user: "What is this?", image: `api/web/sessions/${first.session}/image?v=1`, assistant: "▌" }]);
  assert.equal(second.rows[0].assistant, "A▌");
  open();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    received += value;
  }
  const lines = received.trim().split("\n").map((l) => JSON.parse(l));
  const last = lines[lines.length - 1];
  assert.equal(last.status, "done");
  assert.deepEqual(last.rows, [{ user: "What is this?", image: `api/web/sessions/${first.session}/image?v=1`, assistant: "A cat." }]);

  // the first round takes the model's template (llava_v1), the image moves to the turn's start
  const request = s.worker.requests[0];
  const prompt = `${S_HUMAN} USER: <image>\nWhat is this? ASSISTANT:`;
  assert.deepEqual({ ...request, images: undefined }, { model: MODEL, prompt, temperature: 0.2, top_p: 0.7, max_new_tokens: 512, stop: "</s>", images: undefined });
  const sent = await loadImage(Buffer.from((request.images as string[])[0], "base64"));
  assert.deepEqual(sent, image, "Default mode sends the pixels unchanged, as PNG");

  const [logged] = logLines(s);
  assert.deepEqual(Object.keys(logged), ["tstamp", "type", "model", "start", "finish", "state", "images", "ip"]);
  assert.equal(logged.type, "chat");
  assert.equal(logged.model, MODEL);
  assert.equal(logged.ip, "127.0.0.1");
  assert.ok((logged.start as number) <= (logged.finish as number) && logged.finish === logged.tstamp);
  assert.deepEqual(logged.state, {
    system: S_HUMAN, roles: ["USER", "ASSISTANT"], messages: [["USER", "What is this?\n<image>"], ["ASSISTANT", "A cat."]], offset: 0, sep: " ", sep2: "</s>",
  });
  assert.deepEqual(logged.images, [imageMd5(image)]);
  const raw = readFileSync(new ConversationLog(s.logDir).fileFor(), "utf8");
  assert.match(raw, /^\{"tstamp": \d+\.\d+, "type": "chat", "model": "llava-v1\.5-7b", "start": /, "Python's json.dumps separators");
  const day = path.basename(new ConversationLog(s.logDir).fileFor()).slice(0, 10);
  const saved = path.join(s.logDir, "serve_images", day, `${imageMd5(image)}.jpg`);
  assert.deepEqual(await sharp(saved).metadata().then((m) => [m.format, m.width, m.height]), ["jpeg", 40, 20]);

  // the chat window's image
  const shown = await fetch(`${s.webUrl}/${last.rows[0].image}`);
  assert.equal(shown.headers.get("content-type"), "image/jpeg");
  assert.equal((await sharp(Buffer.from(await shown.arrayBuffer())).metadata()).width, 40);

  // a follow-up continues the same conversation, text only
  const follow = await webPost(`${s.webUrl}/api/web/chat`, { ...DEFAULT_SETTINGS, session: first.session, model: MODEL, text: "And its colour?", temperature: 0.5 });
  assert.equal(follow.lines.at(-1)!.status, "done");
  assert.equal(follow.lines.at(-1)!.rows.length, 2);
  assert.equal(s.worker.requests[1].prompt, `${prompt} A cat.</s>USER: And its colour? ASSISTANT:`);
  assert.equal(s.worker.requests[1].temperature, 0.5);
  assert.equal((s.worker.requests[1].images as string[]).length, 1, "the conversation's image goes with every turn");
  assert.equal(logLines(s).length, 2);
});

test("regenerate takes the image mode chosen now; votes are refused until an answer completes and then logged; clear starts over", async () => {
  const s = await stack([MODEL], { kind: "answer", pieces: ["Fine."] });
  const { dataUrl } = await testImage(40, 20);
  const url = (p: string) => `${s.webUrl}/api/web/${p}`;
  const { lines } = await webPost(url("chat"), { ...DEFAULT_SETTINGS, model: MODEL, text: "Describe it.", image: dataUrl, imageProcessMode: "Resize" });
  const session = lines[0].session;
  const sentSize = async (i: number) => {
    const img = await loadImage(Buffer.from((s.worker.requests[i].images as string[])[0], "base64"));
    return [img.width, img.height, Array.from(img.data.subarray(0, 3))];
  };
  assert.deepEqual((await sentSize(0)).slice(0, 2), [336, 336]);

  const regenerated = await webPost(url("regenerate"), { ...DEFAULT_SETTINGS, session, model: MODEL, imageProcessMode: "Pad" });
  assert.equal(regenerated.lines.at(-1)!.status, "done");
  assert.deepEqual(regenerated.lines.at(-1)!.rows.map((r) => r.assistant), ["Fine."]);
  assert.deepEqual(await sentSize(1), [40, 40, [122, 116, 104]], "Pad: a square in the reference's pad colour");
  assert.equal(s.worker.requests[1].prompt, s.worker.requests[0].prompt);

  for (const type of ["upvote", "downvote", "flag"]) assert.deepEqual(await (await fetch(url("vote"), { method: "POST", body: JSON.stringify({ session, model: MODEL, type }) })).json(), { ok: true });
  const votes = logLines(s).slice(2);
  assert.deepEqual(votes.map((v) => v.type), ["upvote", "downvote", "flag"]);
  assert.deepEqual(Object.keys(votes[0]), ["tstamp", "type", "model", "state", "ip"]);
  assert.deepEqual((votes[0].state as { messages: unknown }).messages, [["USER", "Describe it.\n<image>"], ["ASSISTANT", "Fine."]]);

  assert.deepEqual(await (await fetch(url("clear"), { method: "POST", body: JSON.stringify({ session }) })).json(), { rows: [] });
  const vote = await webPost(url("vote"), { session, model: MODEL, type: "upvote" });
  assert.deepEqual([vote.status, vote.json], [409, { error: "there is no finished answer to vote on" }]);
  const again = await webPost(url("regenerate"), { ...DEFAULT_SETTINGS, session, model: MODEL });
  assert.deepEqual([again.status, again.json], [409, { error: "there is no answer to regenerate" }]);
  const image = await fetch(`${s.webUrl}/api/web/sessions/${session}/image`);
  assert.equal(image.status, 404);
});

test("stop: the browser dropping the stream ends the worker's request; the partial answer stays, unlogged and unvotable", async () => {
  const s = await stack([MODEL], { kind: "answer", pieces: [" Part", " never sent"], gate: () => new Promise(() => {}) });
  const abort = new AbortController();
  const res = await fetch(`${s.webUrl}/api/web/chat`, { method: "POST", body: JSON.stringify({ ...DEFAULT_SETTINGS, model: MODEL, text: "Hi" }), signal: abort.signal });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let received = "";
  while (!received.includes("Part")) received += (await reader.read()).value;
  const session = JSON.parse(received.split("\n")[0]).session;
  abort.abort();
  await s.worker.aborted;
  const vote = async () => (await webPost(`${s.webUrl}/api/web/vote`, { session, model: MODEL, type: "upvote" })).status;
  assert.equal(await vote(), 409);
  // once the server let go of the session, it takes the next turn, which sees the partial answer
  s.worker.behaviour = { kind: "answer", pieces: ["OK"] };
  let next: Awaited<ReturnType<typeof webPost>>;
  for (let i = 0; ; i++) {
    next = await webPost(`${s.webUrl}/api/web/chat`, { ...DEFAULT_SETTINGS, session, model: MODEL, text: "Go on" });
    if (next.status !== 409 || i === 50) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(next.status, 200);
  assert.deepEqual(next.lines.at(-1)!.rows.map((r) => r.assistant), ["Part", "OK"]);
  assert.equal(logLines(s).length, 1, "only the finished answer is logged");
});

test("failures show in the chat with a reason: an error chunk, a failing worker, no worker for the model, the controller gone", async () => {
  const s = await stack([MODEL], { kind: "error-chunk", text: SERVER_ERROR_MSG, code: 1 });
  const chat = () => webPost(`${s.webUrl}/api/web/chat`, { ...DEFAULT_SETTINGS, model: MODEL, text: "Hi" });

  let last = (await chat()).lines.at(-1)!;
  assert.deepEqual([last.status, last.rows[0].assistant, last.notice], ["error", `${SERVER_ERROR_MSG} (error_code: 1)`, undefined]);

  s.worker.behaviour = { kind: "status", code: 500 };
  last = (await chat()).lines.at(-1)!;
  assert.deepEqual([last.status, last.rows[0].assistant], ["error", SERVER_ERROR_MSG]);
  assert.match(last.notice!, /the worker at http:\/\/127\.0\.0\.1:\d+ failed: it answered HTTP 500/);

  await s.worker.close();
  await fetch(`${s.controllerUrl}/refresh_all_workers`, { method: "POST" });
  last = (await chat()).lines.at(-1)!;
  assert.deepEqual([last.status, last.rows[0].assistant, last.notice], ["error", SERVER_ERROR_MSG, `no worker serves the model "${MODEL}" now`]);

  await s.controller.close();
  last = (await chat()).lines.at(-1)!;
  assert.deepEqual([last.status, last.rows[0].assistant, last.notice], ["error", SERVER_ERROR_MSG, `cannot reach the controller at ${s.controllerUrl}`]);
  assert.equal(logLines(s).length, 0, "failed answers are not logged, as in the reference");
  // and the server keeps serving
  assert.equal((await fetch(`${s.webUrl}/api/web/config`)).status, 200);
});

test("llava serve web lists the controller's models, logs into --log-dir and stops on SIGTERM", async () => {
  const s = await stack(["model-a"], { kind: "answer", pieces: ["Yes."] });
  const child = spawn(process.execPath, [CLI, "serve", "web", "--controller-url", s.controllerUrl, "--host", "127.0.0.1", "--port", "0", "--log-dir", s.logDir, "--model-list-mode", "reload"], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  const listening = new Promise<string>((resolve, reject) => {
    child.stderr.on("data", (d) => {
      stderr += d;
      const m = /web: open (http:\/\/\S+)/.exec(stderr);
      if (m) resolve(m[1]);
    });
    setTimeout(() => reject(new Error(`no "open" line: ${stderr}`)), 10_000).unref();
  });
  try {
    const url = await listening;
    assert.deepEqual(((await (await fetch(`${url}/api/web/config`)).json()) as { models: string[] }).models, ["model-a"]);
    const { lines } = await webPost(`${url}/api/web/chat`, { ...DEFAULT_SETTINGS, model: "model-a", text: "Is it?" });
    assert.equal(lines.at(-1)!.rows[0].assistant, "Yes.");
    assert.equal(logLines(s).length, 1);
    child.kill("SIGTERM");
    assert.equal(await exited, 0, stderr);
    assert.match(stderr, /web: stopped/);
  } finally {
    child.kill("SIGKILL");
  }
});

test("the reference's cut-offs: 1536 characters of text, 1200 with an image; a new image starts a new conversation", async () => {
  const s = await stack([MODEL], { kind: "answer", pieces: ["ok"] });
  const long = "é".repeat(2000);
  const { lines } = await webPost(`${s.webUrl}/api/web/chat`, { ...DEFAULT_SETTINGS, model: MODEL, text: long });
  const session = lines[0].session;
  assert.equal(lines.at(-1)!.rows[0].user, "é".repeat(1536));
  const { dataUrl } = await testImage();
  const withImage = await webPost(`${s.webUrl}/api/web/chat`, { ...DEFAULT_SETTINGS, session, model: MODEL, text: long, image: dataUrl });
  assert.equal(withImage.lines.at(-1)!.rows.length, 1, "the earlier turns are gone");
  assert.equal(withImage.lines.at(-1)!.rows[0].user, "é".repeat(1200));
  assert.equal(withImage.lines.at(-1)!.rows[0].image, `api/web/sessions/${session}/image?v=1`);
  assert.equal(s.worker.requests[1].prompt, `${S_HUMAN} USER: <image>\n${"é".repeat(1200)} ASSISTANT:`);
  assert.deepEqual((logLines(s)[1].state as { messages: unknown }).messages, [["USER", `${"é".repeat(1200)}\n<image>`], ["ASSISTANT", "ok"]]);
});

test("sessions: the least recently used idle ones go when there are too many or their images hold too much", async () => {
  const sessions = new Sessions(3, 40 * 20 * 3 * 2);
  const { image } = await testImage(40, 20);
  const ids = [0, 1, 2, 3].map(() => sessions.create().id);
  sessions.get(ids[0]);
  sessions.get(ids[1]).chat.busy = true;
  sessions.trim(ids[3]);
  assert.equal(sessions.size, 3);
  assert.throws(() => sessions.get(ids[2]), /unknown session/, "the least recently used idle one went");
  for (const id of [ids[0], ids[1], ids[3]]) sessions.get(id).chat.addText("look", { image, mode: "Default" });
  sessions.trim(ids[3]);
  // three images are over the budget of two: the oldest idle one goes, the busy one stays
  assert.throws(() => sessions.get(ids[0]), /unknown session/);
  assert.deepEqual([sessions.get(ids[1]).id, sessions.get(ids[3]).id], [ids[1], ids[3]]);
});
