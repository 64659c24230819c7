/**
 * The web UI in headless Chromium (Debian's chromium, driven by playwright-core; no browser is
 * downloaded) against a real controller, a fake worker and the web server on loopback: upload an
 * image, ask, watch the answer stream, vote, regenerate, stop, clear, and the examples, drag and
 * drop, and paste; and against `llava serve` with the tiny model, whose answer must be the
 * model's. Screenshots go to a temporary folder named in the test's output.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { ConversationLog } from "../../src/serve/web-log.js";
import { startWebStack, testImage, type WebStack } from "../helpers/web-stack.js";
import { GRADIENT_PROMPT, IMAGE_PATH, MODEL as MODEL_V1, tinyModel } from "../helpers/api-server.js";
import { answerGeneration } from "../../src/llava/pipeline.js";
import { pyStrip } from "../../src/io/python.js";
import { startAllInOne } from "../../src/serve/all-in-one.js";
import { BatchEngine } from "../../src/serve/batch-engine.js";
import { tempDir } from "../helpers/tmp.js";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const MODEL = "llava-v1.5-7b";
/** One folder the screenshots of every run overwrite (kept after the run, to be looked at). */
const SCREENSHOTS = path.join(tmpdir(), "llava-web-screenshots");
mkdirSync(SCREENSHOTS, { recursive: true });

const cleanups: Array<() => Promise<unknown>> = [];
after(() => Promise.all(cleanups.map((c) => c())));

/** Waits in the page (the conditions are page code, as text: this project compiles without the DOM's types). */
function conditions(page: Page) {
  const holds = (expression: string) => page.waitForFunction(expression);
  const textIs = (selector: string, text: string) => holds(`document.querySelector(${JSON.stringify(selector)})?.textContent === ${JSON.stringify(text)}`);
  return { holds, textIs };
}

const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (install Debian's chromium package)`;

test("a user uploads an image, asks, sees the answer stream, votes, regenerates, stops and clears", { skip, timeout: 120_000 }, async (t) => {
  let openGate!: () => void;
  const gateOpened = new Promise<void>((r) => (openGate = r));
  const s: WebStack = await startWebStack(["zeta", MODEL], { kind: "answer", pieces: [" The man", " is ironing", " on a taxi."], gate: () => gateOpened });
  cleanups.push(() => s.close());
  const shots = SCREENSHOTS;
  t.diagnostic(`screenshots in ${shots}`);
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  cleanups.unshift(() => browser.close());
  const page: Page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(15_000);
  const pageErrors: string[] = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  const shot = (name: string) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  const assistant = page.locator(".message.assistant").last();
  const { textIs, holds } = conditions(page);

  await page.goto(`${s.webUrl}/?model=${MODEL}`);
  await holds('document.querySelectorAll("#model option").length === 2');
  assert.equal(await page.inputValue("#model"), MODEL, "?model= preselects");
  assert.equal(await page.inputValue("#temperature"), "0.2");
  assert.equal(await page.isVisible("#title"), true);
  for (const id of ["upvote", "downvote", "flag", "regenerate", "clear"]) assert.equal(await page.isDisabled(`#${id}`), true, `${id} starts disabled`);
  await shot("1-start");

  // upload through the file picker, ask, and see the answer arrive piece by piece
  const imageFile = path.join(shots, "upload.png");
  await writeFile(imageFile, Buffer.from((await testImage(120, 80)).dataUrl.split(",")[1], "base64"));
  await page.setInputFiles("#image-input", imageFile);
  await page.locator("#image-preview").waitFor({ state: "visible" });
  await page.fill("#text", "What is unusual about this image?");
  await page.press("#text", "Enter");
  await textIs(".message.assistant", "The man▌");
  assert.equal(await page.isVisible("#stop"), true);
  assert.equal(await page.isDisabled("#upvote"), true, "no vote while the answer streams");
  assert.equal(await page.isVisible("#image-preview"), false, "the sent image leaves the upload box");
  await shot("2-streaming");
  openGate();
  await textIs(".message.assistant", "The man is ironing on a taxi.");
  await holds('!document.querySelector("#upvote").disabled');
  assert.equal(await page.locator(".message.user p").first().textContent(), "What is unusual about this image?");
  await holds('document.querySelector(".message.user img").naturalWidth === 120');
  await shot("3-answered");

  await page.click("#upvote");
  await textIs("#notice", "Thanks for your vote.");
  assert.equal(await page.isDisabled("#upvote"), true, "one vote per answer");
  const log = () => readFileSync(new ConversationLog(s.logDir).fileFor(), "utf8").trim().split("\n").map((l) => JSON.parse(l).type);
  assert.deepEqual(log(), ["chat", "upvote"]);

  // regenerate with another image mode
  await page.click("#parameters summary");
  await page.check('input[name="process-mode"][value="Pad"]');
  await page.click("#regenerate");
  await holds('!document.querySelector("#upvote").disabled');
  assert.equal(await assistant.textContent(), "The man is ironing on a taxi.");
  assert.equal(s.worker.requests.length, 2);
  assert.equal(s.worker.requests[1].prompt, s.worker.requests[0].prompt);
  assert.deepEqual(log(), ["chat", "upvote", "chat"]);

  // a follow-up the user stops half way: what arrived stays, votes stay off
  s.worker.behaviour = { kind: "answer", pieces: [" Half", " never"], gate: () => new Promise(() => {}) };
  await page.fill("#text", "Why?");
  await page.click("#send");
  await textIs(".message.assistant:last-child", "Half▌");
  await page.click("#stop");
  await textIs(".message.assistant:last-child", "Half");
  assert.equal(await page.isVisible("#send"), true);
  assert.equal(await page.isDisabled("#upvote"), true);
  assert.equal(await page.isDisabled("#regenerate"), false);
  await s.worker.aborted;
  await shot("4-stopped");

  await page.click("#clear");
  await holds('document.querySelectorAll("#chat .message").length === 0');
  for (const id of ["upvote", "regenerate", "clear"]) assert.equal(await page.isDisabled(`#${id}`), true);
  await shot("5-cleared");

  // an example fills the text and the image; a dropped and a pasted image replace it
  s.worker.behaviour = { kind: "answer", pieces: ["Calm water."] };
  await page.click(".example >> nth=1");
  assert.equal(await page.inputValue("#text"), "What are the things I should be cautious about when I visit here?");
  await page.locator("#image-preview").waitFor({ state: "visible" });
  const previewWidth = (width: number) => holds(`document.querySelector("#image-preview").naturalWidth === ${width}`);
  await previewWidth(480);
  const bytes = Array.from(Buffer.from((await testImage(30, 30)).dataUrl.split(",")[1], "base64"));
  for (const how of ["drop", "paste"] as const) {
    // what the browser dispatches when a file is dropped on the zone or pasted into the page
    const event = how === "drop" ? `new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true })` : `new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true })`;
    await page.evaluate(`{
      const data = new DataTransfer();
      data.items.add(new File([new Uint8Array(${JSON.stringify(bytes)})], "${how}.png", { type: "image/png" }));
      document.querySelector("${how === "drop" ? "#drop-zone" : "#text"}").dispatchEvent(${event});
    }`);
    await previewWidth(30);
    await page.click("#remove-image");
    assert.equal(await page.isVisible("#image-preview"), false);
    await page.click(".example >> nth=1");
    await previewWidth(480);
  }
  await page.click("#send");
  await textIs(".message.assistant", "Calm water.");
  const sent = s.worker.requests.at(-1)!;
  assert.match(String(sent.prompt), /USER: <image>\nWhat are the things I should be cautious about when I visit here\? ASSISTANT:$/);
  assert.equal((sent.images as string[]).length, 1);
  await shot("6-example");
  assert.deepEqual(pageErrors, []);
});

test("the page works without its model list and embedded, saying why nothing can be asked", { skip, timeout: 60_000 }, async () => {
  const s = await startWebStack([], { kind: "answer", pieces: [] }, { embed: true });
  cleanups.push(() => s.close());
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  cleanups.unshift(() => browser.close());
  const page = await browser.newPage();
  page.setDefaultTimeout(15_000);
  const { textIs } = conditions(page);
  await page.goto(s.webUrl);
  await textIs("#notice", "No model is being served yet: start a model worker, then reload this page.");
  assert.equal(await page.isVisible("#title"), false, "--embed hides the title");
  assert.equal(await page.isVisible("#terms"), false, "and the terms");
  await page.fill("#text", "Hello?");
  await page.press("#text", "Enter");
  await textIs("#notice", "model: choose a model");
  assert.equal(await page.locator("#chat .message").count(), 0);
});

test("llava serve: the chat page answers with the real model, as the model answers the same prompt", { skip, timeout: 120_000 }, async (t) => {
  const { loaded, image } = await tinyModel();
  // the page renders the fixture's prompt: a llava_v1 name, an image and "What is shown?", greedy
  const expected = answerGeneration(loaded, GRADIENT_PROMPT, [image], { maxNewTokens: 512 });
  await expected.complete();
  const logDir = tempDir("llava-serve-web-");
  const server = await startAllInOne({ engine: new BatchEngine(loaded), modelName: MODEL_V1, host: "127.0.0.1", port: 0, web: { logDir } });
  cleanups.push(() => server.close());
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  cleanups.unshift(() => browser.close());
  const page: Page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(30_000);
  const { holds } = conditions(page);

  await page.goto(server.url);
  await holds('document.querySelectorAll("#model option").length === 1');
  await page.evaluate('(() => { const t = document.querySelector("#temperature"); t.value = "0"; t.dispatchEvent(new Event("input")); t.dispatchEvent(new Event("change")); })()');
  await page.setInputFiles("#image-input", IMAGE_PATH);
  await page.locator("#image-preview").waitFor({ state: "visible" });
  await page.fill("#text", "What is shown?");
  await page.press("#text", "Enter");
  await holds('!document.querySelector("#upvote").disabled');
  const shown = await page.locator(".message.assistant").last().textContent();
  assert.equal(shown, pyStrip(expected.text));
  const shots = SCREENSHOTS;
  await page.screenshot({ path: path.join(shots, "llava-serve.png"), fullPage: true });
  t.diagnostic(`screenshot in ${shots}`);
  const chat = readFileSync(new ConversationLog(logDir).fileFor(), "utf8").trim().split("\n").map((l) => JSON.parse(l)).at(-1);
  assert.equal(chat.type, "chat");
  assert.deepEqual(chat.state.messages.at(-1), ["ASSISTANT", pyStrip(expected.text)]);
});
