/**
 * `npm run bench:serve`: `llava serve` as users run it, measured from outside over HTTP. For each
 * precision and thread count it starts the server on the bench-small shape, then sends 1, 4, 8
 * and 16 concurrent streamed OpenAI chat completions (each its own image and question, 64 greedy
 * tokens) and prints one JSON line per concurrency: requests/s, time to first token (median, p95)
 * as the clients see it, aggregate decode tokens/s (while every stream decodes: see decodeRate)
 * and its ratio to one stream, output tokens/s over the whole run,
 * and whether every stream's answer equals its answer alone (the server keeps no prefix caches,
 * whose reuse sums in another order: the check is of batching alone). The single-stream baseline (three
 * requests one after the other) runs in the same server, so every ratio compares figures of the
 * same run on the same machine.
 *
 *   node dist/bench/serve.js [--precisions f32,q4_0] [--threads 1,2] [--streams 1,4,8,16] [--tokens 64]
 */
import { spawn } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { encodePng } from "../src/image/decode.js";
import { clientRequest } from "./checkpoints.js";
import { ensureCheckpoint } from "../src/perf/checkpoints.js";
import { emit } from "../src/perf/machine.js";
import { quantile } from "../src/perf/stats.js";
import { NODE_FLAGS } from "../src/util/node-flags.js";

const MODEL = "bench-small";
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../bin/llava.js");

/** Client i's request: its own image and 40-word question, so no cache helps it. */
async function body(i: number, tokens: number): Promise<string> {
  const { question, image } = clientRequest(i);
  const png = (await encodePng(image)).toString("base64");
  return JSON.stringify({
    model: MODEL,
    stream: true,
    temperature: 0,
    max_tokens: tokens,
    stream_options: { include_usage: true },
    messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/png;base64,${png}` } }, { type: "text", text: question }] }],
  });
}

interface StreamResult {
  text: string;
  tokens: number;
  /** ms since the batch was sent: the first piece, each piece, the end */
  first: number;
  pieces: number[];
  last: number;
}

/**
 * One streamed completion, read as server-sent events. The client runs on the server's machine,
 * so during the stream it only records each chunk and its arrival time (node:http, no parsing):
 * the events are parsed after the stream ends, and the client takes as little CPU as it can from
 * the server it measures.
 */
function stream(url: string, payload: string, t0: number): Promise<StreamResult> {
  const arrivals: Array<[number, string]> = [];
  return new Promise<StreamResult>((resolve, reject) => {
    const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(payload) };
    const req = http.request(`${url}/v1/chat/completions`, { method: "POST", headers }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (text: string) => arrivals.push([performance.now() - t0, text]));
      res.on("error", reject);
      res.on("end", () => {
        const last = performance.now() - t0;
        if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${arrivals.map(([, t]) => t).join("")}`));
        else resolve(parseEvents(arrivals, last));
      });
    });
    req.on("error", reject);
    req.end(payload);
  });
}

/** The pieces of a recorded stream, each timed by the chunk that completed its event. */
function parseEvents(arrivals: Array<[number, string]>, last: number): StreamResult {
  const result: StreamResult = { text: "", tokens: 0, first: 0, pieces: [], last };
  let buffered = "";
  for (const [at, text] of arrivals) {
    buffered += text;
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end).replace(/^data: /, "");
      buffered = buffered.slice(end + 2);
      if (event === "[DONE]") continue;
      const chunk = JSON.parse(event) as { choices: Array<{ delta: { content?: string } }>; usage?: { completion_tokens: number } };
      const piece = chunk.choices[0]?.delta.content;
      if (piece) {
        result.pieces.push(at);
        result.first ||= at;
        result.text += piece;
      }
      if (chunk.usage) result.tokens = chunk.usage.completion_tokens;
    }
  }
  return result;
}

async function concurrently(url: string, payloads: string[]): Promise<{ results: StreamResult[]; wallMs: number }> {
  const t0 = performance.now();
  const results = await Promise.all(payloads.map((p) => stream(url, p, t0)));
  return { results, wallMs: performance.now() - t0 };
}

/**
 * Pieces (a token each, but for the few a stop-string hold-back merges) per second while every
 * stream was decoding: from the last stream's first piece to the first stream's end, so neither
 * the prompts' prefills before nor the stragglers after count.
 */
function decodeRate(results: StreamResult[]): number | null {
  const from = Math.max(...results.map((r) => r.first));
  const to = Math.min(...results.map((r) => r.last));
  if (to <= from) return null; // more streams than one batch holds: they never all decoded at once
  const pieces = results.reduce((n, r) => n + r.pieces.filter((t) => t > from && t <= to).length, 0);
  return pieces / ((to - from) / 1000);
}

/** Starts `llava serve` and resolves with its URL once it listens. */
function startServer(args: string[]): Promise<{ url: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI, "serve", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  return new Promise((resolve, reject) => {
    child.on("exit", (code) => reject(new Error(`llava serve exited with ${code}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`)));
    const listening = (d: Buffer) => {
      stderr += d.toString("utf8");
      const m = / on (http\S+)\n/.exec(stderr);
      if (m) {
        child.stderr.off("data", listening);
        child.stderr.resume();
        child.removeAllListeners("exit");
        resolve({ url: m[1], stop: () => new Promise((done) => (child.on("exit", () => done()), child.kill("SIGTERM"))) });
      }
    };
    child.stderr.on("data", listening);
  });
}

async function measure(precision: string, threads: number, streams: number[], tokens: number): Promise<void> {
  const load = precision === "f32" ? [] : precision === "q4_0" ? ["--load-4bit"] : precision === "q8_0" ? ["--load-8bit"] : ["--dtype", precision];
  const server = await startServer(["--model-path", ensureCheckpoint(MODEL), "--model-name", MODEL, "--port", "0", "--threads", String(threads), "--prefix-cache-mb", "0", ...load]);
  try {
    // every request has its own image and question, so the server's image and prefix caches
    // never help a measured one: each level is measured cold
    let next = 0;
    const fresh = (n: number) => Promise.all(Array.from({ length: n }, () => body(next++, tokens)));
    await concurrently(server.url, await fresh(1)); // warm-up
    const singles: StreamResult[] = [];
    for (const p of await fresh(3)) singles.push((await concurrently(server.url, [p])).results[0]);
    const single = quantile(singles.map((r) => decodeRate([r])!), 0.5);
    for (const n of streams) {
      const payloads = await fresh(n);
      const { results, wallMs } = await concurrently(server.url, payloads);
      const decode = n === 1 ? single : decodeRate(results);
      // the same requests again one at a time: a batched answer must equal the answer alone
      const alone: string[] = [];
      for (const p of payloads) alone.push((await concurrently(server.url, [p])).results[0].text);
      emit(threads, {
        bench: "serve", model: MODEL, precision, streams: n, tokens,
        requests_per_s: n / (wallMs / 1000),
        ttft_ms_median: quantile(results.map((r) => r.first), 0.5), ttft_ms_p95: quantile(results.map((r) => r.first), 0.95),
        decode_tokens_per_s: decode, decode_ratio_to_single: decode === null ? null : decode / single,
        output_tokens_per_s: results.reduce((n, r) => n + r.tokens, 0) / (wallMs / 1000),
        greedy_equal_to_alone: results.every((r, i) => r.text === alone[i]),
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
