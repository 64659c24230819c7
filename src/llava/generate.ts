/**
 * Token generation: prefill the prompt embeddings once, then decode one token at a time with
 * the KV cache, choosing each token greedily or by temperature / top-p sampling as transformers'
 * `generate` does. Tokens are yielded as soon as they are chosen.
 */
import type { LlavaModel } from "./model.js";
import { reshape, slice } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";
import { seededRandom } from "../util/random.js";

export interface SamplingOptions {
  /** 0 (or less) = greedy; the reference samples iff temperature > 0 */
  temperature?: number;
  /** nucleus sampling mass (1 = off) */
  topP?: number;
  maxNewTokens: number;
  /** stop when one of these ids is generated (it is yielded first) */
  eosTokenIds?: number[];
  /** seed of the sampling random numbers (default: random) */
  seed?: number;
}

export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * One token from logits: temperature scaling, then transformers' TopPLogitsWarper (drop the
 * least likely tokens whose cumulative probability stays <= 1 - top_p, keeping at least one),
 * then a draw from the renormalised distribution.
 */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, random: () => number): number {
  if (!(temperature > 0)) return argmax(logits);
  const n = logits.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[a] - logits[b]);
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i] / temperature);
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp(logits[i] / temperature - max);
  let first = 0; // ascending order: tokens order[0 .. first) are removed
  if (topP < 1) {
    let cum = 0;
    while (first < n - 1) {
      cum += p[order[first]] / sum;
      if (cum > 1 - topP) break;
      first++;
    }
  }
  let kept = 0;
  for (let i = first; i < n; i++) kept += p[order[i]];
  let r = random() * kept;
  for (let i = n - 1; i >= first; i--) {
    r -= p[order[i]];
    if (r <= 0) return order[i];
  }
  return order[n - 1];
}

export interface GenerationEvents {
  /** called with the logits that chose each new token (index 0 = last prompt position) */
  onLogits?: (logits: Float32Array, step: number) => void;
}

/**
 * Generates up to `maxNewTokens` tokens after `embeds` [1, T, D]. The KV cache is sized for the
 * prompt plus the new tokens, allocated once.
 */
export async function* generateTokens(
  model: LlavaModel, embeds: Tensor, opts: SamplingOptions, events: GenerationEvents = {},
): AsyncGenerator<number> {
  const llm = model.llm;
  const t = embeds.dim(1);
  const cache = llm.newCache(1, t + opts.maxNewTokens);
  const random = seededRandom(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
  const eos = new Set(opts.eosTokenIds ?? []);
  let { hidden } = llm.forward(embeds, { cache });
  for (let step = 0; step < opts.maxNewTokens; step++) {
    const last = slice(hidden, 1, hidden.dim(1) - 1, hidden.dim(1));
    const logits = llm.logits(last).data;
    events.onLogits?.(logits, step);
    const token = sampleToken(logits, opts.temperature ?? 0, opts.topP ?? 1, random);
    yield token;
    if (eos.has(token) || step === opts.maxNewTokens - 1) return;
    const next = llm.embedTokens.forward(Int32Array.of(token));
    hidden = llm.forward(reshape(next, [1, 1, next.dim(-1)]), { cache }).hidden;
    // let other work (a server's sockets, a terminal's signals) run between tokens
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
