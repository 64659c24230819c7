/** The bench's records as a table for a person (the JSON lines are for programs). */
import type { BenchRecord } from "./bench.js";

const COLUMNS = ["precision", "threads", "phase", "engine", "median", "min-max", "unit", "of roofline", "vs peer", "peak RSS"] as const;

const fixed = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

function row(r: BenchRecord): string[] {
  const fraction = typeof r.fraction_of_roofline === "number" ? `${(100 * r.fraction_of_roofline).toFixed(0)}%` : "";
  const peerRatio = r.ratio_to_llama_cpp ?? r.ratio_to_pytorch;
  const ratio = typeof peerRatio === "number" ? `${peerRatio.toFixed(2)}x` : "";
  return [r.precision, String(r.threads), r.phase, r.engine, fixed(r.median), `${fixed(r.min)}-${fixed(r.max)}`, r.unit, fraction, ratio, `${(r.peak_rss_bytes / 2 ** 20).toFixed(0)} MiB`];
}

/** The header (the machine and its rooflines, from the first record) and one aligned row per record. */
export function formatTable(records: BenchRecord[]): string {
  if (!records.length) return "";
  const first = records[0];
  const head = `${first.model} on ${first.cpu} (${first.simd.filter((f) => /^(avx|fma|f16c|amx|neon|sve)/.test(f)).join(" ")})\n`;
  const roofs = [...new Map(records.map((r) => [r.threads, r])).values()]
    .map((r) => `rooflines at ${r.threads} thread(s): read ${r.read_gb_per_s.toFixed(1)} GB/s, f32 GEMM ${r.gemm_f32_gflops.toFixed(1)} GFLOP/s\n`).join("");
  const rows = [[...COLUMNS], ...records.map(row)];
  const widths = COLUMNS.map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return head + roofs + rows.map((r) => r.map((cell, c) => (c >= 4 && c !== 6 ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join("  ").trimEnd()).join("\n") + "\n";
}
