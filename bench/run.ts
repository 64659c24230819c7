/**
 * `npm run bench`: speed of the whole model on random-weight checkpoints of two real shapes,
 * for each weight precision and thread count, each figure next to its roofline measured in the
 * same run. Prints one JSON object per line, each with the CPU model, its SIMD features and the
 * thread count (bench/machine.ts). Each configuration runs in its own process, so peak RSS is
 * that configuration's.
 *
 * Training steps (projector only, LoRA r=128, the whole LLM in f32), each with and without
 * gradient checkpointing, run one configuration per process too.
 *
 *   node dist/bench/run.js [--models bench-small,bench-1b] [--precisions f32,bf16,q8_0,q4_0] [--threads 1,2] [--skip-train]
 */
import { spawnSync } from "node:child_process";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createBackend } from "../src/tensor/backends.js";
import type { NativeBackend } from "../src/tensor/native-backend.js";
import { Rng } from "../src/util/random.js";
import { loadLlava, type LoadOptions } from "../src/llava/load.js";
import { Generation } from "../src/llava/generate.js";
import { IGNORE_INDEX } from "../src/llava/labels.js";
import { buildInputs, prepareImages, promptIds } from "../src/llava/pipeline.js";
import { AdamW } from "../src/train/optimizer.js";
import { batchLoss } from "../src/train/batch.js";
import { setTrainables, type TrainablesOptions } from "../src/train/trainables.js";
import { ensureCheckpoint, type ModelName, noiseImage, SHAPES } from "./checkpoints.js";
import { emit, measureRooflines } from "./machine.js";
import { median } from "./stats.js";

type Precision = "f32" | "bf16" | "q8_0" | "q4_0";

const PROMPT_TEXT_TOKENS = 40;
const DECODE_TOKENS = 64;

/** Median time of `runs` calls after one untimed warm-up call (first-touch page faults, JIT). */
function timed(fn: () => unknown, runs = 3): number {
  fn();
  return median(Array.from({ length: runs }, () => time(fn)[1]));
}

function time<T>(fn: () => T): [T, number] {
  const t = performance.now();
  const r = fn();
  return [r, performance.now() - t];
}

/** Parameter count of the LLM's Linear layers (what decode streams and prefill multiplies). */
function llmLinearParams(t: (typeof SHAPES)[ModelName]["text"]): number {
  const hd = t.hidden_size / t.num_attention_heads;
  const perLayer = t.hidden_size * (t.num_attention_heads * hd) * 2 + t.hidden_size * (t.num_key_value_heads * hd) * 2 + 3 * t.hidden_size * t.intermediate_size;
  return t.num_hidden_layers * perLayer + t.vocab_size * t.hidden_size;
}

const BYTES_PER_WEIGHT: Record<Precision, number> = { f32: 4, bf16: 2, q8_0: 34 / 32, q4_0: 18 / 32 };

/** The model at a precision on the native backend with `threads`. */
function loadBenchModel(model: ModelName, precision: Precision, threads: number) {
  // bf16 runs like PyTorch's bf16 matmuls: activations rounded to bf16 in prefill-sized products
  const backend = createBackend({ name: "native", threads, bf16Dot: precision === "bf16" });
  const opts: LoadOptions = { backend, ...(precision === "bf16" ? { dtype: "bf16" } : precision === "f32" ? {} : { quantize: precision }) };
  return loadLlava(ensureCheckpoint(model), opts);
}

const PROMPT = `USER: <image>\n${Array.from({ length: PROMPT_TEXT_TOKENS }, (_, i) => ["red", "blue", "cat", "sky"][i % 4]).join(" ")} ASSISTANT:`;

/** Runs one configuration in this process and prints its figures (raw, without rooflines). */
async function child(model: ModelName, precision: Precision, threads: number): Promise<void> {
  const started = performance.now();
  const loaded = await loadBenchModel(model, precision, threads);
  const loadMs = performance.now() - started;
  const images = prepareImages(loaded, [noiseImage(640, 480)]);
  const encodeMs = timed(() => loaded.model.encodeImages(images.pixels));

  const inputs = buildInputs(loaded, PROMPT, images);
  const llm = loaded.model.llm;
  const T = inputs.embeds.dim(1);
  const prefillMs = timed(() => llm.forward(inputs.embeds, { cache: llm.newCache(1, T + DECODE_TOKENS) }));

  // the shared generation loop, timed from the first token to the last: DECODE_TOKENS decode steps
  const stamps: number[] = [];
  for await (const _ of new Generation(loaded, inputs.embeds, { maxNewTokens: DECODE_TOKENS + 1, temperature: 0, eosTokenIds: [] })) stamps.push(performance.now());
  const decodeMs = stamps[DECODE_TOKENS] - stamps[0];

  emit(threads, { model, precision, loadMs, encodeMs, promptTokens: T, prefillMs, decodeMs, peakRssBytes: process.resourceUsage().maxRSS * 1024 });
}

/** What a training step trains: the projector alone (stage 1), LoRA adapters + projector, or the whole LLM + projector (stage 2). */
type TrainMode = "projector" | "lora" | "full";
const TRAIN_MODES: TrainMode[] = ["projector", "lora", "full"];
const TRAINABLES: Record<TrainMode, Omit<TrainablesOptions, "rng">> = {
  projector: { tuneMmMlpAdapter: true },
  lora: { lora: { r: 128, alpha: 256, dropout: 0.05 } },
  full: {},
};
const ANSWER_TOKENS = 64;

/**
 * One training configuration in this process: the median time of a step (zero grad, forward
 * with the frozen tower, loss on the 64 answer tokens after the image and the prompt, backward,
 * AdamW update) and the resident memory before the first step and at its peak.
 */
async function trainChild(model: ModelName, precision: Precision, threads: number, mode: TrainMode, gradientCheckpointing: boolean): Promise<void> {
  const loaded = await loadBenchModel(model, precision, threads);
  const rng = new Rng(1);
  const named = setTrainables(loaded, { ...TRAINABLES[mode], rng });
  const params = named.map(([, t]) => t);
  const trainable = params.reduce((n, t) => n + t.size, 0);
  // gradients and AdamW's two moments: refuse up front rather than swap or be killed
  const need = process.memoryUsage().rss + 3 * 4 * trainable;
  if (need > 0.9 * os.totalmem()) throw new Error(`training ${mode} needs about ${(need / 2 ** 30).toFixed(1)} GiB, more than this machine has`);
  const opt = new AdamW([{ params: named, lr: 1e-5, weightDecay: 0 }]);
  const prompt = promptIds(loaded, PROMPT);
  const answer = Array.from({ length: ANSWER_TOKENS }, (_, i) => 1000 + ((i * 7919) % 30000));
  const example = { ids: [...prompt, ...answer], labels: [...prompt.map(() => IGNORE_INDEX), ...answer], images: [noiseImage(640, 480)] };
  const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
  const step = () => {
    opt.zeroGrad();
    const { loss } = batchLoss(loaded, [example], { modelMaxLength: 2048, gradientCheckpointing, rng });
    loss.backward();
    opt.step(1);
  };
  gc();
  const rssBeforeStep = process.memoryUsage().rss;
  step(); // warm-up: first touch of the gradients and the optimizer state
  // each timed step starts from a collected heap (the collection is not timed); CPU time as
  // well as wall time, since a shared machine stretches the latter
  const cpuMs = () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  };
  const steps = Array.from({ length: 3 }, () => {
    gc();
    const cpu = cpuMs();
    const wall = time(step)[1];
    return { wall, cpu: cpuMs() - cpu };
  });
  const stepMs = median(steps.map((s) => s.wall));
  const stepCpuMs = median(steps.map((s) => s.cpu));
  emit(threads, { model, precision, mode, gradientCheckpointing, stepMs, stepCpuMs, trainableParams: trainable, rssBeforeStep, peakRssBytes: process.resourceUsage().maxRSS * 1024 });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      child: { type: "string" },
      models: { type: "string", default: "bench-small,bench-1b" },
      precisions: { type: "string", default: "f32,bf16,q8_0,q4_0" },
      threads: { type: "string", default: "1,2" },
      "skip-train": { type: "boolean", default: false },
    },
  });
  if (values.child) {
    const [model, precision, threads, mode, checkpointing] = values.child.split(":");
    if (mode === "infer") await child(model as ModelName, precision as Precision, Number(threads));
    else await trainChild(model as ModelName, precision as Precision, Number(threads), mode as TrainMode, checkpointing === "checkpointing");
    return;
  }
  const threadCounts = values.threads!.split(",").map(Number);
  const limits = new Map(threadCounts.map((t) => [t, measureRooflines(createBackend({ name: "native", threads: t }) as NativeBackend)]));
  for (const [t, l] of limits) emit(t, { metric: "roofline", gemm_f32_gflops: l.gemmGflops, read_gb_per_s: l.readGBps });
  for (const model of values.models!.split(",") as ModelName[]) {
    ensureCheckpoint(model);
    const text = SHAPES[model].text;
    const linear = llmLinearParams(text);
    for (const precision of values.precisions!.split(",") as Precision[]) {
      for (const threads of threadCounts) {
        const r = runChild(`${model}:${precision}:${threads}:infer`, threads, { model, precision });
        if (!r) continue;
        const { gemmGflops: gflops, readGBps: gbPerS } = limits.get(threads)!;
        const v = SHAPES[model].vision;
        const vt = (v.image_size / v.patch_size) ** 2 + 1;
        const visionFlops = (v.num_hidden_layers - 1) * vt * (8 * v.hidden_size ** 2 + 4 * v.hidden_size * v.intermediate_size + 4 * vt * v.hidden_size);
        const prefillTps = r.promptTokens / (r.prefillMs / 1000);
        const decodeTps = DECODE_TOKENS / (r.decodeMs / 1000);
        const kvBytes = 2 * text.num_hidden_layers * (r.promptTokens + DECODE_TOKENS / 2) * text.num_key_value_heads * (text.hidden_size / text.num_attention_heads) * 4;
        const decodeRoof = (gbPerS * 1e9) / (linear * BYTES_PER_WEIGHT[precision] + kvBytes);
        const prefillRoof = (gflops * 1e9) / (2 * (linear - text.vocab_size * text.hidden_size));
        const encodeRoofMs = (visionFlops / (gflops * 1e9)) * 1000;
        const base = { model, precision };
        emit(threads, { ...base, metric: "load_ms", value: r.loadMs });
        emit(threads, { ...base, metric: "encode_ms", value: r.encodeMs, roofline: encodeRoofMs, fraction_of_roofline: encodeRoofMs / r.encodeMs });
        emit(threads, { ...base, metric: "prefill_tokens_per_s", value: prefillTps, tokens: r.promptTokens, roofline: prefillRoof, fraction_of_roofline: prefillTps / prefillRoof });
        emit(threads, { ...base, metric: "decode_tokens_per_s", value: decodeTps, roofline: decodeRoof, fraction_of_roofline: decodeTps / decodeRoof });
        emit(threads, { ...base, metric: "peak_rss_bytes", value: r.peakRssBytes });
        if (values["skip-train"]) continue;
        // the whole LLM trains only in f32: packed weights take no updates
        for (const mode of TRAIN_MODES.filter((m) => m !== "full" || precision === "f32")) {
          for (const checkpointing of [false, true]) {
            const t = runChild(`${model}:${precision}:${threads}:${mode}:${checkpointing ? "checkpointing" : "plain"}`, threads, { model, precision, mode, gradientCheckpointing: checkpointing });
            if (!t) continue;
            const train = { ...base, trainables: mode, gradient_checkpointing: checkpointing, trainable_params: t.trainableParams };
            emit(threads, { ...train, metric: "train_step_ms", value: t.stepMs, cpu_ms: t.stepCpuMs, answer_tokens: ANSWER_TOKENS });
            emit(threads, { ...train, metric: "train_peak_rss_bytes", value: t.peakRssBytes, rss_before_step_bytes: t.rssBeforeStep, step_peak_over_start_bytes: t.peakRssBytes - t.rssBeforeStep });
          }
        }
      }
    }
  }
}

/** Runs one configuration in a child process (its own peak RSS) and returns its figures, or emits its error and returns null. */
function runChild(spec: string, threads: number, label: Record<string, unknown>): Record<string, number> | null {
  const run = spawnSync(process.execPath, ["--expose-gc", fileURLToPath(import.meta.url), "--child", spec], { encoding: "utf8", maxBuffer: 1 << 24 });
  if (run.status !== 0) {
    emit(threads, { ...label, error: (run.stderr || "").trim().split("\n").slice(-3).join(" | ") });
    return null;
  }
  return JSON.parse(run.stdout.trim().split("\n").pop()!) as Record<string, number>;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
