/**
 * The serving engine's contract: what a model worker, the OpenAI / Ollama APIs and the all-in-one
 * server ask of a loaded model. A request is a rendered prompt (with `<image>` markers) and its
 * decoded images; the answer comes back as text pieces. `BatchEngine` (batch-engine.ts) is the
 * local model's; an upstream server's (openai-worker.ts) keeps the same contract.
 */
import type { RgbImage } from "../image/decode.js";
import type { FinishReason } from "../llava/generate.js";
import { LlavaError } from "../util/errors.js";

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

/** `generate` refuses a request because too many are waiting: servers answer 503 with Retry-After. */
export class QueueFullError extends LlavaError {}

export interface Engine {
  /** requests admitted and not yet finished, running or waiting (a worker's queue_length) */
  readonly queueLength: number;
  /** throws QueueFullError when too many requests wait */
  generate(request: EngineRequest): EngineOutput;
  /** waits for the running requests to end; new ones are refused */
  close(): Promise<void>;
}
