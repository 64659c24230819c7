/**
 * Bad input to the model workers: requests refused with a 400 and a one-line error (the worker
 * keeps serving), the reference's answers to a prompt too long and to a failed generation, and
 * command lines refused with one line and a non-zero exit.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { loadLlava } from "../../src/llava/load.js";
import { BatchEngine } from "../../src/serve/batch-engine.js";
import { PROMPT_TOO_LONG_MSG, SERVER_ERROR_MSG } from "../../src/serve/protocol.js";
import { startWorker } from "../../src/serve/worker-http.js";
import type { Engine } from "../../src/serve/engine.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { IMAGES, MODELS } from "../helpers/paths.js";
import { streamJson, throughPieces } from "../helpers/worker-client.js";

const TINY = path.join(MODELS, "tiny-llava-1.5-mha");
const IMAGE_B64 = fs.readFileSync(path.join(IMAGES, "gradient_640x480.png")).toString("base64");
const loaded = await loadLlava(TINY);
const w = await startWorker({ engine: new BatchEngine(loaded), modelName: "tiny", host: "127.0.0.1", port: 0 });
after(() => w.close());

async function rawPost(url: string, body: string): Promise<{ status: number; json: { error?: string } }> {
  const res = await fetch(`${url}/worker_generate_stream`, { method: "POST", body, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, json: (await res.json()) as { error?: string } };
}

const ok = { prompt: "USER: <image>\nWhat is shown? ASSISTANT:", images: [IMAGE_B64] };
const badRequests: Array<[string, RegExp]> = [
  ["{not json", /not valid JSON/],
  ["[1, 2]", /expected object, received array/],
  [JSON.stringify({ images: [] }), /prompt: .*expected string/],
  [JSON.stringify({ ...ok, prompt: 42 }), /prompt: .*expected string/],
  [JSON.stringify({ ...ok, images: IMAGE_B64 }), /images: .*expected array/],
  [JSON.stringify({ ...ok, images: [7] }), /images.0: .*expected string/],
  [JSON.stringify({ ...ok, temperature: "hot" }), /temperature: .*expected number/],
  [JSON.stringify({ ...ok, top_p: 1.5 }), /top_p: .*<=1/],
  [JSON.stringify({ ...ok, max_new_tokens: "many" }), /max_new_tokens: .*expected number/],
  [JSON.stringify({ ...ok, stop: ["</s>"] }), /stop: .*expected string/],
  [JSON.stringify({ ...ok, images: [IMAGE_B64, IMAGE_B64] }), /images: 2 given but the prompt has 1 <image> marker$/],
  [JSON.stringify({ ...ok, images: [] }), /images: 0 given but the prompt has 1 <image> marker$/],
  [JSON.stringify({ prompt: "no marker", images: [IMAGE_B64] }), /images: 1 given but the prompt has 0 <image> markers$/],
  [JSON.stringify({ ...ok, images: ["not base64 at all!"] }), /bytes/],
  [JSON.stringify({ ...ok, images: [Buffer.from("plain text, not an image").toString("base64")] }), /bytes/],
];

test("malformed JSON, wrong types, undecodable images and images that do not match the markers are a 400 naming the problem", async () => {
  for (const [body, message] of badRequests) {
    const r = await rawPost(w.url, body);
    assert.equal(r.status, 400, body.slice(0, 100));
    assert.match(r.json.error ?? "", message, body.slice(0, 100));
    assert.doesNotMatch(r.json.error ?? "", /\n/);
  }
  // the worker keeps serving
  const chunks = await streamJson(`${w.url}/worker_generate_stream`, { ...ok, temperature: 0, max_new_tokens: 2 });
  assert.equal(chunks.at(-1)?.usage?.completion_tokens, 2);
});

test("a prompt that leaves no room in the context gets the reference's message after the prompt", async () => {
  const prompt = "USER: <image>\n" + "word ".repeat(3000) + "ASSISTANT:";
  assert.deepEqual(await streamJson(`${w.url}/worker_generate_stream`, { prompt, images: [IMAGE_B64] }), [{ text: prompt + PROMPT_TOO_LONG_MSG, error_code: 0 }]);
  assert.equal(w.worker.queueLength, 0);
});

test("a generation that fails is one error chunk with code 1, its cause on the worker's log", async () => {
  const logged: string[] = [];
  // a real engine that breaks after its first piece
  const real = new BatchEngine(loaded);
  const breaking: Engine = {
    get queueLength() {
      return real.queueLength;
    },
    close: () => real.close(),
    generate(request) {
      return throughPieces(real.generate(request), async function* (inner) {
        for await (const piece of inner) {
          yield piece;
          throw new Error("the accelerator caught fire");
        }
      });
    },
  };
  const broken = await startWorker({ engine: breaking, modelName: "tiny", host: "127.0.0.1", port: 0, log: (l) => logged.push(l) });
  try {
    const chunks = await streamJson(`${broken.url}/worker_generate_stream`, { ...ok, temperature: 0 });
    assert.equal(chunks.length, 2);
    assert.equal(chunks[0].error_code, 0);
    assert.deepEqual(chunks[1], { text: SERVER_ERROR_MSG, error_code: 1 });
    assert.deepEqual(logged, ["generation failed: the accelerator caught fire"]);
    assert.equal(broken.worker.queueLength, 0);
  } finally {
    await broken.close();
  }
});

test("the worker commands refuse bad command lines, a model that does not load and a controller they cannot reach", () => {
  // without --model-path the worker loads the shipped default model, then finds no controller
  assertCleanError(
    llava(["serve", "worker", "--host", "127.0.0.1", "--port", "0", "--controller-address", "http://127.0.0.1:1"]),
    /cannot register with the controller at http:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/,
  );
  assertCleanError(llava(["serve", "worker", "--model-path", TINY, "--limit-model-concurrency", "0"]), /--limit-model-concurrency must be a whole number >= 1, got "0"/);
  assertCleanError(llava(["serve", "worker", "--model-path", TINY, "--max-batch", "0"]), /--max-batch must be a whole number >= 1, got "0"/);
  assertCleanError(llava(["serve", "--model-path", TINY, "--prefix-cache-mb", "lots"]), /--prefix-cache-mb must be a positive number of megabytes, got "lots"/);
  assertCleanError(llava(["serve", "worker", "--model-path", TINY, "--worker-address", "localhost:40000"]), /--worker-address must be an http\(s\) URL/);
  assertCleanError(llava(["serve", "worker", "--model-path", TINY, "--port", "99999"]), /--port must be a whole number/);
  assertCleanError(llava(["serve", "worker", "--model-path", "no-such-model-folder"]), /no-such-model-folder/);
  assertCleanError(
    llava(["serve", "worker", "--model-path", TINY, "--host", "127.0.0.1", "--port", "0", "--controller-address", "http://127.0.0.1:1"]),
    /cannot register with the controller at http:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/,
  );
  assertCleanError(llava(["serve", "openai-worker", "--model", "m"]), /--api-base URL is required/);
  assertCleanError(llava(["serve", "openai-worker", "--api-base", "http://127.0.0.1:1/v1"]), /--model NAME is required/);
  assertCleanError(llava(["serve", "openai-worker", "--api-base", "http://127.0.0.1:1/v1", "--model", "m", "--port", "0"]), /cannot list the models of http:\/\/127\.0\.0\.1:1\/v1/);
});
