/** The training loop on a small softmax regression: accumulation, logging, checkpoints, resume rules and failures. */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { writeSafetensors } from "../../src/io/safetensors.js";
import { crossEntropy, linear } from "../../src/tensor/ops.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { readMetrics } from "../../src/train/metrics.js";
import { train, type TrainerOptions, type TrainerTask } from "../../src/train/trainer.js";
import { LlavaError } from "../../src/util/errors.js";
import { Rng } from "../../src/util/random.js";
import { shuffled } from "./trainer-task.js";

const be = new RefBackend();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "trainer-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let dirs = 0;
const freshDir = () => path.join(tmp, `run-${++dirs}`);

const N = 8;
const IN = 3;
const CLASSES = 4;
const inputs = Float32Array.from({ length: N * IN }, (_, i) => Math.sin(i * 1.7));
const labels = Int32Array.from({ length: N }, (_, i) => (i * 3) % CLASSES);

/** Softmax regression over N fixed points: weight [CLASSES, IN] as a projector weight, bias without decay. */
function regressionTask(opts: { nanAtCall?: number; jitter?: Rng } = {}): TrainerTask & { weight: Tensor; bias: Tensor } {
  const weight = new Tensor(Float32Array.from({ length: CLASSES * IN }, (_, i) => 0.1 * Math.cos(i)), [CLASSES, IN], be, true);
  const bias = new Tensor(new Float32Array(CLASSES), [CLASSES], be, true);
  let calls = 0;
  return {
    weight,
    bias,
    parameters: [["model.mm_projector.0.weight", weight], ["model.mm_projector.0.bias", bias]],
    numSamples: N,
    order: (epoch) => shuffled(N, 100 + epoch),
    loss(indices) {
      calls++;
      const jitter = opts.jitter;
      const point = (i: number) => [...inputs.subarray(i * IN, (i + 1) * IN)].map((v) => (jitter ? v + 0.1 * jitter.next() : v));
      const x = new Tensor(Float32Array.from(indices.flatMap(point)), [indices.length, IN], be);
      const loss = crossEntropy(linear(x, weight, bias), Int32Array.from(indices, (i) => labels[i]));
      if (calls === opts.nanAtCall) loss.data[0] = NaN;
      return { loss, supervisedTokens: indices.length };
    },
    saveModel(dir) {
      writeSafetensors(path.join(dir, "weights.safetensors"), [{ name: "w", dtype: "F32", shape: [CLASSES, IN], data: weight.data }]);
    },
    sampleId: (i) => `s${i}`,
    rngs: opts.jitter ? { jitter: opts.jitter } : undefined,
  };
}

const OPTIONS: Omit<TrainerOptions, "outputDir"> = {
  numTrainEpochs: 3, perDeviceTrainBatchSize: 2, gradientAccumulationSteps: 1, learningRate: 0.1, weightDecay: 0.01,
  warmupRatio: 0.1, lrSchedulerType: "cosine", maxGradNorm: 1, saveSteps: 5, loggingSteps: 1, seed: 1,
};
const quiet = { progress: null };

test("the loss goes down, and the run writes metrics, trainer_state.json, loss.svg, the model and checkpoints", async () => {
  const out = freshDir();
  const task = regressionTask();
  const result = await train(task, { ...OPTIONS, outputDir: out }, quiet);
  assert.equal(result.globalStep, 12);
  const metrics = readMetrics(path.join(out, "metrics.jsonl"));
  assert.deepEqual(metrics.map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  assert.equal(metrics[0].learning_rate, 0, "the first warmup step runs at factor 0, as LambdaLR starts");
  assert.ok(metrics[11].loss < metrics[1].loss, `loss ${metrics[1].loss} -> ${metrics[11].loss}`);
  for (const m of metrics) for (const v of Object.values(m)) assert.ok(Number.isFinite(v));
  assert.deepEqual(fs.readdirSync(out).sort(), ["checkpoint-10", "checkpoint-12", "checkpoint-5", "loss.svg", "metrics.jsonl", "trainer_state.json", "weights.safetensors"]);
  const state = JSON.parse(fs.readFileSync(path.join(out, "trainer_state.json"), "utf8"));
  assert.equal(state.global_step, 12);
  assert.equal(state.max_steps, 12);
  assert.equal(state.log_history.length, 12);
  assert.deepEqual(Object.keys(state.log_history[0]), ["epoch", "grad_norm", "learning_rate", "loss", "step"]);
  assert.deepEqual(fs.readdirSync(path.join(out, "checkpoint-5")).sort(),
    ["optimizer.safetensors", "resume_state.json", "trainable_parameters.safetensors", "trainer_state.json", "weights.safetensors"]);
  const svg = fs.readFileSync(path.join(out, "loss.svg"), "utf8");
  assert.match(svg, /^<svg[^>]*xmlns/);
  assert.equal((svg.match(/L[\d.]+,[\d.]+/g) ?? []).length, 11, "a line through the 12 step losses");
});

test("a batch of 2 equals two accumulated micro-batches of 1 (each micro-batch's loss over the accumulation steps)", async () => {
  const a = regressionTask();
  const b = regressionTask();
  await train(a, { ...OPTIONS, outputDir: freshDir(), perDeviceTrainBatchSize: 2 }, quiet);
  await train(b, { ...OPTIONS, outputDir: freshDir(), perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 2 }, quiet);
  a.weight.data.forEach((w, i) => assert.ok(Math.abs(w - b.weight.data[i]) < 1e-6, `${w} vs ${b.weight.data[i]}`));
});

test("logging_steps averages the step losses since the last log, rounded to 4 places as HF logs them", async () => {
  const out = freshDir();
  await train(regressionTask(), { ...OPTIONS, outputDir: out, loggingSteps: 4 }, quiet);
  const metrics = readMetrics(path.join(out, "metrics.jsonl"));
  const history = JSON.parse(fs.readFileSync(path.join(out, "trainer_state.json"), "utf8")).log_history;
  assert.deepEqual(history.map((h: { step: number }) => h.step), [4, 8, 12]);
  const mean = (metrics[4].loss + metrics[5].loss + metrics[6].loss + metrics[7].loss) / 4;
  assert.equal(history[1].loss, Math.round(mean * 1e4) / 1e4);
});

test("save_total_limit keeps the newest checkpoints", async () => {
  const out = freshDir();
  await train(regressionTask(), { ...OPTIONS, outputDir: out, saveSteps: 2, saveTotalLimit: 2 }, quiet);
  assert.deepEqual(fs.readdirSync(out).filter((n) => n.includes("checkpoint")).sort(), ["checkpoint-10", "checkpoint-12"]);
});

test("a non-finite loss stops the run naming the step, the samples and the last good checkpoint", async () => {
  const out = freshDir();
  await assert.rejects(train(regressionTask({ nanAtCall: 7 }), { ...OPTIONS, outputDir: out, saveSteps: 3 }, quiet), (err: Error) => {
    assert.ok(err instanceof LlavaError);
    assert.match(err.message, /^the loss is NaN at step 7 \(epoch 2\) on samples \d, \d \(ids s\d, s\d\); training stopped, the last good checkpoint is .*checkpoint-6$/);
    return true;
  });
  await assert.rejects(train(regressionTask({ nanAtCall: 1 }), { ...OPTIONS, outputDir: freshDir() }, quiet), /step 1 .*no checkpoint was written yet/);
});

test("resuming with other settings is refused, naming what changed; --resume without a checkpoint is refused", async () => {
  const out = freshDir();
  await train(regressionTask(), { ...OPTIONS, outputDir: out }, quiet);
  await assert.rejects(train(regressionTask(), { ...OPTIONS, outputDir: out, learningRate: 0.2, seed: 5 }, quiet),
    /cannot resume from .*checkpoint-12: it was made with other settings \(learning_rate: 0\.1 → 0\.2; seed: 1 → 5\)/);
  // settings that do not change the numbers may differ
  await train(regressionTask(), { ...OPTIONS, outputDir: out, saveSteps: 7, loggingSteps: 3 }, quiet);
  await assert.rejects(train(regressionTask(), { ...OPTIONS, outputDir: freshDir(), resume: true }, quiet), /--resume: no checkpoint in /);
});

test("a failed checkpoint write (a full disk) leaves no checkpoint folder and no temporary folder", async () => {
  const out = freshDir();
  const task = regressionTask();
  let saves = 0;
  task.saveModel = (dir) => {
    if (++saves === 2) throw new LlavaError(`cannot write ${dir}/weights.safetensors: no space left on device`);
  };
  await assert.rejects(train(task, { ...OPTIONS, outputDir: out }, quiet), /no space left on device/);
  assert.deepEqual(fs.readdirSync(out).sort(), ["checkpoint-5", "metrics.jsonl"]);
});

test("bad settings are refused before any step", async () => {
  const bad: Array<[Partial<TrainerOptions>, RegExp]> = [
    [{ perDeviceTrainBatchSize: 0 }, /per_device_train_batch_size must be a positive integer \(got 0\)/],
    [{ gradientAccumulationSteps: 1.5 }, /gradient_accumulation_steps must be a positive integer/],
    [{ learningRate: NaN }, /learning_rate must be a finite number >= 0/],
    [{ warmupRatio: 2 }, /warmup_ratio must be in \[0, 1\]/],
    [{ lrSchedulerType: "cosine_with_restarts_typo" }, /unknown lr_scheduler_type "cosine_with_restarts_typo" \(supported: cosine, linear, constant, constant_with_warmup\)/],
    [{ numTrainEpochs: 0 }, /num_train_epochs must be positive/],
  ];
  for (const [change, message] of bad) {
    const out = freshDir();
    await assert.rejects(train(regressionTask(), { ...OPTIONS, ...change, outputDir: out }, quiet), message);
    assert.ok(!fs.existsSync(out));
  }
  await assert.rejects(train({ ...regressionTask(), parameters: [] }, { ...OPTIONS, outputDir: freshDir() }, quiet), /nothing to train/);
  const unused: [string, Tensor] = ["model.layers.0.mlp.up_proj.weight", new Tensor(new Float32Array(2), [2], be, true)];
  await assert.rejects(train({ ...regressionTask(), parameters: [unused] }, { ...OPTIONS, outputDir: freshDir() }, quiet), /the loss does not depend on any trainable parameter/);
  await assert.rejects(train({ ...regressionTask(), order: () => [0, 9] }, { ...OPTIONS, outputDir: freshDir() }, quiet), /order of epoch 0 holds 9, not an index below 8/);
});

test("progress: a line per logging step off a terminal, redrawn in place on one, with an ETA", async () => {
  const lines: string[] = [];
  await train(regressionTask(), { ...OPTIONS, outputDir: freshDir(), loggingSteps: 5 }, { progress: { write: (s: string) => lines.push(s), isTTY: false } });
  assert.equal(lines.length, 3, lines.join(""));
  assert.match(lines[0], /^\[#+-+\] 5\/12 loss \d+\.\d{4} lr \d\.\d\de-\d+ grad \d+\.\d{3} \d+\.\d\d s\/step \d+ tok\/s ETA \d+:\d\d\n$/);
  const tty: string[] = [];
  await train(regressionTask(), { ...OPTIONS, outputDir: freshDir() }, { progress: { write: (s: string) => tty.push(s), isTTY: true } });
  assert.equal(tty.length, 13);
  assert.ok(tty.slice(0, 12).every((s) => s.startsWith("\r\x1b[2K[")));
  assert.equal(tty[12], "\n");
});

test("a run stopped after a checkpoint continues in-process to the same weights, the task's own random streams restored", async () => {
  const whole = regressionTask({ jitter: new Rng(9) });
  await train(whole, { ...OPTIONS, outputDir: freshDir() }, quiet);
  const out = freshDir();
  const stop = (m: { step: number }) => {
    if (m.step === 7) throw new Error("stopped");
  };
  await assert.rejects(train(regressionTask({ jitter: new Rng(9) }), { ...OPTIONS, outputDir: out }, { ...quiet, onStep: stop }), /stopped/);
  const resumed = regressionTask({ jitter: new Rng(9) });
  const result = await train(resumed, { ...OPTIONS, outputDir: out }, quiet);
  assert.match(result.resumedFrom!, /checkpoint-5$/);
  assert.deepEqual(Array.from(resumed.weight.data), Array.from(whole.weight.data));
  assert.deepEqual(Array.from(resumed.bias.data), Array.from(whole.bias.data));
  assert.deepEqual(readMetrics(path.join(out, "metrics.jsonl")).map((m) => m.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
});

test("a checkpoint folder this trainer did not write, or a damaged one, is refused with the reason", async () => {
  const foreign = freshDir();
  fs.mkdirSync(path.join(foreign, "checkpoint-3"), { recursive: true });
  fs.writeFileSync(path.join(foreign, "checkpoint-3", "config.json"), "{}");
  await assert.rejects(train(regressionTask(), { ...OPTIONS, outputDir: foreign }, quiet), /checkpoint .*checkpoint-3 has no trainable_parameters\.safetensors: it was not written by this trainer/);
  const damaged = freshDir();
  await train(regressionTask(), { ...OPTIONS, outputDir: damaged, numTrainEpochs: 1 }, quiet);
  fs.writeFileSync(path.join(damaged, "checkpoint-4", "resume_state.json"), '{"globalStep": "four"}');
  await assert.rejects(train(regressionTask(), { ...OPTIONS, outputDir: damaged, numTrainEpochs: 1 }, quiet), /resume state .*resume_state\.json is malformed/);
});
