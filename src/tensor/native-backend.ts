/**
 * The native CPU backend: a thin wrapper over the N-API addon built from native/ (see
 * binding.gyp). Kernels run in C++ on the caller's Float32Arrays in place (no copies), on a
 * persistent thread pool, with AVX-512, AVX2 or portable code picked at run time.
 *
 * Numerics versus RefBackend: f32 sums (the reference sums in float64), so results agree to a
 * few float32 ulps times the length of a sum; norms, sumRows, crossEntropy and softmax
 * denominators sum in double like the reference. packedMatmul decodes bf16/f16 weights exactly
 * to f32 and multiplies with f32 activations, so those products differ from the reference only
 * in summation order (unless the bf16Dot option trades that for speed). Forward products with
 * q8_0/q4_0 weights quantize the activations per block of 32 to integers — 8 bits for q4_0
 * like llama.cpp's Q8_0 (about 0.4% relative error for uniform activations), 16 bits for q8_0
 * (about 0.002%) — and use integer dot products; so do q4_k/q5_k/q6_k for up to 16 rows
 * (decode) or rowwise products, with 8-bit activations per 256 values like llama.cpp's Q8_K.
 * native/README.md gives the exact rules, the same bit for bit on every CPU. `exactQuant: true`
 * keeps them exact too. The input gradient (transposed) is always exact.
 */
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Activation, AdamWStep, AttentionParams, Backend, GemmParams } from "./backend.js";
import { ILV_ROWS, type PackedFormat, type PackedMatrix } from "./packed.js";
import { LlavaError } from "../util/errors.js";

/**
 * The process-wide settings of the native kernels: the addon has one thread pool and one kernel
 * variant in use, shared by every NativeBackend in the process (each worker thread that loads
 * the addon has its own). Creating a backend never changes them; only `configure` does.
 */
export interface NativeSettings {
  /** threads of the kernel pool (at load: one per hardware thread the OS reports) */
  threads: number;
  /** the kernel variant in use: "avx512vnni", "avx512", "avx2" or "portable" (at load: the first of isas) */
  isa: string;
  /** the variants this CPU can run, best first */
  isas: string[];
  /** whether the variant in use has bf16 dot products (AVX512-BF16; see NativeBackendOptions.bf16Dot) */
  bf16DotSupported: boolean;
}

/** What `configure` may change: a whole number of threads from 1 to MAX_NATIVE_THREADS, a variant of `isas`. */
export interface NativeSettingsChange {
  threads?: number;
  isa?: string;
}

/** The most kernel threads the addon accepts (native/addon.cc). */
export const MAX_NATIVE_THREADS = 1024;

/**
 * The functions the addon exports (native/addon.cc, one per kernel of native/kernel_list.h):
 * the Backend's kernels with the Backend's arguments, except packedMatmul, which takes the
 * matrix's fields and its per-call choices as arguments (a decode step makes ~60 such calls,
 * and looking up an object's properties cost 0.5 us each); and the settings.
 */
export interface NativeAddon extends Omit<Backend, "name" | "packedMatmul" | "kernelLayout"> {
  packedMatmul(
    a: Float32Array, data: Uint8Array, format: PackedFormat, rows: number, cols: number, interleaved: boolean,
    c: Float32Array, m: number, transposed: boolean, accumulate: boolean, exactQuant: boolean, bf16Dot: boolean, rowwise: boolean,
  ): void;
  /** GB/s of reading x `reps` times with every pool thread */
  bandwidth(x: Float32Array, reps: number): number;
  settings(): NativeSettings;
  /** checks the whole change before applying any of it; returns the settings after it */
  configure(change: NativeSettingsChange): NativeSettings;
  /** q8_0 / q4_0 rows in row order -> the interleaved layout, in place (kernelLayout) */
  interleave(data: Uint8Array, format: PackedFormat, rows: number, cols: number): void;
}

/** The package root: the nearest folder above this module with a package.json. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new LlavaError(`native backend: no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}

/** Where the build puts the addon (`npm ci` runs node-gyp through the install script). */
export function defaultAddonPath(): string {
  return path.join(packageRoot(), "build", "Release", "llava_native.node");
}

/** Loads the addon; throws a LlavaError that says why when it is missing or does not load. */
export function loadNativeAddon(addonPath: string = defaultAddonPath()): NativeAddon {
  if (!fs.existsSync(addonPath)) {
    throw new LlavaError(
      `native backend: ${addonPath} does not exist. Build it with \`npm ci\` or \`npx node-gyp rebuild\` ` +
        `(needs g++ and Node's headers), or use the reference backend (LLAVA_BACKEND=ref).`,
    );
  }
  try {
    return createRequire(import.meta.url)(addonPath) as NativeAddon;
  } catch (e) {
    throw new LlavaError(`native backend: ${addonPath} did not load: ${(e as Error).message}`);
  }
}

export interface NativeBackendOptions {
  /**
   * Forward products with q8_0/q4_0 (and q4_k/q5_k/q6_k) weights in the exact arithmetic (weights decoded to f32,
   * f32 activations) instead of integer-quantized activations with integer dot products,
   * which are up to 2x faster for decode and 2-4x for prefill. Default false.
   */
  exactQuant?: boolean;
  /**
   * Forward products with bf16-packed weights and more than 4 rows of activations round the
   * activations to bf16 and use the CPU's bf16 dot-product instruction (AVX512-BF16), about
   * twice the speed of the exact path, with a relative error of up to 2^-9 per activation.
   * Where the kernel variant in use lacks the instruction (settings.bf16DotSupported), those
   * products stay exact. Default false.
   */
  bf16Dot?: boolean;
}

/**
 * A backend on the native addon. Its options (exactQuant, bf16Dot) are its own; the thread
 * count and kernel variant are process-wide (NativeSettings) and change only through configure.
 */
export class NativeBackend implements Backend {
  readonly name = "native";
  /** see NativeBackendOptions */
  exactQuant: boolean;
  /** see NativeBackendOptions */
  bf16Dot: boolean;

  constructor(readonly addon: NativeAddon, opts: NativeBackendOptions = {}) {
    this.exactQuant = opts.exactQuant ?? false;
    this.bf16Dot = opts.bf16Dot ?? false;
  }

  /** The process-wide settings, shared by every NativeBackend. */
  get settings(): NativeSettings {
    return this.addon.settings();
  }

  /** Changes the process-wide settings (for every NativeBackend); returns them after the change. */
  configure(change: NativeSettingsChange): NativeSettings {
    return this.addon.configure(change);
  }

  gemm(a: Float32Array, b: Float32Array, c: Float32Array, p: GemmParams): void {
    this.addon.gemm(a, b, c, p);
  }

  /**
   * q8_0 / q4_0 with at least one whole panel: interleaved (packed.ts) for the integer kernels,
   * in place (a copy would leave the load's freed buffers as holes in the heap: 0.4 GB more
   * resident for a 7B model); the exact path reads the row layout faster, so it keeps that.
   */
  kernelLayout(w: PackedMatrix): PackedMatrix {
    if (this.exactQuant || (w.format !== "q8_0" && w.format !== "q4_0") || w.interleaved || w.rows < ILV_ROWS) return w;
    this.addon.interleave(w.data, w.format, w.rows, w.cols);
    return { format: w.format, rows: w.rows, cols: w.cols, data: w.data, interleaved: true };
  }

  packedMatmul(a: Float32Array, w: PackedMatrix, c: Float32Array, m: number, transposed: boolean, accumulate: boolean, rowwise = false): void {
    this.addon.packedMatmul(a, w.data, w.format, w.rows, w.cols, w.interleaved === true, c, m, transposed, accumulate, this.exactQuant, this.bf16Dot, rowwise);
  }

  add(x: Float32Array, y: Float32Array, out: Float32Array): void {
    this.addon.add(x, y, out);
  }

  addBroadcast(x: Float32Array, y: Float32Array, out: Float32Array): void {
    this.addon.addBroadcast(x, y, out);
  }

  mul(x: Float32Array, y: Float32Array, out: Float32Array): void {
    this.addon.mul(x, y, out);
  }

  scale(x: Float32Array, s: number, out: Float32Array): void {
    this.addon.scale(x, s, out);
  }

  addScaled(x: Float32Array, y: Float32Array, s: number, out: Float32Array): void {
    this.addon.addScaled(x, y, s, out);
  }

  accumulate(y: Float32Array, x: Float32Array): void {
    this.addon.accumulate(y, x);
  }

  sumRows(x: Float32Array, rowLength: number, out: Float32Array): void {
    this.addon.sumRows(x, rowLength, out);
  }

  activation(kind: Activation, x: Float32Array, out: Float32Array): void {
    this.addon.activation(kind, x, out);
  }

  activationBackward(kind: Activation, x: Float32Array, dy: Float32Array, dx: Float32Array): void {
    this.addon.activationBackward(kind, x, dy, dx);
  }

  layerNorm(x: Float32Array, w: Float32Array, b: Float32Array, dim: number, eps: number, out: Float32Array): void {
    this.addon.layerNorm(x, w, b, dim, eps, out);
  }

  layerNormBackward(
    x: Float32Array, w: Float32Array, dy: Float32Array, dim: number, eps: number,
    dx: Float32Array | null, dw: Float32Array | null, db: Float32Array | null,
  ): void {
    this.addon.layerNormBackward(x, w, dy, dim, eps, dx, dw, db);
  }

  rmsNorm(x: Float32Array, w: Float32Array, dim: number, eps: number, out: Float32Array): void {
    this.addon.rmsNorm(x, w, dim, eps, out);
  }

  rmsNormBackward(
    x: Float32Array, w: Float32Array, dy: Float32Array, dim: number, eps: number,
    dx: Float32Array | null, dw: Float32Array | null,
  ): void {
    this.addon.rmsNormBackward(x, w, dy, dim, eps, dx, dw);
  }

  rope(
    x: Float32Array, positions: Int32Array, heads: number, headDim: number,
    invFreq: Float64Array, inverse: boolean, out: Float32Array,
  ): void {
    this.addon.rope(x, positions, heads, headDim, invFreq, inverse, out);
  }

  attention(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, p: AttentionParams): void {
    this.addon.attention(q, k, v, out, p);
  }

  attentionF16(q: Float32Array, k: Uint16Array, v: Uint16Array, out: Float32Array, p: AttentionParams): void {
    this.addon.attentionF16(q, k, v, out, p);
  }

  attentionMany(q: Float32Array, ks: Float32Array[], vs: Float32Array[], lengths: Int32Array, out: Float32Array, p: AttentionParams): void {
    this.addon.attentionMany(q, ks, vs, lengths, out, p);
  }

  attentionManyF16(q: Float32Array, ks: Uint16Array[], vs: Uint16Array[], lengths: Int32Array, out: Float32Array, p: AttentionParams): void {
    this.addon.attentionManyF16(q, ks, vs, lengths, out, p);
  }

  attentionBackward(
    q: Float32Array, k: Float32Array, v: Float32Array, dout: Float32Array,
    dq: Float32Array | null, dk: Float32Array | null, dv: Float32Array | null, p: AttentionParams,
  ): void {
    this.addon.attentionBackward(q, k, v, dout, dq, dk, dv, p);
  }

  embedding(table: Float32Array, ids: Int32Array, dim: number, out: Float32Array): void {
    this.addon.embedding(table, ids, dim, out);
  }

  embeddingBackward(ids: Int32Array, dy: Float32Array, dim: number, dtable: Float32Array): void {
    this.addon.embeddingBackward(ids, dy, dim, dtable);
  }

  crossEntropy(
    logits: Float32Array, targets: Int32Array, vocab: number, ignoreIndex: number,
    dlogits: Float32Array | null,
  ): number {
    return this.addon.crossEntropy(logits, targets, vocab, ignoreIndex, dlogits);
  }

  adamw(param: Float32Array, grad: Float32Array, expAvg: Float32Array, expAvgSq: Float32Array, step: AdamWStep): void {
    this.addon.adamw(param, grad, expAvg, expAvgSq, step);
  }

  sumSquares(x: Float32Array): number {
    return this.addon.sumSquares(x);
  }

  zero(x: Float32Array): void {
    this.addon.zero(x);
  }

  argmaxFinite(x: Float32Array): number {
    return this.addon.argmaxFinite(x);
  }

  dropout(state: number, p: number, x: Float32Array, out: Float32Array): void {
    this.addon.dropout(state, p, x, out);
  }
}
