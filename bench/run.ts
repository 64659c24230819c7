/**
 * `npm run bench`: speed of the whole model on random-weight checkpoints of two real shapes,
 * for each weight precision and thread count, each figure next to its roofline measured in the
 * same run. Prints one JSON object per line, each with the CPU model, its SIMD features and the
 * thread count (bench/machine.ts). Each configuration runs in its own process, so peak RSS is
 * that configuration's.
 *
 *   node dist/bench/run.js [--models bench-small,bench-1b] [--precisions f32,bf16,q8_0,q4_0] [--threads 1,2] [--skip-train]
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createBackend } from "../src/tensor/backends.js";
import type { NativeBackend } from "../src/tensor/native-backend.js";
import { seededRandom } from "../src/util/random.js";
import { loadLlava, type LoadOptions } from "../src/llava/load.js";
import { Generation } from "../src/llava/generate.js";
import { buildInputs, prepareImages } from "../src/llava/pipeline.js";
import { addLoraAdapters } from "../src/nn/lora.js";
import { crossEntropy, reshape, slice } from "../src/tensor/ops.js";
import { Tensor } from "../src/tensor/tensor.js";
import { AdamW } from "../src/train/optimizer.js";
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

/** Runs one configuration in this process and prints its figures (raw, without rooflines). */
async function child(model: ModelName, precision: Precision, threads: number, train: boolean): Promise<void> {
  // bf16 runs like PyTorch's bf16 matmuls: activations rounded to bf16 in prefill-sized products
  const backend = createBackend({ name: "native", threads, bf16Dot: precision === "bf16" });
  const opts: LoadOptions = { backend, ...(precision === "bf16" ? { dtype: "bf16" } : precision === "f32" ? {} : { quantize: precision }) };
  const started = performance.now();
  const loaded = await loadLlava(ensureCheckpoint(model), opts);
  const loadMs = performance.now() - started;
  const images = prepareImages(loaded, [noiseImage(640, 480)]);
  const encodeMs = timed(() => loaded.model.encodeImages(images.pixels));

  const words = Array.from({ length: PROMPT_TEXT_TOKENS }, (_, i) => ["red", "blue", "cat", "sky"][i % 4]).join(" ");
  const prompt = `USER: <image>\n${words} ASSISTANT:`;
  const inputs = buildInputs(loaded, prompt, images);
  const llm = loaded.model.llm;
  const T = inputs.embeds.dim(1);
  const prefillMs = timed(() => llm.forward(inputs.embeds, { cache: llm.newCache(1, T + DECODE_TOKENS) }));

  // the shared generation loop, timed from the first token to the last: DECODE_TOKENS decode steps
  const stamps: number[] = [];
  for await (const _ of new Generation(loaded, inputs.embeds, { maxNewTokens: DECODE_TOKENS + 1, temperature: 0, eosTokenIds: [] })) stamps.push(performance.now());
  const decodeMs = stamps[DECODE_TOKENS] - stamps[0];

  // one optimizer step on a 20-token answer after the prompt
  const trainStep = (params: Tensor[]) => {
    const opt = new AdamW([{ params: params.map((t, i) => [String(i), t]), lr: 1e-4, weightDecay: 0 }]);
    return timed(() => {
      opt.zeroGrad();
      const { embeds } = buildInputs(loaded, prompt, images);
      const { hidden: h } = llm.forward(embeds);
      // logits only where the loss looks (the 20 answer positions): the same loss and gradients
      const t = h.dim(1);
      const logits = llm.logits(reshape(slice(h, 1, t - 21, t - 1), [20, h.dim(2)]));
      const targets = Int32Array.from({ length: 20 }, (_, i) => ((t - 21 + i) * 7919) % 32000);
      crossEntropy(logits, targets).backward();
      opt.step(1);
    });
  };
  if (!train) {
    emit(threads, { model, precision, loadMs, encodeMs, promptTokens: T, prefillMs, decodeMs, peakRssBytes: process.resourceUsage().maxRSS * 1024 });
    return;
  }
  const projector = loaded.model.projector.namedParameters().map(([, t]) => t);
  for (const p of projector) p.requiresGrad = true;
  const projectorMs = trainStep(projector);
  const lora = addLoraAdapters(llm.namedLinears().filter(([n]) => n !== "lm_head"), { r: 8, alpha: 16, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], useRslora: false, baseModel: null }, seededRandom(1));
  const loraMs = trainStep([...projector, ...lora]);

  emit(threads, {
    model, precision, loadMs, encodeMs, promptTokens: T, prefillMs, decodeMs,
    trainProjectorMs: projectorMs, trainLoraMs: loraMs, peakRssBytes: process.resourceUsage().maxRSS * 1024,
  });
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
    const [model, precision, threads, train] = values.child.split(":");
    await child(model as ModelName, precision as Precision, Number(threads), train === "train");
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
        const run = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--child", `${model}:${precision}:${threads}:${values["skip-train"] ? "no-train" : "train"}`], { encoding: "utf8", maxBuffer: 1 << 24 });
        if (run.status !== 0) {
          emit(threads, { model, precision, error: (run.stderr || "").trim().split("\n").slice(-3).join(" | ") });
          continue;
        }
        const r = JSON.parse(run.stdout.trim().split("\n").pop()!) as Record<string, number>;
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
        if (r.trainProjectorMs !== undefined) {
          emit(threads, { ...base, metric: "train_projector_ms", value: r.trainProjectorMs });
          emit(threads, { ...base, metric: "train_lora_ms", value: r.trainLoraMs });
        }
        emit(threads, { ...base, metric: "peak_rss_bytes", value: r.peakRssBytes });
      }
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
