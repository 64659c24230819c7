/**
 * The serving engine's contract: what a model worker, the OpenAI / Ollama APIs and the all-in-one
 * server ask of a loaded model. A request is a rendered prompt (with `<image>` markers) and its
 * decoded images; the answer comes back as text pieces. `SerialEngine` answers one request at a
 * time in arrival order; a batching engine keeps the same contract.
 */
import type { RgbImage } from "../image/decode.js";
import type { FinishReason } from "../llava/generate.js";
import type { LoadedLlava } from "../llava/load.js";
import { answerGeneration } from "../llava/pipeline.js";

export interface EngineRequest {
  /** the fully rendered prompt, one `<image>` marker per image */
  prompt: string;
  images: RgbImage[];
  maxNewTokens: number;
  /** 0 (the default) = greedy */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** the answer ends before the first of these */
  stop?: string[];
  /** the client went away: the request leaves the queue or the batch and its memory is freed */
  signal?: AbortSignal;
}

/**
 * One request's answer: iterate it (once) for the new text pieces. Errors (a prompt too long for
 * the context: `PromptTooLongError`; a marker count that does not match the images; an abort)
 * are thrown by the iteration. Afterwards the counts and the finish reason describe the answer.
 */
export interface EngineOutput extends AsyncIterable<string> {
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly finishReason: FinishReason | null;
}

export interface Engine {
  readonly loaded: LoadedLlava;
  /** requests admitted and not yet finished, running or waiting (a worker's queue_length) */
  readonly queueLength: number;
  generate(request: EngineRequest): EngineOutput;
  /** waits for the running requests to end; new ones are refused */
  close(): Promise<void>;
}

/** Runs requests one after the other, in arrival order. */
export class SerialEngine implements Engine {
  private pending = 0;
  private tail: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(readonly loaded: LoadedLlava) {}

  get queueLength(): number {
    return this.pending;
  }

  generate(request: EngineRequest): EngineOutput {
    if (this.closed) throw new Error("the engine is closed");
    const engine = this;
    const out = {
      promptTokens: 0,
      completionTokens: 0,
      finishReason: null as FinishReason | null,
      async *[Symbol.asyncIterator](): AsyncGenerator<string> {
        engine.pending++;
        let release!: () => void;
        const turn = engine.tail;
        engine.tail = new Promise<void>((resolve) => (release = resolve));
        try {
          await turn;
          request.signal?.throwIfAborted();
          const generation = answerGeneration(engine.loaded, request.prompt, request.images, { ...request, temperature: request.temperature ?? 0 });
          out.promptTokens = generation.promptTokens;
          for await (const piece of generation) {
            out.completionTokens = generation.tokens.length;
            if (piece.text) yield piece.text;
          }
          out.finishReason = generation.finishReason;
        } finally {
          engine.pending--;
          release();
        }
      },
    };
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.tail;
  }
}
