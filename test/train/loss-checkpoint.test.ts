/**
 * Gradient checkpointing: the recomputed backward pass gives bit-identical losses and
 * gradients, LoRA dropout included (its random stream is rewound for the recomputation).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { activation, checkpoint, dropout, linear } from "../../src/tensor/ops.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { batchLoss } from "../../src/train/batch.js";
import { setTrainables, type TrainablesOptions } from "../../src/train/trainables.js";
import { Rng } from "../../src/util/random.js";
import { example, fixtureImages, gradients, loadTiny, randomize, zeroGrad } from "./loss-helpers.js";

test("checkpoint(): same output, same gradients for inputs and closed-over parameters, random stream rewound", () => {
  const be = new RefBackend();
  const param = (n: number, shape: number[], seed: number) => {
    const t = new Tensor(new Float32Array(n), shape, be, true);
    randomize(t.data, 1, seed);
    return t;
  };
  const w1 = param(24, [6, 4], 1);
  const w2 = param(18, [3, 6], 2);
  const x = param(8, [2, 4], 3);
  const block = (rng: Rng) => (input: Tensor) => linear(dropout(activation(linear(input, w1), "gelu"), 0.3, rng), w2);
  const run = (useCheckpoint: boolean) => {
    for (const t of [w1, w2, x]) t.grad = null;
    const rng = new Rng(11);
    const y = useCheckpoint ? checkpoint(block(rng), [x], { rng }) : block(rng)(x);
    const afterForward = rng.state;
    y.backward(Float32Array.from({ length: y.size }, (_, i) => i - 2));
    assert.equal(rng.state, afterForward, "the stream continues where the forward pass left it");
    return { y: Array.from(y.data), g: [w1, w2, x].map((t) => Array.from(t.grad!)) };
  };
  const plain = run(false);
  const checkpointed = run(true);
  assert.deepEqual(checkpointed, plain);
  assert.ok(plain.y.some((v) => v !== 0) && plain.g.every((g) => g.some((v) => v !== 0)));
});

test("checkpoint() of a function of frozen tensors records nothing", () => {
  const be = new RefBackend();
  const x = new Tensor(new Float32Array([1, 2]), [1, 2], be);
  const y = checkpoint((v) => activation(v, "silu"), [x]);
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
});

for (const [what, opts] of [
  ["full fine-tuning with the vision tower unfrozen", { unfreezeVisionTower: true }],
  ["LoRA with dropout", { lora: { r: 4, alpha: 8, dropout: 0.1 } }],
] as Array<[string, Omit<TrainablesOptions, "rng">]>) {
  test(`gradient checkpointing gives bit-identical loss and gradients: ${what}`, async () => {
    const loaded = await loadTiny();
    const { checker, gradient } = await fixtureImages();
    const params = setTrainables(loaded, { ...opts, rng: new Rng(4) });
    for (const [name, t] of params) if (name.endsWith("lora_B.weight")) randomize(t.data, 0.3);
    const examples = [example(loaded, "What is shown?", "A red square on a checkerboard.", [checker]), example(loaded, "Say hi.", "Hi there, friend.", []), example(loaded, "Colours?", "Grey.", [gradient])];
    const run = (gradientCheckpointing: boolean) => {
      zeroGrad(params);
      const rng = new Rng(99);
      const { loss } = batchLoss(loaded, examples, { modelMaxLength: 2048, gradientCheckpointing, rng });
      loss.backward();
      return { loss: loss.data[0], rng: rng.state, grads: gradients(params) };
    };
    const plain = run(false);
    const checkpointed = run(true);
    assert.equal(checkpointed.loss, plain.loss);
    assert.equal(checkpointed.rng, plain.rng);
    for (const [name, g] of plain.grads) assert.deepEqual(checkpointed.grads.get(name), g, name);
    if (opts.lora) {
      // dropout is on: a different stream gives a different loss
      const other = batchLoss(loaded, examples, { modelMaxLength: 2048, rng: new Rng(100) }).loss.data[0];
      assert.notEqual(other, plain.loss);
    }
  });
}
