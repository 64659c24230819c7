/**
 * The order samples are trained in, as the reference's LLaVATrainer samples them: a seeded
 * shuffle, or with `group_by_modality_length` its megabatch grouping (llava_trainer.py), in which
 * image and text-only samples never share a megabatch and each megabatch holds similar lengths.
 * Every random choice comes from one `Rng` seeded by (seed, epoch), so an epoch's order can be
 * made again after a restart.
 */
import type { TrainingRecord } from "./dataset.js";
import { Rng } from "../util/random.js";
import { LlavaError } from "../util/errors.js";

/** The length the reference credits an image with when it groups samples. */
export const IMAGE_LENGTH = 128;

/** Python's `len(text.split())`. */
const wordCount = (text: string): number => text.split(/\s+/).filter((w) => w !== "").length;

/**
 * The reference dataset's `lengths` (words of all turns, + 128 with an image) and
 * `modality_lengths` (words, negative for a text-only sample).
 */
export function sampleLengths(records: TrainingRecord[]): { lengths: number[]; modalityLengths: number[] } {
  const lengths: number[] = [];
  const modalityLengths: number[] = [];
  for (const r of records) {
    const words = r.conversations.reduce((n, t) => n + wordCount(t.value), 0);
    const image = r.images.length > 0;
    lengths.push(words + (image ? IMAGE_LENGTH : 0));
    modalityLengths.push(image ? words : -words);
  }
  return { lengths, modalityLengths };
}

export interface OrderOptions {
  seed: number;
  epoch: number;
  /** per-device batch size */
  batchSize: number;
  /** what the reference passes as world_size: devices x gradient accumulation steps */
  worldSize: number;
  groupByModalityLength: boolean;
}

/** The sample indices of one epoch, in training order. */
export function trainingOrder(modalityLengths: number[], opts: OrderOptions): number[] {
  const rng = new Rng(epochSeed(opts.seed, opts.epoch));
  if (!opts.groupByModalityLength) return permutation(modalityLengths.length, rng);
  return modalityGroupedIndices(modalityLengths, opts.batchSize, opts.worldSize, rng);
}

/** One stream per (seed, epoch), far apart for neighbouring seeds and epochs. */
function epochSeed(seed: number, epoch: number): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0;
}

/** A uniformly random permutation of 0..n-1 (Fisher-Yates; the reference's torch.randperm). */
export function permutation(n: number, rng: Rng): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** `get_modality_length_grouped_indices`: megabatches of one modality each, shuffled; the two leftovers last. */
export function modalityGroupedIndices(lengths: number[], batchSize: number, worldSize: number, rng: Rng): number[] {
  if (lengths.some((l) => l === 0)) throw new LlavaError(`sample ${lengths.indexOf(0)} has no words; the grouped sampler needs non-zero lengths`);
  // one modality: plain length grouping on the lengths as they are (negative for text: shortest first, as in the reference)
  if (lengths.every((l) => l > 0) || lengths.every((l) => l < 0)) return lengthGroupedIndices(lengths, batchSize, worldSize, rng);
  const mm = lengths.flatMap((l, i) => (l > 0 ? [i] : []));
  const lang = lengths.flatMap((l, i) => (l < 0 ? [i] : []));
  const megabatchSize = worldSize * batchSize;
  const shuffled = (indices: number[]) => {
    const order = lengthGroupedIndices(indices.map((i) => Math.abs(lengths[i])), batchSize, worldSize, rng);
    return chunk(order.map((k) => indices[k]), megabatchSize);
  };
  const mmMegabatches = shuffled(mm);
  const langMegabatches = shuffled(lang);
  // each modality's last megabatch (full or not) goes into one batch at the very end
  const additional = [...mmMegabatches.pop()!, ...langMegabatches.pop()!].sort((a, b) => a - b);
  const megabatches = [...mmMegabatches, ...langMegabatches];
  const order = permutation(megabatches.length, rng).map((i) => megabatches[i]);
  if (additional.length) order.push(additional);
  return order.flat();
}

/** `get_length_grouped_indices`: shuffle, cut into megabatches, longest first inside each, split over the devices. */
export function lengthGroupedIndices(lengths: number[], batchSize: number, worldSize: number, rng: Rng): number[] {
  const megabatches = chunk(permutation(lengths.length, rng), worldSize * batchSize);
  // a stable sort, as Python's sorted
  return megabatches.flatMap((m) => splitToEvenChunks([...m].sort((a, b) => lengths[b] - lengths[a]), lengths, worldSize).flat());
}

/** `split_to_even_chunks`: each index to the device with the least total length so far (round-robin when uneven). */
function splitToEvenChunks(indices: number[], lengths: number[], chunks: number): number[][] {
  if (indices.length % chunks !== 0) return Array.from({ length: chunks }, (_, c) => indices.filter((_, i) => i % chunks === c));
  const perChunk = indices.length / chunks;
  const out: number[][] = Array.from({ length: chunks }, () => []);
  const totals = new Array<number>(chunks).fill(0);
  for (const index of indices) {
    const shortest = totals.indexOf(Math.min(...totals));
    out[shortest].push(index);
    totals[shortest] += lengths[index];
    if (out[shortest].length === perChunk) totals[shortest] = Infinity;
  }
  return out;
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
