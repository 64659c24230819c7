/**
 * The OpenAI-compatible API under /v1: model list and chat completions with text and image_url
 * parts, answered whole or streamed as server-sent events, with OpenAI's error objects.
 */
import type { FastifyInstance } from "fastify";
import { randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { z } from "zod";
import type { RgbImage } from "../image/decode.js";
import type { FinishReason } from "../llava/generate.js";
import { type ApiFailure, type ApiOptions, clientGoneSignal, collectAnswer, failureOf, imageOptionsOf, setUpApiScope, startAnswer } from "./api-common.js";
import { type ChatBackend, ModelNotFoundError, NO_TOKEN_LIMIT } from "./chat-backend.js";
import { type ChatTurn, renderChat } from "./chat-prompt.js";
import type { EngineOutput } from "./engine.js";
import { HttpError, parseBody } from "./http-app.js";
import { imageFromUrl, type ImageInputOptions } from "./image-input.js";

/** OpenAI's documented sampling defaults. */
const DEFAULT_TEMPERATURE = 1;
const DEFAULT_TOP_P = 1;

const part = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text"), text: z.string() }),
  z.object({ type: z.literal("image_url"), image_url: z.union([z.string(), z.object({ url: z.string(), detail: z.string().optional() })]) }),
]);

const message = z.object({
  role: z.enum(["system", "developer", "user", "assistant"]),
  content: z.union([z.string(), z.array(part)]).nullish(),
});

const tokenCount = z.number().int().min(1).nullish();

const chatRequest = z.object({
  model: z.string(),
  messages: z.array(message).min(1),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  max_tokens: tokenCount,
  max_completion_tokens: tokenCount,
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullish(),
  n: z.number().int().nullish(),
});
type ChatRequest = z.infer<typeof chatRequest>;

/** OpenAI's error object. */
function errorBody(failure: ApiFailure) {
  return { error: { message: failure.message, type: failure.status < 500 ? "invalid_request_error" : "server_error", param: null, code: failure.code } };
}

/** Mounts GET /v1/models, GET /v1/models/:id and POST /v1/chat/completions on `app`. */
export async function registerOpenAiApi(app: FastifyInstance, backend: ChatBackend, opts: ApiOptions = {}): Promise<void> {
  await app.register(async (scope) => {
    await setUpApiScope(scope, opts, errorBody);
    const created = Math.floor(Date.now() / 1000);
    const modelObject = (id: string) => ({ id, object: "model", created, owned_by: "llava-ts" });

    scope.get("/models", async () => ({ object: "list", data: (await backend.models()).map(modelObject) }));
    scope.get<{ Params: { id: string } }>("/models/:id", async (req) => {
      if (!(await backend.models()).includes(req.params.id)) throw new ModelNotFoundError(req.params.id);
      return modelObject(req.params.id);
    });

    scope.post("/chat/completions", async (req, reply) => {
      const body = parseBody(chatRequest, req.body);
      if ((body.n ?? 1) !== 1) throw new HttpError(400, "n: only n = 1 is supported");
      if (!(await backend.models()).includes(body.model)) throw new ModelNotFoundError(body.model);
      const signal = clientGoneSignal(reply);
      const turns = await turnsOf(body, imageOptionsOf(opts, signal));
      const { prompt, images, stop } = renderChat(body.model, turns);
      const output = backend.generate(body.model, {
        prompt,
        images,
        maxNewTokens: body.max_completion_tokens ?? body.max_tokens ?? NO_TOKEN_LIMIT,
        temperature: body.temperature ?? DEFAULT_TEMPERATURE,
        topP: body.top_p ?? DEFAULT_TOP_P,
        seed: body.seed ?? undefined,
        stop: [...stop, ...(typeof body.stop === "string" ? [body.stop] : (body.stop ?? []))],
        signal,
      });
      const answer = await startAnswer(output);
      const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
      const head = { id, created: Math.floor(Date.now() / 1000), model: body.model };
      if (!body.stream) {
        const content = await collectAnswer(answer);
        return {
          ...head,
          object: "chat.completion",
          choices: [{ index: 0, message: { role: "assistant", content, refusal: null }, logprobs: null, finish_reason: finishReason(output.finishReason) }],
          usage: usageOf(output),
        };
      }
      reply.header("content-type", "text/event-stream; charset=utf-8").header("cache-control", "no-cache");
      return reply.send(Readable.from(events(head, answer, output, body.stream_options?.include_usage ?? false, signal, opts.log ?? (() => {}))));
    });
  }, { prefix: "/v1" });
}

/** The messages as chat turns, their images fetched and decoded. */
async function turnsOf(body: ChatRequest, imageOpts: ImageInputOptions): Promise<ChatTurn<RgbImage>[]> {
  const turns: ChatTurn<RgbImage>[] = [];
  for (const [m, { role, content }] of body.messages.entries()) {
    const parts = typeof content === "string" ? [{ type: "text" as const, text: content }] : (content ?? []);
    const texts: string[] = [];
    const images: RgbImage[] = [];
    for (const [p, item] of parts.entries()) {
      if (item.type === "text") texts.push(item.text);
      else images.push(await imageFromUrl(typeof item.image_url === "string" ? item.image_url : item.image_url.url, `messages.${m}.content.${p}.image_url`, imageOpts));
    }
    turns.push({ role: role === "developer" ? "system" : role, text: texts.join("\n"), images });
  }
  return turns;
}

const finishReason = (reason: FinishReason | null) => (reason === "length" ? "length" : "stop");

const usageOf = (output: EngineOutput) => ({
  prompt_tokens: output.promptTokens,
  completion_tokens: output.completionTokens,
  total_tokens: output.promptTokens + output.completionTokens,
});

/**
 * The streamed answer as server-sent events: the role first, a chunk per piece, the finish
 * reason, the usage when asked for, then [DONE]. A failure mid-answer is an error event.
 */
async function* events(head: object, answer: AsyncGenerator<string>, output: EngineOutput, includeUsage: boolean, signal: AbortSignal, log: (line: string) => void): AsyncGenerator<string> {
  const usage = includeUsage ? { usage: null } : {};
  const chunk = (delta: object, finish: string | null) => event({ ...head, object: "chat.completion.chunk", choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...usage });
  yield chunk({ role: "assistant", content: "" }, null);
  try {
    for await (const piece of answer) yield chunk({ content: piece }, null);
  } catch (err) {
    if (signal.aborted) return;
    yield event(errorBody(failureOf(err, log)));
    yield "data: [DONE]\n\n";
    return;
  }
  yield chunk({}, finishReason(output.finishReason));
  if (includeUsage) yield event({ ...head, object: "chat.completion.chunk", choices: [], usage: usageOf(output) });
  yield "data: [DONE]\n\n";
}

const event = (data: object) => `data: ${JSON.stringify(data)}\n\n`;
