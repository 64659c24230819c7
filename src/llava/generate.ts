/**
 * The one generation loop: prefill the prompt embeddings, then decode one token at a time with
 * the KV cache, choosing each token greedily or by temperature / top-p sampling as transformers'
 * `generate` does, until an EOS id, a stop string, the token budget or the context ends it.
 * Every command, the benchmark and servers run this loop; hooks observe it, an AbortSignal
 * cancels it between tokens.
 *
 * Context rule: prompt + new tokens may not exceed the context (max_position_embeddings, as
 * transformers' max_length). A prompt that leaves no room is refused; `maxNewTokens` beyond the
 * room left is capped, and the answer then ends with finish reason "length".
 */
import type { LoadedLlava } from "./load.js";
import type { PositionKey, PrefixCache } from "./prefix-cache.js";
import type { Backend } from "../tensor/backend.js";
import { reshape, slice } from "../tensor/ops.js";
import { Scratch, type Tensor, withScratch } from "../tensor/tensor.js";
import { StreamingDetokenizer } from "../tokenizer/stream.js";
import { LlavaError } from "../util/errors.js";
import { seededRandom } from "../util/random.js";
import { sampleToken } from "./sampling.js";

export { argmax, sampleToken } from "./sampling.js";

export interface SamplingOptions {
  /** 0 (or less) = greedy; the reference samples iff temperature > 0 */
  temperature?: number;
  /** nucleus sampling mass (1 = off) */
  topP?: number;
  /** seed of the sampling random numbers (default: random) */
  seed?: number;
}

export interface GenerationHooks {
  /** the prompt went through the model (all but its first `reused` positions, taken from a kept cache); `maxNewTokens` is the budget after the context cap */
  onPrefill?: (info: { promptTokens: number; maxNewTokens: number; reused: number }) => void;
  /** the logits that choose token `step` (step 0: from the last prompt position), in a buffer the next step reuses: copy them to keep them */
  onLogits?: (logits: Float32Array, step: number) => void;
  /** each chosen token, before the stop rules look at it */
  onToken?: (token: number, step: number) => void;
}

export interface GenerationOptions extends SamplingOptions {
  maxNewTokens: number;
  /** ids that end the answer (default: the tokenizer's EOS; [] never stops early) */
  eosTokenIds?: number[];
  /** the answer ends before the first of these strings, which is not part of it */
  stop?: string[];
  /** positions prompt + answer may use (default: the model's max_position_embeddings) */
  contextLength?: number;
  /** cancels the generation between two tokens; the loop then throws `signal.reason` */
  signal?: AbortSignal;
  /** start from the longest prefix of `keys` (what each prompt position holds) kept in `cache`, and keep this sequence's cache there at the end */
  prefix?: { cache: PrefixCache; keys: PositionKey[] };
  hooks?: GenerationHooks;
}

/** The prompt leaves no room for an answer in the context (servers answer it as the reference does). */
export class PromptTooLongError extends LlavaError {}

/** "eos": an EOS id; "stop": a stop string; "length": the token budget or the context is used up. */
export type FinishReason = "eos" | "stop" | "length";

/** One generated token and the answer text it made final (possibly ""). */
export interface GeneratedPiece {
  token: number;
  step: number;
  text: string;
}

/** Refuses logits holding NaN or Inf (broken weights or an overflow; argmaxFinite found one): no token can be chosen from them. */
function checkFinite(logits: Float32Array, step: number, position: number): void {
  let nan = 0;
  let inf = 0;
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i];
    if (x !== x) nan++;
    else if (x === Infinity || x === -Infinity) inf++;
  }
  if (nan + inf === 0) return;
  const what = [nan ? `${nan} NaN` : "", inf ? `${inf} infinite` : ""].filter(Boolean).join(" and ");
  throw new LlavaError(
    `the model produced ${what} logits (of ${logits.length}) at generation step ${step + 1} (sequence position ${position}); ` +
      `the weights or the activations are not finite`,
  );
}

/**
 * How much of the answer `decoded` may be released: up to its first stop string (`stopped`), all
 * of it when the answer is `over`, else all but a tail that might be the start of a stop string.
 */
export function releasable(decoded: string, stops: string[], over: boolean): { end: number; stopped: boolean } {
  const hits = stops.map((s) => decoded.indexOf(s)).filter((i) => i >= 0);
  if (hits.length) return { end: Math.min(...hits), stopped: true };
  return { end: over ? decoded.length : decoded.length - heldBack(decoded, stops), stopped: false };
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
function heldBack(text: string, stops: string[]): number {
  let keep = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > keep; n--) {
      if (text.endsWith(s.slice(0, n))) {
        keep = n;
        break;
      }
    }
  }
  return keep;
}

/** The token budget of an answer after a prompt of `promptTokens` positions: `maxNewTokens` capped by the context. */
export function answerBudget(loaded: LoadedLlava, promptTokens: number, opts: Pick<GenerationOptions, "maxNewTokens" | "contextLength">): number {
  const context = opts.contextLength ?? loaded.spec.text.maxPositionEmbeddings;
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 1)) {
    throw new LlavaError(`maxNewTokens must be a whole number >= 1, got ${opts.maxNewTokens}`);
  }
  if (promptTokens >= context) {
    throw new PromptTooLongError(
      `the prompt fills ${promptTokens} positions (text tokens and image features) but the context holds ${context} ` +
        `(${opts.contextLength === undefined ? "max_position_embeddings" : "the context length asked for"}), leaving no room for an answer`,
    );
  }
  return Math.min(opts.maxNewTokens, context - promptTokens);
}

/**
 * One answer's rules, step by step: each step's logits give a token (greedy or sampled with the
 * answer's own random numbers), which may end the answer (EOS, the budget, a stop string); text
 * that might be the start of a stop string is held back until it is not. The generation loop
 * and the batching engine both feed it, one logits row per step.
 */
export class AnswerTokens {
  readonly tokens: number[] = [];
  /** the answer released so far */
  text = "";
  finishReason: FinishReason | null = null;
  private decoded = ""; // the answer as decoded so far; `text` is its released part
  private readonly eos: Set<number>;
  private readonly stops: string[];
  private readonly detok: StreamingDetokenizer;
  private readonly random: () => number;
  private readonly backend: Backend;

  /** `maxNewTokens`: the budget after the context cap (answerBudget) */
  constructor(loaded: LoadedLlava, private readonly opts: GenerationOptions, readonly promptTokens: number, readonly maxNewTokens: number) {
    this.eos = new Set(opts.eosTokenIds ?? (loaded.tokenizer.eosTokenId === undefined ? [] : [loaded.tokenizer.eosTokenId]));
    this.stops = (opts.stop ?? []).filter((s) => s.length > 0);
    this.detok = new StreamingDetokenizer(loaded.tokenizer);
    this.random = seededRandom(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
    this.backend = loaded.model.backend;
  }

  /** Chooses the next token from its logits and applies the stop rules. */
  next(logits: Float32Array): GeneratedPiece {
    const hooks = this.opts.hooks ?? {};
    const step = this.tokens.length;
    hooks.onLogits?.(logits, step);
    // the greedy token and the logits' check in one native pass (two JS loops cost ~65 us a row)
    const best = this.backend.argmaxFinite(logits);
    if (best < 0) checkFinite(logits, step, this.promptTokens + step - 1);
    const temperature = this.opts.temperature ?? 0;
    const token = temperature > 0 ? sampleToken(logits, temperature, this.opts.topP ?? 1, this.random) : best;
    this.tokens.push(token);
    hooks.onToken?.(token, step);
    if (this.eos.has(token)) this.finishReason = "eos";
    else if (step === this.maxNewTokens - 1) this.finishReason = "length";
    this.decoded += this.detok.push(token) + (this.finishReason ? this.detok.flush() : "");

    const { end, stopped } = releasable(this.decoded, this.stops, this.finishReason !== null);
    if (stopped) this.finishReason = "stop";
    const text = end > this.text.length ? this.decoded.slice(this.text.length, end) : "";
    this.text += text;
    return { token, step, text };
  }
}

/**
 * A generation after the prompt embeddings `embeds` [1, T, D]. Iterate it (once) for the pieces;
 * afterwards `tokens`, `text` and `finishReason` describe the answer.
 */
export class Generation implements AsyncIterable<GeneratedPiece> {
  /** the token budget after the context cap */
  readonly maxNewTokens: number;
  private readonly answer: AnswerTokens;
  private started = false;

  constructor(private readonly loaded: LoadedLlava, private readonly embeds: Tensor, private readonly opts: GenerationOptions) {
    this.maxNewTokens = answerBudget(loaded, embeds.dim(1), opts);
    this.answer = new AnswerTokens(loaded, opts, embeds.dim(1), this.maxNewTokens);
  }

  get promptTokens(): number {
    return this.answer.promptTokens;
  }

  get tokens(): number[] {
    return this.answer.tokens;
  }

  /** the answer released so far */
  get text(): string {
    return this.answer.text;
  }

  get finishReason(): FinishReason | null {
    return this.answer.finishReason;
  }

  /** Runs the generation to its end without looking at the pieces. */
  async complete(): Promise<this> {
    for await (const _ of this);
    return this;
  }

  [Symbol.asyncIterator](): AsyncIterator<GeneratedPiece> {
    if (this.started) throw new LlavaError("a generation can be iterated only once");
    this.started = true;
    return this.run();
  }

  private async *run(): AsyncGenerator<GeneratedPiece> {
    const { opts, answer } = this;
    const llm = this.loaded.model.llm;
    opts.signal?.throwIfAborted();
    const capacity = this.promptTokens + this.maxNewTokens;
    const { cache, reused } = opts.prefix ? opts.prefix.cache.take(llm, opts.prefix.keys, capacity) : { cache: llm.newCache(1, capacity), reused: 0 };
    let { hidden } = llm.forward(reused ? slice(this.embeds, 1, reused, this.promptTokens) : this.embeds, { cache });
    opts.hooks?.onPrefill?.({ promptTokens: this.promptTokens, maxNewTokens: this.maxNewTokens, reused });
    // each step's logits, and its input and output rows, in buffers the next step reuses: no allocation per token
    const logitBuffers = new Scratch();
    const rowBuffers = new Scratch();
    for (;;) {
      const piece = answer.next(withScratch(logitBuffers, () => llm.logits(slice(hidden, 1, hidden.dim(1) - 1, hidden.dim(1))).data));
      yield piece;
      if (answer.finishReason) {
        opts.prefix?.cache.keep([...opts.prefix.keys, ...answer.tokens], cache);
        return;
      }

      opts.signal?.throwIfAborted();
      hidden = withScratch(rowBuffers, () => {
        const next = llm.embedTokens.forward(Int32Array.of(piece.token));
        return llm.forward(reshape(next, [1, 1, next.dim(-1)]), { cache, reuseBuffers: true }).hidden;
      });
      // let other work (a server's sockets, a terminal's signals, an abort) run between tokens
      await new Promise<void>((resolve) => setImmediate(resolve));
      opts.signal?.throwIfAborted();
    }
  }
}
