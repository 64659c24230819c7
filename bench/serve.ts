/**
 * `npm run bench:serve`: `llava serve` as users run it, measured from outside over HTTP. For each
 * precision and thread count it starts the server on the bench-small shape, then sends 1, 4, 8
 * and 16 concurrent streamed OpenAI chat completions (each its own image and question, 64 greedy
 * tokens) and prints one JSON line per concurrency: requests/s, time to first token (median, p95)
 * as the clients see it, aggregate decode tokens/s (the tokens after each stream's first, over the
 * time from the first stream's first token to the last stream's end) and its ratio to one stream,
 * and whether every stream's answer equals its answer alone. The baseline (one stream) runs in the
 * same server, so every ratio compares figures of the same run on the same machine.
 *
 *   node dist/bench/serve.js [--precisions f32,q4_0] [--threads 1,2] [--streams 1,4,8,16] [--tokens 64]
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { encodePng } from "../src/image/decode.js";
import { ensureCheckpoint, noiseImage } from "./checkpoints.js";
import { emit } from "./machine.js";
import { quantile } from "./stats.js";

const MODEL = "bench-small";
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/llava.js");
const WORDS = ["red", "blue", "cat", "sky", "boat", "tree", "road", "lamp"];

/** Client i's request: its own image and 40-word question, so no cache helps it. */
async function body(i: number, tokens: number): Promise<string> {
  const words = Array.from({ length: 40 }, (_, j) => WORDS[(i * 3 + j * (i + 1)) % WORDS.length]).join(" ");
  const png = (await encodePng(noiseImage(640, 480, 100 + i))).toString("base64");
  return JSON.stringify({
    model: MODEL,
    stream: true,
    temperature: 0,
    max_tokens: tokens,
    stream_options: { include_usage: true },
    messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/png;base64,${png}` } }, { type: "text", text: words }] }],
  });
}

interface StreamResult {
  text: string;
  tokens: number;
  /** ms since the batch was sent */
  first: number;
  last: number;
}

/** One streamed completion, read as server-sent events. */
async function stream(url: string, payload: string, t0: number): Promise<StreamResult> {
  const res = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: payload });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const result: StreamResult = { text: "", tokens: 0, first: 0, last: 0 };
  let buffered = "";
  const decoder = new TextDecoder();
  for await (const bytes of res.body!) {
    buffered += decoder.decode(bytes as Uint8Array, { stream: true });
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end).replace(/^data: /, "");
      buffered = buffered.slice(end + 2);
      if (event === "[DONE]") continue;
      const chunk = JSON.parse(event) as { choices: Array<{ delta: { content?: string } }>; usage?: { completion_tokens: number } };
      const piece = chunk.choices[0]?.delta.content;
      if (piece) {
        result.first ||= performance.now() - t0;
        result.text += piece;
      }
      if (chunk.usage) result.tokens = chunk.usage.completion_tokens;
    }
  }
  result.last = performance.now() - t0;
  return result;
}

async function concurrently(url: string, payloads: string[]): Promise<{ results: StreamResult[]; wallMs: number }> {
  const t0 = performance.now();
  const results = await Promise.all(payloads.map((p) => stream(url, p, t0)));
  return { results, wallMs: performance.now() - t0 };
}

/** Decode tokens per second over the span in which the streams decoded. */
function decodeRate(results: StreamResult[]): number {
  const tokens = results.reduce((n, r) => n + r.tokens - 1, 0);
  const span = Math.max(...results.map((r) => r.last)) - Math.min(...results.map((r) => r.first));
  return tokens / (span / 1000);
}

/** Starts `llava serve` and resolves with its URL once it listens. */
function startServer(args: string[]): Promise<{ url: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [CLI, "serve", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  return new Promise((resolve, reject) => {
    child.on("exit", (code) => reject(new Error(`llava serve exited with ${code}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`)));
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString("utf8");
      const m = / on (http\S+)\n/.exec(stderr);
      if (m) {
        child.removeAllListeners("exit");
        resolve({ url: m[1], stop: () => new Promise((done) => (child.on("exit", () => done()), child.kill("SIGTERM"))) });
      }
    });
  });
}

async function measure(precision: string, threads: number, streams: number[], tokens: number): Promise<void> {
  const load = precision === "f32" ? [] : precision === "q4_0" ? ["--load-4bit"] : precision === "q8_0" ? ["--load-8bit"] : ["--dtype", precision];
  const server = await startServer(["--model-path", ensureCheckpoint(MODEL), "--model-name", MODEL, "--port", "0", "--threads", String(threads), ...load]);
  try {
    const most = Math.max(...streams);
    const payloads = await Promise.all(Array.from({ length: most }, (_, i) => body(i, tokens)));
    await concurrently(server.url, [await body(most, 2)]); // warm-up
    // each request alone: the single-stream figures and the answers every batch must reproduce
    const alone: StreamResult[] = [];
    for (const p of payloads) alone.push((await concurrently(server.url, [p])).results[0]);
    const single = alone.reduce((n, r) => n + r.tokens - 1, 0) / (alone.reduce((t, r) => t + r.last - r.first, 0) / 1000);
    for (const n of streams) {
      const { results, wallMs } = n === 1 ? { results: [alone[0]], wallMs: alone[0].last } : await concurrently(server.url, payloads.slice(0, n));
      const decode = n === 1 ? single : decodeRate(results);
      emit(threads, {
        bench: "serve", model: MODEL, precision, streams: n, tokens,
        requests_per_s: n / (wallMs / 1000),
        ttft_ms_median: quantile(results.map((r) => r.first), 0.5), ttft_ms_p95: quantile(results.map((r) => r.first), 0.95),
        decode_tokens_per_s: decode, decode_ratio_to_single: decode / single,
        greedy_equal_to_alone: results.every((r, i) => r.text === alone[i].text),
      });
    }
  } finally {
    await server.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      precisions: { type: "string", default: "f32,q4_0" },
      threads: { type: "string", default: "1,2" },
      streams: { type: "string", default: "1,4,8,16" },
      tokens: { type: "string", default: "64" },
    },
  });
  const streams = values.streams!.split(",").map(Number);
  for (const precision of values.precisions!.split(",")) {
    for (const threads of values.threads!.split(",").map(Number)) {
      try {
        await measure(precision, threads, streams, Number(values.tokens));
      } catch (err) {
        emit(threads, { bench: "serve", model: MODEL, precision, error: (err as Error).message });
      }
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
