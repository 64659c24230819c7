/**
 * A run of the recipe (LoRA fine-tuning with dropout, the modality-grouped sampler, text-only
 * samples mixed in, images read lazily) stopped after a checkpoint and continued with --resume
 * ends with the same files, byte for byte, as the run left alone.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { FIXTURE_TOWER, writeFixtureProjector, writeTinyLlm } from "./recipe-fixtures.js";
import { ROOT } from "../helpers/paths.js";
import { parseTrainOptions } from "../../src/train/options.js";
import { runTraining } from "../../src/train/recipe.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "recipe-resume-"));
after(() => fs.rmSync(work, { recursive: true, force: true }));

test("a LoRA run stopped after a checkpoint and resumed equals the run left alone", async () => {
  const llm = writeTinyLlm(path.join(work, "llm"));
  const projector = path.join(work, "mm_projector.safetensors");
  writeFixtureProjector(projector);
  const data = path.join(work, "shapes");
  const made = spawnSync(process.execPath, [path.join(ROOT, "examples", "make-training-data.mjs"), data, "8"], { encoding: "utf8" });
  assert.equal(made.status, 0, made.stderr);
  const options = (out: string, resume: boolean) => parseTrainOptions([
    "--stage", "finetune", "--lora-enable", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.3",
    "--model-name-or-path", llm, "--vision-tower", FIXTURE_TOWER, "--pretrain-mm-mlp-adapter", projector,
    "--data-path", path.join(data, "finetune.json"), "--image-folder", path.join(data, "images"), "--output-dir", out,
    "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "2", "--max-steps", "4", "--save-steps", "2", "--save-total-limit", "5",
    ...(resume ? ["--resume"] : []),
  ]);
  const quiet = { progress: null };
  const whole = path.join(work, "whole");
  await runTraining(options(whole, false), quiet);

  const broken = path.join(work, "broken");
  await assert.rejects(runTraining(options(broken, false), { ...quiet, onStep: (m) => { if (m.step === 3) throw new Error("killed at step 3"); } }), /killed at step 3/);
  assert.ok(fs.existsSync(path.join(broken, "checkpoint-2")) && !fs.existsSync(path.join(broken, "checkpoint-4")));
  const resumed = await runTraining(options(broken, true), quiet);
  assert.equal(resumed.resumedFrom, path.join(broken, "checkpoint-2"));

  for (const file of ["adapter_model.safetensors", "non_lora_trainables.bin", "adapter_config.json", "config.json", "checkpoint-4/adapter_model.safetensors"]) {
    assert.ok(fs.readFileSync(path.join(whole, file)).equals(fs.readFileSync(path.join(broken, file))), file);
  }
  const losses = (dir: string) => fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { loss: number }).loss);
  assert.deepEqual(losses(broken).slice(-2), losses(whole).slice(-2));
  // a resume with other settings is refused
  await assert.rejects(runTraining({ ...options(broken, true), lora_r: 8 }, quiet), /cannot resume from .*checkpoint-4: it was made with other settings/);
});
