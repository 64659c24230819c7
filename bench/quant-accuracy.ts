/**
 * Accuracy and speed of each --quant type on the bench-small shape (random bf16 weights, not a
 * trained model: the figures compare the types with each other, they do not predict a real
 * model's quality). For each type: the relative RMS of the LLM's logits against the f32 model
 * over a teacher-forced sequence fed one token per step, the fraction of positions whose greedy (argmax) token agrees
 * with f32's, the bytes of the LLM's Linear weights, and decode tokens/s at one thread; the
 * same (`exact_*`) for the exact products with f32 activations (`exactQuant`), whose decode
 * steps alternate with the default path's so both see the same machine load.
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
const exactBackend = createBackend({ threads: THREADS, exactQuant: true });
const dir = ensureCheckpoint("bench-small");
const rand = seededRandom(11);
const ids = Int32Array.from({ length: T }, () => 1 + Math.floor(rand() * 31999));

/**
 * Logits [T, vocab] of the teacher-forced sequence, one position per step as decode computes
 * them (the K formats' integer products serve decode; prompts take the exact path).
 */
function logits(llm: LlamaForCausalLM): Float32Array {
  const vocab = llm.cfg.vocabSize;
  const cache = llm.newCache(1, T);
  const out = new Float32Array(T * vocab);
  for (let t = 0; t < T; t++) {
    const hidden = llm.forward(llm.embedTokens.forward(ids.subarray(t, t + 1), [1, 1]), { cache }).hidden;
    out.set(llm.logits(hidden).data, t * vocab);
  }
  return out;
}

/**
 * Decode tokens/s of each model: greedy steps after a 16-token prompt, one thread, the models'
 * steps alternating; the median step, which a busy machine disturbs least.
 */
function decodeRates(llms: LlamaForCausalLM[]): number[] {
  const runs = llms.map((llm) => {
    const cache = llm.newCache(1, 16 + STEPS + 1);
    const hidden = llm.forward(llm.embedTokens.forward(ids.subarray(0, 16), [1, 16]), { cache }).hidden;
    return { llm, cache, hidden, stepMs: [] as number[] };
  });
  for (let s = 0; s < STEPS; s++) {
    for (const r of runs) {
      const t0 = performance.now();
      const next = argmaxRows(r.llm.logits(r.hidden).data, r.llm.cfg.vocabSize)[0];
      r.hidden = r.llm.forward(r.llm.embedTokens.forward(Int32Array.of(next), [1, 1]), { cache: r.cache }).hidden;
      r.stepMs.push(performance.now() - t0);
    }
  }
  return runs.map((r) => 1000 / quantile(r.stepMs, 0.5));
}

function argmaxRows(x: Float32Array, vocab: number): number[] {
  return Array.from({ length: x.length / vocab }, (_, r) => {
    let best = 0;
    for (let j = 1; j < vocab; j++) if (x[r * vocab + j] > x[r * vocab + best]) best = j;
    return best;
  });
}

let reference: { logits: Float32Array; tokens: number[] } | null = null;

/** Logits error and greedy agreement against the f32 model (the first type measured). */
function accuracy(llm: LlamaForCausalLM): { logits_rel_rms: number; greedy_agreement: number } {
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
  return { logits_rel_rms: Number(Math.sqrt(e2 / s2).toPrecision(4)), greedy_agreement: agree };
}

for (const type of types) {
  const quant = type === "f32" ? undefined : type;
  const llm = (await loadLlava(dir, { backend, quant })).model.llm;
  const exact = quant ? (await loadLlava(dir, { backend: exactBackend, quant })).model.llm : undefined;
  const bytes = llm.namedLinears().reduce((s, [, l]) => s + (l.weight instanceof PackedTensor ? l.weight.matrix.data.length : 4 * l.weight.data.length), 0);
  const acc = accuracy(llm);
  const exactAcc = exact ? accuracy(exact) : undefined;
  const [rate, exactRate] = decodeRates(exact ? [llm, exact] : [llm]);
  emit(THREADS, {
    bench: "quant-accuracy", model: "bench-small (random weights)", type, ...acc,
    llm_linear_mib: Number((bytes / 2 ** 20).toFixed(1)), decode_tokens_per_s: Number(rate.toFixed(1)),
    ...(exactAcc && { exact_logits_rel_rms: exactAcc.logits_rel_rms, exact_greedy_agreement: exactAcc.greedy_agreement, exact_decode_tokens_per_s: Number(exactRate.toFixed(1)) }),
    positions: T,
  });
}
