/**
 * The thread pool under back-to-back jobs: many short parallel calls of different kinds in a
 * row, with more threads than cores so that workers are often descheduled and arrive late at a
 * job. A late worker must skip a job it did not join (never take tasks of, or read the fields
 * of, the next one), so every call still gives the 1-thread bits. Skipped when the addon is not
 * built.
 */
import { test } from "node:test";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { packMatrix } from "../../src/tensor/packed.js";
import { assertBitEqual, randn, tryLoadAddon } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

/** Alternates three kernels with different task counts and task functions, `rounds` times. */
function burst(be: NativeBackend, rounds: number): Float32Array[] {
  const w = packMatrix(randn(1024 * 512, 1), 1024, 512, "q4_0");
  const x = randn(512, 2);
  const big = randn(70_000, 3);
  const a = randn(4 * 300, 4);
  const b = randn(300 * 700, 5);
  const out: Float32Array[] = [];
  for (let r = 0; r < rounds; r++) {
    const c = new Float32Array(1024);
    be.packedMatmul(x, w, c, 1, false, false);
    const act = new Float32Array(big.length);
    be.activation("gelu", big, act);
    const g = new Float32Array(4 * 700);
    be.gemm(a, b, g, { m: 4, n: 700, k: 300, transA: false, transB: false });
    out.push(c, act, g);
  }
  return out;
}

test("pool: back-to-back short jobs give the 1-thread bits at 2 and 4 threads", { skip }, () => {
  const native = addon!;
  const be = new NativeBackend(native);
  const before = native.settings().threads;
  try {
    native.configure({ threads: 1 });
    const one = burst(be, 1);
    for (const threads of [2, 4]) {
      native.configure({ threads });
      const many = burst(be, 150);
      many.forEach((o, i) => assertBitEqual(o, one[i % one.length], `${threads} threads, call ${i}`));
    }
  } finally {
    native.configure({ threads: before });
  }
});
