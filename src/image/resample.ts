/**
 * Pillow's convolution resize (libImaging/Resample.c, ImagingResample) for 8-bit RGB images,
 * reproduced bit for bit: CLIP preprocessing resizes with PIL bicubic, and one level of uint8
 * difference already breaks pixel parity with the reference.
 *
 * Separable: horizontal pass first (into a uint8 intermediate), then vertical. Weights are computed
 * in double precision exactly as Pillow does, normalised by their sum, then turned into 22-bit
 * fixed point; each output is (2^21 + sum(pixel * weight)) >> 22, clipped to 0..255.
 */
import { LlavaError } from "../util/errors.js";
import type { RgbImage } from "./decode.js";

/** Pillow's convolution filters, by their `Image.Resampling` numbers (NEAREST=0 is not one). */
export type ResampleFilter = "lanczos" | "bilinear" | "bicubic" | "box" | "hamming";

interface FilterSpec {
  fn: (x: number) => number;
  support: number;
}

const FILTERS: Record<ResampleFilter, FilterSpec> = {
  box: {
    fn: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0),
    support: 0.5,
  },
  bilinear: {
    fn: (x) => {
      if (x < 0.0) x = -x;
      return x < 1.0 ? 1.0 - x : 0.0;
    },
    support: 1.0,
  },
  hamming: {
    fn: (x) => {
      if (x < 0.0) x = -x;
      if (x === 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      x = x * Math.PI;
      // Pillow writes 0.54f/0.46f: float constants promoted to double.
      return (Math.sin(x) / x) * (Math.fround(0.54) + Math.fround(0.46) * Math.cos(x));
    },
    support: 1.0,
  },
  bicubic: {
    fn: bicubicFilter,
    support: 2.0,
  },
  lanczos: {
    fn: (x) => (-3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0),
    support: 3.0,
  },
};

/** Keys cubic convolution with a = -0.5, in Pillow's operation order. */
function bicubicFilter(x: number): number {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

function sinc(x: number): number {
  if (x === 0.0) return 1.0;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

/** PIL's `Image.Resampling` numbers for the filters implemented here. */
export function filterFromPilResample(code: number, where = "resample"): ResampleFilter {
  switch (code) {
    case 1:
      return "lanczos";
    case 2:
      return "bilinear";
    case 3:
      return "bicubic";
    case 4:
      return "box";
    case 5:
      return "hamming";
    case 0:
      throw new LlavaError(`${where}: resample 0 (nearest) is not supported; use 3 (bicubic)`);
    default:
      throw new LlavaError(`${where}: unknown PIL resample filter ${code}`);
  }
}

const PRECISION_BITS = 32 - 8 - 2;

/** Per-output-pixel source window and fixed-point weights along one axis. */
interface AxisCoeffs {
  /** First source index for each output index. */
  start: Int32Array;
  /** Number of source samples for each output index. */
  count: Int32Array;
  /** Fixed-point weights, `ksize` slots per output index. */
  weights: Int32Array;
  ksize: number;
}

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc for box (0, inSize). */
function precomputeCoeffs(inSize: number, outSize: number, filter: FilterSpec): AxisCoeffs {
  const scale = inSize / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = 0 + (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.fn((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      const scaled = w * (1 << PRECISION_BITS);
      weights[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + scaled) : Math.trunc(0.5 + scaled);
    }
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { start, count, weights, ksize };
}

function clip8(ss: number): number {
  // Sums stay within int32 (weights sum to 2^22, pixels <= 255), so >> is Pillow's shift.
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Resizes like PIL's `img.resize((width, height), resample=filter)` on an RGB image.
 * A same-size resize returns a copy, as PIL does.
 */
export function resize(img: RgbImage, width: number, height: number, filter: ResampleFilter): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new LlavaError(`resize: target size must be positive integers, got ${width}x${height}`);
  }
  if (img.data.length !== img.width * img.height * 3) {
    throw new LlavaError(`resize: image data holds ${img.data.length} bytes, not ${img.width}x${img.height}x3`);
  }
  const spec = FILTERS[filter];
  let current = img;
  const vert = height !== img.height ? precomputeCoeffs(img.height, height, spec) : null;
  if (width !== img.width) {
    // Only the source rows that the vertical pass reads need resampling (Pillow does the same).
    const firstRow = vert ? vert.start[0] : 0;
    const lastRow = vert ? vert.start[height - 1] + vert.count[height - 1] : img.height;
    current = resampleHorizontal(img, width, firstRow, lastRow, precomputeCoeffs(img.width, width, spec));
    if (vert) {
      for (let i = 0; i < height; i++) vert.start[i] -= firstRow;
    }
  }
  if (vert) current = resampleVertical(current, height, vert);
  return current === img ? { width: img.width, height: img.height, data: img.data.slice() } : current;
}

/** PIL bicubic resize (`Image.Resampling.BICUBIC`), the filter CLIP preprocessing uses. */
export function resizeBicubic(img: RgbImage, width: number, height: number): RgbImage {
  return resize(img, width, height, "bicubic");
}

function resampleHorizontal(
  img: RgbImage,
  outWidth: number,
  firstRow: number,
  lastRow: number,
  c: AxisCoeffs,
): RgbImage {
  const rows = lastRow - firstRow;
  const out = new Uint8Array(outWidth * rows * 3);
  const src = img.data;
  const inStride = img.width * 3;
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < rows; y++) {
    const rowBase = (y + firstRow) * inStride;
    for (let xx = 0; xx < outWidth; xx++) {
      const kBase = xx * c.ksize;
      const n = c.count[xx];
      let p = rowBase + c.start[xx] * 3;
      let s0 = half;
      let s1 = half;
      let s2 = half;
      for (let x = 0; x < n; x++, p += 3) {
        const w = c.weights[kBase + x];
        s0 += src[p] * w;
        s1 += src[p + 1] * w;
        s2 += src[p + 2] * w;
      }
      const o = (y * outWidth + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width: outWidth, height: rows, data: out };
}

function resampleVertical(img: RgbImage, outHeight: number, c: AxisCoeffs): RgbImage {
  const stride = img.width * 3;
  const out = new Uint8Array(stride * outHeight);
  const src = img.data;
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < outHeight; yy++) {
    const kBase = yy * c.ksize;
    const n = c.count[yy];
    const rowStart = c.start[yy] * stride;
    const o = yy * stride;
    for (let i = 0; i < stride; i++) {
      let s = half;
      for (let y = 0, p = rowStart + i; y < n; y++, p += stride) {
        s += src[p] * c.weights[kBase + y];
      }
      out[o + i] = clip8(s);
    }
  }
  return { width: img.width, height: outHeight, data: out };
}
