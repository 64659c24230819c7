/**
 * The fixture comparison of ../shared/fixtures/check.py, in TypeScript: every reference array of
 * a case is compared with the candidate's file of the same name, with the same tolerances, and
 * every reference array must be dumped (check.py --require-all). Both sides are read with the
 * tests' own .npy reader, not the project's. An array with no rule fails: a new reference array
 * needs a rule here before it can pass.
 */
import fs from "node:fs";
import path from "node:path";
import { readNpyFile } from "./npy-reader.js";

const TOL: Record<string, [number, number]> = {
  pixel_values: [2e-5, 0], pixel_values_pad: [2e-5, 0],
  vision_hidden_states: [2e-4, 1e-4], image_features: [2e-4, 1e-4], projector_output: [2e-4, 1e-4],
  image_features_packed: [2e-4, 1e-4], inputs_embeds: [2e-4, 1e-4], hidden_states: [5e-4, 1e-4],
  logits_last: [1e-3, 1e-4], logits_all: [1e-3, 1e-4], logits_all_subset: [1e-3, 1e-4], logits_all_logsumexp: [1e-3, 1e-4],
  loss: [1e-4, 1e-5],
  grad_linear_1_weight: [2e-5, 1e-3], grad_linear_1_bias: [2e-5, 1e-3], grad_linear_2_weight: [2e-5, 1e-3], grad_linear_2_bias: [2e-5, 1e-3],
};
const EXACT = new Set(["input_ids", "input_ids_expanded", "labels", "labels_expanded", "generated_ids", "image_sizes"]);
const AUX = new Set(["logits_all_subset_cols", "logits_all_top2_margin"]);
const ARGMAX_MIN_MARGIN = 1e-3;

export interface Verdict {
  name: string;
  ok: boolean;
  detail: string;
}

const squeeze = (s: number[]) => s.filter((d) => d !== 1);
const sameShape = (a: number[], b: number[]) =>
  (a.length === b.length && a.every((d, i) => d === b[i])) || squeeze(a).join() === squeeze(b).join();

const load = (dir: string, name: string) => readNpyFile(path.join(dir, `${name}.npy`));

/** Compares every reference array in `refDir` with `candDir`; missing candidate arrays fail. */
export function compareCase(refDir: string, candDir: string): Verdict[] {
  const names = fs.readdirSync(refDir).filter((f) => f.endsWith(".npy")).map((f) => f.slice(0, -4)).filter((n) => !AUX.has(n)).sort();
  const has = (n: string) => fs.existsSync(path.join(candDir, `${n}.npy`));
  const full = has("logits_all") ? load(candDir, "logits_all") : null;
  return names.map((name): Verdict => {
    const ref = load(refDir, name);
    let cand: { shape: number[]; values: Float64Array } | null = has(name) ? load(candDir, name) : null;
    if (!cand && full && name === "logits_all_subset") {
      const cols = load(refDir, "logits_all_subset_cols").values;
      const v = full.shape[full.shape.length - 1];
      const rows = full.values.length / v;
      const values = new Float64Array(rows * cols.length);
      for (let r = 0; r < rows; r++) cols.forEach((c, j) => (values[r * cols.length + j] = full.values[r * v + c]));
      cand = { shape: [rows, cols.length], values };
    }
    if (!cand) return { name, ok: false, detail: "not dumped" };
    if (!sameShape(cand.shape, ref.shape)) return { name, ok: false, detail: `shape [${cand.shape}] vs reference [${ref.shape}]` };
    if (EXACT.has(name)) {
      const bad = ref.values.findIndex((r, i) => r !== cand!.values[i]);
      return { name, ok: bad < 0, detail: bad < 0 ? `${ref.values.length} equal` : `first mismatch at ${bad}: ${cand.values[bad]} vs ${ref.values[bad]}` };
    }
    if (name === "logits_all_argmax") {
      const margin = load(refDir, "logits_all_top2_margin").values;
      const bad = ref.values.findIndex((r, i) => margin[i] >= ARGMAX_MIN_MARGIN && r !== cand!.values[i]);
      return { name, ok: bad < 0, detail: bad < 0 ? "all judged positions equal" : `position ${bad} differs` };
    }
    const tol = TOL[name];
    if (!tol) return { name, ok: false, detail: "no tolerance rule for this array" };
    const [atol, rtol] = tol;
    let worst = 0;
    let ok = true;
    for (let i = 0; i < ref.values.length; i++) {
      const [r, c] = [ref.values[i], cand.values[i]];
      const err = Math.abs(c - r);
      if (!Number.isFinite(c) || err > atol + rtol * Math.abs(r)) ok = false;
      worst = Math.max(worst, err);
    }
    return { name, ok, detail: `max|d| = ${worst.toExponential(2)} (atol ${atol}, rtol ${rtol})` };
  });
}
