/**
 * Writes a checkpoint tensor by tensor: each tensor's bytes are produced only when its turn
 * comes and dropped right after, so a 13B model never sits in memory. Shards are split like
 * transformers' `save_pretrained` (`planShards`) and each file is laid out exactly as
 * `writeSafetensors` would lay it out (same header, same order).
 */
import type { Interrupt } from "../io/output.js";
import fs from "node:fs";
import path from "node:path";
import { describeFsError, writeFully } from "../io/files.js";
import { buildHeader, dtypeSize, shapeNumel, type SafetensorsDtype } from "../io/safetensors-header.js";
import { parseSize, planShards, pythonJsonDumps, type WritableDtype } from "../io/safetensors-write.js";
import { LlavaError } from "../util/errors.js";
import type { ProgressSink } from "./progress.js";

/** A tensor to write: its header fields and a function that produces its bytes when asked. */
export interface PlannedTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  bytes(): Uint8Array;
}

export const byteSize = (t: { dtype: SafetensorsDtype; shape: number[] }) => shapeNumel(t.shape) * dtypeSize(t.dtype);


export interface StreamWriteOptions {
  progress: ProgressSink;
  interrupt: Interrupt;
}

function checkUnique(tensors: readonly PlannedTensor[], where: string): void {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new LlavaError(`cannot write ${where}: tensor "${t.name}" would be written twice`);
    seen.add(t.name);
  }
}

/** Writes one safetensors file; metadata `{format: "pt"}` as transformers expects. */
export async function writeSafetensorsStreaming(file: string, tensors: readonly PlannedTensor[], opts: StreamWriteOptions): Promise<void> {
  checkUnique(tensors, file);
  const { header, layout } = buildHeader(tensors, { format: "pt" });
  let fd: number;
  try {
    fd = fs.openSync(file, "w");
  } catch (err) {
    throw new LlavaError(`cannot write ${file}: ${describeFsError(err)}`);
  }
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    writeFully(fd, len);
    writeFully(fd, header);
    for (const { tensor, begin, end } of layout) {
      const bytes = tensor.bytes();
      if (bytes.length !== end - begin) {
        throw new LlavaError(`cannot write ${file}: tensor "${tensor.name}" produced ${bytes.length} bytes, expected ${end - begin}`);
      }
      writeFully(fd, bytes);
      opts.progress.tensorDone(tensor.name, bytes.length);
      await opts.interrupt();
    }
    fs.fsyncSync(fd);
  } catch (err) {
    if (err instanceof LlavaError) throw err;
    throw new LlavaError(`cannot write ${file}: ${describeFsError(err)}`);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes `tensors` into `dir` as `<base>.safetensors`, or as `<base>-0000i-of-0000N.safetensors`
 * shards plus `<base>.safetensors.index.json` when they exceed `maxShardSize`. Returns the files.
 */
export async function writeShardedStreaming(
  dir: string, tensors: readonly PlannedTensor[], maxShardSize: string | number, opts: StreamWriteOptions, baseName = "model",
): Promise<string[]> {
  checkUnique(tensors, dir);
  const shards = planShards(tensors as ReadonlyArray<PlannedTensor & { dtype: WritableDtype }>, parseSize(maxShardSize));
  if (shards.length <= 1) {
    const file = path.join(dir, `${baseName}.safetensors`);
    await writeSafetensorsStreaming(file, shards[0] ?? [], opts);
    return [file];
  }
  const pad = (i: number) => String(i).padStart(5, "0");
  const names = shards.map((_, i) => `${baseName}-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  for (let i = 0; i < shards.length; i++) {
    await writeSafetensorsStreaming(path.join(dir, names[i]), shards[i], opts);
    for (const t of shards[i]) weightMap[t.name] = names[i];
  }
  const totalSize = tensors.reduce((s, t) => s + byteSize(t), 0);
  const indexFile = path.join(dir, `${baseName}.safetensors.index.json`);
  fs.writeFileSync(indexFile, pythonJsonDumps({ metadata: { total_size: totalSize }, weight_map: weightMap }) + "\n");
  return [...names.map((n) => path.join(dir, n)), indexFile];
}
