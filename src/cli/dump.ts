/**
 * `llava dump`: writes the model's intermediate arrays for a prompt (see llava/trace.ts) as .npy
 * files named as in the reference fixtures, so any output can be compared with the Python
 * implementations. The folder is written as `convert` writes: complete or not at all.
 */
import path from "node:path";
import { getConvTemplate } from "../llava/conversation.js";
import type { LoadedLlava } from "../llava/load.js";
import { traceInference, traceTraining } from "../llava/trace.js";
import { loadImage } from "../image/decode.js";
import { writeFileAtomic, writeFully } from "../io/files.js";
import { writeNpy } from "../io/npy.js";
import { writeOutputFolder } from "../zoo/output.js";

export interface DumpOptions {
  images: string[];
  query: string;
  system?: string;
  answer?: string;
  convMode: string;
  maxNewTokens: number;
  out: string;
  /** replace a non-empty `out` */
  force?: boolean;
}

/** The reference's rendering: one `<image>\n` per image before the query, then the answer if any. */
export function dumpPrompt(opts: DumpOptions) {
  const conv = getConvTemplate(opts.convMode);
  if (opts.system !== undefined) conv.system = opts.system;
  conv.appendMessage(conv.roles[0], "<image>\n".repeat(opts.images.length) + opts.query);
  conv.appendMessage(conv.roles[1], opts.answer ?? null);
  return { conv, prompt: conv.getPrompt() };
}

/** Writes prompt.txt and the traced arrays into `opts.out`; returns the arrays' names. */
export async function runDump(loaded: LoadedLlava, opts: DumpOptions): Promise<string[]> {
  const images = await Promise.all(opts.images.map((f) => loadImage(f)));
  const { conv, prompt } = dumpPrompt(opts);
  return writeOutputFolder(opts.out, opts.force ?? false, async (dir) => {
    const trace = opts.answer !== undefined ? traceTraining(loaded, conv, prompt, images) : await traceInference(loaded, prompt, images, opts.maxNewTokens);
    writeFileAtomic(path.join(dir, "prompt.txt"), (fd) => writeFully(fd, Buffer.from(prompt, "utf8")));
    for (const [name, array] of trace.arrays) writeNpy(path.join(dir, `${name}.npy`), array);
    return [...trace.arrays.keys()];
  });
}
