/**
 * argmaxFinite: a generation step's greedy token (the first largest logit, as the JS argmax
 * chooses it) and its check that no logit is NaN or infinite, in one pass. Every kernel variant
 * must give the reference backend's answer: ties at the first index, -0 and +0 equal, -1 for an
 * empty row or one NaN or infinity anywhere (the vector body and the scalar tail).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { argmax } from "../../src/llava/sampling.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { randn, tryLoadAddon, withVariant } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

/** Rows of several lengths (odd, shorter than one vector, a vocabulary) with the cases above planted. */
function rows(): Array<[string, Float32Array, number]> {
  const out: Array<[string, Float32Array, number]> = [];
  for (const n of [1, 3, 17, 100, 32001]) {
    const x = randn(n, n);
    out.push([`${n} random`, x, argmax(x)]);
    const tie = x.slice();
    const max = Math.max(...tie);
    for (const i of [n - 1, Math.floor(n / 2)]) tie[i] = max; // the first of the equal ones wins
    out.push([`${n} ties`, tie, argmax(tie)]);
    for (const [what, bad] of [["NaN", NaN], ["+Infinity", Infinity], ["-Infinity", -Infinity]] as const) {
      for (const i of new Set([0, Math.floor(n / 2), n - 1])) {
        const y = x.slice();
        y[i] = bad;
        out.push([`${n} ${what} at ${i}`, y, -1]);
      }
    }
  }
  out.push(["empty", new Float32Array(0), -1]);
  out.push(["zeros of both signs", new Float32Array([-1, -0, 0, -0]), 1]);
  out.push(["all negative", new Float32Array([-5, -3, -3, -7, -4, -9, -8, -6, -3.5, -10, -11, -12, -13, -14, -15, -16, -17]), 1]);
  return out;
}

test("the reference argmaxFinite: the JS argmax's choice, -1 for any non-finite value", () => {
  const ref = new RefBackend();
  for (const [label, x, want] of rows()) assert.equal(ref.argmaxFinite(x), want, label);
});

for (const isa of addon ? addon.settings().isas : ["(none)"]) {
  test(`native ${isa}: argmaxFinite equals the reference`, { skip }, () => {
    withVariant(addon!, isa, [1, 2], (be, threads) => {
      for (const [label, x, want] of rows()) assert.equal(be.argmaxFinite(x), want, `${label}, ${threads} threads`);
    });
  });
}
