/**
 * `llava dump`: writes the model's intermediate arrays for a prompt (see llava/trace.ts) as .npy
 * files named as in the reference fixtures, so any output can be compared with the Python
 * implementations. The folder is written as `convert` writes: complete or not at all.
 */
import path from "node:path";
import { getConvTemplate } from "../llava/conversation.js";
import type { LoadedLlava } from "../llava/load.js";
import { IMAGE_TOKEN } from "../llava/spec.js";
import { traceInference, traceTraining } from "../llava/trace.js";
import { loadImages } from "../image/decode.js";
import { writeFileAtomic, writeFully } from "../io/files.js";
import { writeNpy } from "../io/npy.js";
import { LlavaError } from "../util/errors.js";
import { checkOutputFolder, writeOutputFolder } from "../zoo/output.js";
import { budgetFromArgs, convModeFromArgs, samplingOptions, type Values } from "./common.js";

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
  conv.appendMessage(conv.roles[0], `${IMAGE_TOKEN}\n`.repeat(opts.images.length) + opts.query);
  conv.appendMessage(conv.roles[1], opts.answer ?? null);
  return { conv, prompt: conv.getPrompt() };
}

/**
 * What `dump` was asked, checked before the model loads. The sampling flags are refused: dump
 * decodes greedily, as the fixtures' generated_ids.
 */
export function dumpOptionsFromArgs(v: Values): DumpOptions {
  const sampling = Object.keys(samplingOptions!).find((name) => v[name] !== undefined);
  if (sampling) throw new LlavaError(`dump always decodes greedily (as the reference fixtures do); --${sampling} does not apply to it`);
  if (typeof v.out !== "string" || v.out === "") throw new LlavaError("dump needs --out DIR");
  checkOutputFolder(v.out, v.force === true);
  return {
    images: (v["image-file"] as string[] | undefined) ?? [],
    query: (v.query as string | undefined) ?? "What is shown?",
    system: v.system as string | undefined,
    answer: v.answer as string | undefined,
    convMode: convModeFromArgs(v) ?? "llava_v1",
    maxNewTokens: budgetFromArgs(v, 20).maxNewTokens,
    out: v.out,
    force: v.force === true,
  };
}

/** Writes prompt.txt and the traced arrays into `opts.out`; returns the arrays' names. */
export async function runDump(loaded: LoadedLlava, opts: DumpOptions): Promise<string[]> {
  const images = await loadImages(opts.images);
  const { conv, prompt } = dumpPrompt(opts);
  // computed before the output exists, where Ctrl-C still ends the process at once
  const trace = opts.answer !== undefined ? traceTraining(loaded, conv, prompt, images) : await traceInference(loaded, prompt, images, opts.maxNewTokens);
  return writeOutputFolder(opts.out, opts.force ?? false, async (dir, interrupt) => {
    writeFileAtomic(path.join(dir, "prompt.txt"), (fd) => writeFully(fd, Buffer.from(prompt, "utf8")));
    for (const [name, array] of trace.arrays) {
      await interrupt();
      writeNpy(path.join(dir, `${name}.npy`), array);
    }
    return [...trace.arrays.keys()];
  });
}
