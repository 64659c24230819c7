/**
 * Geometric and numeric image steps of the CLIP / LLaVA preprocessors, each matching its
 * reference implementation (Hugging Face `image_transforms`, LLaVA `mm_utils`) exactly.
 */
import { LlavaError } from "../util/errors.js";
import type { RgbImage } from "./decode.js";

export type Rgb = readonly [number, number, number];

/** A new width x height image filled with one colour. */
export function solidImage(width: number, height: number, fill: Rgb): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new LlavaError(`image size must be positive integers, got ${width}x${height}`);
  }
  const data = new Uint8Array(width * height * 3);
  if (fill[0] !== 0 || fill[1] !== 0 || fill[2] !== 0) {
    for (let i = 0; i < data.length; i += 3) {
      data[i] = fill[0];
      data[i + 1] = fill[1];
      data[i + 2] = fill[2];
    }
  }
  return { width, height, data };
}

/**
 * Pastes `img` with its top-left corner at (left, top) on a canvas of the given size and colour,
 * like PIL's `Image.new(...).paste(img, (left, top))`: parts falling outside the canvas are cut.
 */
export function pasteOnCanvas(
  img: RgbImage,
  canvasWidth: number,
  canvasHeight: number,
  left: number,
  top: number,
  fill: Rgb,
): RgbImage {
  const canvas = solidImage(canvasWidth, canvasHeight, fill);
  const x0 = Math.max(0, left);
  const x1 = Math.min(canvasWidth, left + img.width);
  const y0 = Math.max(0, top);
  const y1 = Math.min(canvasHeight, top + img.height);
  if (x1 <= x0 || y1 <= y0) return canvas;
  for (let y = y0; y < y1; y++) {
    const srcStart = ((y - top) * img.width + (x0 - left)) * 3;
    const srcEnd = srcStart + (x1 - x0) * 3;
    canvas.data.set(img.data.subarray(srcStart, srcEnd), (y * canvasWidth + x0) * 3);
  }
  return canvas;
}

/** Python's floor division, for offsets that can be negative. */
function floorDiv(a: number, b: number): number {
  return Math.floor(a / b);
}

/**
 * Hugging Face `image_transforms.center_crop` to width x height: top = (H - h) // 2,
 * left = (W - w) // 2. When the crop is larger than the image, HF first pads with zeros
 * (black), placing the image at ceil((new - old) / 2), and then crops; this does the same.
 */
export function centerCrop(img: RgbImage, width: number, height: number): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new LlavaError(`center crop size must be positive integers, got ${width}x${height}`);
  }
  let top = floorDiv(img.height - height, 2);
  let left = floorDiv(img.width - width, 2);
  if (top >= 0 && left >= 0 && top + height <= img.height && left + width <= img.width) {
    return cropRegion(img, left, top, width, height);
  }
  // HF pads to (max(h, H), max(w, W)) with the image at ceil of half the difference...
  const padHeight = Math.max(height, img.height);
  const padWidth = Math.max(width, img.width);
  const topPad = Math.ceil((padHeight - img.height) / 2);
  const leftPad = Math.ceil((padWidth - img.width) / 2);
  const padded = pasteOnCanvas(img, padWidth, padHeight, leftPad, topPad, [0, 0, 0]);
  // ...then shifts the crop window by the same amount and clamps it to the padded image.
  top += topPad;
  left += leftPad;
  const bottom = Math.min(padHeight, top + height);
  const right = Math.min(padWidth, left + width);
  top = Math.max(0, top);
  left = Math.max(0, left);
  return cropRegion(padded, left, top, right - left, bottom - top);
}

/** The width x height region whose top-left corner is (left, top); it must lie inside `img`. */
export function cropRegion(img: RgbImage, left: number, top: number, width: number, height: number): RgbImage {
  if (left < 0 || top < 0 || width < 1 || height < 1 || left + width > img.width || top + height > img.height) {
    throw new LlavaError(
      `crop ${width}x${height} at (${left}, ${top}) lies outside the ${img.width}x${img.height} image`,
    );
  }
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const src = ((top + y) * img.width + left) * 3;
    data.set(img.data.subarray(src, src + width * 3), y * width * 3);
  }
  return { width, height, data };
}

/**
 * LLaVA's `expand2square`: a square canvas of side max(w, h) in `fill`, the image pasted at
 * ((S - w) // 2, (S - h) // 2). A square image is returned unchanged.
 */
export function expandToSquare(img: RgbImage, fill: Rgb): RgbImage {
  if (img.width === img.height) return img;
  const side = Math.max(img.width, img.height);
  return pasteOnCanvas(img, side, side, floorDiv(side - img.width, 2), floorDiv(side - img.height, 2), fill);
}

/**
 * Channel-first float32 pixels exactly as Hugging Face computes them: rescale in float64
 * (`uint8 * rescaleFactor`) then cast to float32, then `(x - mean) / std` with mean and std
 * cast to float32 and the arithmetic in float32. Pass rescaleFactor 1 to skip rescaling and
 * mean 0 / std 1 to skip normalising (both exact identities in float32).
 */
export function toNormalizedCHW(
  img: RgbImage,
  mean: readonly number[],
  std: readonly number[],
  rescaleFactor = 1 / 255,
): Float32Array {
  if (mean.length !== 3 || std.length !== 3) {
    throw new LlavaError(`image_mean and image_std need 3 values each, got ${mean.length} and ${std.length}`);
  }
  const plane = img.width * img.height;
  const out = new Float32Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]);
    const s = Math.fround(std[c]);
    // A uint8 has 256 values: tabulate them once per channel.
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) {
      const x = Math.fround(v * rescaleFactor);
      table[v] = Math.fround(x - m) / s;
    }
    const base = c * plane;
    for (let i = 0; i < plane; i++) out[base + i] = table[img.data[i * 3 + c]];
  }
  return out;
}
