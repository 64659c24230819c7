/**
 * Kernel benchmarks of the native backend (not part of npm test). Prints one JSON object per
 * line, each with the CPU model, its SIMD features and the thread count (src/perf/machine.ts):
 * the rooflines of this run (read bandwidth and f32 GEMM peak), f32 GEMM 1024³ at 1 and 2
 * threads, GEMV 4096x4096 (decode), packedMatmul m=1 per format (GB/s of packed weights, and
 * the fraction of the read bandwidth roofline; for the integer path also m=8, a serving batch,
 * and from cache, the kernel's compute ceiling; q8_0/q4_0 in the interleaved layout models load
 * into and in the row layout as stored) and m=256 (GFLOP/s) — for q8_0/q4_0/q4_k/q5_k/q6_k both the
 * default integer-activation path and the exact one (`path`) —, attention at CLIP's shape, call
 * overhead, and the reference backend's GEMM for comparison.
 *
 * Usage: npx tsc -p . && node dist/bench/kernels.js [--quick]
 * Timings on a 2-vCPU VM are erratic: each figure is the median of several calls, with the
 * best alongside.
 */
import { createBackend } from "../src/tensor/backends.js";
import { NativeBackend } from "../src/tensor/native-backend.js";
import { packMatrix, type PackedFormat, type PackedMatrix } from "../src/tensor/packed.js";
import { RefBackend } from "../src/tensor/ref-backend.js";
import { emit, measureRooflines } from "../src/perf/machine.js";

const quick = process.argv.includes("--quick");

function random(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    x[i] = s / 2147483648 - 1;
  }
  return x;
}

/** Seconds per call: median and best of `reps` timed calls after one warm-up. */
function time(reps: number, fn: (rep: number) => void): { median: number; best: number } {
  fn(-1);
  const ts: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    fn(r);
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  ts.sort((a, b) => a - b);
  return { median: ts[Math.floor(ts.length / 2)], best: ts[0] };
}

const round = (x: number, digits = 1) => Number(x.toFixed(digits));

const native = createBackend({ name: "native", exactQuant: false }) as NativeBackend;
const addon = native.addon;
const exact = new NativeBackend(addon, { exactQuant: true });
const THREADS = [1, 2];
const readGBps = new Map<number, number>(); // threads -> the read bandwidth roofline of this run

const { isa, isas, threads: hardwareThreads } = native.settings;
emit(hardwareThreads, { bench: "setup", isa, isas });

// the rooflines: read bandwidth over 256 MiB (far beyond the caches) and f32 GEMM peak
for (const t of THREADS) {
  native.configure({ threads: t });
  const roof = measureRooflines(native, quick ? 3 : 7);
  readGBps.set(t, roof.readGBps);
  emit(t, { bench: "roofline", readGBps: round(roof.readGBps), gemmGFLOPs: round(roof.gemmGflops) });
}

// f32 GEMM 1024³
{
  const n = 1024;
  const a = random(n * n, 2);
  const b = random(n * n, 3);
  const c = new Float32Array(n * n);
  const flop = 2 * n * n * n;
  for (const transB of [false, true]) {
    for (const t of THREADS) {
      native.configure({ threads: t });
      const s = time(quick ? 3 : 9, () => native.gemm(a, b, c, { m: n, n, k: n, transB }));
      emit(t, { bench: "gemm_f32", m: n, n, k: n, transB, GFLOPs: round(flop / s.median / 1e9), bestGFLOPs: round(flop / s.best / 1e9) });
    }
  }
}

// GEMV: y[1, 4096] = x[1, 4096] · Wᵀ (Linear layout) and x · W, W f32 16 Mi values; several
// copies of W in turn so each call reads W from memory rather than cache
{
  const k = 4096;
  const n = 4096;
  const copies = 4;
  const ws = Array.from({ length: copies }, (_, i) => random(n * k, 10 + i));
  const x = random(k, 4);
  const y = new Float32Array(n);
  for (const transB of [true, false]) {
    for (const t of THREADS) {
      native.configure({ threads: t });
      const s = time(quick ? 8 : 24, (r) => native.gemm(x, ws[(r + copies) % copies], y, { m: 1, n, k, transB }));
      emit(t, {
        bench: "gemv_f32", m: 1, n, k, transB, GFLOPs: round((2 * n * k) / s.median / 1e9), GBps: round((4 * n * k) / s.median / 1e9), bestGBps: round((4 * n * k) / s.best / 1e9),
      });
    }
  }
}

// packedMatmul, decode (m = 1) and its input gradient, per format; enough copies to exceed L3.
// q8_0/q4_0 and K-quant forward products run on both paths: integer activations (the default) and exact.
{
  const rows = 4096;
  const cols = 4096;
  const x = random(cols, 5);
  const g = random(rows, 6);
  const y = new Float32Array(rows);
  const dx = new Float32Array(cols);
  const w32 = random(rows * cols, 7);
  for (const format of ["bf16", "f16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"] as PackedFormat[]) {
    const first = packMatrix(w32, rows, cols, format);
    const copies = Math.max(2, Math.ceil((160 << 20) / first.data.length));
    const ws: PackedMatrix[] = [first, ...Array.from({ length: copies - 1 }, () => ({ ...first, data: first.data.slice() }))];
    const bytes = first.data.length;
    const paths: Array<[string, NativeBackend]> = format[0] === "q" ? [["integer", native], ["exact", exact]] : [["exact", native]];
    // q8_0 / q4_0: the interleaved layout models load into (kernelLayout), and the row layout
    // as stored, the baseline it is measured against
    const interleaved = ws.map((w) => native.kernelLayout({ ...w, data: w.data.slice() }));
    const layouts: Array<[string, PackedMatrix[]]> = interleaved[0].interleaved ? [["interleaved", interleaved], ["rows", ws]] : [["rows", ws]];
    for (const t of THREADS) {
      native.configure({ threads: t });
      for (const [path, be] of paths)
        for (const [layout, set] of path === "integer" ? layouts : layouts.slice(0, 1))
          for (const m of path === "integer" ? [1, 8] : [1]) {
            // m = 8: a decode step of 8 sequences (serving), every weight read once for all of them
            const xm = random(m * cols, 9);
            const ym = new Float32Array(m * rows);
            const f = time(quick ? 8 : 24, (r) => be.packedMatmul(xm, set[(r + copies) % copies], ym, m, false, false));
            emit(t, {
              bench: "packed_matmul", format, path, layout, m, rows, cols, transposed: false, GBps: round(bytes / f.median / 1e9), bestGBps: round(bytes / f.best / 1e9), GFLOPs: round((2 * m * rows * cols) / f.median / 1e9),
              ofReadBandwidth: round(bytes / f.median / 1e9 / (readGBps.get(t) ?? NaN), 2),
            });
          }
      if (paths[0][0] === "integer") {
        // the kernel's compute ceiling: a 512 x 1024 slice (a few hundred KiB) read again and again
        // from cache; a figure near the read bandwidth means the product from memory is bound by
        // the work per block, not by the reads
        const sliceRows = 512, sliceCols = 1024;
        const slice = native.kernelLayout(packMatrix(w32.subarray(0, sliceRows * sliceCols), sliceRows, sliceCols, format));
        const c = time(quick ? 50 : 400, () => native.packedMatmul(x.subarray(0, sliceCols), slice, y, 1, false, false));
        emit(t, { bench: "packed_matmul_in_cache", format, path: "integer", m: 1, rows: sliceRows, cols: sliceCols, GBps: round(slice.data.length / c.median / 1e9), bestGBps: round(slice.data.length / c.best / 1e9) });
      }
      const b = time(quick ? 4 : 12, (r) => native.packedMatmul(g, layouts[0][1][(r + copies) % copies], dx, 1, true, false));
      emit(t, { bench: "packed_matmul", format, path: "exact", layout: layouts[0][0], m: 1, rows, cols, transposed: true, GBps: round(bytes / b.median / 1e9), bestGBps: round(bytes / b.best / 1e9) });
    }
    // prefill-sized m: integer panels, or the decoded weights feeding the f32 GEMM micro-kernel
    native.configure({ threads: 1 });
    const m = 256;
    const xa = random(m * cols, 8);
    const ya = new Float32Array(m * rows);
    for (const [path, be] of paths) {
      const p = time(quick ? 2 : 5, () => be.packedMatmul(xa, interleaved[0], ya, m, false, false));
      emit(1, { bench: "packed_matmul", format, path, layout: layouts[0][0], m, rows, cols, transposed: false, GFLOPs: round((2 * m * rows * cols) / p.median / 1e9) });
    }
    if (format === "bf16" && native.settings.bf16DotSupported) {
      const bf16Dot = new NativeBackend(addon, { bf16Dot: true });
      const d = time(quick ? 2 : 5, () => bf16Dot.packedMatmul(xa, first, ya, m, false, false));
      emit(1, { bench: "packed_matmul", format, path: "bf16dot", m, rows, cols, transposed: false, GFLOPs: round((2 * m * rows * cols) / d.median / 1e9) });
    }
  }
}

// attention at CLIP ViT-L/14-336's shape (577 tokens, 16 heads of 64), forward and backward
{
  const p = { batch: 1, tq: 577, tk: 577, heads: 16, kvHeads: 16, headDim: 64, scale: 0.125 };
  const n = p.tq * p.heads * p.headDim;
  const q = random(n, 20);
  const k = random(n, 21);
  const v = random(n, 22);
  const out = new Float32Array(n);
  const flop = 4 * p.tq * p.tk * p.heads * p.headDim;
  for (const t of THREADS) {
    native.configure({ threads: t });
    const f = time(quick ? 3 : 7, () => native.attention(q, k, v, out, p));
    const dq = new Float32Array(n);
    const dk = new Float32Array(n);
    const dv = new Float32Array(n);
    const b = time(quick ? 2 : 5, () => native.attentionBackward(q, k, v, out, dq, dk, dv, p));
    emit(t, { bench: "attention", ...p, forwardGFLOPs: round(flop / f.median / 1e9), backwardMs: round(b.median * 1e3, 2), forwardMs: round(f.median * 1e3, 2) });
  }
  // decode: one query against a 2048-position cache of 32 heads of 128 (LLaMA-7B)
  const d = { batch: 1, tq: 1, tk: 2048, heads: 32, kvHeads: 32, headDim: 128, scale: 1 / Math.sqrt(128), causalOffset: 2047 };
  const kv = d.tk * d.heads * d.headDim;
  const kd = random(kv, 23);
  const vd = random(kv, 24);
  const qd = random(d.heads * d.headDim, 25);
  const od = new Float32Array(qd.length);
  for (const t of THREADS) {
    native.configure({ threads: t });
    const s = time(quick ? 5 : 15, () => native.attention(qd, kd, vd, od, d));
    emit(t, { bench: "attention_decode", ...d, ms: round(s.median * 1e3, 3), GBps: round((8 * kv) / s.median / 1e9) });
  }
}

// per-call overhead: a tiny kernel
{
  native.configure({ threads: 2 });
  const x = random(16, 30);
  const out = new Float32Array(16);
  const calls = 200_000;
  const s = time(3, () => {
    for (let i = 0; i < calls; i++) native.add(x, x, out);
  });
  emit(2, { bench: "call_overhead", kernel: "add n=16", nsPerCall: round((s.median / calls) * 1e9, 0) });
}

// the reference backend, for scale
{
  const ref = new RefBackend();
  const n = 512;
  const a = random(n * n, 40);
  const b = random(n * n, 41);
  const c = new Float32Array(n * n);
  for (const transB of [false, true]) {
    const s = time(quick ? 1 : 3, () => ref.gemm(a, b, c, { m: n, n, k: n, transB }));
    emit(1, { bench: "gemm_ref", m: n, n, k: n, transB, GFLOPs: round((2 * n * n * n) / s.median / 1e9, 2) });
  }
}
