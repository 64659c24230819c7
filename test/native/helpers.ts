/** Shared pieces of the native backend tests: seeded data and tolerant comparison. */
import assert from "node:assert/strict";
import { seededRandom } from "../../src/util/random.js";
import { loadNativeAddon, type NativeAddon, NativeBackend } from "../../src/tensor/native-backend.js";

/** Deterministic pseudo-random numbers in [-1, 1). */
export function rng(seed: number): () => number {
  const r = seededRandom(seed);
  return () => r() * 2 - 1;
}

export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = r() * scale;
  return x;
}

export function randInts(n: number, seed: number, lo: number, hi: number): Int32Array {
  const r = rng(seed);
  const x = new Int32Array(n);
  for (let i = 0; i < n; i++) x[i] = lo + Math.min(hi - lo - 1, Math.floor(((r() + 1) / 2) * (hi - lo)));
  return x;
}

/**
 * |actual - expected| <= rtol |expected| + atol max|expected| everywhere (NaN must match NaN).
 * atol is relative to the array's largest magnitude, which is the natural unit of error for
 * sums whose terms cancel.
 */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string, rtol = 1e-5, atol = 1e-5): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) if (Number.isFinite(expected[i])) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e) || Number.isNaN(a)) {
      if (!(Number.isNaN(e) && Number.isNaN(a))) assert.fail(`${label}[${i}]: ${a} vs ${e}`);
      continue;
    }
    if (!Number.isFinite(e)) {
      if (a !== e) assert.fail(`${label}[${i}]: ${a} vs ${e}`);
      continue;
    }
    const bound = rtol * Math.abs(e) + atol * scale;
    if (!(Math.abs(a - e) <= bound)) assert.fail(`${label}[${i}]: ${a} vs ${e} (error ${Math.abs(a - e)} > ${bound})`);
  }
}

/** Root-mean-square of (actual - expected) over root-mean-square of expected. */
export function relativeRms(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

export function assertBitEqual(a: Float32Array, b: Float32Array, label: string): void {
  assert.equal(a.length, b.length, `${label}: length`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) assert.fail(`${label}[${i}]: ${a[i]} vs ${b[i]}`);
}

/** The native addon, or the reason tests of it are skipped. */
export function tryLoadAddon(): { addon: NativeAddon | null; skip: string | false } {
  try {
    return { addon: loadNativeAddon(), skip: false };
  } catch (e) {
    return { addon: null, skip: `the native addon is not built (${(e as Error).message})` };
  }
}

/** Runs `body` with a backend on kernel variant `isa` at each thread count, then restores the addon's settings. */
export function withVariant(addon: NativeAddon, isa: string, threads: number[], body: (be: NativeBackend, threads: number) => void): void {
  const before = addon.settings();
  try {
    for (const t of threads) {
      addon.configure({ isa, threads: t });
      body(new NativeBackend(addon), t);
    }
  } finally {
    addon.configure({ isa: before.isa, threads: before.threads });
  }
}
