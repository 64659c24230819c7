/**
 * The native CPU backend: a thin wrapper over the N-API addon built from native/ (see
 * binding.gyp). Kernels run in C++ on the caller's Float32Arrays in place (no copies), on a
 * persistent thread pool, with AVX-512, AVX2 or portable code picked at run time.
 *
 * Numerics versus RefBackend: f32 sums (the reference sums in float64), so results agree to a
 * few float32 ulps times the length of a sum; norms, sumRows, crossEntropy and softmax
 * denominators sum in double like the reference. packedMatmul decodes bf16/f16 weights exactly
 * to f32 and multiplies with f32 activations, so those products differ from the reference only
 * in summation order (unless setBf16Dot(true) trades that for speed). Forward products with
 * q8_0/q4_0 weights quantize the activations per block of 32 to integers — 8 bits for q4_0
 * like llama.cpp's Q8_0 (about 0.4% relative error for uniform activations), 16 bits for q8_0
 * (about 0.002%) — and use integer dot products; native/README.md gives the exact rule, the
 * same bit for bit on every CPU. `exactQuant: true` keeps them exact too. The input gradient
 * (transposed) is always exact.
 */
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Activation, AttentionParams, Backend, GemmParams } from "./backend.js";
import type { PackedFormat, PackedMatrix } from "./packed.js";
import { LlavaError } from "../util/errors.js";

/** The functions the addon exports (native/addon.cc). */
export interface NativeAddon {
  gemm(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number, transA: boolean, transB: boolean, accumulate: boolean): void;
  /** exactQuant: q8_0/q4_0 forward products with f32 activations instead of int8 ones */
  packedMatmul(a: Float32Array, data: Uint8Array, format: number, rows: number, cols: number, c: Float32Array, m: number, transposed: boolean, accumulate: boolean, exactQuant: boolean): void;
  add(x: Float32Array, y: Float32Array, out: Float32Array): void;
  addBroadcast(x: Float32Array, y: Float32Array, out: Float32Array): void;
  mul(x: Float32Array, y: Float32Array, out: Float32Array): void;
  scale(x: Float32Array, s: number, out: Float32Array): void;
  accumulate(y: Float32Array, x: Float32Array): void;
  sumRows(x: Float32Array, rowLength: number, out: Float32Array): void;
  activation(kind: number, x: Float32Array, out: Float32Array): void;
  activationBackward(kind: number, x: Float32Array, dy: Float32Array, dx: Float32Array): void;
  layerNorm(x: Float32Array, w: Float32Array, b: Float32Array, dim: number, eps: number, out: Float32Array): void;
  layerNormBackward(x: Float32Array, w: Float32Array, dy: Float32Array, dim: number, eps: number, dx: Float32Array | null, dw: Float32Array | null, db: Float32Array | null): void;
  rmsNorm(x: Float32Array, w: Float32Array, dim: number, eps: number, out: Float32Array): void;
  rmsNormBackward(x: Float32Array, w: Float32Array, dy: Float32Array, dim: number, eps: number, dx: Float32Array | null, dw: Float32Array | null): void;
  rope(x: Float32Array, positions: Int32Array, heads: number, headDim: number, invFreq: Float64Array, inverse: boolean, out: Float32Array): void;
  attention(
    q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array,
    batch: number, tq: number, tk: number, heads: number, kvHeads: number, headDim: number, scale: number,
    causalOffset: number | null, kvBatchStride: number | null, window: number | null,
  ): void;
  attentionBackward(
    q: Float32Array, k: Float32Array, v: Float32Array, dout: Float32Array,
    dq: Float32Array | null, dk: Float32Array | null, dv: Float32Array | null,
    batch: number, tq: number, tk: number, heads: number, kvHeads: number, headDim: number, scale: number,
    causalOffset: number | null, kvBatchStride: number | null, window: number | null,
  ): void;
  embedding(table: Float32Array, ids: Int32Array, dim: number, out: Float32Array): void;
  embeddingBackward(ids: Int32Array, dy: Float32Array, dim: number, dtable: Float32Array): void;
  crossEntropy(logits: Float32Array, targets: Int32Array, vocab: number, ignoreIndex: number, dlogits: Float32Array | null): number;
  /** 0 = one thread per hardware thread */
  setThreads(n: number): void;
  threads(): number;
  /** the kernel variant in use: "avx512vnni", "avx512", "avx2" or "portable" */
  isa(): string;
  /** the variants this CPU can run, best first */
  isas(): string[];
  setIsa(name: string): void;
  /** opt-in bf16 dot products for bf16 weights (see NativeBackend.setBf16Dot); returns whether in use */
  setBf16Dot(on: boolean): boolean;
  /** GB/s of reading x `reps` times with every pool thread */
  bandwidth(x: Float32Array, reps: number): number;
}

const ACTIVATION_CODE: Record<Activation, number> = { gelu: 0, quick_gelu: 1, silu: 2, gelu_tanh: 3, relu: 4 };
const FORMAT_CODE: Record<PackedFormat, number> = { bf16: 0, f16: 1, q8_0: 2, q4_0: 3 };

/** The package root: the nearest folder above this module with a package.json. */
function packageRoot(): string {
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
   * Forward products with q8_0/q4_0 weights in the exact arithmetic (weights decoded to f32,
   * f32 activations) instead of integer-quantized activations with integer dot products,
   * which are up to 2x faster for decode and 2-4x for prefill. Default false.
   */
  exactQuant?: boolean;
}

export class NativeBackend implements Backend {
  readonly name = "native";
  /** see NativeBackendOptions.exactQuant; per backend, unlike the thread count */
  exactQuant: boolean;

  constructor(readonly addon: NativeAddon, opts: NativeBackendOptions = {}) {
    this.exactQuant = opts.exactQuant ?? false;
  }

  /** Threads of the kernel pool (shared by every NativeBackend on the same addon). */
  get threads(): number {
    return this.addon.threads();
  }

  /** Sets the pool size; 0 means one thread per hardware thread. */
  setThreads(n: number): void {
    this.addon.setThreads(n);
  }

  /**
   * Opt-in, off by default: forward products with bf16-packed weights and more than 4 rows of
   * activations round the activations to bf16 and use the CPU's bf16 dot-product instruction
   * (AVX512-BF16), about twice the speed of the exact path, with a relative error of up to 2^-9
   * per activation. Returns whether the fast path is in use (false where the CPU lacks it).
   * Like the thread count, it applies to every NativeBackend on the same addon.
   */
  setBf16Dot(on: boolean): boolean {
    return this.addon.setBf16Dot(on);
  }

  gemm(a: Float32Array, b: Float32Array, c: Float32Array, p: GemmParams): void {
    this.addon.gemm(a, b, c, p.m, p.n, p.k, p.transA === true, p.transB === true, p.accumulate === true);
  }

  packedMatmul(a: Float32Array, w: PackedMatrix, c: Float32Array, m: number, transposed: boolean, accumulate: boolean): void {
    this.addon.packedMatmul(a, w.data, FORMAT_CODE[w.format], w.rows, w.cols, c, m, transposed, accumulate, this.exactQuant);
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

  accumulate(y: Float32Array, x: Float32Array): void {
    this.addon.accumulate(y, x);
  }

  sumRows(x: Float32Array, rowLength: number, out: Float32Array): void {
    this.addon.sumRows(x, rowLength, out);
  }

  activation(kind: Activation, x: Float32Array, out: Float32Array): void {
    this.addon.activation(ACTIVATION_CODE[kind], x, out);
  }

  activationBackward(kind: Activation, x: Float32Array, dy: Float32Array, dx: Float32Array): void {
    this.addon.activationBackward(ACTIVATION_CODE[kind], x, dy, dx);
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
    this.addon.attention(
      q, k, v, out, p.batch, p.tq, p.tk, p.heads, p.kvHeads, p.headDim, p.scale,
      p.causalOffset ?? null, p.kvBatchStride ?? null, p.window ?? null,
    );
  }

  attentionBackward(
    q: Float32Array, k: Float32Array, v: Float32Array, dout: Float32Array,
    dq: Float32Array | null, dk: Float32Array | null, dv: Float32Array | null, p: AttentionParams,
  ): void {
    this.addon.attentionBackward(
      q, k, v, dout, dq, dk, dv, p.batch, p.tq, p.tk, p.heads, p.kvHeads, p.headDim, p.scale,
      p.causalOffset ?? null, p.kvBatchStride ?? null, p.window ?? null,
    );
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
}
