/**
 * Ollama's native API under /api: model list, chat and generate with base64 images, streamed as
 * newline-delimited JSON by default (as Ollama does), with Ollama's counts and durations (ns) and
 * its `{"error": ...}` failures.
 */
import type { FastifyInstance, FastifyReply } from "fastify";
import { Readable } from "node:stream";
import { z } from "zod";
import type { RgbImage } from "../image/decode.js";
import { convModeForModelName } from "../llava/conversation.js";
import { type ApiFailure, type ApiOptions, clientGoneSignal, collectAnswer, failureOf, imageOptionsOf, setUpApiScope, startAnswer } from "./api-common.js";
import { type ChatBackend, ModelNotFoundError, NO_TOKEN_LIMIT } from "./chat-backend.js";
import { type ChatTurn, renderChat } from "./chat-prompt.js";
import type { EngineOutput, EngineRequest } from "./engine.js";
import { parseBody } from "./http-app.js";
import { imageFromBase64, type ImageInputOptions } from "./image-input.js";

/** Ollama's default sampling settings. */
const DEFAULT_TEMPERATURE = 0.8;
const DEFAULT_TOP_P = 0.9;
/** The Ollama API version whose fields these endpoints serve (clients check it). */
export const OLLAMA_API_VERSION = "0.6.4";
/** Ollama names models name:tag; a bare name means this tag. */
const DEFAULT_TAG = ":latest";

/** The options Ollama takes that apply here; the others (num_ctx, top_k, ...) are ignored, as Ollama ignores unknown ones. */
const options = z.looseObject({
  temperature: z.number().min(0).optional(),
  top_p: z.number().min(0).max(1).optional(),
  seed: z.number().int().optional(),
  /** -1 (no limit) and -2 (fill the context) both leave the end to the context */
  num_predict: z.number().int().optional(),
  stop: z.array(z.string()).optional(),
});

const common = {
  model: z.string(),
  stream: z.boolean().optional(),
  options: options.optional(),
};

const chatRequest = z.object({
  ...common,
  messages: z.array(z.object({ role: z.enum(["system", "user", "assistant"]), content: z.string(), images: z.array(z.string()).nullish() })).min(1),
});

const generateRequest = z.object({
  ...common,
  prompt: z.string(),
  system: z.string().optional(),
  images: z.array(z.string()).nullish(),
  /** the prompt is sent as it is, without the template; its `<image>` markers must match the images */
  raw: z.boolean().optional(),
});

const errorBody = (failure: ApiFailure) => ({ error: failure.message });

/** Mounts GET /api/tags, GET /api/version, POST /api/show, POST /api/chat and POST /api/generate on `app`. */
export async function registerOllamaApi(app: FastifyInstance, backend: ChatBackend, opts: ApiOptions = {}): Promise<void> {
  /** The served model a client's name means ("name" and "name:latest" alike). */
  const servedModel = async (name: string): Promise<string> => {
    const models = await backend.models();
    const bare = name.endsWith(DEFAULT_TAG) ? name.slice(0, -DEFAULT_TAG.length) : name;
    const found = [name, bare].find((n) => models.includes(n));
    if (found === undefined) throw new ModelNotFoundError(name);
    return found;
  };

  await app.register(async (scope) => {
    await setUpApiScope(scope, opts, errorBody);

    scope.get("/version", async () => ({ version: OLLAMA_API_VERSION }));
    scope.get("/tags", async () => ({ models: (await backend.models()).map((name) => ({ name, model: name, modified_at: new Date(0).toISOString(), size: 0, digest: "", details: details() })) }));
    scope.post("/show", async (req) => {
      const model = await servedModel(parseBody(z.object({ model: z.string() }), req.body).model);
      return { modelfile: "", parameters: "", template: convModeForModelName(model), details: details(), model_info: {}, capabilities: ["completion", "vision"] };
    });

    scope.post("/chat", async (req, reply) => {
      const body = parseBody(chatRequest, req.body);
      const model = await servedModel(body.model);
      const build = async (imageOpts: ImageInputOptions) => {
        const turns: ChatTurn<RgbImage>[] = [];
        for (const [m, message] of body.messages.entries()) {
          turns.push({ role: message.role, text: message.content, images: await decodeAll(message.images ?? [], `messages.${m}.images`, imageOpts) });
        }
        return renderChat(model, turns);
      };
      return answer(backend, opts, reply, { model, body, build, shape: (content) => ({ message: { role: "assistant", content } }) });
    });

    scope.post("/generate", async (req, reply) => {
      const body = parseBody(generateRequest, req.body);
      const model = await servedModel(body.model);
      const build = async (imageOpts: ImageInputOptions) => {
        const images = await decodeAll(body.images ?? [], "images", imageOpts);
        if (body.raw) return { prompt: body.prompt, images, stop: [] };
        const system: ChatTurn<RgbImage>[] = body.system !== undefined ? [{ role: "system", text: body.system, images: [] }] : [];
        return renderChat(model, [...system, { role: "user", text: body.prompt, images }]);
      };
      return answer(backend, opts, reply, { model, body, build, shape: (response) => ({ response }) });
    });
  }, { prefix: "/api" });
}

/** One chat or generate request, as the shared answering code sees it. */
interface Asked {
  /** the served model */
  model: string;
  body: { model: string; stream?: boolean; options?: z.infer<typeof options> };
  /** the prompt, images and stop strings, once the images are decoded */
  build: (images: ImageInputOptions) => Promise<Pick<EngineRequest, "prompt" | "images" | "stop">>;
  /** the endpoint's field for (a piece of) the answer: chat's `message`, generate's `response` */
  shape: (text: string) => object;
}

/** Answers a chat or generate request, whole or streamed. */
async function answer(backend: ChatBackend, opts: ApiOptions, reply: FastifyReply, asked: Asked): Promise<unknown> {
  const { body, shape } = asked;
  const started = process.hrtime.bigint();
  const signal = clientGoneSignal(reply);
  const { prompt, images, stop } = await asked.build(imageOptionsOf(opts, signal));
  const o = body.options ?? {};
  const output = backend.generate(asked.model, {
    prompt,
    images,
    maxNewTokens: o.num_predict !== undefined && o.num_predict > 0 ? o.num_predict : NO_TOKEN_LIMIT,
    temperature: o.temperature ?? DEFAULT_TEMPERATURE,
    topP: o.top_p ?? DEFAULT_TOP_P,
    seed: o.seed,
    stop: [...(stop ?? []), ...(o.stop ?? [])],
    signal,
  });
  const pieces = await startAnswer(output);
  const timing = { started, firstPiece: process.hrtime.bigint() };
  const head = () => ({ model: body.model, created_at: new Date().toISOString() });
  if (body.stream === false) return { ...head(), ...shape(await collectAnswer(pieces)), ...finalFields(output, timing) };
  reply.header("content-type", "application/x-ndjson");
  return reply.send(Readable.from(lines(pieces, output, timing, { head, shape, signal, log: opts.log ?? (() => {}) })));
}

function details() {
  return { parent_model: "", format: "safetensors", family: "llava", families: ["llama", "clip"], parameter_size: "", quantization_level: "" };
}

async function decodeAll(base64s: string[], what: string, opts: ImageInputOptions): Promise<RgbImage[]> {
  const images: RgbImage[] = [];
  for (const [i, b64] of base64s.entries()) images.push(await imageFromBase64(b64, `${what}.${i}`, opts));
  return images;
}

interface Timing {
  started: bigint;
  firstPiece: bigint;
}

/** The last object's fields: why it ended, the counts and the durations in nanoseconds. */
function finalFields(output: EngineOutput, timing: Timing) {
  const ended = process.hrtime.bigint();
  return {
    done: true,
    done_reason: output.finishReason === "length" ? "length" : "stop",
    total_duration: Number(ended - timing.started),
    load_duration: 0,
    prompt_eval_count: output.promptTokens,
    prompt_eval_duration: Number(timing.firstPiece - timing.started),
    eval_count: output.completionTokens,
    eval_duration: Number(ended - timing.firstPiece),
  };
}

/** The streamed answer: one JSON line per piece, then the final one; a failure mid-answer is an error line. */
async function* lines(pieces: AsyncGenerator<string>, output: EngineOutput, timing: Timing, how: { head: () => object; shape: (text: string) => object; signal: AbortSignal; log: (line: string) => void }): AsyncGenerator<string> {
  const { head, shape, signal, log } = how;
  const line = (value: object) => `${JSON.stringify(value)}\n`;
  try {
    for await (const piece of pieces) yield line({ ...head(), ...shape(piece), done: false });
  } catch (err) {
    if (!signal.aborted) yield line(errorBody(failureOf(err, log)));
    return;
  }
  yield line({ ...head(), ...shape(""), ...finalFields(output, timing) });
}
