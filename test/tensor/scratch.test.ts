/**
 * withScratch: op outputs inside come from one reused buffer (zeroed views, the same values as
 * fresh arrays), outside they are fresh; a decode step run with reused buffers gives the same
 * bits as without, and what it returns survives the next step.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadLlava } from "../../src/llava/load.js";
import { add, mul } from "../../src/tensor/ops.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { Scratch, Tensor, withScratch } from "../../src/tensor/tensor.js";
import { MODELS } from "../helpers/paths.js";

test("outputs inside withScratch are views of one buffer, reused from its start on each run", () => {
  const be = new RefBackend();
  const a = new Tensor(Float32Array.from([1, 2, 3]), [3], be);
  const b = new Tensor(Float32Array.from([4, 5, 6]), [3], be);
  const s = new Scratch();
  const first = withScratch(s, () => mul(add(a, b), b));
  assert.deepEqual([...first.data], [20, 35, 54]);
  assert.equal(first.data.buffer, s.buf.buffer);
  const again = withScratch(s, () => withScratch(s, () => add(a, b)));
  assert.equal(again.data.byteOffset, 0, "each run starts at the buffer's start (a nested run of the same scratch does not restart)");
  assert.deepEqual([...again.data], [5, 7, 9]);
  assert.notEqual(add(a, b).data.buffer, s.buf.buffer, "outside: a fresh array");
});

test("decode steps with reused buffers give the same hidden states as without, and each step's result outlives the next", async () => {
  const { model } = await loadLlava(path.join(MODELS, "tiny-llava-1.5-mha"), { warn: () => {} });
  const llm = model.llm;
  const d = llm.cfg.hiddenSize;
  const prompt = llm.embedTokens.forward(Int32Array.from([1, 319, 1799, 29901]), [1, 4]);
  const run = (reuseBuffers: boolean) => {
    const cache = llm.newCache(1, 16);
    llm.forward(prompt, { cache });
    const outs: Float32Array[] = [];
    for (const id of [450, 2009, 338, 263]) {
      const hidden = llm.forward(llm.embedTokens.forward(Int32Array.of(id), [1, 1]), { cache, reuseBuffers }).hidden;
      assert.equal(hidden.size, d);
      outs.push(hidden.data);
    }
    return outs.map((o) => [...o]);
  };
  const want = run(false);
  const got = run(true);
  assert.deepEqual(got, want);
});
