/**
 * `llava convert extract-projector`: the `model.mm_projector.*` tensors of a full original-format
 * checkpoint, under their full names, like the reference's scripts/extract_mm_projector.py.
 * The file, named mm_projector.safetensors next to a config.json, is a projector-only
 * checkpoint for `--model-base`. Written as safetensors only.
 */
import path from "node:path";
import { detectFormat } from "../llava/spec.js";
import { hasModelWeights } from "../io/checkpoint-files.js";
import { LlavaError } from "../util/errors.js";
import { type ConvertResult, readModelConfig } from "./common.js";
import { writeOutputFile } from "../io/output.js";
import { type ProgressSink, silentProgress } from "./progress.js";
import { byteSize, type PlannedTensor, writeSafetensorsStreaming } from "./shard-writer.js";
import { naturalCompare } from "./natural-order.js";
import { openWeights } from "../io/weights.js";

export interface ExtractProjectorOptions {
  modelPath: string;
  /** the .safetensors file to write */
  out: string;
  force?: boolean;
  progress?: ProgressSink;
}

export async function extractProjector(opts: ExtractProjectorOptions): Promise<ConvertResult> {
  if (/\.(bin|pt|pth)$/i.test(opts.out)) {
    throw new LlavaError(`${opts.out}: writing PyTorch .bin files is not supported; name the output .safetensors (the loader reads mm_projector.safetensors as it reads mm_projector.bin)`);
  }
  if (!opts.out.endsWith(".safetensors")) throw new LlavaError(`${opts.out}: the output must be a .safetensors file, e.g. mm_projector.safetensors`);
  const { dir, config, configFile } = readModelConfig(opts.modelPath);
  if (detectFormat(config, configFile) !== "original") {
    throw new LlavaError(`${dir}: extract-projector reads original-format checkpoints; convert this one first with "llava convert to-original"`);
  }
  if (!hasModelWeights(dir)) throw new LlavaError(`${dir}: holds no full model weights to extract the projector from`);
  const weights = openWeights(dir);
  try {
    const plan: PlannedTensor[] = weights.names().filter((n) => n.startsWith("model.mm_projector.")).sort(naturalCompare).map((name) => {
      const { dtype, shape } = weights.info(name);
      return { name, dtype, shape, bytes: () => weights.readRaw(name).bytes };
    });
    if (plan.length === 0) throw new LlavaError(`${weights.source}: no model.mm_projector.* tensors`);
    const progress = opts.progress ?? silentProgress;
    const bytes = plan.reduce((s, t) => s + byteSize(t), 0);
    await writeOutputFile(opts.out, opts.force ?? false, async (tmp, interrupt) => {
      progress.start(plan.length, bytes);
      await writeSafetensorsStreaming(tmp, plan, { progress, interrupt });
      progress.finish();
    });
    return { out: path.resolve(opts.out), files: [path.basename(opts.out)], tensors: plan.length, bytes, notes: [] };
  } finally {
    weights.close();
  }
}
