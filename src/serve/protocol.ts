/**
 * The reference's serving wire protocol, shared by the controller and the workers: the status a
 * worker reports, the NUL-delimited JSON chunks of a generation stream, their error codes and text.
 */
import { z } from "zod";
import { encodePng, type RgbImage } from "../image/decode.js";
import { dumpJson, fromJs } from "../io/python.js";

/** The reference's server_error_msg, the text of every error chunk. */
export const SERVER_ERROR_MSG = "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**";

/** `error_code` on the stream: the worker failed to generate; no worker serves the model; the worker could not be reached or failed mid-stream. */
export const ErrorCode = { GENERATION_FAILED: 1, NO_WORKER: 2, WORKER_FAILED: 3 } as const;

/** The reference's `timeout=5` on every request the controller and workers make to each other. */
export const REQUEST_TIMEOUT_MS = 5000;

/** What a worker (or a controller seen as one) answers on /worker_get_status. */
export const workerStatusSchema = z.object({
  model_names: z.array(z.string()),
  speed: z.number().nonnegative(),
  queue_length: z.number().finite(),
});
export type WorkerStatus = z.infer<typeof workerStatusSchema>;

/** The reference worker's answer (after the prompt, with error code 0) when the prompt leaves no room in the context. */
export const PROMPT_TOO_LONG_MSG = "Exceeds max token length. Please start a new conversation, thanks.";

/**
 * One chunk of a generation stream. `text` is the prompt and all the answer so far; the last chunk
 * of a llava-ts worker also says why the answer ended and how many tokens it took (keys the
 * reference's clients ignore, and that a reference worker does not send: unreadable ones count as absent).
 */
export const streamChunkSchema = z.object({
  text: z.string(),
  error_code: z.number(),
  finish_reason: z.enum(["eos", "stop", "length"]).optional().catch(undefined),
  usage: z.object({ prompt_tokens: z.number().int().nonnegative(), completion_tokens: z.number().int().nonnegative() }).optional().catch(undefined),
});
export type StreamChunk = z.infer<typeof streamChunkSchema>;

/** An image as a worker receives it in `images`: PNG, base64 (the reference's serving transport). */
export async function transportBase64(img: RgbImage): Promise<string> {
  return (await encodePng(img)).toString("base64");
}

/** One chunk of a generation stream as the reference writes it: Python's json.dumps, then NUL. */
export function streamChunk(value: StreamChunk): Buffer {
  return Buffer.from(dumpJson(fromJs(value)) + "\0");
}

export const errorChunk = (code: number): Buffer => streamChunk({ text: SERVER_ERROR_MSG, error_code: code });
