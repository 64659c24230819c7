/**
 * batchLoss: the reference's loss and projector gradients on the train_grad fixture, and a batch
 * of N equal to its N samples one by one, weighted by their supervised token counts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { batchLoss, type TrainingExample } from "../../src/train/batch.js";
import { setTrainables } from "../../src/train/trainables.js";
import { loadLlava, type LoadedLlava } from "../../src/llava/load.js";
import { prepareImages } from "../../src/llava/pipeline.js";
import type { NamedParameters } from "../../src/nn/layers.js";
import { crossEntropy, gatherRows, reshape } from "../../src/tensor/ops.js";
import { Scratch, Tensor } from "../../src/tensor/tensor.js";
import { Rng } from "../../src/util/random.js";
import { LlavaError } from "../../src/util/errors.js";
import { readNpyFile } from "../helpers/npy-reader.js";
import { CASES, MODELS } from "../helpers/paths.js";
import { example, fixtureImages, gradients, loadTiny, randomize, zeroGrad } from "./loss-helpers.js";

const CASE = path.join(CASES, "tiny-llava-1.5-mha/train_grad");
const npy = (name: string) => readNpyFile(path.join(CASE, `${name}.npy`));

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const excess = Math.abs(actual[i] - expected[i]) - (atol + rtol * Math.abs(expected[i]));
    worst = Math.max(worst, excess);
    assert.ok(excess <= 0, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

test("batchLoss of the train_grad example gives the reference's labels, loss and projector gradients", async () => {
  const loaded = await loadTiny();
  const { checker } = await fixtureImages();
  const params = setTrainables(loaded, { tuneMmMlpAdapter: true, rng: new Rng(1) });
  const ex = example(loaded, "What is shown?", "A red square on a checkerboard.", [checker]);
  assert.deepEqual(ex.ids, Array.from(npy("input_ids").values));
  assert.deepEqual(ex.labels, Array.from(npy("labels").values));
  const { loss, supervisedTokens } = batchLoss(loaded, [ex], { modelMaxLength: 2048, rng: new Rng(1) });
  assert.equal(supervisedTokens, 10);
  assertClose(loss.data, npy("loss").values, 1e-4, 1e-5, "loss");
  loss.backward();
  const grads = new Map(params);
  assert.deepEqual([...grads.keys()], ["model.mm_projector.0.weight", "model.mm_projector.0.bias", "model.mm_projector.2.weight", "model.mm_projector.2.bias"]);
  const expected: Array<[string, string]> = [["0.weight", "grad_linear_1_weight"], ["0.bias", "grad_linear_1_bias"], ["2.weight", "grad_linear_2_weight"], ["2.bias", "grad_linear_2_bias"]];
  for (const [name, file] of expected) assertClose(grads.get(`model.mm_projector.${name}`)!.grad!, npy(file).values, 2e-5, 1e-3, name);
});

/** The batch's loss and gradients against Σ n_i · (loss_i, grad_i) / Σ n_i over its samples alone. */
function checkBatchEqualsSamples(loaded: LoadedLlava, params: NamedParameters, examples: TrainingExample[], checked: string[]): void {
  const opts = { modelMaxLength: 2048, rng: new Rng(3) };
  zeroGrad(params);
  const batch = batchLoss(loaded, examples, opts);
  batch.loss.backward();
  const batchGrads = gradients(params);
  let weightedLoss = 0;
  const summed = new Map(params.map(([name, t]) => [name, new Float64Array(t.size)]));
  let total = 0;
  for (const e of examples) {
    zeroGrad(params);
    const one = batchLoss(loaded, [e], opts);
    one.loss.backward();
    weightedLoss += one.loss.data[0] * one.supervisedTokens;
    total += one.supervisedTokens;
    for (const [name, g] of gradients(params)) summed.get(name)!.forEach((_, i, s) => (s[i] += g[i] * one.supervisedTokens));
  }
  assert.equal(batch.supervisedTokens, total);
  assertClose([batch.loss.data[0]], [weightedLoss / total], 1e-5, 1e-5, "loss");
  for (const name of checked) {
    const expected = Array.from(summed.get(name)!, (v) => v / total);
    const scale = expected.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(scale > 0, `${name} has a gradient`);
    assertClose(batchGrads.get(name)!, expected, 1e-5 * scale, 1e-4, name);
  }
}

test("a batch of samples of different lengths, with and without images, equals the samples one by one (projector, LLM Linear, embeddings)", async () => {
  const loaded = await loadTiny();
  const { checker, gradient } = await fixtureImages();
  const params = setTrainables(loaded, { rng: new Rng(1) });
  const examples = [
    example(loaded, "What is shown?", "A red square on a checkerboard.", [checker]),
    example(loaded, "Tell me a joke about cats and dogs, please.", "Why did the cat sit on the computer? To keep an eye on the mouse.", []),
    example(loaded, "Describe the colours.", "A smooth gradient.", [gradient]),
  ];
  checkBatchEqualsSamples(loaded, params, examples, [
    "model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.layers.1.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
    "model.layers.0.input_layernorm.weight", "model.embed_tokens.weight", "lm_head.weight",
  ]);
});

test("a LoRA batch equals its samples one by one (adapters A and B, projector)", async () => {
  const loaded = await loadTiny();
  const { checker, gradient } = await fixtureImages();
  const params = setTrainables(loaded, { lora: { r: 4, alpha: 8, dropout: 0 }, rng: new Rng(1) });
  // B starts at zero, which makes A's gradient zero: give it values so both are checked
  for (const [name, t] of params) if (name.endsWith("lora_B.weight")) randomize(t.data, 0.5);
  const examples = [
    example(loaded, "What is shown?", "A red square on a checkerboard.", [checker]),
    example(loaded, "Describe the colours in detail.", "A smooth gradient from dark to light.", [gradient]),
    example(loaded, "Hi", "Hello.", []),
  ];
  checkBatchEqualsSamples(loaded, params, examples, [
    "model.layers.0.self_attn.v_proj.lora_A.weight", "model.layers.1.mlp.up_proj.lora_B.weight", "model.layers.1.self_attn.o_proj.lora_A.weight", "model.mm_projector.0.weight",
  ]);
});

test("model_max_length cuts the sequence after the image features are spliced in", async () => {
  const loaded = await loadTiny();
  const { checker } = await fixtureImages();
  setTrainables(loaded, { tuneMmMlpAdapter: true, rng: new Rng(1) });
  const ex = example(loaded, "What is shown?", "A red square on a checkerboard.", [checker]);
  const full = ex.ids.length - 1 + 16;
  // the answer's 10 supervised next-token positions end the sequence; cutting 4 positions drops 4 of them
  assert.equal(batchLoss(loaded, [ex], { modelMaxLength: full, rng: new Rng(1) }).supervisedTokens, 10);
  assert.equal(batchLoss(loaded, [ex], { modelMaxLength: full - 4, rng: new Rng(1) }).supervisedTokens, 6);
  assert.throws(() => batchLoss(loaded, [ex], { modelMaxLength: 20, rng: new Rng(1) }), (e: unknown) => e instanceof LlavaError && /no supervised tokens/.test(e.message));
});

test("batchLoss refuses mismatched samples with a clear error", async () => {
  const loaded = await loadTiny();
  const { checker } = await fixtureImages();
  const ex = example(loaded, "What is shown?", "A square.", [checker]);
  const fails = (examples: TrainingExample[], pattern: RegExp) =>
    assert.throws(() => batchLoss(loaded, examples, { modelMaxLength: 2048, rng: new Rng(1) }), (e: unknown) => e instanceof LlavaError && pattern.test(e.message));
  fails([], /at least one sample/);
  fails([{ ...ex, labels: ex.labels.slice(1) }], /ids but .* labels/);
  fails([{ ...ex, images: [] }], /1 image marker\(s\) but 0 image/);
  fails([{ ...ex, labels: ex.labels.map(() => -100) }], /no supervised tokens/);
});

test("an AnyRes (LLaVA-NeXT) batch equals its samples one by one, image_newline included", async () => {
  const loaded = await loadLlava(path.join(MODELS, "tiny-llava-next"), { warn: () => {} });
  const { checker, gradient } = await fixtureImages();
  const params = setTrainables(loaded, { rng: new Rng(1) });
  assert.ok(params.some(([name]) => name === "model.image_newline"));
  const examples = [example(loaded, "What is shown?", "A red square.", [checker]), example(loaded, "And here?", "A gradient, from dark to light.", [gradient])];
  checkBatchEqualsSamples(loaded, params, examples, ["model.image_newline", "model.mm_projector.0.weight", "model.layers.0.self_attn.v_proj.weight"]);
});

test("the decoder's output from a position on (outputFrom) is the full forward's tail bit for bit, with the same loss gradients, and bad starts fail clearly", async () => {
  const loaded = await loadTiny();
  const llm = loaded.model.llm;
  const params = setTrainables(loaded, { rng: new Rng(1) });
  const [t, from, d] = [23, 9, llm.cfg.hiddenSize];
  const embeds = new Tensor(new Float32Array(2 * t * d), [2, t, d], llm.backend);
  randomize(embeds.data, 1);
  const targets = Int32Array.from({ length: 2 * (t - from) }, (_, i) => (i * 37) % llm.cfg.vocabSize);
  const run = (outputFrom: number) => {
    zeroGrad(params);
    const { hidden } = llm.forward(embeds, { training: {}, outputFrom });
    // the rows from `from` on of each batch row
    const tail = outputFrom ? hidden : gatherRows(reshape(hidden, [2 * t, d]), Int32Array.from({ length: 2 * (t - from) }, (_, i) => Math.floor(i / (t - from)) * t + from + (i % (t - from))));
    const rows = reshape(tail, [2 * (t - from), d]);
    crossEntropy(llm.logits(rows), targets).backward();
    return { rows: Float32Array.from(rows.data), grads: gradients(params) };
  };
  const full = run(0), cut = run(from);
  assert.deepEqual(cut.rows, full.rows);
  for (const name of ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "model.layers.1.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight", "model.layers.1.post_attention_layernorm.weight", "lm_head.weight"]) {
    const want = full.grads.get(name)!;
    const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(scale > 0, `${name} has a gradient`);
    assertClose(cut.grads.get(name)!, want, 1e-5 * scale, 1e-4, name);
  }
  for (const bad of [-1, t, 2.5]) {
    assert.throws(() => llm.forward(embeds, { outputFrom: bad }), (e: unknown) => e instanceof LlavaError && /outputFrom/.test(e.message));
  }
  assert.throws(() => llm.forward(embeds, { outputFrom: 3, collectHidden: true }), /outputFrom/);
});

test("batchLoss on images prepared ahead (opts.prepared) gives the same loss, and a count that does not match fails clearly", async () => {
  const loaded = await loadTiny();
  const { checker, gradient } = await fixtureImages();
  setTrainables(loaded, { tuneMmMlpAdapter: true, rng: new Rng(1) });
  const examples = [example(loaded, "What is shown?", "A red square.", [checker]), example(loaded, "And here?", "A gradient.", [gradient])];
  const opts = { modelMaxLength: 2048, rng: new Rng(1) };
  const plain = batchLoss(loaded, examples, opts).loss.data[0];
  assert.equal(batchLoss(loaded, examples, { ...opts, prepared: prepareImages(loaded, [checker, gradient]) }).loss.data[0], plain);
  assert.throws(() => batchLoss(loaded, examples, { ...opts, prepared: prepareImages(loaded, [checker]) }), (e: unknown) => e instanceof LlavaError && /2 image\(s\) but 1 prepared/.test(e.message));
});

test("batchLoss in a workspace (opts.workspace) gives the same losses and gradients, call after call, and reuses its buffer once it has grown", async () => {
  const loaded = await loadTiny();
  const { checker, gradient } = await fixtureImages();
  const params = setTrainables(loaded, { lora: { r: 4, alpha: 8, dropout: 0.1 }, rng: new Rng(1) });
  for (const [name, t] of params) if (name.endsWith("lora_B.weight")) randomize(t.data, 0.5);
  const short = [example(loaded, "What is shown?", "A red square.", [checker])];
  const long = [example(loaded, "Describe the colours in detail, please.", "A smooth gradient from dark to light, left to right.", [gradient]), example(loaded, "Hi", "Hello.", [])];
  const batches = [short, long, short, short];
  const run = (workspace?: Scratch) => {
    const rng = new Rng(7);
    return batches.map((examples) => {
      zeroGrad(params);
      const { loss } = batchLoss(loaded, examples, { modelMaxLength: 2048, rng, workspace });
      const value = loss.data[0];
      loss.backward();
      return { value, grads: gradients(params), buf: workspace?.buf };
    });
  };
  const plain = run();
  const workspace = new Scratch();
  const reused = run(workspace);
  plain.forEach((p, i) => {
    assert.equal(reused[i].value, p.value, `loss of call ${i}`);
    for (const [name, g] of p.grads) assert.deepEqual(reused[i].grads.get(name), g, `${name} after call ${i}`);
  });
  assert.equal(reused[3].buf, reused[2].buf, "the last call ran in the buffer the one before it sized");
  assert.ok(workspace.buf.length > 0);
  assert.throws(
    () => batchLoss(loaded, short, { modelMaxLength: 2048, rng: new Rng(1), workspace, gradientCheckpointing: true }),
    (e: unknown) => e instanceof LlavaError && /not with gradient checkpointing/.test(e.message),
  );
});
