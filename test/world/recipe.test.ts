/**
 * The world recipe (scripts/world-train.mjs) shortened to a few steps: every step runs through the
 * project's commands, the loss falls in each stage, every file is written and loads, the model is
 * evaluated and shipped in bfloat16, a model that misses the target is not shipped, and a rerun
 * resumes instead of starting again.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { llava } from "../helpers/cli.js";
import { ROOT } from "../helpers/paths.js";
import { loadLlava } from "../../src/llava/load.js";
import { readMetrics } from "../../src/train/metrics.js";
import { WeightStore } from "../../src/io/safetensors.js";

const SCRIPT = path.join(ROOT, "scripts", "world-train.mjs");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "world-recipe-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const work = path.join(tmp, "work");
const ship = path.join(tmp, "ship");

function recipe(...args: string[]) {
  const r = spawnSync(process.execPath, [SCRIPT, "--work", work, "--ship", ship, "--train", "16", "--test", "4", "--max-steps", "3", ...args], { encoding: "utf8", timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("a shortened recipe runs end to end: the loss falls, every file is written and the shipped model loads", async () => {
  const r = recipe("--min-overall", "0", "--min-category=-1");
  assert.equal(r.status, 0, r.stderr);
  for (const f of ["world.json", "cells.json", "pretrain.json", "finetune.json", "test.jsonl", "test_answers.jsonl"]) assert.ok(fs.existsSync(path.join(work, "data", f)), f);
  for (const stage of ["vision", "stage1", "stage2"]) {
    const steps = readMetrics(path.join(work, stage, "metrics.jsonl"));
    assert.equal(steps.length, 3, stage);
    assert.ok(steps[2].loss < steps[0].loss, `${stage}: loss ${steps.map((s) => s.loss).join(" -> ")} does not fall`);
    assert.ok(fs.existsSync(path.join(work, stage, "loss.svg")), stage);
  }
  for (const q of ["f32", "8bit", "4bit"]) assert.equal(fs.readFileSync(path.join(work, "eval", `answers-${q}.jsonl`), "utf8").trim().split("\n").length, 20, q);
  for (const f of ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "loss-vision.svg", "loss-stage1.svg", "loss-stage2.svg", "eval.json", "README.md"]) {
    assert.ok(fs.existsSync(path.join(ship, f)), f);
  }
  assert.ok(!fs.existsSync(path.join(ship, "optimizer.safetensors")) && !fs.existsSync(path.join(ship, "metrics.jsonl")), "the trainer's records stay behind");
  const record = JSON.parse(fs.readFileSync(path.join(ship, "eval.json"), "utf8"));
  assert.equal(record.scores.f32.overall.questions, 20);
  assert.match(fs.readFileSync(path.join(ship, "README.md"), "utf8"), /\| \*\*overall\*\* \| 20 \|/);
  // shipped in bfloat16, and evaluated as shipped
  const weights = WeightStore.open(ship);
  assert.deepEqual([...new Set(weights.names().map((n) => weights.info(n).dtype))], ["BF16"]);
  weights.close();
  assert.equal(JSON.parse(fs.readFileSync(path.join(ship, "config.json"), "utf8")).torch_dtype, "bfloat16");
  assert.equal(JSON.parse(fs.readFileSync(path.join(work, "eval", "answers-f32.jsonl"), "utf8").split("\n")[0]).model_id, "model-bf16");
  const loaded = await loadLlava(ship);
  assert.equal(loaded.format, "hf-llava");
  assert.equal((loaded.spec.config.vision_config as { image_size: number }).image_size, 144);
  // a real LLaVA-1.5 checkpoint: it converts to the original format, which loads too
  const original = path.join(tmp, "original");
  const converted = llava(["convert", "to-original", "--model-path", ship, "--out", original]);
  assert.equal(converted.status, 0, converted.stderr);
  assert.equal((await loadLlava(original)).format, "original");
});

test("a rerun resumes every step, and a model that misses the target leaves the shipped one as it is", () => {
  const before = fs.statSync(path.join(ship, "model.safetensors")).mtimeMs;
  const r = recipe();
  assert.equal(r.status, 1);
  assert.match(r.stderr, /misses the target \(overall .* < 90\.0%.*\); the shipped model stays as it is/);
  assert.doesNotMatch(r.stderr, /llava data synth|random start/, "the data and the start are kept");
  for (const stage of ["vision", "stage1", "stage2"]) assert.equal(readMetrics(path.join(work, stage, "metrics.jsonl")).length, 3, `${stage} resumes at its last step`);
  assert.equal(fs.statSync(path.join(ship, "model.safetensors")).mtimeMs, before);
});
