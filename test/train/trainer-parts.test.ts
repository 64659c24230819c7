/** The trainer's parts against HF / torch semantics: parameter groups, AdamW, clipping, step counts, schedules. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { AdamW, clipGradNorm, decays, parameterGroups } from "../../src/train/optimizer.js";
import { lrFactor, stepMicroBatches, trainingPlan, warmupSteps } from "../../src/train/schedule.js";

const be = new RefBackend();
const param = (values: number[], grad?: number[]) => {
  const t = new Tensor(Float32Array.from(values), [values.length], be, true);
  if (grad) t.grad = Float32Array.from(grad);
  return t;
};

test("weight decay skips norms (LayerNorm, RMSNorm, CLIP's pre_layrnorm) and biases, as create_optimizer does", () => {
  const yes = ["model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight", "lm_head.weight", "model.mm_projector.0.weight",
    "model.layers.1.mlp.down_proj.lora_A.weight", "model.image_newline"];
  const no = ["model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight", "model.norm.weight",
    "model.mm_projector.0.bias", "model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight",
    "model.vision_tower.vision_tower.vision_model.encoder.layers.0.layer_norm1.bias", "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"];
  for (const n of yes) assert.ok(decays(n), n);
  for (const n of no) assert.ok(!decays(n), n);
});

test("parameter groups: [decay, no decay], and with mm_projector_lr the projector's own two groups at that rate", () => {
  const named = (n: string): [string, Tensor] => [n, param([0])];
  const params = ["model.layers.0.mlp.up_proj.weight", "model.norm.weight", "model.mm_projector.0.weight", "model.mm_projector.0.bias"].map(named);
  const summary = (gs: ReturnType<typeof parameterGroups>) => gs.map((g) => [g.params.map(([n]) => n), g.lr, g.weightDecay]);
  assert.deepEqual(summary(parameterGroups(params, { learningRate: 2e-4, weightDecay: 0.1 })), [
    [["model.layers.0.mlp.up_proj.weight", "model.mm_projector.0.weight"], 2e-4, 0.1],
    [["model.norm.weight", "model.mm_projector.0.bias"], 2e-4, 0],
  ]);
  assert.deepEqual(summary(parameterGroups(params, { learningRate: 2e-4, weightDecay: 0.1, mmProjectorLr: 2e-5 })), [
    [["model.layers.0.mlp.up_proj.weight"], 2e-4, 0.1],
    [["model.norm.weight"], 2e-4, 0],
    [["model.mm_projector.0.weight"], 2e-5, 0.1],
    [["model.mm_projector.0.bias"], 2e-5, 0],
  ]);
});

/** torch.optim.AdamW's documented update, in float64, for one scalar over a sequence of gradients. */
function torchAdamW(w: number, grads: number[], lr: number, wd: number): number {
  let [m, v] = [0, 0];
  grads.forEach((g, i) => {
    const t = i + 1;
    w *= 1 - lr * wd;
    m = 0.9 * m + 0.1 * g;
    v = 0.999 * v + 0.001 * g * g;
    w -= (lr / (1 - 0.9 ** t)) * (m / (Math.sqrt(v) / Math.sqrt(1 - 0.999 ** t) + 1e-8));
  });
  return w;
}

test("AdamW follows torch.optim.AdamW over several steps, with each group's rate and decay times the schedule factor", () => {
  const w = param([0.5, -1.5]);
  const b = param([0.25]);
  const opt = new AdamW([{ params: [["w", w]], lr: 0.1, weightDecay: 0.01 }, { params: [["b", b]], lr: 0.05, weightDecay: 0 }]);
  const gw = [[0.3, -2], [0.1, 1], [-0.4, 0.5]];
  const gb = [[1], [-3], [0.2]];
  for (let i = 0; i < 3; i++) {
    w.grad = Float32Array.from(gw[i]);
    b.grad = Float32Array.from(gb[i]);
    opt.step(0.5);
    opt.zeroGrad();
  }
  assert.ok(Math.abs(w.data[0] - torchAdamW(0.5, gw.map((g) => g[0]), 0.05, 0.01)) < 1e-7);
  assert.ok(Math.abs(w.data[1] - torchAdamW(-1.5, gw.map((g) => g[1]), 0.05, 0.01)) < 1e-7);
  assert.ok(Math.abs(b.data[0] - torchAdamW(0.25, gb.map((g) => g[0]), 0.025, 0)) < 1e-7);
  assert.equal(opt.state.get("w")!.step, 3);
});

test("AdamW skips a parameter without a gradient (no state, no decay), as torch does", () => {
  const w = param([1, 2]);
  const opt = new AdamW([{ params: [["w", w]], lr: 0.1, weightDecay: 0.5 }]);
  opt.step(1);
  assert.deepEqual(Array.from(w.data), [1, 2]);
  assert.equal(opt.state.size, 0);
});

test("AdamW state restored into a fresh optimizer continues bit for bit", () => {
  const run = (restoreAt: number | null) => {
    const w = param([0.5, -0.25, 2]);
    let opt = new AdamW([{ params: [["w", w]], lr: 0.01, weightDecay: 0.1 }]);
    for (let i = 0; i < 5; i++) {
      if (i === restoreAt) {
        const saved = new Map([...opt.state].map(([n, s]) => [n, { step: s.step, expAvg: s.expAvg.slice(), expAvgSq: s.expAvgSq.slice() }]));
        opt = new AdamW([{ params: [["w", w]], lr: 0.01, weightDecay: 0.1 }]);
        opt.loadState(saved);
      }
      w.grad = Float32Array.from([Math.sin(i), Math.cos(i), 0.1 * i]);
      opt.step(1);
    }
    return Array.from(w.data);
  };
  assert.deepEqual(run(3), run(null));
});

test("clipping: the global L2 norm is returned, and gradients scale by max/(norm+1e-6) only when that is below 1", () => {
  const a = param([0, 0], [3, 0]);
  const b = param([0], [4]);
  assert.equal(clipGradNorm([a, b], 10), 5);
  assert.deepEqual([...a.grad!, ...b.grad!], [3, 0, 4]);
  assert.equal(clipGradNorm([a, b], 1), 5);
  const c = Math.fround(1 / (5 + 1e-6));
  assert.deepEqual([...a.grad!, ...b.grad!], [Math.fround(3 * c), 0, Math.fround(4 * c)]);
  const d = param([0], [100]);
  assert.equal(clipGradNorm([d], 0), 100);
  assert.equal(d.grad![0], 100, "max_grad_norm 0 turns clipping off");
});

test("step counts as the HF Trainer computes them: len(dataloader) // accumulation per epoch, at least 1", () => {
  const plan = (numSamples: number, batchSize: number, gradientAccumulationSteps: number, numTrainEpochs: number, maxSteps?: number) =>
    trainingPlan({ numSamples, batchSize, gradientAccumulationSteps, numTrainEpochs, maxSteps });
  assert.deepEqual(plan(10, 3, 2, 3), { microBatchesPerEpoch: 4, stepsPerEpoch: 2, totalSteps: 6, numEpochs: 3 });
  assert.deepEqual(plan(10, 3, 1, 1.5), { microBatchesPerEpoch: 4, stepsPerEpoch: 4, totalSteps: 6, numEpochs: 2 });
  assert.deepEqual(plan(10, 3, 8, 2), { microBatchesPerEpoch: 4, stepsPerEpoch: 1, totalSteps: 2, numEpochs: 2 });
  assert.deepEqual(plan(10, 2, 2, 1, 7), { microBatchesPerEpoch: 5, stepsPerEpoch: 2, totalSteps: 7, numEpochs: 4 });
  // 558k captions at 32 x 8 GPUs per step (stage 1 of v1.5): 2181 steps
  assert.equal(plan(558128, 256, 1, 1).totalSteps, 2181);
});

test("micro-batches of a step: accumulation windows in the epoch order; an epoch shorter than one window is one step", () => {
  const five = trainingPlan({ numSamples: 9, batchSize: 2, gradientAccumulationSteps: 2, numTrainEpochs: 1 });
  assert.deepEqual(stepMicroBatches(five, 0, 2, 2, 9), [[0, 2], [2, 4]]);
  assert.deepEqual(stepMicroBatches(five, 1, 2, 2, 9), [[4, 6], [6, 8]]);
  assert.equal(five.stepsPerEpoch, 2, "the ninth sample's micro-batch is left over");
  const short = trainingPlan({ numSamples: 5, batchSize: 2, gradientAccumulationSteps: 4, numTrainEpochs: 1 });
  assert.deepEqual(stepMicroBatches(short, 0, 4, 2, 5), [[0, 2], [2, 4], [4, 5]]);
});

test("warmup steps and the cosine, linear and constant schedules match transformers' lambdas", () => {
  assert.equal(warmupSteps(2181, 0.03), 66);
  assert.equal(warmupSteps(10, 0.03), 1);
  assert.equal(warmupSteps(10, 0.5, 2), 2);
  assert.deepEqual([0, 1, 2].map((s) => lrFactor("cosine", s, 4, 20)), [0, 0.25, 0.5]);
  assert.equal(lrFactor("cosine", 4, 4, 20), 1);
  assert.ok(Math.abs(lrFactor("cosine", 12, 4, 20) - 0.5) < 1e-15);
  assert.ok(Math.abs(lrFactor("cosine", 8, 4, 20) - 0.5 * (1 + Math.cos(Math.PI * 0.25))) < 1e-15);
  assert.equal(lrFactor("cosine", 20, 4, 20), 0);
  assert.equal(lrFactor("linear", 12, 4, 20), 0.5);
  assert.equal(lrFactor("linear", 2, 4, 20), 0.5);
  assert.equal(lrFactor("constant", 0, 4, 20), 1);
  assert.equal(lrFactor("constant_with_warmup", 1, 4, 20), 0.25);
  assert.equal(lrFactor("constant_with_warmup", 9, 4, 20), 1);
});
