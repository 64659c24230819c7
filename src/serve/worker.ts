/**
 * The reference's model worker (llava/serve/model_worker.py) over any engine: it takes the
 * reference's generation request (a rendered prompt with `<image>` markers and base64 images) and
 * answers with the reference's stream, the prompt and all the answer so far in every chunk. No
 * HTTP here (see worker-http.ts), so a local model's engine and an upstream server
 * (openai-worker.ts) are served the same way.
 */
import { z } from "zod";
import { loadImages, type ImageLimits } from "../image/decode.js";
import { PromptTooLongError } from "../llava/generate.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import { LlavaError } from "../util/errors.js";
import type { Engine, EngineOutput, EngineRequest } from "./engine.js";
import { ErrorCode, errorChunk, PROMPT_TOO_LONG_MSG, streamChunk, type WorkerStatus } from "./protocol.js";

/** The reference's --limit-model-concurrency: requests generating at once; later ones wait. */
export const DEFAULT_CONCURRENCY = 5;
/** The reference's cap on max_new_tokens, whatever the request asks. */
export const MAX_NEW_TOKENS_CAP = 1024;
/** The reference samples iff the temperature is above this; at or below it decodes greedily. */
const GREEDY_TEMPERATURE = 0.001;

/** The reference's request; other keys (`model` among them) are ignored, as the reference ignores them. */
export const generateParamsSchema = z.looseObject({
  prompt: z.string(),
  images: z.array(z.string()).nullish(),
  temperature: z.number().finite().default(1.0),
  top_p: z.number().min(0).max(1).default(1.0),
  max_new_tokens: z.number().finite().default(256),
  stop: z.string().nullish(),
});
export type GenerateParams = z.infer<typeof generateParamsSchema>;

export interface ModelWorkerOptions {
  engine: Engine;
  modelName: string;
  limitModelConcurrency?: number;
  imageLimits?: Partial<ImageLimits>;
  /** called when a request starts generating and when it ends (the reference beats then) */
  onRequestEdge?: () => void;
  /** the causes of failed generations, one line each */
  log?: (line: string) => void;
}

export class ModelWorker {
  readonly modelName: string;
  readonly engine: Engine;
  private readonly slots: Semaphore;
  private readonly opts: ModelWorkerOptions;

  constructor(opts: ModelWorkerOptions) {
    this.opts = opts;
    this.engine = opts.engine;
    this.modelName = opts.modelName;
    this.slots = new Semaphore(opts.limitModelConcurrency ?? DEFAULT_CONCURRENCY);
  }

  /** Requests generating or waiting for a slot (the reference's `limit - semaphore.value + waiters`). */
  get queueLength(): number {
    return this.engine.queueLength + this.slots.waiting;
  }

  status(): WorkerStatus {
    return { model_names: [this.modelName], speed: 1, queue_length: this.queueLength };
  }

  /**
   * The engine's request for `params`: images decoded within the limits, one per `<image>`
   * marker (the reference's ValueError is a LlavaError here, so the client hears why).
   */
  async prepare(params: GenerateParams, signal?: AbortSignal): Promise<EngineRequest> {
    const base64 = params.images ?? [];
    const markers = params.prompt.split(IMAGE_TOKEN).length - 1;
    if (base64.length !== markers) {
      throw new LlavaError(`images: ${base64.length} given but the prompt has ${markers} ${IMAGE_TOKEN} marker${markers === 1 ? "" : "s"}`);
    }
    const bytes = base64.map((b) => Buffer.from(b, "base64"));
    const images = await loadImages(bytes, this.opts.imageLimits);
    const temperature = params.temperature > GREEDY_TEMPERATURE ? params.temperature : 0;
    // Python's int() truncates toward zero
    const maxNewTokens = Math.min(Math.trunc(params.max_new_tokens), MAX_NEW_TOKENS_CAP);
    // the reference runs on to EOS and only trims a stop string that ends the text; ending the
    // answer at the stop string is what a client sending one (the web UI sends the template's
    // separator) asks for, and spares the tokens past it
    const stop = params.stop ? [params.stop] : undefined;
    return { prompt: params.prompt, images, maxNewTokens, temperature, topP: params.top_p, stop, signal };
  }

  /**
   * The reference's stream for a prepared request: a chunk per new piece of text, then a last one
   * that adds the finish reason and the token counts. A prompt that leaves no room gets the
   * reference's message; any other failure one error chunk (code 1), its cause on the log. A
   * request aborted by its signal (the client went away) ends the stream where it is.
   */
  async *stream(request: EngineRequest): AsyncGenerator<Buffer> {
    let release: () => void;
    try {
      release = await this.slots.acquire(request.signal);
    } catch {
      return; // aborted while waiting
    }
    this.opts.onRequestEdge?.();
    try {
      yield* this.chunks(request);
    } finally {
      release();
      this.opts.onRequestEdge?.();
    }
  }

  private async *chunks(request: EngineRequest): AsyncGenerator<Buffer> {
    const tooLong = () => streamChunk({ text: request.prompt + PROMPT_TOO_LONG_MSG, error_code: 0 });
    // the reference's budget check: max_new_tokens < 1 gets the same message as a full context
    if (request.maxNewTokens < 1) {
      yield tooLong();
      return;
    }
    let text = request.prompt;
    let output: EngineOutput;
    try {
      output = this.engine.generate(request);
      for await (const piece of output) {
        text += piece;
        yield streamChunk({ text, error_code: 0 });
      }
    } catch (err) {
      if (request.signal?.aborted) return;
      if (err instanceof PromptTooLongError) {
        yield tooLong();
        return;
      }
      this.opts.log?.(`generation failed: ${(err as Error).message}`);
      yield errorChunk(ErrorCode.GENERATION_FAILED);
      return;
    }
    yield streamChunk({
      text,
      error_code: 0,
      finish_reason: output.finishReason ?? "length",
      usage: { prompt_tokens: output.promptTokens, completion_tokens: output.completionTokens },
    });
  }
}

/** asyncio.Semaphore: `limit` holders at once, the others wait in arrival order. */
class Semaphore {
  private free: number;
  private readonly queue: Array<() => void> = [];

  constructor(limit: number) {
    this.free = limit;
  }

  get waiting(): number {
    return this.queue.length;
  }

  /** Resolves with the release once a slot is free; rejects (and leaves the queue) when `signal` aborts first. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const next = this.queue.shift();
      if (next) next();
      else this.free++;
    };
    if (this.free > 0 && this.queue.length === 0) {
      this.free--;
      return Promise.resolve(release);
    }
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const grant = () => {
        signal?.removeEventListener("abort", leave);
        resolve(release);
      };
      const leave = () => {
        this.queue.splice(this.queue.indexOf(grant), 1);
        reject(signal!.reason);
      };
      this.queue.push(grant);
      signal?.addEventListener("abort", leave, { once: true });
    });
  }
}
