/**
 * The batching engine: requests that arrive together are decoded together. A scheduler admits
 * waiting requests between decode steps (each prompt prefilled on its own, then it joins the
 * batch) and runs one decode step for every active sequence at once, so each weight is read once
 * per step for all of them. Each sequence keeps its own KV cache, sampling and stop rules (the
 * same `AnswerTokens` as a generation alone), so a greedy answer equals the one run alone.
 * Image features are cached by image content, and finished sequences' KV caches are kept for
 * requests that start the same way (a chat's next turn prefills only its new tokens).
 */
import { type Engine, type EngineOutput, type EngineRequest, QueueFullError } from "./engine.js";
import { answerBudget, AnswerTokens, type FinishReason } from "../llava/generate.js";
import { ImageFeatureCache } from "../llava/image-cache.js";
import type { KVCache } from "../llava/llama.js";
import type { LoadedLlava } from "../llava/load.js";
import { type Reuse, reusableInputs } from "../llava/pipeline.js";
import { type PositionKey, PrefixCache } from "../llava/prefix-cache.js";
import { reshape, slice } from "../tensor/ops.js";
import { Scratch, withScratch } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

export interface BatchEngineOptions {
  /**
   * sequences decoded together (default 8: on bench-small, 16 streams decoded barely faster in
   * aggregate than 8, and waited about twice as long for their first token)
   */
  maxBatch?: number;
  /** requests waiting for a place in a full batch; beyond it `generate` throws QueueFullError (default 64) */
  maxQueue?: number;
  /** bytes of projected image features kept (default 256 MiB; 0 keeps none) */
  imageCacheBytes?: number;
  /**
   * bytes of finished sequences' KV caches kept for prefix reuse (default 1 GiB; 0 keeps none).
   * The part of a prompt after a reused prefix runs on its own, which sums in another order than
   * a whole prompt (and a previous answer's positions came from decode steps): greedy answers
   * agreed on the fixtures, but in a near tie (seen at q4_0 on a random-weight model) a greedy
   * token, like a seeded sample, can differ from the one chosen without reuse.
   */
  prefixCacheBytes?: number;
}

/** Counts of the work done, for tests and benchmarks. */
export interface EngineStats {
  /** positions run through the model by prefills */
  prefilled: number;
  /** positions taken from kept KV caches instead */
  reused: number;
  /** decode steps, the sequences they carried and the milliseconds they took */
  steps: number;
  stepRows: number;
  stepMs: number;
}

/** One request in the engine, from waiting to finished. */
class Sequence {
  answer: AnswerTokens | null = null;
  cache: KVCache | null = null;
  /** what each prompt position holds (for the prefix cache) */
  keys: PositionKey[] = [];
  /** released text not yet taken by the iteration */
  readonly pieces: string[] = [];
  done = false;
  error: unknown = null;
  private wake: (() => void) | null = null;

  constructor(readonly request: EngineRequest) {}

  /** The prompt ran: the sequence decodes into `cache` from now on. */
  start(answer: AnswerTokens, cache: KVCache, keys: PositionKey[]): void {
    this.answer = answer;
    this.cache = cache;
    this.keys = keys;
  }

  get aborted(): boolean {
    return this.request.signal?.aborted ?? false;
  }

  push(text: string): void {
    if (text) this.pieces.push(text);
    this.notify();
  }

  finish(error: unknown = null): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    this.cache = null;
    this.notify();
  }

  notify(): void {
    this.wake?.();
    this.wake = null;
  }

  /** resolves when there is news (a piece, the end, an abort) */
  news(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }
}

export class BatchEngine implements Engine {
  readonly maxBatch: number;
  readonly maxQueue: number;
  readonly stats: EngineStats = { prefilled: 0, reused: 0, steps: 0, stepRows: 0, stepMs: 0 };
  private readonly reuse: Reuse;
  private readonly waiting: Sequence[] = [];
  private active: Sequence[] = [];
  private running: Promise<void> | null = null;
  private closed = false;
  private readonly stepBuffers = new Scratch();

  constructor(readonly loaded: LoadedLlava, opts: BatchEngineOptions = {}) {
    this.maxBatch = opts.maxBatch ?? 8;
    this.maxQueue = opts.maxQueue ?? 64;
    const imageCacheBytes = opts.imageCacheBytes ?? 256 * 2 ** 20;
    const prefixCacheBytes = opts.prefixCacheBytes ?? 2 ** 30;
    const wholeAtLeast = (name: string, v: number, min: number) => {
      if (!(Number.isInteger(v) && v >= min)) throw new LlavaError(`${name} must be a whole number >= ${min}, got ${v}`);
    };
    wholeAtLeast("maxBatch", this.maxBatch, 1);
    wholeAtLeast("maxQueue", this.maxQueue, 0);
    for (const [name, v] of Object.entries({ imageCacheBytes, prefixCacheBytes })) {
      if (!(v >= 0)) throw new LlavaError(`${name} must be a number of bytes >= 0, got ${v}`);
    }
    this.reuse = { images: new ImageFeatureCache(imageCacheBytes), prefixes: new PrefixCache(prefixCacheBytes) };
  }

  /** a sequence that ended counts no more, though it leaves the batch only at the next step */
  get queueLength(): number {
    return this.waiting.length + this.active.filter((seq) => !seq.done).length;
  }

  generate(request: EngineRequest): EngineOutput {
    if (this.closed) throw new LlavaError("the engine is closed");
    if (this.queueLength >= this.maxBatch + this.maxQueue) throw new QueueFullError(`the server is busy: ${this.maxQueue} requests are waiting already; retry later`);
    const seq = new Sequence(request);
    request.signal?.addEventListener("abort", () => this.drop(seq), { once: true });
    this.waiting.push(seq);
    this.schedule();
    return output(seq, () => this.drop(seq));
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.running;
  }

  /** Starts the scheduler unless it runs. */
  private schedule(): void {
    this.running ??= this.loop().finally(() => {
      this.running = null;
      if (this.waiting.length) this.schedule();
    });
  }

  private async loop(): Promise<void> {
    await turn(); // generate() returns before any model work
    while (this.waiting.length || this.active.length) {
      this.sweep();
      while (this.active.length < this.maxBatch && this.waiting.length) {
        const seq = this.waiting.shift()!;
        if (seq.done || seq.aborted) {
          seq.finish(seq.request.signal?.reason);
          continue;
        }
        this.prefill(seq);
        if (!seq.done) this.active.push(seq);
        await turn();
        this.sweep();
      }
      if (this.active.length) this.step();
      await turn();
    }
  }

  /** Sequences that ended, were aborted or abandoned leave the batch; their caches go. */
  private sweep(): void {
    this.active = this.active.filter((seq) => {
      if (seq.aborted) seq.finish(seq.request.signal?.reason);
      return !seq.done;
    });
  }

  /** The client went away (an abort, an iteration stopped early): the sequence leaves the queue now, the batch at the next step. */
  private drop(seq: Sequence): void {
    const i = this.waiting.indexOf(seq);
    if (i >= 0) this.waiting.splice(i, 1);
    seq.finish(seq.error);
  }

  /** Runs the prompt (its new part), chooses the first token. */
  private prefill(seq: Sequence): void {
    const { loaded } = this;
    const llm = loaded.model.llm;
    const r = seq.request;
    try {
      const { embeds, keys } = reusableInputs(loaded, r.prompt, r.images, this.reuse.images);
      const t = embeds.dim(1);
      const budget = answerBudget(loaded, t, r);
      const { cache, reused } = this.reuse.prefixes.take(llm, keys, t + budget);
      const { hidden } = llm.forward(reused ? slice(embeds, 1, reused, t) : embeds, { cache });
      seq.start(new AnswerTokens(loaded, { ...r, temperature: r.temperature ?? 0 }, t, budget), cache, keys);
      this.stats.prefilled += t - reused;
      this.stats.reused += reused;
      this.accept(seq, llm.logits(slice(hidden, 1, hidden.dim(1) - 1, hidden.dim(1))).data);
    } catch (e) {
      seq.finish(e);
    }
  }

  /** One token of every active sequence. */
  private step(): void {
    const llm = this.loaded.model.llm;
    const seqs = this.active;
    const started = performance.now();
    const tokens = Int32Array.from(seqs, (s) => s.answer!.tokens.at(-1)!);
    let logits: Float32Array;
    try {
      // the step's rows and logits in buffers the next step reuses (the logits are used up below)
      logits = withScratch(this.stepBuffers, () => {
        const embeds = llm.embedTokens.forward(tokens);
        const hidden = llm.decodeStep(reshape(embeds, [seqs.length, 1, embeds.dim(-1)]), seqs.map((s) => s.cache!));
        return llm.logits(hidden, { rowwise: true }).data;
      });
    } catch (e) {
      for (const seq of seqs) seq.finish(e);
      return;
    }
    this.stats.steps++;
    this.stats.stepRows += seqs.length;
    this.stats.stepMs += performance.now() - started;
    const vocab = logits.length / seqs.length;
    seqs.forEach((seq, i) => {
      try {
        this.accept(seq, logits.subarray(i * vocab, (i + 1) * vocab));
      } catch (e) {
        seq.finish(e);
      }
    });
    this.sweep();
  }

  /** The sequence's next token from its logits; a finished sequence's cache is kept for reuse. */
  private accept(seq: Sequence, logits: Float32Array): void {
    const answer = seq.answer!;
    seq.push(answer.next(logits).text);
    if (!answer.finishReason) return;
    this.reuse.prefixes.keep([...seq.keys, ...answer.tokens], seq.cache!);
    seq.finish();
  }
}

/** Lets sockets, timers and aborts run between two pieces of model work. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The EngineOutput of a sequence: its pieces as they come, then its error or its counts. */
function output(seq: Sequence, abandon: () => void): EngineOutput {
  let started = false;
  return {
    get promptTokens() {
      return seq.answer?.promptTokens ?? 0;
    },
    get completionTokens() {
      return seq.answer?.tokens.length ?? 0;
    },
    get finishReason(): FinishReason | null {
      return seq.answer?.finishReason ?? null;
    },
    async *[Symbol.asyncIterator](): AsyncGenerator<string> {
      if (started) throw new LlavaError("an answer can be iterated only once");
      started = true;
      try {
        for (;;) {
          if (seq.pieces.length) {
            yield seq.pieces.shift()!;
            continue;
          }
          if (seq.request.signal?.aborted) throw seq.request.signal.reason;
          if (seq.done) {
            if (seq.error) throw seq.error;
            return;
          }
          await seq.news();
        }
      } finally {
        if (!seq.done) abandon();
      }
    },
  };
}
