/** What `llava dump` writes, made through the model layer's traces (tests do not import the CLI). */
import { loadImages } from "../../src/image/decode.js";
import type { LoadedLlava } from "../../src/llava/load.js";
import { type TraceRequest, traceRequest, writeTrace } from "../../src/llava/trace.js";

export interface DumpRequest extends Omit<TraceRequest, "images"> {
  /** image files */
  images: string[];
  /** the folder to write */
  out: string;
  force?: boolean;
}

/** Writes prompt.txt and the traced arrays as .npy files into `req.out`; returns the arrays' names. */
export async function dumpTrace(loaded: LoadedLlava, req: DumpRequest): Promise<string[]> {
  const { prompt, trace } = await traceRequest(loaded, { ...req, images: await loadImages(req.images) });
  return writeTrace(req.out, req.force ?? false, prompt, trace);
}
