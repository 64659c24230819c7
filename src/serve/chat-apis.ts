/** The OpenAI-compatible API (/v1) and Ollama's (/api) together, as every llava-ts server mounts them. */
import type { FastifyInstance } from "fastify";
import type { ApiOptions } from "./api-common.js";
import type { ChatBackend } from "./chat-backend.js";
import { registerOllamaApi } from "./ollama-api.js";
import { registerOpenAiApi } from "./openai-api.js";

export async function registerChatApis(app: FastifyInstance, backend: ChatBackend, opts: ApiOptions): Promise<void> {
  await registerOpenAiApi(app, backend, opts);
  await registerOllamaApi(app, backend, opts);
}
