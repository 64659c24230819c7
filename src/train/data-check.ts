/**
 * A dataset checked before training: every sample preprocessed as the trainer will, every image
 * opened and decoded, and everything that would make the reference crash or silently train on
 * nothing listed by sample. The trainer refuses a dataset with problems (or skips those samples
 * when asked); `llava data check` prints the same report.
 */
import fs from "node:fs";
import type { TrainingRecord } from "./dataset.js";
import {
  type Issue, type IssueKind, PROBLEM_KINDS, type PreprocessOptions, preprocessOptions, type TokenizedSample, tokenizeSample, WARNING_KINDS,
} from "./preprocess.js";
import { unpaddedRange } from "../llava/anyres.js";
import { expandLabels, IGNORE_INDEX } from "../llava/labels.js";
import type { LoadedLlava } from "../llava/load.js";
import type { LlavaSettings } from "../llava/model.js";
import { requireTower } from "../llava/spec.js";
import type { ClipVisionConfig } from "../io/config.js";
import { describeFsError } from "../io/files.js";
import { loadImage } from "../image/decode.js";
import { anyresGridShape } from "../image/processor.js";
import type { LlavaTokenizer } from "../tokenizer/tokenizer.js";

/** How many positions an image of this size takes in the model's sequence. */
export type ImageTokenCount = (size: { width: number; height: number } | null) => number;

/**
 * The feature rows the model splices in for one image: one tile's patches (+ CLS with
 * cls_patch), or for AnyRes the base tile and the merged grid of the image's tiles.
 */
export function imageTokenCounter(settings: Pick<LlavaSettings, "visionSelectFeature" | "anyres">, vision: ClipVisionConfig): ImageTokenCount {
  const side = vision.imageSize / vision.patchSize;
  const perTile = side * side + (settings.visionSelectFeature === "cls_patch" ? 1 : 0);
  const anyres = settings.anyres;
  return (size) => {
    if (!anyres || !size) return perTile;
    const { rows, cols } = anyresGridShape(size, anyres.pinpoints, anyres.convention, vision.imageSize);
    if (anyres.mergeType !== "spatial_unpad") return perTile * (1 + rows * cols);
    const keep = unpaddedRange(rows * side, cols * side, size.width, size.height, anyres.convention === "hf");
    const [h, w] = keep.axis === 1 ? [keep.end - keep.start, cols * side] : [rows * side, keep.end - keep.start];
    // each kept grid row ends with image_newline; a grid with no row left adds nothing
    return perTile + (h === 0 ? 0 : h * (w + 1));
  };
}

export interface CheckOptions {
  preprocess: PreprocessOptions;
  imageTokens: ImageTokenCount;
}

/** The check of a dataset for training a loaded model. */
export function checkOptionsFor(loaded: LoadedLlava, version: string, modelMaxLength: number, imageFolder?: string): CheckOptions {
  return {
    preprocess: preprocessOptions(loaded, version, modelMaxLength, imageFolder),
    imageTokens: imageTokenCounter(loaded.model.settings, requireTower(loaded.spec)),
  };
}

export interface SampleReport {
  index: number;
  id: string;
  problems: Issue[];
  warnings: Issue[];
}

export interface DataReport {
  samples: number;
  imageSamples: number;
  textSamples: number;
  /** samples with at least one problem: the trainer refuses the dataset, or skips them with --skip-bad-samples */
  bad: SampleReport[];
  /** samples with warnings only */
  warned: SampleReport[];
  /** samples per kind of problem or warning */
  counts: Partial<Record<IssueKind, number>>;
  /** sequence lengths as the model sees them (images expanded), over the usable samples */
  tokenLengths: { min: number; median: number; p95: number; max: number } | null;
  supervisedTokens: number;
  /** the first usable sample, tokenized, and its images' positions */
  example: { sample: TokenizedSample; imageTokens: number[] } | null;
}

/** Samples checked at once: image decoding runs in the background threads meanwhile. */
const CONCURRENCY = 16;

/**
 * Preprocesses every record and opens every image; `onProgress` hears of each sample done, `keep`
 * receives each usable sample as tokenized (the trainer keeps them rather than tokenize again).
 */
export async function checkDataset(
  records: TrainingRecord[], opts: CheckOptions, onProgress?: (done: number) => void, keep?: (sample: TokenizedSample) => void,
): Promise<DataReport> {
  const report: DataReport = {
    samples: records.length, imageSamples: 0, textSamples: 0, bad: [], warned: [], counts: {}, tokenLengths: null, supervisedTokens: 0, example: null,
  };
  const lengths: number[] = [];
  for (let start = 0; start < records.length; start += CONCURRENCY) {
    const checked = await Promise.all(records.slice(start, start + CONCURRENCY).map((r) => checkSample(r, opts)));
    for (const { sample, imageTokens, labels } of checked) {
      if (sample.imagePaths.length) report.imageSamples++;
      else report.textSamples++;
      for (const kind of new Set([...sample.problems, ...sample.warnings].map((i) => i.kind))) report.counts[kind] = (report.counts[kind] ?? 0) + 1;
      const entry = { index: sample.index, id: sample.id, problems: sample.problems, warnings: sample.warnings };
      if (sample.problems.length) {
        report.bad.push(entry);
        continue;
      }
      if (sample.warnings.length) report.warned.push(entry);
      keep?.(sample);
      lengths.push(labels.length);
      report.supervisedTokens += labels.slice(1).filter((l) => l !== IGNORE_INDEX).length;
      report.example ??= { sample, imageTokens };
    }
    onProgress?.(Math.min(start + CONCURRENCY, records.length));
  }
  report.tokenLengths = lengthStats(lengths);
  return report;
}

/** One sample preprocessed, its images read, and its labels as the model sees them (images expanded, cut at the limit). */
async function checkSample(record: TrainingRecord, opts: CheckOptions): Promise<{ sample: TokenizedSample; imageTokens: number[]; labels: number[] }> {
  const sample = tokenizeSample(record, opts.preprocess);
  const imageTokens = (await checkImages(sample)).map(opts.imageTokens);
  if (sample.problems.length) return { sample, imageTokens, labels: [] };
  const max = opts.preprocess.modelMaxLength;
  const expanded = expandLabels(sample.ids, sample.labels, opts.preprocess.imageTokenId, imageTokens);
  if (expanded.length > max) {
    // the model cuts the spliced sequence again (tokenizer_model_max_length)
    sample.warnings.push({ kind: "model-cut", message: `with its images expanded the sample has ${expanded.length} positions; the model cuts it at ${max}` });
    if (!expanded.slice(1, max).some((l) => l !== IGNORE_INDEX)) {
      sample.problems.push({ kind: "no-labels", message: `no supervised token is left after the model's cut of the expanded sequence at ${max}` });
    }
  }
  return { sample, imageTokens, labels: expanded.slice(0, max) };
}

/** Opens and decodes the sample's images; a missing or undecodable one is a problem. Returns their sizes (null if unread). */
async function checkImages(sample: TokenizedSample): Promise<Array<{ width: number; height: number } | null>> {
  const sizes: Array<{ width: number; height: number } | null> = [];
  for (const file of sample.imagePaths) {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(file);
    } catch (err) {
      sample.problems.push({ kind: "missing-image", message: `image ${file}: ${describeFsError(err)}` });
      sizes.push(null);
      continue;
    }
    try {
      const image = await loadImage(bytes, { what: file });
      sizes.push({ width: image.width, height: image.height });
    } catch (err) {
      sample.problems.push({ kind: "bad-image", message: (err as Error).message });
      sizes.push(null);
    }
  }
  return sizes;
}

function lengthStats(lengths: number[]): DataReport["tokenLengths"] {
  if (!lengths.length) return null;
  const sorted = [...lengths].sort((a, b) => a - b);
  // nearest-rank percentiles
  const at = (q: number) => sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)];
  return { min: sorted[0], median: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1] };
}

/** The problems as lines, `limit` at most ("record 3 (id "x"): missing image ...; ..."). */
export function problemLines(report: DataReport, limit = 20): string[] {
  const lines = report.bad.slice(0, limit).map((s) => `record ${s.index} (id ${JSON.stringify(s.id)}): ${s.problems.map((p) => p.message).join("; ")}`);
  if (report.bad.length > limit) lines.push(`... and ${report.bad.length - limit} more`);
  return lines;
}

/**
 * A sample's tokens with the label mask shown: supervised text as is, masked text in [brackets]
 * (dimmed when `dim` wraps it), each image as <image×N>.
 */
export function renderMasked(
  { sample, imageTokens }: NonNullable<DataReport["example"]>, tokenizer: LlavaTokenizer, imageTokenId: number, dim = (s: string) => s,
): string {
  let out = "";
  let text: number[] = [];
  let image = 0;
  let i = 0;
  while (i < sample.ids.length) {
    if (sample.ids[i] === imageTokenId) {
      out += dim(`[<image×${imageTokens[image++] ?? "?"}>]`);
      i++;
      continue;
    }
    const masked = sample.labels[i] === IGNORE_INDEX;
    let j = i;
    while (j < sample.ids.length && sample.ids[j] !== imageTokenId && (sample.labels[j] === IGNORE_INDEX) === masked) j++;
    // decode with what came before, so the pieces keep the spaces the whole text has
    const before = tokenizer.decode(text);
    text = [...text, ...sample.ids.slice(i, j)];
    const piece = tokenizer.decode(text).slice(before.length);
    out += masked ? dim(`[${piece}]`) : piece;
    i = j;
  }
  return out;
}

/** The report as text for a terminal. */
export function formatDataReport(report: DataReport, example: string | null): string {
  const lines = [
    `${report.samples} samples (${report.imageSamples} with images, ${report.textSamples} text-only): ` +
      `${report.samples - report.bad.length} usable, ${report.bad.length} with problems, ${report.warned.length} more with warnings`,
  ];
  for (const [title, kinds] of [["problems", PROBLEM_KINDS], ["warnings", WARNING_KINDS]] as const) {
    const found = kinds.filter((k) => report.counts[k]);
    if (found.length) lines.push(`${title}: ${found.map((k) => `${k} ${report.counts[k]}`).join(", ")}`);
  }
  const t = report.tokenLengths;
  if (t) lines.push(`tokens per sample (images expanded): min ${t.min}, median ${t.median}, p95 ${t.p95}, max ${t.max}; ${report.supervisedTokens} supervised in all`);
  if (report.bad.length) lines.push("", "samples with problems:", ...problemLines(report).map((l) => `  ${l}`));
  const warned = report.warned.slice(0, 5).map((s) => `  record ${s.index} (id ${JSON.stringify(s.id)}): ${s.warnings.map((w) => w.message).join("; ")}`);
  if (warned.length) lines.push("", "samples with warnings (first 5):", ...warned);
  if (example && report.example) {
    const { index, id } = report.example.sample;
    lines.push("", `example: record ${index} (id ${JSON.stringify(id)}); no loss is taken on [masked] text:`, example);
  }
  return `${lines.join("\n")}\n`;
}
