/** `llava run`: one answer to one query, like the reference llava/eval/run_llava.py. */
import { stopString } from "../llava/conversation.js";
import type { GenerationOptions } from "../llava/generate.js";
import type { LoadedLlava } from "../llava/load.js";
import { streamAnswer } from "../llava/pipeline.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import type { RgbImage } from "../image/decode.js";
import { LlavaError } from "../util/errors.js";
import { convModeFromArgs, conversationFor, generationFromArgs, type Values } from "./common.js";

const IMAGE_PLACEHOLDER = "<image-placeholder>";

/**
 * The query with its image markers: `<image-placeholder>` marks where images go; without one,
 * each image gets a leading `<image>\n`.
 */
export function queryWithImages(query: string, images: number): string {
  if (query.includes(IMAGE_PLACEHOLDER)) return query.replaceAll(IMAGE_PLACEHOLDER, IMAGE_TOKEN);
  return `${IMAGE_TOKEN}\n`.repeat(images) + query;
}

/** What `run` was asked, checked before the model loads. */
export interface RunRequest {
  query: string;
  imageFiles: string[];
  convMode: string | undefined;
  generation: GenerationOptions;
}

export function runRequestFromArgs(v: Values): RunRequest {
  if (typeof v.query !== "string") throw new LlavaError("run needs --query TEXT");
  const sep = typeof v.sep === "string" ? v.sep : ",";
  if (sep === "") throw new LlavaError(`--sep must be a non-empty separator of the --image-file paths (default ",")`);
  const imageFiles = typeof v["image-file"] === "string" ? v["image-file"].split(sep).map((f) => f.trim()) : [];
  if (imageFiles.some((f) => f === "")) throw new LlavaError(`--image-file "${String(v["image-file"])}" has an empty path between its "${sep}" separators`);
  const markers = queryWithImages(v.query, imageFiles.length).split(IMAGE_TOKEN).length - 1;
  if (markers !== imageFiles.length) throw new LlavaError(`the query marks ${markers} image(s) but ${imageFiles.length} were given`);
  return { query: v.query, imageFiles, convMode: convModeFromArgs(v), generation: generationFromArgs(v) };
}

export async function answerOnce(loaded: LoadedLlava, request: RunRequest, images: RgbImage[]): Promise<void> {
  const conv = conversationFor(loaded, request.convMode);
  conv.appendMessage(conv.roles[0], queryWithImages(request.query, images.length));
  conv.appendMessage(conv.roles[1], null);
  let answer = "";
  for await (const piece of streamAnswer(loaded, conv.getPrompt(), images, { ...request.generation, stop: [stopString(conv)] })) {
    // the reference prints the stripped answer: drop leading white space while streaming
    const out = answer ? piece : piece.trimStart();
    answer += out;
    process.stdout.write(out);
  }
  process.stdout.write("\n");
}
