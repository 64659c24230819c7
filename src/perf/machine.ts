/**
 * What every benchmark record carries, so a figure is never read without its machine: the CPU
 * model, its SIMD features and the thread count; and the machine's limits (rooflines), measured
 * in the same run rather than typed in. No figure of another run or another program is kept here.
 */
import fs from "node:fs";
import os from "node:os";
import type { NativeBackend } from "../tensor/native-backend.js";

const SIMD_FLAG = /^(mmx|sse|ssse|avx|fma|f16c|amx|asimd|neon|sve)/;

/** The CPU's SIMD feature flags as the kernel reports them (Linux), else an empty list. */
function simdFeatures(): string[] {
  try {
    const info = fs.readFileSync("/proc/cpuinfo", "utf8");
    const line = /^(flags|Features)\s*:(.*)$/m.exec(info)?.[2] ?? "";
    return line.trim().split(/\s+/).filter((f) => SIMD_FLAG.test(f));
  } catch {
    return [];
  }
}

/** The machine every figure was measured on: its CPU model and SIMD features. */
export const MACHINE = { cpu: os.cpus()[0]?.model.trim() ?? "unknown", simd: simdFeatures() };

/** Prints one JSON line: the record with the machine and the thread count it ran with. */
export function emit(threads: number, record: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ ...record, threads, ...MACHINE })}\n`);
}

export interface Rooflines {
  /** f32 GEMM 1024x1024x1024, the fastest of the probes */
  gemmGflops: number;
  /** read bandwidth over 256 MiB (far beyond the caches), the fastest of the probes */
  readGBps: number;
}

/**
 * The machine's limits as the native backend reaches them at its current thread count: the best
 * of `probes` measurements each, since a limit is what the machine can do, and a slow probe only
 * says that something else was running.
 */
export function measureRooflines(be: NativeBackend, probes = 5): Rooflines {
  const n = 1024;
  const a = Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const c = new Float32Array(n * n);
  be.gemm(a, a, c, { m: n, n, k: n }); // warm-up: first-touch page faults, thread start
  let gemmMs = Infinity;
  for (let p = 0; p < probes; p++) {
    const t = performance.now();
    be.gemm(a, a, c, { m: n, n, k: n });
    gemmMs = Math.min(gemmMs, performance.now() - t);
  }
  const big = new Float32Array(64 << 20).fill(1);
  let readGBps = 0;
  for (let p = 0; p < probes; p++) readGBps = Math.max(readGBps, be.addon.bandwidth(big, 2));
  return { gemmGflops: (2 * n ** 3) / (gemmMs * 1e6), readGBps };
}
