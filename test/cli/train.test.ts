/**
 * `llava train` end to end on the example shapes dataset and a tiny LLM cut from the fixtures:
 * stage 1, then stage 2 in full and with LoRA from its projector, each output answering through
 * `llava run`; the data check before step 1; and the reference hand-off.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { assertCleanError, llava } from "../helpers/cli.js";
import { ROOT } from "../helpers/paths.js";
import { FIXTURE_TOWER, writeTinyLlm } from "../train/recipe-fixtures.js";
import { openWeights } from "../../src/io/weights.js";
import { freshProjector } from "../../src/train/init.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "cli-train-"));
after(() => fs.rmSync(work, { recursive: true, force: true }));
const llm = path.join(work, "llm");
const data = path.join(work, "shapes");
const stage1 = path.join(work, "stage1");

before(() => {
  writeTinyLlm(llm);
  const made = spawnSync(process.execPath, [path.join(ROOT, "examples", "make-training-data.mjs"), data, "8"], { encoding: "utf8" });
  assert.equal(made.status, 0, made.stderr);
});

const common = () => ["--model-name-or-path", llm, "--vision-tower", FIXTURE_TOWER, "--image-folder", path.join(data, "images"), "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "2"];

function trainOk(args: string[]): void {
  const r = llava(["train", ...common(), ...args]);
  assert.equal(r.status, 0, r.stderr);
}

function answers(args: string[]): void {
  const r = llava(["run", ...args, "--image-file", path.join(data, "images", "0001.png"), "--query", "What shape is in the picture?", "--max-new-tokens", "4", "--temperature", "0"]);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.trim().length > 0, "an answer");
}

type Metric = { step: number; loss: number };
const metrics = (dir: string): Metric[] => fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Metric);

test("stage 1 trains the projector alone and writes the reference's files, which load over the LLM", () => {
  trainOk(["--stage", "pretrain", "--data-path", path.join(data, "pretrain.json"), "--output-dir", stage1, "--num-train-epochs", "4", "--learning-rate", "1e-2", "--save-steps", "4"]);
  for (const f of ["config.json", "mm_projector.bin", "trainer_state.json", "metrics.jsonl", "loss.svg", "checkpoint-8"]) assert.ok(fs.existsSync(path.join(stage1, f)), f);
  assert.ok(!fs.existsSync(path.join(stage1, "checkpoint-4")), "save_total_limit 1 keeps the newest checkpoint only");
  const m = metrics(stage1);
  assert.deepEqual(m.map((x) => x.step), [1, 2, 3, 4, 5, 6, 7, 8]);
  const mean = (xs: Metric[]) => xs.reduce((s, x) => s + x.loss, 0) / xs.length;
  assert.ok(mean(m.slice(-2)) < mean(m.slice(0, 2)) - 0.5, `the loss falls: ${m.map((x) => x.loss.toFixed(2)).join(" ")}`);
  const config = JSON.parse(fs.readFileSync(path.join(stage1, "config.json"), "utf8"));
  assert.deepEqual([config.mm_projector_type, config.mm_vision_select_layer, config.tune_mm_mlp_adapter, config.mm_vision_tower], ["mlp2x_gelu", -2, true, FIXTURE_TOWER]);
  // the projector moved away from its seeded start
  const reader = openWeights(path.join(stage1, "mm_projector.bin"));
  try {
    const start = freshProjector("mlp2x_gelu", 48, 32, 42);
    assert.deepEqual(reader.names(), start.map((t) => t.name).sort());
    assert.notDeepEqual(reader.readF32("model.mm_projector.0.weight"), start[0].data);
  } finally {
    reader.close();
  }
  answers(["--model-path", stage1, "--model-base", llm]);
});

test("stage 2 from the stage-1 projector: a full model folder, and a LoRA adapter over the LLM", () => {
  const full = path.join(work, "full");
  const lora = path.join(work, "lora");
  const finetune = ["--stage", "finetune", "--data-path", path.join(data, "finetune.json"), "--pretrain-mm-mlp-adapter", path.join(stage1, "mm_projector.bin"), "--max-steps", "2"];
  trainOk([...finetune, "--output-dir", full]);
  for (const f of ["config.json", "model.safetensors", "tokenizer.model", "generation_config.json", "trainer_state.json"]) assert.ok(fs.existsSync(path.join(full, f)), f);
  answers(["--model-path", full]);
  trainOk([...finetune, "--output-dir", lora, "--lora-enable", "--lora-r", "4", "--lora-alpha", "8"]);
  for (const f of ["config.json", "adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.bin"]) assert.ok(fs.existsSync(path.join(lora, f)), f);
  const adapter = JSON.parse(fs.readFileSync(path.join(lora, "adapter_config.json"), "utf8"));
  assert.deepEqual([adapter.r, adapter.lora_alpha, adapter.target_modules], [4, 8, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]]);
  answers(["--model-path", lora, "--model-base", llm]);
});

test("a dataset with a missing image stops before step 1, or trains without it with --skip-bad-samples; cut samples are counted", () => {
  const records = JSON.parse(fs.readFileSync(path.join(data, "pretrain.json"), "utf8"));
  records[2].image = "gone.png";
  const file = path.join(work, "broken.json");
  fs.writeFileSync(file, JSON.stringify(records));
  const out = path.join(work, "broken-run");
  const args = ["train", ...common(), "--stage", "pretrain", "--data-path", file, "--output-dir", out, "--max-steps", "1"];
  assertCleanError(llava(args), /1 of 8 samples have problems \(rerun with --skip-bad-samples.*record 2 \(id "cap-2"\): image .*gone\.png/);
  assert.ok(!fs.existsSync(path.join(out, "checkpoint-1")));
  const skipped = llava([...args, "--skip-bad-samples"]);
  assert.equal(skipped.status, 0, skipped.stderr);
  assert.match(skipped.stderr, /llava: warning: skipping 1 of 8 samples with problems \(missing-image 1\)/);
  // samples cut by the length limit still train, counted
  const cut = llava(["train", ...common(), "--stage", "finetune", "--data-path", path.join(data, "finetune.json"), "--output-dir", path.join(work, "cut-run"), "--max-steps", "1", "--model-max-length", "80"]);
  assert.equal(cut.status, 0, cut.stderr);
  assert.match(cut.stderr, /llava: warning: 8 samples train with warnings \(model-cut 8\); llava data check shows them/);
});

test("--print-reference-command prints the deepspeed line without loading anything; bad options exit 2", () => {
  const r = llava(["train", "--stage", "finetune", "--lora_enable", "True", "--model-name-or-path", "nowhere", "--data-path", "none.json", "--output-dir", "out", "--print-reference-command"]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^deepspeed --num_gpus 8 llava\/train\/train_mem.py \\\n {4}--deepspeed .\/scripts\/zero3.json \\\n/);
  assert.match(r.stdout, /--lora_r 128 \\\n/);
  const bad = llava(["train", "--stage", "pretrain", "--lerning-rate", "1"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^llava: train: unknown option --lerning-rate; did you mean --learning-rate\?/);
  const help = llava(["train", "--help"]);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--per-device-train-batch-size N +samples per forward pass \(default 1\)/);
  assert.match(help.stdout, /fits one CPU/);
});
