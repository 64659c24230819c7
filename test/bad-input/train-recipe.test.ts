/** `llava train` refuses bad input with one line (usage errors exit 2), before loading what it does not need. */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { assertCleanError, llava } from "../helpers/cli.js";
import { FIXTURE_TOWER, writeTinyLlm } from "../train/recipe-fixtures.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "bad-train-"));
after(() => fs.rmSync(work, { recursive: true, force: true }));

function usageError(args: string[], mention: RegExp): void {
  const r = llava(["train", ...args]);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /^llava: train: /);
  assert.match(r.stderr, mention);
}

test("bad options and config files: exit 2, one line naming every bad option", () => {
  usageError(["--stage", "pretrain", "--seed", "x", "--max-grad-norm", "-1", "--mm-vision-select-feature", "cls"], /^(?=.*--seed must be a whole number \(got "x"\))(?=.*--max-grad-norm must be >= 0)(?=.*--mm-vision-select-feature must be one of patch, cls_patch)/);
  usageError(["--stage", "finetune", "--model_name_or_path", "m", "--data_path", "d", "--output_dir", "o", "--bits", "4"], /--bits 4 quantizes a frozen base: it needs --lora-enable/);
  usageError(["--stage", "pretrain", "--gradient_accumulation", "4"], /unknown option --gradient_accumulation; did you mean --gradient-accumulation-steps\?/);
  const yaml = path.join(work, "bad.yaml");
  fs.writeFileSync(yaml, "- a list\n- not options\n");
  assertCleanError(llava(["train", "--config", yaml]), /--config .*bad\.yaml: expected a mapping of option names to values/);
  fs.writeFileSync(yaml, "stage: pretrain\nlora_r: many\n");
  usageError(["--config", yaml], /--lora-r must be a whole number \(got "many"\)/);
});

test("a bad start, data file or output folder: one line, exit 1, no output left that looks complete", () => {
  const llm = writeTinyLlm(path.join(work, "llm"));
  const data = path.join(work, "data.json");
  fs.writeFileSync(data, JSON.stringify([{ id: "a", conversations: [{ from: "human", value: "Hi" }, { from: "gpt", value: "Hello." }] }]));
  const out = path.join(work, "out");
  const run = (...args: string[]) => llava(["train", "--stage", "pretrain", "--model-name-or-path", llm, "--vision-tower", FIXTURE_TOWER, "--data-path", data, "--output-dir", out, "--max-steps", "1", ...args]);
  assertCleanError(run("--vision-tower", path.join(work, "nowhere")), /--vision-tower .*nowhere: no CLIP model folder/);
  assertCleanError(run("--model-name-or-path", FIXTURE_TOWER), /neither a LLaVA checkpoint nor a LLaMA-family LLM/);
  assertCleanError(run("--data-path", path.join(work, "none.json")), /training data .*none\.json: file not found/);
  // stage 1 (plain) needs an image and two turns in every sample: nothing here is usable
  assertCleanError(run(), /1 of 1 samples have problems/);
  assertCleanError(run("--skip-bad-samples"), /none of its 1 samples is usable/);
  const file = path.join(work, "a-file");
  fs.writeFileSync(file, "");
  assertCleanError(run("--output-dir", file, "--stage", "finetune"), /cannot create the output folder .*a-file/);
  assert.ok(!fs.existsSync(path.join(out, "config.json")));
});
