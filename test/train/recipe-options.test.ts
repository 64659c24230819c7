import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { parseTrainOptions } from "../../src/train/options.js";
import { referenceCommand, splitGlobalBatch } from "../../src/train/reference-command.js";
import { UsageError } from "../../src/util/errors.js";

const REQUIRED = ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", "out"];

test("dash and underscore names, HF booleans, --name=value", () => {
  const o = parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--learning-rate", "3e-4", "--lora_enable", "True", "--freeze-backbone", "--bf16", "False", "--lora-r=8", "--gradient_checkpointing", "false"]);
  assert.equal(o.learning_rate, 3e-4);
  assert.equal(o.lora_enable, true);
  assert.equal(o.freeze_backbone, true);
  assert.equal(o.lora_r, 8);
  assert.equal(o.gradient_checkpointing, false);
  assert.equal(o.model_name_or_path, "m");
});

test("--stage presets give the v1.5 scripts' settings, batch sizes excepted", () => {
  const pre = parseTrainOptions(["--stage", "pretrain", ...REQUIRED]);
  assert.deepEqual(
    [pre.version, pre.learning_rate, pre.tune_mm_mlp_adapter, pre.mm_vision_select_layer, pre.mm_projector_type, pre.lr_scheduler_type, pre.warmup_ratio, pre.num_train_epochs, pre.model_max_length, pre.gradient_checkpointing, pre.image_aspect_ratio, pre.group_by_modality_length, pre.save_steps],
    ["plain", 1e-3, true, -2, "mlp2x_gelu", "cosine", 0.03, 1, 2048, true, "square", false, 24000],
  );
  assert.deepEqual([pre.per_device_train_batch_size, pre.gradient_accumulation_steps], [1, 8]);
  const fin = parseTrainOptions(["--stage", "finetune", ...REQUIRED]);
  assert.deepEqual([fin.version, fin.learning_rate, fin.tune_mm_mlp_adapter, fin.image_aspect_ratio, fin.group_by_modality_length, fin.mm_projector_lr, fin.lora_r], ["v1", 2e-5, false, "pad", true, null, 64]);
  const lora = parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--lora-enable"]);
  assert.deepEqual([lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.learning_rate, lora.mm_projector_lr], [128, 256, 0.05, 2e-4, 2e-5]);
  // the command line wins over the preset
  assert.equal(parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--lora-enable", "--learning_rate", "1e-4"]).learning_rate, 1e-4);
  assert.equal(parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--version", "v0"]).version, "v0");
});

test("--config YAML and JSON: over the preset, under the command line", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "train-config-"));
  try {
    const yaml = path.join(dir, "run.yaml");
    fs.writeFileSync(yaml, "stage: finetune\nmodel-name-or-path: m\ndata_path: d.json\noutput_dir: out\nlora_enable: true\nlora_r: 16\nlearning_rate: 1.0e-4\nmm_projector_lr: None\n");
    const o = parseTrainOptions(["--config", yaml, "--lora_r", "4"]);
    assert.deepEqual([o.stage, o.lora_enable, o.lora_r, o.lora_alpha, o.learning_rate, o.mm_projector_lr], ["finetune", true, 4, 256, 1e-4, null]);
    const json = path.join(dir, "run.json");
    fs.writeFileSync(json, JSON.stringify({ stage: "pretrain", model_name_or_path: "m", data_path: "d", output_dir: "o", seed: 7, group_by_modality_length: "True" }));
    const j = parseTrainOptions(["--config", json]);
    assert.deepEqual([j.seed, j.group_by_modality_length, j.version], [7, true, "plain"]);
    fs.writeFileSync(json, JSON.stringify({ stage: "pretrain", learnig_rate: 1 }));
    assert.throws(() => parseTrainOptions(["--config", json]), /unknown option "learnig_rate" in .*run\.json; did you mean --learning-rate\?/);
    fs.writeFileSync(yaml, "stage: [pretrain\n");
    assert.throws(() => parseTrainOptions(["--config", yaml]), /not valid YAML/);
    assert.throws(() => parseTrainOptions(["--config", path.join(dir, "none.yaml")]), /--config .*none\.yaml: file not found/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("bad options: one message each, unknown ones with a suggestion", () => {
  assert.throws(() => parseTrainOptions(["--stage", "pretrain", ...REQUIRED, "--lerning-rate", "1"]), (e: Error) => e instanceof UsageError && /unknown option --lerning-rate; did you mean --learning-rate\?/.test(e.message));
  assert.throws(() => parseTrainOptions(["--stage", "pretrain", ...REQUIRED, "--zzz", "1"]), (e: Error) => /unknown option --zzz \(see llava train --help\)/.test(e.message));
  assert.throws(
    () => parseTrainOptions(["--stage", "pretrain", ...REQUIRED, "--learning-rate", "fast", "--lora-r", "2.5", "--bits", "3", "--warmup-ratio", "2", "--bf16", "maybe"]),
    (e: Error) => {
      for (const part of [/--learning-rate must be a number \(got "fast"\)/, /--lora-r must be a whole number/, /--bits must be one of 4, 8, 16/, /--warmup-ratio must be <= 1/]) assert.match(e.message, part);
      return e instanceof UsageError && !e.message.includes("\n");
    },
  );
  assert.throws(() => parseTrainOptions(["--stage", "x", ...REQUIRED]), /--stage must be one of pretrain, finetune, vision/);
  assert.throws(() => parseTrainOptions([]), /--stage pretrain\|finetune\|vision is required; --model-name-or-path is required; --data-path is required; --output-dir is required/);
  assert.throws(() => parseTrainOptions(["--stage", "pretrain", ...REQUIRED, "--lora_enable"]), /--lora-enable applies to --stage finetune/);
  assert.throws(() => parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--bits", "4"]), /--bits 4 quantizes a frozen base: it needs --lora-enable/);
  assert.throws(() => parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--version", "vicuna_v2"]), /--version vicuna_v2: no such template \(default, v0, v1, vicuna_v1/);
  assert.throws(() => parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--mm_projector_type", "mlp"]), /--mm-projector-type "mlp" is not linear/);
  assert.throws(() => parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--seed"]), /--seed needs a value/);
  assert.throws(() => parseTrainOptions(["--stage", "finetune", "stray"]), /unexpected argument "stray"/);
});

test("splitGlobalBatch: the largest per-GPU batch up to the reference's, the rest accumulated", () => {
  assert.deepEqual(splitGlobalBatch(256, 8, 32), { perDevice: 32, accumulation: 1 });
  assert.deepEqual(splitGlobalBatch(128, 4, 16), { perDevice: 16, accumulation: 2 });
  assert.deepEqual(splitGlobalBatch(24, 8, 16), { perDevice: 3, accumulation: 1 });
  assert.deepEqual(splitGlobalBatch(160, 2, 16), { perDevice: 16, accumulation: 5 });
  assert.throws(() => splitGlobalBatch(12, 8, 16), /global batch of 12 samples per step does not split over 8 GPUs/);
});

/** The arguments of a printed command line (after the script), as argv. */
function commandArgs(command: string): string[] {
  const lines = command.trim().split(" \\\n    ");
  assert.equal(lines[0], "deepspeed --num_gpus 8 llava/train/train_mem.py");
  return lines.slice(1).flatMap((l) => {
    const [name, ...rest] = l.split(" ");
    const value = rest.join(" ");
    return [name, value.startsWith("'") ? value.slice(1, -1).replaceAll("'\\''", "'") : value];
  });
}

test("the reference command: ZeRO by stage, global batch kept, same settings (parses back to the same options)", () => {
  const pre = parseTrainOptions(["--stage", "pretrain", "--model_name_or_path", "./checkpoints/vicuna-7b-v1.5", "--data_path", "./playground/data/blip_laion_cc_sbu_558k.json", "--output_dir", "out dir", "--vision_tower", "openai/clip-vit-large-patch14-336", "--image_folder", "./playground/data/LLaVA-Pretrain/images", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "64", "--print-reference-command"]);
  const cmd = referenceCommand(pre);
  for (const line of ["--deepspeed ./scripts/zero2.json", "--version plain", "--tune_mm_mlp_adapter True", "--mm_vision_select_layer -2", "--learning_rate 0.001", "--per_device_train_batch_size 32", "--gradient_accumulation_steps 1", "--bf16 True", "--tf32 True", "--report_to none", "--output_dir 'out dir'", "--mm_projector_type mlp2x_gelu", "--lr_scheduler_type cosine"]) {
    assert.ok(cmd.includes(` \\\n    ${line}`), `${line} in\n${cmd}`);
  }
  assert.doesNotMatch(cmd, /--stage|--resume|--gpus|--print_reference_command|wandb|unfreeze/);
  const back = parseTrainOptions(["--stage", "pretrain", ...commandArgs(cmd)]);
  assert.deepEqual({ ...back, per_device_train_batch_size: 4, gradient_accumulation_steps: 64, print_reference_command: true }, { ...pre, deepspeed: "./scripts/zero2.json", bf16: true, tf32: true, lazy_preprocess: true, dataloader_num_workers: 4, per_device_eval_batch_size: 4 });

  const lora = parseTrainOptions(["--stage", "finetune", ...REQUIRED, "--lora-enable", "--pretrain-mm-mlp-adapter", "p/mm_projector.bin", "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "64"]);
  const loraCmd = referenceCommand(lora);
  for (const line of ["--deepspeed ./scripts/zero3.json", "--lora_enable True", "--lora_r 128", "--lora_alpha 256", "--mm_projector_lr 0.00002", "--learning_rate 0.0002", "--version v1", "--image_aspect_ratio pad", "--group_by_modality_length True", "--per_device_train_batch_size 16", "--gradient_accumulation_steps 1", "--pretrain_mm_mlp_adapter p/mm_projector.bin"]) {
    assert.ok(loraCmd.includes(` \\\n    ${line}`), `${line} in\n${loraCmd}`);
  }
  assert.throws(() => referenceCommand({ ...lora, per_device_train_batch_size: 3, gradient_accumulation_steps: 1 }), /does not split over 8 GPUs/);
  assert.throws(() => referenceCommand({ ...lora, unfreeze_vision_tower: true }), /no equivalent in the reference's released trainer/);
});
