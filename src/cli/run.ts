/** `llava run`: one answer to one query, like the reference llava/eval/run_llava.py. */
import { stopString } from "../llava/conversation.js";
import type { LoadedLlava } from "../llava/load.js";
import { streamAnswer } from "../llava/pipeline.js";
import { loadImages } from "../image/decode.js";
import { LlavaError } from "../util/errors.js";
import { conversationFor, samplingFromArgs, type Values } from "./common.js";

const IMAGE_PLACEHOLDER = "<image-placeholder>";

/**
 * The query with its image markers: `<image-placeholder>` marks where images go; without one,
 * each image gets a leading `<image>\n`.
 */
export function queryWithImages(query: string, images: number): string {
  if (query.includes(IMAGE_PLACEHOLDER)) return query.replaceAll(IMAGE_PLACEHOLDER, "<image>");
  return "<image>\n".repeat(images) + query;
}

export async function answerOnce(loaded: LoadedLlava, v: Values): Promise<void> {
  if (typeof v.query !== "string") throw new LlavaError("run needs --query TEXT");
  const files = typeof v["image-file"] === "string" ? v["image-file"].split(typeof v.sep === "string" ? v.sep : ",") : [];
  const images = await loadImages(files.map((f) => f.trim()));
  const query = queryWithImages(v.query, images.length);
  const markers = query.split("<image>").length - 1;
  if (markers !== images.length) throw new LlavaError(`the query marks ${markers} image(s) but ${images.length} were given`);
  const conv = conversationFor(loaded, v);
  conv.appendMessage(conv.roles[0], query);
  conv.appendMessage(conv.roles[1], null);
  const sampling = samplingFromArgs(v, 512);
  let answer = "";
  for await (const piece of streamAnswer(loaded, conv.getPrompt(), images, { ...sampling, stop: [stopString(conv)] })) {
    // the reference prints the stripped answer: drop leading white space while streaming
    const out = answer ? piece : piece.trimStart();
    answer += out;
    process.stdout.write(out);
  }
  process.stdout.write("\n");
}
