/**
 * The answer scripts' `split_list` / `get_chunk`: `--num-chunks` contiguous chunks of
 * ceil(n / k) questions, `--chunk-idx` picking one with Python's list indexing (-1 is the last).
 * Where the reference fails (k = 0, no questions, an index past the chunks made), this fails too,
 * naming the Python exception.
 */
import { LlavaError } from "../util/errors.js";

export function getChunk<T>(items: readonly T[], numChunks: number, chunkIdx: number): T[] {
  if (numChunks === 0) throw new LlavaError(`--num-chunks 0 splits nothing (the reference fails with ZeroDivisionError)`);
  const size = Math.ceil(items.length / numChunks);
  if (size === 0) {
    throw new LlavaError(`${items.length} question(s) in ${numChunks} chunk(s) make chunks of 0 (the reference fails with ValueError: range() arg 3 must not be zero)`);
  }
  const chunks: T[][] = [];
  for (let i = 0; size > 0 && i < items.length; i += size) chunks.push(items.slice(i, i + size));
  const k = chunkIdx < 0 ? chunkIdx + chunks.length : chunkIdx;
  if (k < 0 || k >= chunks.length) {
    throw new LlavaError(
      `--chunk-idx ${chunkIdx} is out of range: ${items.length} question(s) in chunks of ${size} make ${chunks.length} chunk(s) (the reference fails with IndexError)`,
    );
  }
  return chunks[k];
}
