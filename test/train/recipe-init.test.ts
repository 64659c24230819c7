import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { FIXTURE_LLAVA, FIXTURE_TOWER, writeFixtureProjector, writeTinyLlm } from "./recipe-fixtures.js";
import { freshProjector, initTrainingModel } from "../../src/train/init.js";
import { parseTrainOptions, type TrainOptions } from "../../src/train/options.js";
import { loadLlava } from "../../src/llava/load.js";
import { openWeights } from "../../src/io/weights.js";
import { writeSafetensors } from "../../src/io/safetensors.js";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "train-init-"));
after(() => fs.rmSync(work, { recursive: true, force: true }));
const llmDir = writeTinyLlm(path.join(work, "llm"));

function options(extra: string[]): TrainOptions {
  return parseTrainOptions(["--stage", "pretrain", "--model_name_or_path", llmDir, "--vision_tower", FIXTURE_TOWER, "--data_path", "d.json", "--output_dir", "o", ...extra]);
}

const params = (named: Array<[string, { data: Float32Array }]>) => new Map(named.map(([n, t]) => [n, t.data]));

test("stage 1 from an LLM folder + a CLIP tower: a fresh projector, torch's nn.Linear init from the seed", async () => {
  const { loaded, sourceDir } = await initTrainingModel(options(["--seed", "3"]));
  const config = loaded.spec.config;
  assert.equal(sourceDir, llmDir);
  assert.equal(loaded.dir, llmDir);
  const got = params(loaded.model.namedParameters());
  // the LLM and the tower are the fixture's
  const fixture = await loadLlava(FIXTURE_LLAVA, { visionTower: FIXTURE_TOWER });
  for (const [name, t] of fixture.model.namedParameters()) {
    if (!name.includes("mm_projector")) assert.deepEqual(got.get(name), t.data, name);
  }
  // mlp2x_gelu: Linear(48 -> 32), GELU, Linear(32 -> 32), each uniform in ±1/sqrt(fan_in)
  const shapes = new Map(loaded.model.projector.namedParameters("model.mm_projector").map(([n, t]) => [n, t.shape]));
  assert.deepEqual([...shapes], [["model.mm_projector.0.weight", [32, 48]], ["model.mm_projector.0.bias", [32]], ["model.mm_projector.2.weight", [32, 32]], ["model.mm_projector.2.bias", [32]]]);
  for (const [name, fanIn] of [["model.mm_projector.0.weight", 48], ["model.mm_projector.0.bias", 48], ["model.mm_projector.2.weight", 32], ["model.mm_projector.2.bias", 32]] as const) {
    const data = got.get(name)!;
    const bound = 1 / Math.sqrt(fanIn);
    assert.ok(data.every((x) => Math.abs(x) <= bound), name);
    assert.ok(Math.max(...data.map(Math.abs)) > 0.8 * bound, `${name} fills its range`);
  }
  for (const t of freshProjector("mlp2x_gelu", 48, 32, 3)) assert.deepEqual(got.get(t.name), t.data, "drawn from the seed");
  assert.notDeepEqual(freshProjector("mlp2x_gelu", 48, 32, 4)[0].data, got.get("model.mm_projector.0.weight"));
  // the config a saved model gets is a LLaVA config (spec 6.5 keys)
  assert.deepEqual(
    { arch: config.architectures, tower: config.mm_vision_tower, mm: config.mm_hidden_size, type: config.mm_projector_type, layer: config.mm_vision_select_layer, tune: config.tune_mm_mlp_adapter, aspect: config.image_aspect_ratio, max: config.tokenizer_model_max_length, use: config.use_mm_proj, hidden: config.hidden_size },
    { arch: ["LlavaLlamaForCausalLM"], tower: FIXTURE_TOWER, mm: 48, type: "mlp2x_gelu", layer: -2, tune: true, aspect: "square", max: 2048, use: true, hidden: 32 },
  );
  assert.equal(loaded.model.settings.imageTokenId, -200);
  assert.equal(loaded.tokenizer.encode("hello", { addSpecialTokens: true })[0], 1);
});

test("a stage-1 projector file (--pretrain-mm-mlp-adapter) rebuilds the fixture's model exactly", async () => {
  const file = path.join(work, "mm_projector.safetensors");
  const projector = writeFixtureProjector(file);
  const { loaded } = await initTrainingModel(options(["--pretrain_mm_mlp_adapter", file]));
  const got = params(loaded.model.namedParameters());
  for (const [name, data] of projector) assert.deepEqual(got.get(name), data, name);
  const fixture = await loadLlava(FIXTURE_LLAVA, { visionTower: FIXTURE_TOWER });
  assert.deepEqual(loaded.model.settings, { ...fixture.model.settings, imageAspectMode: "square" });
});

test("a LLaVA checkpoint starts as it is", async () => {
  const finetune = (extra: string[]) => parseTrainOptions(["--stage", "finetune", "--model_name_or_path", FIXTURE_LLAVA, "--vision_tower", FIXTURE_TOWER, "--data_path", "d", "--output_dir", "o", ...extra]);
  const { loaded } = await initTrainingModel(finetune([]));
  assert.equal(loaded.format, "original");
  assert.equal(loaded.model.settings.imageAspectMode, "pad");
  await assert.rejects(initTrainingModel(finetune(["--image_aspect_ratio", "square"])), /the checkpoint's image_aspect_ratio is pad; pass --image-aspect-ratio pad/);
  const reader = openWeights(FIXTURE_LLAVA);
  try {
    assert.deepEqual(params(loaded.model.namedParameters()).get("model.mm_projector.2.bias"), reader.readF32("model.mm_projector.2.bias"));
  } finally {
    reader.close();
  }
});

test("bad starts: one clear line each", async () => {
  await assert.rejects(initTrainingModel({ ...options([]), vision_tower: null }), /--vision-tower is required: .* is an LLM without one/);
  await assert.rejects(initTrainingModel({ ...options([]), vision_tower: path.join(work, "nowhere") }), /--vision-tower .*nowhere: no CLIP model folder/);
  await assert.rejects(initTrainingModel({ ...options([]), model_name_or_path: path.join(work, "nowhere") }), /does not exist or is not a folder/);
  await assert.rejects(initTrainingModel(options(["--pretrain_mm_mlp_adapter", path.join(work, "none.bin")])), /--pretrain-mm-mlp-adapter .*none\.bin does not exist/);
  const file = path.join(work, "mm_projector_linear.safetensors");
  writeFixtureProjector(file);
  await assert.rejects(initTrainingModel(options(["--pretrain_mm_mlp_adapter", file, "--mm_projector_type", "mlp3x_gelu"])), /no tensor for model\.mm_projector\.4\.weight/);
  await assert.rejects(initTrainingModel(options(["--pretrain_mm_mlp_adapter", file, "--mm_projector_type", "linear"])), /no tensor for model\.mm_projector\.weight/);
  const wrong = path.join(work, "mm_projector_wrong.safetensors");
  writeSafetensors(wrong, freshProjector("mlp2x_gelu", 16, 32, 1));
  await assert.rejects(initTrainingModel(options(["--pretrain_mm_mlp_adapter", wrong])), /mm_projector\.0\.weight has shape \[32,16\], the model\.mm_projector\.0\.weight being built needs \[32,48\]/);
  await assert.rejects(initTrainingModel({ ...options([]), image_aspect_ratio: "anyres" }), /anyres needs a LLaVA checkpoint/);
  await assert.rejects(initTrainingModel(parseTrainOptions(["--stage", "finetune", "--model_name_or_path", FIXTURE_LLAVA, "--vision_tower", FIXTURE_TOWER, "--data_path", "d", "--output_dir", "o", "--pretrain_mm_mlp_adapter", file])), /is a LLaVA checkpoint with its own projector/);
  await assert.rejects(initTrainingModel({ ...options([]), model_name_or_path: FIXTURE_TOWER }), /neither a LLaVA checkpoint nor a LLaMA-family LLM \(model_type "clip_vision_model"\)/);
  // a stage-1 output is a projector over its LLM, not a model to start from
  const stage1 = path.join(work, "stage1");
  fs.mkdirSync(stage1);
  fs.copyFileSync(path.join(FIXTURE_LLAVA, "config.json"), path.join(stage1, "config.json"));
  writeFixtureProjector(path.join(stage1, "mm_projector.safetensors"));
  await assert.rejects(initTrainingModel({ ...options([]), model_name_or_path: stage1 }), /is a stage-1 output \(a projector alone\): pass its LLM as --model-name-or-path and its mm_projector file as --pretrain-mm-mlp-adapter/);
});
