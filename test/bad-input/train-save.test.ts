/**
 * PEFT adapter folders without a config.json of their own (as PEFT saves them on llava-hf):
 * without --model-base, with a wrong one, or with unsupported contents, the CLI says what to do
 * in one line.
 */
import { test } from "node:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { writeSafetensors } from "../../src/io/safetensors.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-save-bad-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

const base = writeRandomLlava(path.join(tmp, "hf"), {
  format: "hf", tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
  text: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32064 },
  vision: { hidden_size: 24, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, image_size: 28, patch_size: 14 },
}).modelDir;

function adapter(name: string, config: Record<string, unknown>, tensors = true): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: 2, lora_alpha: 4, target_modules: ["q_proj"], base_model_name_or_path: "llava-hf/llava-1.5-7b-hf", ...config }));
  if (tensors) {
    writeSafetensors(path.join(dir, "adapter_model.safetensors"), [
      { name: "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight", dtype: "F32", shape: [2, 16], data: new Float32Array(32) },
      { name: "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_B.weight", dtype: "F32", shape: [16, 2], data: new Float32Array(32) },
    ]);
  }
  return dir;
}

const run = (modelPath: string, more: string[] = []) =>
  llava(["run", "--model-path", modelPath, ...more, "--image-file", path.join(IMAGES, "checker_300x500.png"), "--query", "hi", "--max-new-tokens", "1"]);

test("a PEFT adapter without config.json needs --model-base, and says which base it names", () => {
  assertCleanError(run(adapter("plain", {})), /a PEFT adapter without config\.json; pass the model it was trained on with --model-base \(it names "llava-hf\/llava-1\.5-7b-hf"\)/);
});

test("--model-base naming another adapter, DoRA, or a missing weight file fail clearly", () => {
  const ok = adapter("ok", {});
  assertCleanError(run(ok, ["--model-base", adapter("other", {})]), /--model-base .*other: a PEFT adapter, not a model/);
  assertCleanError(run(adapter("dora", { use_dora: true }), ["--model-base", base]), /DoRA adapters \(use_dora\) are not supported/);
  assertCleanError(run(adapter("empty", {}, false), ["--model-base", base]), /has adapter_config\.json but no adapter_model\.safetensors/);
  assertCleanError(llava(["convert", "merge-lora", "--model-path", ok, "--model-base", base, "--out", path.join(tmp, "merged")]), /a PEFT adapter without config\.json; merge-lora merges the reference's LoRA folders/);
});
