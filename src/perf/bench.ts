/**
 * `llava bench`: the protocol (protocol.ts) on a model at each precision and thread count, each
 * job in a process of its own, llama.cpp on the same weights as GGUF when node-llama-cpp is
 * installed, PyTorch on the same training steps when Python has torch, and every figure next to
 * the machine's rooflines measured in the same run. Nothing is compared with a figure typed into
 * the code.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { readModelSpec } from "../llava/spec.js";
import { openCheckpointWeights } from "../llava/weights.js";
import { createBackend } from "../tensor/backends.js";
import type { NativeBackend } from "../tensor/native-backend.js";
import { cachedGguf } from "./gguf-cache.js";
import { runJob } from "./jobs.js";
import { importLlamaCpp, type PeerResult } from "./llama-cpp.js";
import { MACHINE, measureRooflines, type Rooflines } from "./machine.js";
import type { InferenceResult, TrainResult } from "./measure.js";
import { ggufTypeFor, type Precision } from "./precisions.js";
import { ANSWER_TOKENS, DECODE_TOKENS, INFERENCE_PHASES, type InferencePhase, type Phase, TRAIN_PHASES, type TrainPhase } from "./protocol.js";
import { median } from "./stats.js";
import { findTorch, runTorchPeer, torchCanRead } from "./torch-peer.js";

export interface BenchOptions {
  modelPath: string;
  /** the model's name in the records (the folder, or bench-small / bench-1b) */
  modelName: string;
  precisions: Precision[];
  threads: number[];
  phases: Phase[];
  runs: number;
  /** run llama.cpp too when node-llama-cpp is installed, PyTorch when Python has torch */
  peers: boolean;
  /** where the GGUF copies for the peers are kept */
  cacheDir: string;
  /** each figure as it is measured */
  onRecord: (record: BenchRecord) => void;
  /** a line for the reader (a peer that cannot run, and why) */
  onNote: (line: string) => void;
}

export const UNITS: Record<Phase, string> = {
  encode: "ms", prefill: "tokens/s", decode: "tokens/s", train_proj: "ms", train_lora: "ms", train_full: "ms",
};

/** One measured figure: the median and range of the runs, with the machine, its rooflines and the process's peak RSS. */
export interface BenchRecord {
  model: string;
  engine: "llava-ts" | "llama.cpp" | "pytorch";
  precision: Precision;
  phase: Phase;
  unit: string;
  median: number;
  min: number;
  max: number;
  runs: number;
  threads: number;
  cpu: string;
  simd: string[];
  peak_rss_bytes: number;
  read_gb_per_s: number;
  gemm_f32_gflops: number;
  [extra: string]: unknown;
}

export const PEER_NOTE = "llama.cpp's prompt is text-only ids of the same count (node-llama-cpp takes no image); its KV cache is its default f16";

export async function runBench(opts: BenchOptions): Promise<void> {
  // a missing or unreadable model is one line before anything is measured
  const spec = readModelSpec(opts.modelPath);
  openCheckpointWeights(spec).close();
  const inference = INFERENCE_PHASES.filter((p) => opts.phases.includes(p));
  const training = TRAIN_PHASES.filter((p) => opts.phases.includes(p));
  const peerPhases = inference.filter((p) => p !== "encode");
  const llamaCpp = opts.peers && peerPhases.length ? await importLlamaCpp() : null;
  if (opts.peers && peerPhases.length && !llamaCpp) opts.onNote("peers: llama.cpp not installed");
  else if (llamaCpp) opts.onNote(`peers: ${PEER_NOTE}`);
  const torch = opts.peers && training.length ? findTorch() : null;
  if (opts.peers && training.length && !torch) opts.onNote("peers: PyTorch not installed (no python3 imports torch; LLAVA_PYTHON names one)");
  else if (torch && !torchCanRead(spec)) opts.onNote(`peers: PyTorch skipped (it reads the HF llava format only, not ${spec.format})`);
  else if (torch) opts.onNote(`peers: PyTorch ${torch.version} trains the same steps in f32; its first loss must equal ours`);
  const torchPeer = torch && torchCanRead(spec) ? torch : null;

  for (const threads of opts.threads) {
    const roofs = measureRooflines(createBackend({ name: "native", threads }) as NativeBackend);
    const record = (engine: BenchRecord["engine"], precision: Precision, phase: Phase, values: number[], peakRssBytes: number, extra: Record<string, unknown> = {}): BenchRecord => ({
      model: opts.modelName, engine, precision, phase, unit: UNITS[phase],
      median: median(values), min: Math.min(...values), max: Math.max(...values), runs: values.length,
      threads, ...MACHINE, peak_rss_bytes: peakRssBytes, read_gb_per_s: roofs.readGBps, gemm_f32_gflops: roofs.gemmGflops, ...extra,
    });
    for (const precision of opts.precisions) {
      if (inference.length) {
        const ours = runJob<InferenceResult & InferenceWork>({ kind: "infer", modelPath: opts.modelPath, precision, threads, phases: inference, runs: opts.runs });
        const peer = llamaCpp ? await peerFigures(opts, precision, threads, ours.textOnlyIds) : null;
        for (const phase of inference) {
          const values = ours.values[phase]!;
          const r = record("llava-ts", precision, phase, values, ours.peakRssBytes, { load_ms: ours.loadMs, ...roofline(phase, median(values), ours, roofs) });
          const theirs = peer && phase !== "encode" ? peer.result[phase] : null;
          if (theirs && peer) {
            const t = record("llama.cpp", precision, phase, theirs, peer.result.peakRssBytes, { gguf_type: peer.type, prompt: "text-only", build: peer.result.build, ...roofline(phase, median(theirs), ours, roofs) });
            opts.onRecord({ ...r, llama_cpp: t.median, ratio_to_llama_cpp: r.median / t.median });
            opts.onRecord(t);
          } else opts.onRecord(r);
        }
      }
      // the whole LLM trains only in f32: packed weights take no updates
      for (const phase of training.filter((p) => p !== "train_full" || precision === "f32")) {
        // PyTorch trains in f32: the same weights, so the same first loss
        const torchInputs = torchPeer && precision === "f32" ? fs.mkdtempSync(path.join(os.tmpdir(), "llava-bench-torch-")) : undefined;
        try {
          const t = runJob<TrainResult & { loadMs: number }>({ kind: "train", modelPath: opts.modelPath, precision, threads, phase, runs: opts.runs, torchInputs });
          const r = record("llava-ts", precision, phase, t.values, t.peakRssBytes, { load_ms: t.loadMs, trainable_params: t.trainableParams, answer_tokens: ANSWER_TOKENS, first_loss: t.firstLoss });
          const peer = torchInputs ? torchFigures(opts, torchPeer!.python, torchInputs, phase, threads) : null;
          if (peer) {
            const p = record("pytorch", precision, phase, peer.values, peer.peakRssBytes, { torch: peer.torch, trainable_params: peer.trainableParams, first_loss: peer.firstLoss });
            opts.onRecord({ ...r, pytorch: p.median, ratio_to_pytorch: p.median / r.median, pytorch_first_loss: peer.firstLoss });
            opts.onRecord(p);
          } else opts.onRecord(r);
        } finally {
          if (torchInputs) fs.rmSync(torchInputs, { recursive: true, force: true });
        }
      }
    }
  }
}

/** What the inference job reports of the model besides its timings. */
interface InferenceWork {
  loadMs: number;
  weightBytes: number;
  prefillFlops: number;
  kvBytesPerPosition: number;
  encodeFlops: number;
}

/**
 * A figure against its roofline: encode and prefill against the f32 GEMM peak (the time their
 * multiply-adds take at that rate), decode against the read bandwidth (the bytes a step must
 * read at that rate: the weights, and the KV cache of its context, on average the prompt and
 * half the answer).
 */
function roofline(phase: InferencePhase, value: number, work: InferenceResult & InferenceWork, roofs: Rooflines): Record<string, number> {
  const gflops = roofs.gemmGflops * 1e9;
  if (phase === "encode") {
    const ms = (work.encodeFlops / gflops) * 1000;
    return { roofline_ms: ms, fraction_of_roofline: ms / value };
  }
  if (phase === "prefill") return { prompt_tokens: work.promptTokens, roofline_tokens_per_s: gflops / work.prefillFlops, fraction_of_roofline: (value * work.prefillFlops) / gflops };
  const kvBytes = work.kvBytesPerPosition * (work.promptTokens + (DECODE_TOKENS + 1) / 2);
  const bytes = work.weightBytes + kvBytes;
  return { weight_bytes_per_token: work.weightBytes, kv_bytes_per_token: kvBytes, roofline_tokens_per_s: (roofs.readGBps * 1e9) / bytes, fraction_of_roofline: (value * bytes) / (roofs.readGBps * 1e9) };
}

/** PyTorch's steps, or null (with a note) when it fails: a peer that cannot run costs its figures, not ours. */
function torchFigures(opts: BenchOptions, python: string, dir: string, phase: TrainPhase, threads: number) {
  try {
    return runTorchPeer(python, dir, phase, threads, opts.runs);
  } catch (err) {
    opts.onNote(`peers: ${(err as Error).message}`);
    return null;
  }
}

/** llama.cpp's prefill and decode on the same weights as GGUF, or null (with a note) when no GGUF type holds this precision or llama.cpp fails. */
async function peerFigures(opts: BenchOptions, precision: Precision, threads: number, ids: number[]): Promise<{ type: string; result: PeerResult & { peakRssBytes: number } } | null> {
  const type = ggufTypeFor(precision);
  if (!type) {
    opts.onNote(`peers: llama.cpp skipped at ${precision} (no GGUF file type holds it)`);
    return null;
  }
  const gguf = await cachedGguf(opts.modelPath, type, opts.cacheDir);
  try {
    return { type, result: runJob<PeerResult>({ kind: "llama.cpp", gguf, ids, threads, runs: opts.runs }) };
  } catch (err) {
    // a peer that cannot run (its prebuilt binary does not load here) costs its figures, not ours
    opts.onNote(`peers: llama.cpp did not run at ${precision}: ${(err as Error).message.split("\n")[0]}`);
    return null;
  }
}
