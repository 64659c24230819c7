/** `llava bench`: the project's one measuring tool (src/perf/). */
import os from "node:os";
import path from "node:path";
import { type BenchRecord, PEER_NOTE, runBench } from "../perf/bench.js";
import { defaultCacheDir, ensureCheckpoint, MODEL_NAMES, type ModelName } from "../perf/checkpoints.js";
import { PRECISIONS, type Precision } from "../perf/precisions.js";
import { ANSWER_TOKENS, DECODE_TOKENS, type Phase, PHASES, PROMPT_TEXT_TOKENS } from "../perf/protocol.js";
import { formatTable } from "../perf/table.js";
import { UsageError } from "../util/errors.js";
import { parseCommandArgs, type Values } from "./common.js";

export const BENCH_USAGE = `usage: llava bench (--model-path DIR | --model ${MODEL_NAMES.join("|")}) [--precision P[,P...]] [--threads N[,N...]]
                   [--phases ${PHASES.join(",")}] [--runs N] [--peers auto|none] [--cache-dir DIR] [--json]

Measures the model's speed by one protocol, the same for llava-ts and its peers:
  prompt   BOS + "USER:" + the image tokens + filler text to ${PROMPT_TEXT_TOKENS} non-image tokens + " ASSISTANT:"
  encode   one 640x480 image through the vision tower and the projector (ms)
  prefill  the prompt through the LLM, with the image's feature rows spliced in (tokens/s)
  decode   ${DECODE_TOKENS} greedy tokens after the prompt (tokens/s)
  train_*  one training step (ms): zero grad, forward with the frozen tower, loss on ${ANSWER_TOKENS} answer tokens
           after the image and the prompt, backward, AdamW; train_proj trains the projector, train_lora
           LoRA r=128 adapters, train_full the whole LLM (f32 only)
Each figure is the median, min and max of --runs runs after one warm-up run, each precision's
inference and each training phase in a process of its own (peak RSS is that process's). Every
record carries the CPU model and SIMD features, the thread count, and the rooflines measured in
the same run (read bandwidth, f32 GEMM peak: the best of several probes); encode and prefill are
set against the GEMM peak, decode against the bandwidth (the weights and the KV cache of the mean context, read per token, x tokens/s).

With node-llama-cpp installed (--peers auto), llama.cpp runs prefill and decode on the same weights
written as GGUF (llava convert to-gguf, cached in --cache-dir; bf16 as f16) at the same thread
count, and each figure is printed with llama.cpp's and the ratio (>1: llava-ts is faster). Note: ${PEER_NOTE}.
With a Python that imports torch (python3, /usr/bin/python3, or LLAVA_PYTHON; Debian: python3-torch
with libopenblas0-pthread), PyTorch trains the same f32 steps on the same example from the same
weights (HF llava format), in plain PyTorch at the same thread count: its step times and the ratio
(>1: llava-ts is faster), and its first loss, which must equal ours.

options:
  --model-path DIR    the model folder
  --model NAME        a random-weight checkpoint of a real shape (${MODEL_NAMES.join(", ")}), written into the cache on first use
  --precision P       ${PRECISIONS.join(", ")} (default f32); a list runs each
  --threads N         native kernel threads (default: the hardware threads); a list runs each
  --phases LIST       which figures (default: all; train_full only at f32)
  --runs N            timed runs per figure (default 3)
  --peers auto|none   run llama.cpp and PyTorch where they are installed (default auto)
  --cache-dir DIR     where checkpoints and GGUF copies are written (default bench/.cache in the package)
  --json              JSON lines, one per figure (default: a table)
`;

const BENCH_OPTIONS = {
  "model-path": { type: "string" },
  model: { type: "string" },
  precision: { type: "string" },
  threads: { type: "string" },
  phases: { type: "string" },
  runs: { type: "string" },
  peers: { type: "string" },
  "cache-dir": { type: "string" },
  json: { type: "boolean" },
} as const;

/** A comma list, each item one of `allowed`. */
function choices<T extends string>(v: Values, name: string, allowed: readonly T[], fallback: string): T[] {
  const items = String(v[name] ?? fallback).split(",").map((s) => s.trim());
  for (const item of items) if (!(allowed as readonly string[]).includes(item)) throw new UsageError(`--${name}: unknown "${item}" (one or more of ${allowed.join(", ")})`);
  return [...new Set(items)] as T[];
}

/** A comma list of whole numbers from 1 to `most`. */
function counts(v: Values, name: string, fallback: string, most: number): number[] {
  return String(v[name] ?? fallback).split(",").map((s) => {
    const x = Number(s);
    if (s.trim() === "" || !Number.isInteger(x) || x < 1 || x > most) throw new UsageError(`--${name} must be whole numbers from 1 to ${most}, got "${s}"`);
    return x;
  });
}

export async function runBenchCommand(argv: string[]): Promise<void> {
  const v = parseCommandArgs("bench", argv, BENCH_OPTIONS);
  if (v.help) {
    process.stdout.write(BENCH_USAGE);
    return;
  }
  const precisions = choices<Precision>(v, "precision", PRECISIONS, "f32");
  const explicitPhases = v.phases !== undefined;
  const phases = choices<Phase>(v, "phases", PHASES, PHASES.join(","));
  if (explicitPhases && phases.includes("train_full") && precisions.some((p) => p !== "f32")) {
    throw new UsageError("--phases train_full trains the whole LLM in f32: use --precision f32");
  }
  const threads = counts(v, "threads", String(os.availableParallelism()), 1024);
  const runs = counts(v, "runs", "3", 1000);
  if (runs.length > 1) throw new UsageError(`--runs takes one number, got "${String(v.runs)}"`);
  const peers = v.peers ?? "auto";
  if (peers !== "auto" && peers !== "none") throw new UsageError(`--peers must be auto or none, got "${String(peers)}"`);
  if ((v["model-path"] === undefined) === (v.model === undefined)) throw new UsageError("give --model-path DIR or --model NAME (see llava bench --help)");
  const model = v.model as string | undefined;
  if (model !== undefined && !(MODEL_NAMES as string[]).includes(model)) throw new UsageError(`--model: unknown "${model}" (${MODEL_NAMES.join(", ")})`);
  const cacheDir = (v["cache-dir"] as string | undefined) ?? defaultCacheDir();
  const modelPath = model ? ensureCheckpoint(model as ModelName, cacheDir) : (v["model-path"] as string);

  const records: BenchRecord[] = [];
  const json = v.json === true;
  await runBench({
    modelPath, modelName: model ?? path.basename(path.resolve(modelPath)), precisions, threads, runs: runs[0], cacheDir, peers: peers === "auto",
    phases,
    onRecord: (r) => (json ? process.stdout.write(`${JSON.stringify(r)}\n`) : records.push(r)),
    onNote: (line) => process.stderr.write(`${line}\n`),
  });
  if (!json) process.stdout.write(formatTable(records));
}
