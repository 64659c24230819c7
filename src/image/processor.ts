/**
 * The CLIP / LLaVA image preprocessors: `preprocessor_config.json` parsing with Hugging Face's
 * defaults, and the three LLaVA preprocessing modes (CLIP center crop, LLaVA `pad`, LLaVA-NeXT
 * AnyRes), producing channel-first float32 pixel tensors identical to the reference ones.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { LlavaError } from "../util/errors.js";
import type { RgbImage } from "./decode.js";
import { filterFromPilResample, resize, type ResampleFilter } from "./resample.js";
import { centerCrop, cropRegion, expandToSquare, pasteOnCanvas, toNormalizedCHW, type Rgb } from "./transforms.js";

export const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

/** Resize target: the shortest edge (aspect kept) or an exact size. */
export type ResizeSize = { shortestEdge: number } | { height: number; width: number };

/** A CLIPImageProcessor / LlavaNextImageProcessor configuration, defaults applied. */
export interface ImageProcessorConfig {
  doResize: boolean;
  size: ResizeSize;
  /** PIL resample number (3 = bicubic). */
  resample: number;
  doCenterCrop: boolean;
  cropSize: { height: number; width: number };
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  doConvertRgb: boolean;
  /** LLaVA-NeXT candidate resolutions as written in the file, or null. */
  imageGridPinpoints: number[][] | null;
  /** `image_processor_type` as written, e.g. "CLIPImageProcessor". */
  processorType: string | null;
}

/** A float32 tensor, C order. */
export interface PixelTensor {
  data: Float32Array;
  shape: number[];
}

/** How a list of pinpoints is read: HF transformers (height, width), original LLaVA (width, height). */
export type PinpointConvention = "hf" | "llava";

export interface Resolution {
  width: number;
  height: number;
}

/** Tiles of an AnyRes grid: `rows` top to bottom, `cols` left to right. */
export interface GridShape {
  rows: number;
  cols: number;
}

export interface AnyresResult extends PixelTensor {
  /** The chosen pinpoint resolution. */
  bestResolution: Resolution;
  /** The tile grid (base image excluded). */
  grid: GridShape;
}

/** Reads `<dir>/preprocessor_config.json`. */
export async function loadImageProcessorConfig(dir: string): Promise<ImageProcessorConfig> {
  const file = path.join(dir, "preprocessor_config.json");
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new LlavaError(`${file}: ${code === "ENOENT" ? "file not found" : (err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new LlavaError(`${file}: invalid JSON: ${(err as Error).message}`);
  }
  return parseImageProcessorConfig(json, file);
}

/** Parses a preprocessor config object, applying transformers' CLIPImageProcessor defaults. */
export function parseImageProcessorConfig(json: unknown, source: string): ImageProcessorConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new LlavaError(`${source}: expected a JSON object`);
  }
  const raw = json as Record<string, unknown>;
  const bool = (key: string, fallback: boolean): boolean => {
    const v = raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "boolean") throw new LlavaError(`${source}: "${key}" must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw new LlavaError(`${source}: "${key}" must be a number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const triple = (key: string, fallback: readonly number[]): [number, number, number] => {
    let v = raw[key];
    if (v === undefined || v === null) v = fallback;
    if (typeof v === "number") v = [v, v, v];
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
      throw new LlavaError(`${source}: "${key}" must be 3 numbers, got ${JSON.stringify(raw[key])}`);
    }
    return [v[0], v[1], v[2]];
  };
  const imageStd = triple("image_std", OPENAI_CLIP_STD);
  if (imageStd.some((s) => s === 0)) throw new LlavaError(`${source}: "image_std" must not contain 0`);
  const resample = num("resample", 3);
  filterFromPilResample(resample, `${source}: "resample"`);
  return {
    doResize: bool("do_resize", true),
    size: parseResizeSize(raw.size, source),
    resample,
    doCenterCrop: bool("do_center_crop", true),
    cropSize: parseCropSize(raw.crop_size, source),
    doRescale: bool("do_rescale", true),
    rescaleFactor: num("rescale_factor", 1 / 255),
    doNormalize: bool("do_normalize", true),
    imageMean: triple("image_mean", OPENAI_CLIP_MEAN),
    imageStd,
    doConvertRgb: bool("do_convert_rgb", true),
    imageGridPinpoints:
      raw.image_grid_pinpoints === undefined || raw.image_grid_pinpoints === null
        ? null
        : parsePinpoints(raw.image_grid_pinpoints, `${source}: "image_grid_pinpoints"`),
    processorType: typeof raw.image_processor_type === "string" ? raw.image_processor_type : null,
  };
}

function positiveInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw new LlavaError(`${what} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** transformers' get_size_dict(size, default_to_square=False); default {shortest_edge: 224}. */
function parseResizeSize(v: unknown, source: string): ResizeSize {
  const what = `${source}: "size"`;
  if (v === undefined || v === null) return { shortestEdge: 224 };
  if (typeof v === "number") return { shortestEdge: positiveInt(v, what) };
  if (Array.isArray(v) && v.length === 2) {
    return { height: positiveInt(v[0], what), width: positiveInt(v[1], what) };
  }
  if (typeof v === "object" && !Array.isArray(v)) {
    const d = v as Record<string, unknown>;
    if (d.shortest_edge !== undefined) return { shortestEdge: positiveInt(d.shortest_edge, `${what}.shortest_edge`) };
    if (d.height !== undefined && d.width !== undefined) {
      return { height: positiveInt(d.height, `${what}.height`), width: positiveInt(d.width, `${what}.width`) };
    }
  }
  throw new LlavaError(`${what} must hold "shortest_edge" or "height" and "width", got ${JSON.stringify(v)}`);
}

/** transformers' get_size_dict(crop_size, default_to_square=True); default 224 x 224. */
function parseCropSize(v: unknown, source: string): { height: number; width: number } {
  const what = `${source}: "crop_size"`;
  if (v === undefined || v === null) return { height: 224, width: 224 };
  if (typeof v === "number") {
    const n = positiveInt(v, what);
    return { height: n, width: n };
  }
  if (Array.isArray(v) && v.length === 2) return { height: positiveInt(v[0], what), width: positiveInt(v[1], what) };
  if (typeof v === "object" && !Array.isArray(v)) {
    const d = v as Record<string, unknown>;
    if (d.height !== undefined && d.width !== undefined) {
      return { height: positiveInt(d.height, `${what}.height`), width: positiveInt(d.width, `${what}.width`) };
    }
  }
  throw new LlavaError(`${what} must be an integer or hold "height" and "width", got ${JSON.stringify(v)}`);
}

/**
 * Pinpoints from a config value: a list of pairs, or the original LLaVA string form of one
 * (a Python literal such as "[(336, 672), (672, 336)]"). Pairs are returned as written.
 */
export function parsePinpoints(value: unknown, what = "image_grid_pinpoints"): number[][] {
  let list = value;
  if (typeof value === "string") {
    try {
      list = JSON.parse(value.replace(/\(/g, "[").replace(/\)/g, "]"));
    } catch {
      throw new LlavaError(`${what}: cannot read "${value}" as a list of (a, b) pairs`);
    }
  }
  if (!Array.isArray(list) || list.length === 0) {
    throw new LlavaError(`${what}: expected a non-empty list of pairs, got ${JSON.stringify(value)}`);
  }
  return list.map((pair, i) => {
    if (!Array.isArray(pair) || pair.length !== 2) {
      throw new LlavaError(`${what}: entry ${i} is not a pair: ${JSON.stringify(pair)}`);
    }
    return [positiveInt(pair[0], `${what}[${i}][0]`), positiveInt(pair[1], `${what}[${i}][1]`)];
  });
}

function filterOf(cfg: ImageProcessorConfig): ResampleFilter {
  return filterFromPilResample(cfg.resample);
}

/** transformers' get_resize_output_image_size for the configured size. */
function resizeTarget(img: RgbImage, size: ResizeSize): Resolution {
  if (!("shortestEdge" in size)) return { width: size.width, height: size.height };
  const s = size.shortestEdge;
  if (img.width <= img.height) {
    return { width: s, height: Math.trunc((s * img.height) / img.width) };
  }
  return { width: Math.trunc((s * img.width) / img.height), height: s };
}

/** CLIP resize + center crop, still uint8 (the geometric half of clipPreprocess). */
export function clipResizeAndCrop(img: RgbImage, cfg: ImageProcessorConfig): RgbImage {
  let out = img;
  if (cfg.doResize) {
    const target = resizeTarget(out, cfg.size);
    out = resize(out, target.width, target.height, filterOf(cfg));
  }
  if (cfg.doCenterCrop) out = centerCrop(out, cfg.cropSize.width, cfg.cropSize.height);
  return out;
}

function normalize(img: RgbImage, cfg: ImageProcessorConfig): Float32Array {
  return toNormalizedCHW(
    img,
    cfg.doNormalize ? cfg.imageMean : [0, 0, 0],
    cfg.doNormalize ? cfg.imageStd : [1, 1, 1],
    cfg.doRescale ? cfg.rescaleFactor : 1,
  );
}

/** CLIPImageProcessor: resize the shortest edge, center crop, rescale, normalise -> [3, H, W]. */
export function clipPreprocess(img: RgbImage, cfg: ImageProcessorConfig): PixelTensor {
  const out = clipResizeAndCrop(img, cfg);
  return { data: normalize(out, cfg), shape: [3, out.height, out.width] };
}

/** The colour LLaVA pads with: tuple(int(x * 255) for x in image_mean). */
export function padColor(cfg: ImageProcessorConfig): Rgb {
  const [r, g, b] = cfg.imageMean.map((m) => Math.min(255, Math.max(0, Math.trunc(m * 255))));
  return [r, g, b];
}

/** LLaVA `image_aspect_ratio: pad`: expand to a square in the mean colour, then CLIP. */
export function padPreprocess(img: RgbImage, cfg: ImageProcessorConfig): PixelTensor {
  return clipPreprocess(expandToSquare(img, padColor(cfg)), cfg);
}

function toResolutions(pinpoints: number[][], convention: PinpointConvention): Resolution[] {
  const pairs = parsePinpoints(pinpoints);
  return pairs.map(([a, b]) => (convention === "hf" ? { height: a, width: b } : { width: a, height: b }));
}

/**
 * select_best_resolution: the pinpoint that keeps the most of the image's pixels
 * (min(int(w*s) * int(h*s), w*h), s = min(W/w, H/h)), then wastes the least; the first in
 * the list wins a full tie, which is where the two conventions can differ.
 */
export function selectBestResolution(
  image: Resolution,
  pinpoints: number[][],
  convention: PinpointConvention,
): Resolution {
  let best: Resolution | null = null;
  let maxEffective = 0;
  let minWasted = Infinity;
  for (const cand of toResolutions(pinpoints, convention)) {
    const scale = Math.min(cand.width / image.width, cand.height / image.height);
    const downW = Math.trunc(image.width * scale);
    const downH = Math.trunc(image.height * scale);
    const effective = Math.min(downW * downH, image.width * image.height);
    const wasted = cand.width * cand.height - effective;
    if (effective > maxEffective || (effective === maxEffective && wasted < minWasted)) {
      maxEffective = effective;
      minWasted = wasted;
      best = cand;
    }
  }
  if (!best) throw new LlavaError(`no usable pinpoint for a ${image.width}x${image.height} image`);
  return best;
}

/** The AnyRes tile grid for an image: the best resolution divided by the tile size. */
export function anyresGridShape(
  image: Resolution,
  pinpoints: number[][],
  convention: PinpointConvention,
  tileSize: number,
): GridShape {
  const best = selectBestResolution(image, pinpoints, convention);
  return { rows: Math.floor(best.height / tileSize), cols: Math.floor(best.width / tileSize) };
}

/**
 * The aspect-keeping size inside `target`: the side with the smaller scale hits the target,
 * the other is min(ceil(orig * scale), target) (HF get_patch_output_size, LLaVA resize_and_pad_image).
 */
export function patchOutputSize(image: Resolution, target: Resolution): Resolution {
  const scaleW = target.width / image.width;
  const scaleH = target.height / image.height;
  if (scaleW < scaleH) {
    return { width: target.width, height: Math.min(Math.ceil(image.height * scaleW), target.height) };
  }
  return { width: Math.min(Math.ceil(image.width * scaleH), target.width), height: target.height };
}

/**
 * LLaVA-NeXT AnyRes: [1 + rows*cols, 3, S, S]. Element 0 is the whole image squashed to S x S;
 * then the image, resized to fit the best pinpoint and centred on black (odd pixel bottom/right),
 * cut into tiles row by row. Every element then goes through the CLIP steps.
 */
export function anyresPreprocess(
  img: RgbImage,
  cfg: ImageProcessorConfig,
  pinpoints: number[][],
  convention: PinpointConvention,
): AnyresResult {
  const filter = filterOf(cfg);
  const tile = cfg.cropSize.height;
  const base = "shortestEdge" in cfg.size ? cfg.size.shortestEdge : Math.min(cfg.size.height, cfg.size.width);
  const best = selectBestResolution(img, pinpoints, convention);
  if (best.width % tile !== 0 || best.height % tile !== 0) {
    // The reference would cut ragged edge tiles that no longer line up with the feature grid.
    throw new LlavaError(`AnyRes pinpoint ${best.width}x${best.height} is not a multiple of the tile size ${tile}`);
  }
  const fitted = patchOutputSize(img, best);
  const resized = resize(img, fitted.width, fitted.height, filter);
  const padded = pasteOnCanvas(
    resized,
    best.width,
    best.height,
    Math.floor((best.width - fitted.width) / 2),
    Math.floor((best.height - fitted.height) / 2),
    [0, 0, 0],
  );
  const pieces: RgbImage[] = [resize(img, base, base, filter)];
  for (let y = 0; y < best.height; y += tile) {
    for (let x = 0; x < best.width; x += tile) pieces.push(cropRegion(padded, x, y, tile, tile));
  }
  const tensors = pieces.map((p) => clipPreprocess(p, cfg));
  const [c, h, w] = tensors[0].shape;
  for (const t of tensors) {
    if (t.shape[1] !== h || t.shape[2] !== w) {
      throw new LlavaError(`AnyRes tiles came out with different sizes (${t.shape.join("x")} vs ${tensors[0].shape.join("x")})`);
    }
  }
  const data = new Float32Array(tensors.length * c * h * w);
  tensors.forEach((t, i) => data.set(t.data, i * c * h * w));
  return {
    data,
    shape: [tensors.length, c, h, w],
    bestResolution: best,
    grid: { rows: Math.floor(best.height / tile), cols: Math.floor(best.width / tile) },
  };
}
