// Template selection from a model name (cli.py / run_llava.py and gradio_web_server.py) and
// get_model_name_from_path (mm_utils.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import {
  cliDisplayRoles,
  convModeForModelName,
  convTemplates,
  getConvTemplate,
  modelNameFromPath,
  webConvModeForModelName,
  webConvModeReferenceName,
} from "../../src/llava/conversation.js";
import { LlavaError } from "../../src/util/errors.js";
import { MODELS } from "../helpers/paths.js";

test("cli / run_llava template choice (lower-cased, first match wins)", () => {
  const cases: [string, string][] = [
    ["llava-v1.5-7b", "llava_v1"],
    ["llava-v1.5-13b-lora", "llava_v1"],
    ["llava-v1.6-vicuna-13b", "llava_v1"],
    ["llava-v1.6-mistral-7b", "mistral_instruct"],
    ["LLaVA-v1.6-Mistral-7B", "mistral_instruct"],
    ["llava-v1.6-34b", "chatml_direct"],
    ["llava-llama-2-13b-chat-lightning-preview", "llava_llama_2"],
    ["Llava-Llama-2-7B-v1", "llava_llama_2"],
    ["LLaVA-Lightning-MPT-7B-preview", "mpt"],
    ["LLaVA-7b-delta-v0", "llava_v0"],
    // The fixture models' names contain no "v1": the cli would pick llava_v0 for them.
    ["tiny-llava-1.5-mha", "llava_v0"],
    ["", "llava_v0"],
  ];
  for (const [name, mode] of cases) assert.equal(convModeForModelName(name), mode, name);
});

test("gradio web server template choice, as the reference spells it", () => {
  const cases: [string, string][] = [
    ["llava-v1.5-13b", "llava_v1"],
    ["llava-v1.6-mistral-7b", "mistral_instruct"],
    ["llava-v1.6-Mixtral-8x7b", "mistral_instruct"],
    ["llava-hermes-mistral-7b", "chatml_direct"],
    ["llava-mistral-orca-7b", "mistral_orca"],
    ["llava-v1.6-34b", "chatml_direct"],
    ["llava-llama-2-13b-chat", "llava_llama_2"],
    ["llava-v1-mmtag", "v1_mmtag"],
    ["llava-v1.5-7b-pretrain-plain", "v1_mmtag"],
    ["llava-v1.5-7b-plain-finetune", "llava_v1"],
    ["LLaVA-Lightning-MPT-7B-preview", "mpt"],
    ["llava-13b-mmtag", "v0_mmtag"],
    ["llava-7b-plain", "v0_mmtag"],
    ["llava-7b", "llava_v0"],
    // Outside the llava branch the reference tests "mpt" and "llama-2" case-sensitively.
    ["mpt-7b-chat", "mpt_text"],
    ["MPT-7B-chat", "vicuna_v1"],
    ["llama-2-7b-chat", "llama_2"],
    ["Llama-2-7b-chat", "vicuna_v1"],
    ["vicuna-13b-v1.5", "vicuna_v1"],
  ];
  for (const [name, mode] of cases) assert.equal(webConvModeReferenceName(name), mode, name);
});

test("web choice replaces the reference's nonexistent keys and always names a real template", () => {
  assert.equal(webConvModeForModelName("llava-mistral-orca-7b"), "chatml_direct");
  assert.equal(webConvModeForModelName("mpt-7b-chat"), "mpt");
  assert.equal(webConvModeForModelName("llava-v1.5-13b"), "llava_v1");
  const names = ["llava-mistral-orca", "mpt-7b", "llava-7b", "x", "llava-v1.6-34b", "llama-2-chat", "llava-v1-plain"];
  for (const name of names) {
    assert.ok(Object.hasOwn(convTemplates, webConvModeForModelName(name)), name);
    assert.ok(Object.hasOwn(convTemplates, convModeForModelName(name)), name);
  }
});

test("cli display roles: user/assistant for MPT names, else the template roles", () => {
  assert.deepEqual(cliDisplayRoles(getConvTemplate("mpt"), "LLaVA-Lightning-MPT-7B"), ["user", "assistant"]);
  assert.deepEqual(cliDisplayRoles(getConvTemplate("llava_v1"), "llava-v1.5-7b"), ["USER", "ASSISTANT"]);
});

test("modelNameFromPath follows get_model_name_from_path", () => {
  assert.equal(modelNameFromPath("liuhaotian/llava-v1.5-7b"), "llava-v1.5-7b");
  assert.equal(modelNameFromPath("llava-v1.5-7b"), "llava-v1.5-7b");
  assert.equal(modelNameFromPath("/models/llava-v1.5-7b/"), "llava-v1.5-7b");
  assert.equal(modelNameFromPath("//models//llava-v1.5-7b//"), "llava-v1.5-7b");
  assert.equal(
    modelNameFromPath("./checkpoints/llava-v1.5-13b-lora/checkpoint-5000"),
    "llava-v1.5-13b-lora_checkpoint-5000",
  );
  assert.equal(modelNameFromPath("checkpoints/run/checkpoint-100/"), "run_checkpoint-100");
  assert.equal(modelNameFromPath("a//checkpoint-1"), "_checkpoint-1");
  assert.equal(modelNameFromPath(path.join(MODELS, "tiny-llava-1.5-mha")), "tiny-llava-1.5-mha");
  assert.throws(() => modelNameFromPath("checkpoint-100"), LlavaError);
  assert.throws(() => modelNameFromPath("/checkpoint-100/"), LlavaError);
});
