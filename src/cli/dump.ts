/**
 * `llava dump`: writes the model's intermediate arrays for a prompt (see llava/trace.ts) as .npy
 * files named as in the reference fixtures, so any output can be compared with the Python
 * implementations. The folder is written as `convert` writes: complete or not at all.
 */
import type { LoadedLlava } from "../llava/load.js";
import { traceRequest, writeTrace } from "../llava/trace.js";
import { loadImages } from "../image/decode.js";
import { LlavaError } from "../util/errors.js";
import { checkOutputFolder } from "../io/output.js";
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

/** Traces the request (computed before the output exists, where Ctrl-C still ends the process at once), then writes it. */
export async function runDump(loaded: LoadedLlava, opts: DumpOptions): Promise<string[]> {
  const { prompt, trace } = await traceRequest(loaded, { ...opts, images: await loadImages(opts.images) });
  return writeTrace(opts.out, opts.force ?? false, prompt, trace);
}
