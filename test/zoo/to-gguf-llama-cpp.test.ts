/**
 * llama.cpp itself agrees with this project on the LLM file `llava convert to-gguf` writes:
 * node-llama-cpp's prebuilt llama.cpp loads it and gives the same next-token distribution and
 * greedy tokens for a text prompt, and the same token ids, as this project's model on the
 * file's weights (the safetensors model with each matrix rounded through the file's type).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { openWeights } from "../../src/io/weights.js";
import { writeSafetensors, type TensorToWrite } from "../../src/io/safetensors.js";
import { canonicalName, partOf } from "../../src/llava/keys.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { type PackedFormat, unpackRow } from "../../src/tensor/packed.js";
import { convertToGguf, encodeTensor, type GgufFileType, llmTensorType } from "../../src/zoo/to-gguf.js";
import { MODELS } from "../helpers/paths.js";
import { tempDir } from "./helpers.js";

type NodeLlamaCpp = typeof import("node-llama-cpp");
type Llama = Awaited<ReturnType<NodeLlamaCpp["getLlama"]>>;
type Token = import("node-llama-cpp").Token;

const PROMPT = "A chat between a curious human and an artificial intelligence assistant. USER: Tell me a joke. ASSISTANT:";
const STEPS = 6;

/**
 * Largest difference of the next-token log-probabilities allowed per file type. llama.cpp's CPU
 * path differs from this project's f32 arithmetic by ~3e-3 already on F32 weights (measured
 * 3.4e-3 with an F32 KV cache); F16 rounds the activations to f16 before each product (4.5e-3),
 * Q8_0, Q4_0 and Q4_K_M to 8-bit blocks (7.1e-2, 6.3e-2, 1.1e-1).
 */
const LOGPROB_TOLERANCE = { f32: 1e-2, f16: 2e-2, q8_0: 2e-1, q4_0: 2e-1, q4_k_m: 2e-1 } satisfies Partial<Record<GgufFileType, number>>;

const root = tempDir("llava-gguf-cpp-");
const modelDir = path.join(root, "tiny-llama-vocab");
let llama: Llama;

before(async () => {
  // the real LLaMA tokenizer (tokenizer.model included); rows of whole 256-blocks so every type quantizes; grouped K/V heads
  writeRandomLlava(modelDir, {
    format: "original", tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-orig"), seed: 7,
    text: { hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32000, max_position_embeddings: 256 },
    vision: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, image_size: 56, patch_size: 14, projection_dim: 32 },
  });
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
  // only the prebuilt binary from npm: never build, never download
  llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error });
});

after(async () => {
  await llama?.dispose();
});

/** The model as the GGUF file holds it: every LLM tensor rounded through the type the file stores it in. */
function fileWeightsTwin(type: GgufFileType): string {
  const dir = path.join(root, `twin-${type}`);
  fs.mkdirSync(dir);
  for (const f of fs.readdirSync(modelDir)) if (!f.endsWith(".safetensors")) fs.copyFileSync(path.join(modelDir, f), path.join(dir, f));
  const store = openWeights(modelDir);
  const tensors: TensorToWrite[] = store.names().map((stored) => {
    const { shape } = store.info(stored);
    const values = store.readF32(stored);
    const canonical = canonicalName(stored, "original") ?? "";
    const t = partOf(canonical) === "llm" ? llmTensorType(canonical, shape, type, 2) : "f32";
    return { name: stored, dtype: "F32", shape, data: t === "f32" ? values : decode(encodeTensor(values, shape, t), t, shape) };
  });
  store.close();
  writeSafetensors(path.join(dir, "model.safetensors"), tensors, { format: "pt" });
  return dir;
}

function decode(bytes: Uint8Array, format: PackedFormat, shape: number[]): Float32Array {
  const [rows, cols] = shape;
  const out = new Float32Array(rows * cols);
  const m = { format, rows, cols, data: bytes };
  for (let r = 0; r < rows; r++) unpackRow(m, r, out.subarray(r * cols, (r + 1) * cols));
  return out;
}

function logSoftmax(x: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) max = Math.max(max, x[i]);
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(x, (v) => v - lse);
}

const argmax = (x: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
};

/** This project's next-token log-probabilities after `ids`. */
function ours(loaded: LoadedLlava, ids: number[]): Float64Array {
  const { model } = loaded;
  const hidden = model.llm.forward(model.embedPrompt(ids, [])).hidden;
  const logits = model.llm.logits(hidden).data;
  const vocab = logits.length / ids.length;
  return logSoftmax(logits.subarray((ids.length - 1) * vocab));
}

for (const type of ["f32", "f16", "q8_0", "q4_0", "q4_k_m"] as const) {
  test(`llama.cpp agrees on the ${type} LLM file: token ids, next-token log-probabilities, greedy tokens`, async () => {
    const out = path.join(root, `gguf-${type}`);
    const { llmFile } = await convertToGguf({ modelPath: modelDir, out, type });
    const twin = await loadLlava(fileWeightsTwin(type), { warn: () => {} });
    const model = await llama.loadModel({ modelPath: path.join(out, llmFile) });
    try {
      const ids = [1, ...Array.from(model.tokenize(PROMPT))];
      assert.deepEqual(ids, twin.tokenizer.encode(PROMPT), "llama.cpp's tokenizer (from the tokenizer.ggml.* metadata) gives this project's ids");
      const context = await model.createContext({ contextSize: 128, batchSize: 128, threads: 1, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
      const sequence = context.getSequence();
      let next = ids;
      const greedy: number[][] = [[], []];
      let worst = 0;
      for (let step = 0; step < STEPS; step++) {
        const evaluated = await sequence.controlledEvaluate(next.map((t, i) => (i === next.length - 1 ? [t as Token, { generateNext: { probabilities: true } }] as const : (t as Token))));
        const probabilities = evaluated.at(-1)!.next!.probabilities!;
        const mine = ours(twin, [...ids, ...greedy[1]]);
        const theirs = new Float64Array(mine.length).fill(-Infinity);
        for (const [token, p] of probabilities) theirs[token] = Math.log(p);
        // compare where llama.cpp's probability is not lost to f32 underflow
        for (let i = 0; i < mine.length; i++) if (theirs[i] > -60) worst = Math.max(worst, Math.abs(theirs[i] - mine[i]));
        greedy[0].push(argmax(theirs));
        greedy[1].push(argmax(mine));
        next = [greedy[0].at(-1)!];
      }
      assert.ok(worst <= LOGPROB_TOLERANCE[type], `largest log-probability difference ${worst} > ${LOGPROB_TOLERANCE[type]}`);
      assert.deepEqual(greedy[0], greedy[1], "greedy tokens");
      console.log(`# ${type}: largest next-token log-probability difference ${worst.toExponential(2)} over ${STEPS} steps; greedy ${greedy[0].join(" ")}`);
    } finally {
      await model.dispose();
    }
  });
}
