/**
 * A worker whose answers come from an OpenAI-compatible server (SGLang, vLLM, llama.cpp's server,
 * Ollama, another llava-ts), as the reference's SGLang worker (llava/serve/sglang_worker.py) puts
 * an SGLang runtime behind the controller. `OpenAIEngine` is the upstream seen as an engine, so the
 * worker (worker.ts) serves it exactly as it serves a local model.
 *
 * The client is the official `openai` package: it speaks the chat completions wire format,
 * parses its server-sent events and reports the upstream's errors with their messages, which
 * plain fetch would have to redo.
 */
import OpenAI from "openai";
import type { ChatCompletionContentPart } from "openai/resources/chat/completions";
import type { FinishReason } from "../llava/generate.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import { LlavaError } from "../util/errors.js";
import type { Engine, EngineOutput, EngineRequest } from "./engine.js";
import { transportBase64 } from "./protocol.js";

export interface OpenAIEngineOptions {
  /** the upstream's API root, e.g. http://localhost:30000/v1 */
  apiBase: string;
  apiKey?: string;
  /** the upstream's model id */
  model: string;
}

/** An OpenAI-compatible server as a worker's engine: one streamed chat completion per request. */
export class OpenAIEngine implements Engine {
  readonly client: OpenAI;
  readonly model: string;
  private running = 0;
  private closed = false;
  private idle: Array<() => void> = [];

  constructor(opts: OpenAIEngineOptions) {
    // local servers take any key; the client insists on one
    this.client = new OpenAI({ baseURL: opts.apiBase, apiKey: opts.apiKey ?? "EMPTY", maxRetries: 0 });
    this.model = opts.model;
  }

  get queueLength(): number {
    return this.running;
  }

  /** Asks the upstream for its models; a LlavaError when it cannot be reached, a warning line when it does not list `model`. */
  async check(warn: (line: string) => void): Promise<void> {
    let ids: string[];
    try {
      ids = (await this.client.models.list()).data.map((m) => m.id);
    } catch (err) {
      throw new LlavaError(`cannot list the models of ${this.client.baseURL}: ${(err as Error).message}`);
    }
    if (!ids.includes(this.model)) warn(`${this.client.baseURL} does not list the model "${this.model}" (it lists: ${ids.join(", ") || "none"})`);
  }

  generate(request: EngineRequest): EngineOutput {
    if (this.closed) throw new Error("the engine is closed");
    const engine = this;
    const out = {
      promptTokens: 0,
      completionTokens: 0,
      finishReason: null as FinishReason | null,
      async *[Symbol.asyncIterator](): AsyncGenerator<string> {
        engine.running++;
        try {
          const imageUrls = await Promise.all(request.images.map(async (img) => `data:image/png;base64,${await transportBase64(img)}`));
          const stream = await engine.client.chat.completions.create(
            {
              model: engine.model,
              messages: [{ role: "user", content: chatContent(request.prompt, imageUrls) }],
              stream: true,
              stream_options: { include_usage: true },
              max_tokens: request.maxNewTokens,
              temperature: request.temperature ?? 0,
              top_p: request.topP ?? 1,
              ...(request.stop?.length ? { stop: request.stop } : {}),
              ...(request.seed !== undefined ? { seed: request.seed } : {}),
            },
            { signal: request.signal },
          );
          for await (const chunk of stream) {
            const choice = chunk.choices[0];
            if (choice?.delta?.content) yield choice.delta.content;
            // OpenAI's "stop" is an EOS or a stop string alike
            if (choice?.finish_reason) out.finishReason = choice.finish_reason === "length" ? "length" : "stop";
            if (chunk.usage) {
              out.promptTokens = chunk.usage.prompt_tokens;
              out.completionTokens = chunk.usage.completion_tokens;
            }
          }
        } catch (err) {
          throw request.signal?.aborted ? request.signal.reason : err;
        } finally {
          engine.running--;
          if (engine.running === 0) engine.idle.splice(0).forEach((resolve) => resolve());
        }
      },
    };
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.running > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
  }
}

/**
 * The reference's rendered prompt as the content of one user message: its text pieces with the
 * images in place of the `<image>` markers (the SGLang worker first folds " <image>\n" into the
 * marker, and so does this). The prompt arrives already rendered with a conversation template,
 * and the chat API has no way to send a raw prompt with images, so the upstream wraps it in its
 * own template once more: the model sees the whole conversation (system line, roles, earlier
 * turns) as the text of a single user turn, and the template's separators are plain text to it.
 */
export function chatContent(prompt: string, imageUrls: string[]): ChatCompletionContentPart[] {
  const pieces = prompt.replaceAll(` ${IMAGE_TOKEN}\n`, IMAGE_TOKEN).split(IMAGE_TOKEN);
  if (pieces.length - 1 !== imageUrls.length) {
    throw new LlavaError(`${imageUrls.length} images for ${pieces.length - 1} ${IMAGE_TOKEN} markers`);
  }
  const parts: ChatCompletionContentPart[] = [];
  pieces.forEach((text, i) => {
    if (text) parts.push({ type: "text", text });
    if (i < imageUrls.length) parts.push({ type: "image_url", image_url: { url: imageUrls[i] } });
  });
  return parts;
}
