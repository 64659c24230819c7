/**
 * What the OpenAI and Ollama APIs ask of a server: the models it serves and an answer to a
 * rendered prompt. Two ways to give it: a loaded model's engine in this process, or the model
 * workers registered with a controller in this process (through their reference
 * /worker_generate_stream protocol).
 */
import type { FinishReason } from "../llava/generate.js";
import { PromptTooLongError, releasable } from "../llava/generate.js";
import type { Controller } from "./controller.js";
import type { Engine, EngineOutput, EngineRequest } from "./engine.js";
import { nulDelimited, postJson } from "./http-client.js";
import { PROMPT_TOO_LONG_MSG, REQUEST_TIMEOUT_MS, streamChunkSchema, type StreamChunk, transportBase64 } from "./protocol.js";

export interface ChatBackend {
  /** the models served, by the names clients ask for */
  models(): Promise<string[]>;
  /**
   * The answer of `model` to `request`. Besides the engine's errors, the iteration (or this call)
   * throws ModelNotFoundError or WorkerError.
   */
  generate(model: string, request: EngineRequest): EngineOutput;
}

export class ModelNotFoundError extends Error {
  constructor(readonly model: string) {
    super(`the model "${model}" is not served here`);
  }
}

/** The model worker behind the controller failed or could not be reached. */
export class WorkerError extends Error {}

/** The token budget of a request that sets none: the context ends the answer (a reference worker caps it at 1024). */
export const NO_TOKEN_LIMIT = 2 ** 31 - 1;

/** `engine` serving the model named `modelName` (its QueueFullError is the API's 503). */
export function engineBackend(engine: Engine, modelName: string): ChatBackend {
  return {
    models: async () => [modelName],
    generate(model, request) {
      if (model !== modelName) throw new ModelNotFoundError(model);
      return engine.generate(request);
    },
  };
}

/**
 * The models of the workers registered with `controller` (an in-process Controller: the model
 * list and the dispatch are method calls, and the answer comes straight from the chosen worker
 * without a relay through the controller's own HTTP endpoint).
 */
export function controllerBackend(controller: Controller, opts: { workerTimeoutMs?: number } = {}): ChatBackend {
  const idleTimeoutMs = opts.workerTimeoutMs ?? REQUEST_TIMEOUT_MS;
  return {
    models: async () => controller.listModels(),
    generate: (model, request) => new WorkerAnswer(controller, model, request, idleTimeoutMs),
  };
}

/** `local`'s models answered by `local`, every other model by `others` (a server with its own engine that is also a controller). */
export function combinedBackend(local: ChatBackend, others: ChatBackend): ChatBackend {
  return {
    models: async () => [...new Set([...(await local.models()), ...(await others.models())])],
    generate(model, request) {
      try {
        return local.generate(model, request);
      } catch (err) {
        if (err instanceof ModelNotFoundError) return others.generate(model, request);
        throw err;
      }
    },
  };
}

/**
 * A worker's answer as engine output. The reference protocol sends the prompt and the whole
 * answer so far in every chunk: the pieces are the differences, and the stop strings are applied
 * here (the reference worker only trims one at the very end). A llava-ts worker's last chunk says
 * the token counts and why the answer ended; for a reference worker, which says neither, each
 * chunk counts as one completion token (it sends one per token) and the prompt's count is 0.
 */
class WorkerAnswer implements EngineOutput {
  promptTokens = 0;
  completionTokens = 0;
  finishReason: FinishReason | null = null;

  constructor(private readonly controller: Controller, private readonly model: string, private readonly request: EngineRequest, private readonly idleTimeoutMs: number) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<string> {
    const { request, model } = this;
    const address = this.controller.getWorkerAddress(model);
    if (!address) throw new ModelNotFoundError(model);
    const images = await Promise.all(request.images.map(transportBase64));
    const params = {
      model,
      prompt: request.prompt,
      images,
      temperature: request.temperature ?? 0,
      top_p: request.topP ?? 1,
      max_new_tokens: request.maxNewTokens,
      // the reference protocol takes one stop string: the template's comes first
      stop: request.stop?.[0],
      seed: request.seed,
    };
    const res = await postJson(`${address}/worker_generate_stream`, params, { idleTimeoutMs: this.idleTimeoutMs, signal: request.signal }).catch((err: Error) => {
      request.signal?.throwIfAborted();
      throw new WorkerError(`the model worker ${address} cannot be reached: ${err.message}`);
    });
    if (res.statusCode !== 200) {
      res.resume();
      throw new WorkerError(`the model worker ${address} answered HTTP ${res.statusCode}`);
    }
    const stops = (request.stop ?? []).filter((s) => s.length > 0);
    let released = 0;
    let answer = "";
    let last: StreamChunk | undefined;
    try {
      for await (const raw of nulDelimited(res)) {
        const chunk = (last = parseChunk(raw, address));
        if (chunk.error_code !== 0) throw new WorkerError(`the model worker ${address} failed (error code ${chunk.error_code})`);
        answer = chunk.text.startsWith(request.prompt) ? chunk.text.slice(request.prompt.length) : chunk.text;
        if (this.completionTokens === 0 && answer === PROMPT_TOO_LONG_MSG) throw new PromptTooLongError(`the prompt leaves no room for an answer in the context of ${model}`);
        this.completionTokens++;
        // until the stream ends, a tail that may start a stop string waits
        const { end, stopped } = releasable(answer, stops, false);
        if (end > released) yield answer.slice(released, end);
        released = Math.max(released, end);
        if (stopped) {
          this.finishReason = "stop";
          return;
        }
      }
    } catch (err) {
      request.signal?.throwIfAborted();
      if (err instanceof WorkerError || err instanceof PromptTooLongError) throw err;
      throw new WorkerError(`the model worker ${address} failed mid-answer: ${(err as Error).message}`);
    } finally {
      res.destroy();
    }
    if (answer.length > released) yield answer.slice(released);
    this.finishReason = this.completionTokens >= request.maxNewTokens ? "length" : "eos";
    if (last?.usage) {
      this.promptTokens = last.usage.prompt_tokens;
      this.completionTokens = last.usage.completion_tokens;
    }
    if (last?.finish_reason) this.finishReason = last.finish_reason;
  }
}

function parseChunk(raw: Buffer, address: string): StreamChunk {
  let chunk: unknown;
  try {
    chunk = JSON.parse(raw.toString("utf8"));
  } catch {
    throw new WorkerError(`the model worker ${address} sent a chunk that is not JSON`);
  }
  const parsed = streamChunkSchema.safeParse(chunk);
  if (!parsed.success) throw new WorkerError(`the model worker ${address} sent a chunk without text and error_code`);
  return parsed.data;
}
