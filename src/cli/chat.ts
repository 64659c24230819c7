/**
 * `llava chat`: the reference llava.serve.cli terminal chat, answers streamed token by token.
 * Each turn starts from the KV cache of the previous one, so it runs only its new tokens.
 */
import readline from "node:readline";
import { cliDisplayRoles, modelNameFromPath, stopString } from "../llava/conversation.js";
import type { LoadedLlava } from "../llava/load.js";
import { ImageFeatureCache } from "../llava/image-cache.js";
import { type Reuse, streamAnswer } from "../llava/pipeline.js";
import { PrefixCache } from "../llava/prefix-cache.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import type { GenerationOptions } from "../llava/generate.js";
import type { RgbImage } from "../image/decode.js";
import { convModeFromArgs, conversationFor, generationFromArgs, type Values } from "./common.js";

/** What `chat` was asked, checked before the model loads. */
export interface ChatRequest {
  imageFile: string | undefined;
  convMode: string | undefined;
  generation: GenerationOptions;
  debug: boolean;
}

export function chatRequestFromArgs(v: Values): ChatRequest {
  return {
    imageFile: typeof v["image-file"] === "string" ? v["image-file"] : undefined,
    convMode: convModeFromArgs(v),
    generation: generationFromArgs(v),
    debug: v.debug === true,
  };
}

/** bound of each of the chat's caches (a conversation keeps one KV cache, replaced each turn) */
const CACHE_BYTES = 2 ** 30;

export async function runChat(loaded: LoadedLlava, request: ChatRequest, images: RgbImage[]): Promise<void> {
  const conv = conversationFor(loaded, request.convMode);
  const [userRole, assistantRole] = cliDisplayRoles(conv, modelNameFromPath(loaded.dir));
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  // an async iterator buffers lines that arrive while an answer is being generated
  const lines = rl[Symbol.asyncIterator]();
  let first = true;
  const reuse: Reuse = { images: new ImageFeatureCache(CACHE_BYTES), prefixes: new PrefixCache(CACHE_BYTES) };
  const onPrefill = ({ promptTokens, reused }: { promptTokens: number; reused: number }) => {
    if (request.debug) process.stderr.write(`[prefill] ${promptTokens - reused} of ${promptTokens} positions\n`);
  };
  try {
    for (;;) {
      process.stdout.write(`${userRole}: `);
      const next = await lines.next();
      const line = next.done ? null : next.value;
      if (line === null || line === "") {
        process.stdout.write("exit...\n");
        return;
      }
      // the image goes with the first turn, as in the reference; every later prompt still holds it
      const text = first && images.length ? `${IMAGE_TOKEN}\n${line}` : line;
      conv.appendMessage(conv.roles[0], text);
      conv.appendMessage(conv.roles[1], null);
      process.stdout.write(`${assistantRole}: `);
      const prompt = conv.getPrompt();
      if (request.debug) process.stderr.write(`\n[prompt] ${JSON.stringify(prompt)}\n`);
      let answer = "";
      for await (const piece of streamAnswer(loaded, prompt, images, { ...request.generation, stop: [stopString(conv)], hooks: { ...request.generation.hooks, onPrefill } }, reuse)) {
        const out = answer ? piece : piece.trimStart();
        answer += out;
        process.stdout.write(out);
      }
      process.stdout.write("\n");
      conv.updateLastMessage(answer.trim());
      if (request.debug) process.stderr.write(`[answer] ${JSON.stringify(answer)}\n`);
      first = false;
    }
  } finally {
    rl.close();
  }
}
