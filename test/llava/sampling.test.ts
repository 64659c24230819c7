/**
 * The partial-selection sampler (and its numeric-key full sort, the fallback) against the
 * full-sort sampler it replaced, copied below as it was: the same token for the same logits and
 * draw, over many random logits of several vocabulary sizes (below, at and above the sorted
 * top), heavy ties, signed zeros, peaked and flat distributions, temperatures and top-p values.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { sampleSorted, sampleToken } from "../../src/llava/sampling.js";
import { seededRandom } from "../../src/util/random.js";

/** The sampler as it was before partial selection (a stable comparison sort of the whole vocabulary). */
function oldSampleToken(logits: Float32Array, temperature: number, topP: number, random: () => number): number {
  const n = logits.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[a] - logits[b]);
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i] / temperature);
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += p[i] = Math.exp(logits[i] / temperature - max);
  let first = 0;
  if (topP < 1) {
    let cum = 0;
    while (first < n - 1) {
      cum += p[order[first]] / sum;
      if (cum > 1 - topP) break;
      first++;
    }
  }
  let kept = 0;
  for (let i = first; i < n; i++) kept += p[order[i]];
  let r = random() * kept;
  for (let i = n - 1; i >= first; i--) {
    r -= p[order[i]];
    if (r <= 0) return order[i];
  }
  return order[n - 1];
}

function logitsOf(n: number, kind: string, r: () => number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
    switch (kind) {
      case "ties": x[i] = Math.round(g * 2); break; // a few values shared by many tokens
      case "peaked": x[i] = g * 8; break;
      case "flat": x[i] = g * 0.01; break;
      case "equal": x[i] = 1.5; break;
      case "zeros": x[i] = [0, -0, 1, -1][i % 4]; break;
      default: x[i] = g * 3;
    }
  }
  if (kind === "spike") x[Math.floor(r() * n)] = 40;
  return x;
}

test("sampleToken (and sampleSorted) pick the old sampler's token for the same logits and draws", () => {
  const r = seededRandom(2024);
  let cases = 0;
  for (const n of [1, 2, 5, 127, 128, 129, 1000, 32001]) {
    for (const kind of n > 1000 ? ["ties", "spike"] : ["normal", "ties", "peaked", "flat", "equal", "zeros", "spike"]) {
      const logits = logitsOf(n, kind, r);
      for (const temperature of [0.05, 0.7, 1, 2, 100]) {
        for (const topP of [1, 0.999, 0.95, 0.9, 0.5, 0.1, 1e-12, 0]) {
          const seed = Math.floor(r() * 2 ** 31);
          const [a, b, c] = [seededRandom(seed), seededRandom(seed), seededRandom(seed)];
          for (let draw = 0; draw < (n > 1000 ? 1 : 12); draw++) {
            const want = oldSampleToken(logits, temperature, topP, a);
            const label = `n=${n} ${kind} T=${temperature} top_p=${topP} draw ${draw}`;
            assert.equal(sampleToken(logits, temperature, topP, b), want, label);
            assert.equal(sampleSorted(logits, temperature, topP, c), want, `${label} (full sort)`);
            cases++;
          }
        }
      }
    }
  }
  assert.ok(cases > 5000);
});

test("draws at the edges: u near 0 and near 1 land on the same token", () => {
  const r = seededRandom(9);
  for (const n of [200, 32001]) {
    const logits = logitsOf(n, "ties", r);
    for (const u of [0, 1e-300, 1e-12, 0.5, 1 - 1e-12, 1 - 2 ** -53]) {
      for (const topP of [1, 0.9]) {
        assert.equal(sampleToken(logits, 1, topP, () => u), oldSampleToken(logits, 1, topP, () => u), `n=${n} u=${u} top_p=${topP}`);
      }
    }
  }
});
