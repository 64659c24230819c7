/**
 * `npm run bench:engine`: the batching engine in process on the bench-small shape. For each
 * precision and thread count, 1, 4, 8 and 16 concurrent streams, each a different image and
 * question, 64 greedy tokens each. Prints one JSON line per configuration: requests/s, time to
 * first token (median, p95), aggregate decode tokens/s (tokens of the decode steps per second
 * spent in them) and its ratio to one stream, end-to-end tokens/s, and whether every stream's
 * answer equals its answer alone. Each precision and thread count runs in its own process.
 *
 *   node dist/bench/engine.js [--precisions f32,q4_0] [--threads 1,2] [--streams 1,4,8,16] [--tokens 64]
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createBackend } from "../src/tensor/backends.js";
import { loadLlava, type LoadOptions } from "../src/llava/load.js";
import { BatchEngine } from "../src/serve/batch-engine.js";
import type { EngineRequest } from "../src/serve/engine.js";
import { clientRequest } from "./checkpoints.js";
import { ensureCheckpoint } from "../src/perf/checkpoints.js";
import { emit } from "../src/perf/machine.js";
import { quantile } from "../src/perf/stats.js";
import { NODE_FLAGS } from "../src/util/node-flags.js";

const MODEL = "bench-small";

/** Stream i's request: its own image and question, so no cache helps it. */
function request(i: number, tokens: number): EngineRequest {
  const { question, image } = clientRequest(i);
  return { prompt: `USER: <image>\n${question} ASSISTANT:`, images: [image], maxNewTokens: tokens };
}

interface Run {
  texts: string[];
  wallMs: number;
  ttftMs: number[];
  completion: number;
  stepRows: number;
  stepMs: number;
}

/** `reqs` at once through a fresh engine (no caches: each request does all its work). */
async function run(engine: BatchEngine, reqs: EngineRequest[]): Promise<Run> {
  const before = { ...engine.stats };
  const t0 = performance.now();
  const results = await Promise.all(reqs.map(async (r) => {
    const out = engine.generate(r);
    let text = "";
    let first = 0;
    for await (const piece of out) {
      first ||= performance.now() - t0;
      text += piece;
    }
    return { text, first, tokens: out.completionTokens };
  }));
  return {
    texts: results.map((r) => r.text),
    wallMs: performance.now() - t0,
    ttftMs: results.map((r) => r.first),
    completion: results.reduce((n, r) => n + r.tokens, 0),
    stepRows: engine.stats.stepRows - before.stepRows,
    stepMs: engine.stats.stepMs - before.stepMs,
  };
}

async function child(precision: string, threads: number, streams: number[], tokens: number): Promise<void> {
  const backend = createBackend({ name: "native", threads });
  const opts: LoadOptions = { backend, ...(precision === "f32" ? {} : { quantize: precision as "q8_0" | "q4_0" }) };
  const loaded = await loadLlava(ensureCheckpoint(MODEL), opts);
  const most = Math.max(...streams);
  const engine = new BatchEngine(loaded, { maxBatch: most, maxQueue: most, imageCacheBytes: 0, prefixCacheBytes: 0 });
  const reqs = Array.from({ length: most }, (_, i) => request(i, tokens));
  await run(engine, [request(most, 2)]); // warm-up
  // each request alone: the single-stream figures and the answers every batch must reproduce
  const alone: Run[] = [];
  for (const r of reqs) alone.push(await run(engine, [r]));
  const single = alone.reduce((s, a) => s + a.stepRows, 0) / (alone.reduce((s, a) => s + a.stepMs, 0) / 1000);
  for (const n of streams) {
    const r = n === 1 ? alone[0] : await run(engine, reqs.slice(0, n));
    const decode = r.stepRows / (r.stepMs / 1000);
    emit(threads, {
      model: MODEL, precision, streams: n, tokens,
      requests_per_s: n / (r.wallMs / 1000),
      ttft_ms_median: quantile(r.ttftMs, 0.5), ttft_ms_p95: quantile(r.ttftMs, 0.95),
      decode_tokens_per_s: n === 1 ? single : decode, decode_ratio_to_single: n === 1 ? 1 : decode / single,
      end_to_end_tokens_per_s: r.completion / (r.wallMs / 1000),
      greedy_equal_to_alone: r.texts.every((t, i) => t === alone[i].texts[0]),
    });
  }
  await engine.close();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      child: { type: "string" },
      precisions: { type: "string", default: "f32,q4_0" },
      threads: { type: "string", default: "1,2" },
      streams: { type: "string", default: "1,4,8,16" },
      tokens: { type: "string", default: "64" },
    },
  });
  const streams = values.streams!.split(",").map(Number);
  const tokens = Number(values.tokens);
  if (values.child) {
    const [precision, threads] = values.child.split(":");
    await child(precision, Number(threads), streams, tokens);
    return;
  }
  ensureCheckpoint(MODEL);
  for (const precision of values.precisions!.split(",")) {
    for (const threads of values.threads!.split(",").map(Number)) {
      const args = [...NODE_FLAGS, fileURLToPath(import.meta.url), "--child", `${precision}:${threads}`, "--streams", values.streams!, "--tokens", values.tokens!];
      const r = spawnSync(process.execPath, args, { encoding: "utf8", stdio: ["ignore", "inherit", "pipe"] });
      if (r.status !== 0) emit(threads, { model: MODEL, precision, error: (r.stderr || "").trim().split("\n").slice(-3).join(" | ") });
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
