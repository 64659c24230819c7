/**
 * Accuracy and speed of each --quant type on the bench-small shape (random bf16 weights, not a
 * trained model: the figures compare the types with each other, they do not predict a real
 * model's quality). For each type: the relative RMS of the LLM's logits against the f32 model
 * over a teacher-forced sequence, the fraction of positions whose greedy (argmax) token agrees
 * with f32's, the bytes of the LLM's Linear weights, and decode tokens/s at one thread.
 * Prints one JSON line per type (`npm run bench:quant`; `--types q4_0,q4_k_m` picks some).
 */
import { parseArgs } from "node:util";
import { loadLlava } from "../src/llava/load.js";
import { QUANT_TYPES, type QuantType } from "../src/llava/precision.js";
import type { LlamaForCausalLM } from "../src/llava/llama.js";
import { createBackend } from "../src/tensor/backends.js";
import { PackedTensor } from "../src/tensor/tensor.js";
import { seededRandom } from "../src/util/random.js";
import { ensureCheckpoint } from "../src/perf/checkpoints.js";
import { emit } from "../src/perf/machine.js";
import { quantile } from "../src/perf/stats.js";

const { values } = parseArgs({ options: { types: { type: "string" }, positions: { type: "string", default: "64" }, steps: { type: "string", default: "32" } } });
const types = (values.types ? values.types.split(",") : ["f32", ...QUANT_TYPES]) as Array<QuantType | "f32">;
const T = Number(values.positions), STEPS = Number(values.steps);
const THREADS = 1;

const backend = createBackend({ threads: THREADS });
const dir = ensureCheckpoint("bench-small");
const rand = seededRandom(11);
const ids = Int32Array.from({ length: T }, () => 1 + Math.floor(rand() * 31999));

/** Logits [T, vocab] of the teacher-forced sequence. */
function logits(llm: LlamaForCausalLM): Float32Array {
  const embeds = llm.embedTokens.forward(ids, [1, T]);
  return llm.logits(llm.forward(embeds).hidden).data;
}

/** Decode tokens/s: greedy steps after a 16-token prompt, one thread; the median step, which a busy machine disturbs least. */
function decodeRate(llm: LlamaForCausalLM): number {
  const cache = llm.newCache(1, 16 + STEPS + 1);
  let hidden = llm.forward(llm.embedTokens.forward(ids.subarray(0, 16), [1, 16]), { cache }).hidden;
  const stepMs: number[] = [];
  for (let s = 0; s < STEPS; s++) {
    const t0 = performance.now();
    const next = argmaxRows(llm.logits(hidden).data, llm.cfg.vocabSize)[0];
    hidden = llm.forward(llm.embedTokens.forward(Int32Array.of(next), [1, 1]), { cache }).hidden;
    stepMs.push(performance.now() - t0);
  }
  return 1000 / quantile(stepMs, 0.5);
}

function argmaxRows(x: Float32Array, vocab: number): number[] {
  return Array.from({ length: x.length / vocab }, (_, r) => {
    let best = 0;
    for (let j = 1; j < vocab; j++) if (x[r * vocab + j] > x[r * vocab + best]) best = j;
    return best;
  });
}

let reference: { logits: Float32Array; tokens: number[] } | null = null;
for (const type of types) {
  const loaded = await loadLlava(dir, { backend, quant: type === "f32" ? undefined : type });
  const llm = loaded.model.llm;
  const bytes = llm.namedLinears().reduce((s, [, l]) => s + (l.weight instanceof PackedTensor ? l.weight.matrix.data.length : 4 * l.weight.data.length), 0);
  const got = logits(llm);
  const vocab = llm.cfg.vocabSize;
  reference ??= { logits: got, tokens: argmaxRows(got, vocab) };
  let e2 = 0, s2 = 0;
  for (let i = 0; i < got.length; i++) {
    e2 += (got[i] - reference.logits[i]) ** 2;
    s2 += reference.logits[i] ** 2;
  }
  const tokens = argmaxRows(got, vocab);
  const agree = tokens.filter((t, i) => t === reference!.tokens[i]).length / tokens.length;
  emit(THREADS, {
    bench: "quant-accuracy", model: "bench-small (random weights)", type,
    logits_rel_rms: Number(Math.sqrt(e2 / s2).toPrecision(4)), greedy_agreement: agree,
    llm_linear_mib: Number((bytes / 2 ** 20).toFixed(1)), decode_tokens_per_s: Number(decodeRate(llm).toFixed(1)),
    positions: T,
  });
}
