/**
 * Load-time quantization speed (not part of npm test): GB/s of input (f32, or bf16 bits
 * widened on the fly) packed to q8_0, q4_0 (--load-8bit / --load-4bit) and f16 (their tower) by
 * the addon at 1 and 2 threads, and by the TypeScript encoders (packPortable) in the same run,
 * calls alternated; with `--baseline FILE.node`, another build of the addon too (its f32
 * quantizer, q formats only), for before/after figures.
 * One JSON object per line (median and range of the calls, seconds and GB/s).
 *
 * Usage: npx tsc -p . && node dist/bench/quantize.js [--rows 4096] [--cols 4096] [--reps 7] [--baseline FILE.node]
 */
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { emit } from "../src/perf/machine.js";
import { loadNativeAddon } from "../src/tensor/native-backend.js";
import { packHalfMatrix, packMatrix, packPortable, type PackedFormat } from "../src/tensor/packed.js";
import { f32BitsToBf16Bits } from "../src/tensor/dtypes.js";

const { values } = parseArgs({ options: { rows: { type: "string" }, cols: { type: "string" }, reps: { type: "string" }, baseline: { type: "string" } } });
const rows = Number(values.rows ?? 4096), cols = Number(values.cols ?? 4096), reps = Number(values.reps ?? 7);

type Quantize = (x: Float32Array, format: string, rows: number, cols: number, out: Uint8Array) => void;
const addon = loadNativeAddon();
const baseline = values.baseline ? (createRequire(import.meta.url)(values.baseline) as { quantize: Quantize; configure(s: { threads: number }): void }) : null;

const w = new Float32Array(rows * cols);
let s = 7;
for (let i = 0; i < w.length; i++) {
  s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  w[i] = (s / 2 ** 32 - 0.5) * 0.05;
}
const bits = new Uint16Array(w.length);
const u32 = new Uint32Array(w.buffer);
for (let i = 0; i < w.length; i++) bits[i] = f32BitsToBf16Bits(u32[i]);

const stats = (ts: number[], bytes: number) => {
  const sorted = [...ts].sort((a, b) => a - b);
  const gbps = (t: number) => Number((bytes / t / 1e9).toFixed(2));
  return { seconds: Number(sorted[sorted.length >> 1].toFixed(4)), GBps: gbps(sorted[sorted.length >> 1]), GBpsRange: [gbps(sorted[sorted.length - 1]), gbps(sorted[0])] };
};

for (const format of ["q8_0", "q4_0", "f16"] as PackedFormat[]) {
  for (const threads of [1, 2]) {
    addon.configure({ threads });
    baseline?.configure({ threads });
    const out = new Uint8Array(packMatrix(w.subarray(0, cols), 1, cols, format).data.length * rows);
    const runs: Record<string, { fn: () => void; bytes: number; ts: number[] }> = {
      native_f32: { fn: () => packMatrix(w, rows, cols, format), bytes: 4 * w.length, ts: [] },
      native_bf16: { fn: () => packHalfMatrix(bits, "bf16", rows, cols, format), bytes: 2 * w.length, ts: [] },
      ...(baseline && format !== "f16" ? { baseline_f32: { fn: () => baseline.quantize(w, format, rows, cols, out), bytes: 4 * w.length, ts: [] } } : {}),
      // TypeScript is single-threaded: measured once, at 1 thread
      ...(threads === 1 ? { typescript_f32: { fn: () => packPortable(w, rows, cols, format), bytes: 4 * w.length, ts: [] } } : {}),
    };
    for (let r = -1; r < reps; r++) {
      for (const run of Object.values(runs)) {
        const t0 = process.hrtime.bigint();
        run.fn();
        if (r >= 0) run.ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
      }
    }
    for (const [name, run] of Object.entries(runs)) emit(threads, { bench: "quantize", format, quantizer: name, isa: addon.settings().isa, shape: [rows, cols], ...stats(run.ts, run.bytes) });
  }
}
