/**
 * `llava convert to-hf` / `to-original`: original -> HF -> original keeps the model's outputs
 * (logits on the original vocabulary and greedy tokens) at every step, for the tiny fixture, for
 * random checkpoints (GQA, bf16, sharded) and for a LLaVA-1.6-style AnyRes checkpoint; the
 * fixture converts to exactly the weights of the HF fixture.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { WeightStore } from "../../src/io/safetensors.js";
import { loadLlava } from "../../src/llava/load.js";
import { LlavaTokenizer } from "../../src/tokenizer/tokenizer.js";
import { convertToHf } from "../../src/zoo/to-hf.js";
import { convertToOriginal } from "../../src/zoo/to-original.js";
import { compareCase } from "../helpers/compare.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";
import { assertSameOutputs, dumpModel, randomAnyresOriginal, randomOriginal, squareImage, tempDir, TINY_PINPOINTS_WH } from "./helpers.js";
import { dumpTrace } from "../helpers/dump.js";
import { npyToNumbers, readNpy } from "../../src/io/npy.js";
import { contiguousStride, OrderedDict, Storage, Tensor as TorchTensor, torchSaveZip } from "../io/torch-save.js";

const tmp = tempDir();
const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const MHA = path.join(MODELS, "tiny-llava-1.5-mha");
const TOWER = path.join(MODELS, "tiny-clip-vit-56");
const CHECKER = path.join(IMAGES, "checker_300x500.png");
const json = (file: string) => JSON.parse(fs.readFileSync(file, "utf8"));

/** Every tensor of `a` equals the tensor of `b` named `rename(name)`, byte for byte (embedding matrices on their first `rows` rows). */
function assertSameTensors(a: string, b: string, rename: (n: string) => string, rows: number) {
  const sa = WeightStore.open(a);
  const sb = WeightStore.open(b);
  try {
    for (const name of sa.names()) {
      const other = rename(name);
      assert.ok(sb.has(other), `${other} is missing`);
      const x = sa.readRaw(name);
      const y = sb.readRaw(other);
      assert.equal(y.dtype, x.dtype, `${name} dtype`);
      if (/embed_tokens|lm_head/.test(name)) {
        const n = rows * x.shape[1] * (x.dtype === "F32" ? 4 : 2);
        assert.ok(Buffer.from(x.bytes.subarray(0, n)).equals(Buffer.from(y.bytes.subarray(0, n))), `${name} rows`);
      } else {
        assert.deepEqual(y.shape, x.shape, name);
        assert.ok(Buffer.from(x.bytes).equals(Buffer.from(y.bytes)), `${name} bytes`);
      }
    }
  } finally {
    sa.close();
    sb.close();
  }
}

test("the tiny original fixture converts to the HF fixture's weights and back, with the same outputs", async () => {
  const hf = path.join(tmp, "fixture-hf");
  const back = path.join(tmp, "fixture-orig");
  const image = await squareImage(tmp);
  const result = await convertToHf({ modelPath: ORIG, visionTower: TOWER, out: hf });
  assert.equal(result.tensors, 80);

  // every tensor of the HF fixture, the same bytes (the embeddings on the 32000 original rows)
  const mha = WeightStore.open(MHA);
  const converted = WeightStore.open(hf);
  assert.deepEqual(converted.names(), mha.names());
  mha.close();
  converted.close();
  assertSameTensors(MHA, hf, (n) => n, 32000);
  const store = WeightStore.open(hf);
  assert.deepEqual(store.info("language_model.model.embed_tokens.weight").shape, [32064, 32]);
  const embed = store.readF32("language_model.model.embed_tokens.weight");
  let mean = 0;
  for (let r = 0; r < 32000; r++) mean += embed[r * 32 + 5];
  assert.ok(Math.abs(mean / 32000 - embed[32063 * 32 + 5]) < 1e-6, "new rows are the mean of the old ones");
  store.close();

  const config = json(path.join(hf, "config.json"));
  assert.equal(config.model_type, "llava");
  assert.equal(config.image_token_index, 32000);
  assert.equal(config.pad_token_id, 32001);
  assert.equal(config.text_config.vocab_size, 32064);
  assert.equal(config.vision_feature_layer, -2);
  assert.equal(config.vision_feature_select_strategy, "default");
  assert.deepEqual(config.vision_config, json(path.join(MHA, "config.json")).vision_config);
  assert.equal(json(path.join(hf, "preprocessor_config.json")).image_processor_type, "CLIPImageProcessor");
  assert.deepEqual(json(path.join(hf, "processor_config.json")), json(path.join(MHA, "processor_config.json")));
  const tokConfig = json(path.join(hf, "tokenizer_config.json"));
  assert.deepEqual(tokConfig.added_tokens_decoder["32000"], json(path.join(MHA, "tokenizer_config.json")).added_tokens_decoder["32000"]);
  assert.equal(tokConfig.added_tokens_decoder["32001"].content, "<pad>");
  assert.equal(tokConfig.pad_token, "<pad>");

  // the converted tokenizer tokenizes like the HF fixture's
  const tokenizer = LlavaTokenizer.load(hf);
  const prompt = "A chat. USER: <image>\nWhat is shown? ASSISTANT:";
  assert.deepEqual(tokenizer.encode(prompt), LlavaTokenizer.load(MHA).encode(prompt));
  assert.ok(tokenizer.encode(prompt).includes(32000));
  assert.deepEqual(tokenizer.encode("<pad>", { addSpecialTokens: false }), [32001]);

  // a square image looks the same padded (original) and center-cropped (HF)
  const original = await dumpModel(ORIG, image, { visionTower: TOWER });
  const converted1 = await dumpModel(hf, image);
  assert.equal(converted1.vocab, 32064);
  assertSameOutputs(original, converted1, 32000);

  // the HF model also reproduces the HF fixture's reference arrays (except the columns of the added tokens)
  const caseOut = path.join(tmp, "fixture-hf-case");
  await dumpTrace(await loadLlava(hf), { images: [path.join(IMAGES, "gradient_640x480.png")], query: "What is shown?", convMode: "llava_v1", maxNewTokens: 20, out: caseOut });
  const vocabSized = new Set(["logits_last", "logits_all_subset", "logits_all_logsumexp"]);
  const caseDir = path.join(CASES, "tiny-llava-1.5-mha", "gradient");
  assert.deepEqual(compareCase(caseDir, caseOut).filter((v) => !v.ok && !vocabSized.has(v.name)), []);
  const refLast = npyToNumbers(readNpy(path.join(caseDir, "logits_last.npy")));
  const last = npyToNumbers(readNpy(path.join(caseOut, "logits_last.npy")));
  for (let i = 0; i < 32000; i++) assert.ok(Math.abs(last[i] - refLast[i]) <= 1e-3 + 1e-4 * Math.abs(refLast[i]), `logit ${i}`);

  await convertToOriginal({ modelPath: hf, out: back });
  assertSameTensors(ORIG, back, (n) => n, 32000);
  assertSameTensors(TOWER, path.join(back, "vision_tower"), (n) => n, 0);
  assertSameTensors(TOWER, back, (n) => `model.vision_tower.vision_tower.${n}`, 0);
  const backConfig = json(path.join(back, "config.json"));
  const origConfig = json(path.join(ORIG, "config.json"));
  for (const key of ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size", "rope_theta", "rms_norm_eps",
    "max_position_embeddings", "mm_hidden_size", "mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature", "image_aspect_ratio",
    "tokenizer_model_max_length", "mm_use_im_start_end", "mm_use_im_patch_token"]) {
    assert.deepEqual(backConfig[key], origConfig[key], key);
  }
  assert.equal(backConfig.mm_vision_tower, "vision_tower");
  assert.equal(backConfig.unfreeze_mm_vision_tower, true);
  const backTok = json(path.join(back, "tokenizer_config.json"));
  assert.deepEqual(Object.keys(backTok.added_tokens_decoder), ["0", "1", "2"]);
  assert.deepEqual(json(path.join(back, "tokenizer.json")).added_tokens, json(path.join(ORIG, "tokenizer.json")).added_tokens);
  // the round trip runs like the source on any image (pad mode again), finding its tower inside the folder
  assertSameOutputs(await dumpModel(ORIG, CHECKER, { visionTower: TOWER }), await dumpModel(back, CHECKER), 32000, 0);
});

test("random checkpoints keep their outputs through both conversions: GQA, bf16 kept as stored, sharded output", async () => {
  const image = await squareImage(tmp);
  for (const [name, dtype] of [["f32", "F32"], ["bf16", "BF16"]] as const) {
    const src = path.join(tmp, `random-${name}`);
    randomOriginal(src, { seed: 7, dtype, visionSelectLayer: -1, visionSelectFeature: "cls_patch", imageAspectRatio: "square" });
    const hf = path.join(tmp, `random-${name}-hf`);
    const back = path.join(tmp, `random-${name}-orig`);
    const r = await convertToHf({ modelPath: src, out: hf, maxShardSize: "60KB" });
    assert.ok(r.files.some((f) => f === "model.safetensors.index.json"), `sharded: ${r.files.join(", ")}`);
    const config = json(path.join(hf, "config.json"));
    assert.equal(config.vision_feature_select_strategy, "full");
    assert.equal(config.vision_feature_layer, -1);
    assert.equal(config.image_seq_length, 5);
    const hfStore = WeightStore.open(hf);
    assert.ok(hfStore.names().every((n) => hfStore.info(n).dtype === dtype), "dtype kept");
    hfStore.close();
    // "square" mode center-crops like HF, so any image compares
    assertSameOutputs(await dumpModel(src, CHECKER), await dumpModel(hf, CHECKER), 32000);
    await convertToOriginal({ modelPath: hf, out: back });
    assertSameTensors(src, back, (n) => n, 32000);
    // the way back writes LLaVA-1.5's "pad" mode (HF keeps no aspect setting): same outputs on a square image
    assert.equal(json(path.join(back, "config.json")).image_aspect_ratio, "pad");
    assertSameOutputs(await dumpModel(src, image), await dumpModel(back, image), 32000, 0);
  }
});

test("a LLaVA-1.6-style AnyRes checkpoint becomes llava_next with (height, width) pinpoints and back", async () => {
  const src = path.join(tmp, "llava-v1.6-tiny");
  randomAnyresOriginal(src);
  const hf = path.join(tmp, "llava-v1.6-tiny-hf");
  const back = path.join(tmp, "llava-v1.6-tiny-orig");
  await convertToHf({ modelPath: src, out: hf });
  const config = json(path.join(hf, "config.json"));
  assert.equal(config.model_type, "llava_next");
  assert.deepEqual(config.architectures, ["LlavaNextForConditionalGeneration"]);
  assert.deepEqual(config.image_grid_pinpoints, TINY_PINPOINTS_WH.map(([w, h]) => [h, w]));
  assert.equal(config.use_image_newline_parameter, true);
  const processor = json(path.join(hf, "preprocessor_config.json"));
  assert.equal(processor.image_processor_type, "LlavaNextImageProcessor");
  assert.deepEqual(processor.image_grid_pinpoints, config.image_grid_pinpoints);
  assert.equal((await loadLlava(hf)).format, "hf-llava-next");

  for (const image of [CHECKER, path.join(IMAGES, "gradient_640x480.png")]) {
    const source = await dumpModel(src, image);
    assertSameOutputs(source, await dumpModel(hf, image), 32000);
  }
  await convertToOriginal({ modelPath: hf, out: back });
  const backConfig = json(path.join(back, "config.json"));
  assert.equal(backConfig.image_aspect_ratio, "anyres");
  assert.equal(backConfig.mm_patch_merge_type, "spatial_unpad");
  assert.deepEqual(backConfig.image_grid_pinpoints, TINY_PINPOINTS_WH);
  assertSameTensors(src, back, (n) => n, 32000);
  assertSameOutputs(await dumpModel(src, CHECKER), await dumpModel(back, CHECKER), 32000, 0);
});

/** Rewrites a folder's model.safetensors as the pytorch_model.bin torch.save would write. */
function toPytorchBin(dir: string) {
  const store = WeightStore.open(dir);
  const entries: [string, TorchTensor][] = store.names().map((name) => {
    const raw = store.readRaw(name);
    return [name, new TorchTensor(new Storage(raw.dtype as "F32", raw.bytes), 0, raw.shape, contiguousStride(raw.shape))];
  });
  store.close();
  fs.writeFileSync(path.join(dir, "pytorch_model.bin"), torchSaveZip(new OrderedDict(entries), { folder: "archive" }));
  fs.rmSync(path.join(dir, "model.safetensors"));
}

test("PyTorch .bin inputs (checkpoint and CLIP folder) convert to the same files as safetensors inputs", async () => {
  const src = path.join(tmp, "random-st");
  const { towerDir } = randomOriginal(src, { seed: 3 });
  const bin = path.join(tmp, "random-bin");
  fs.cpSync(src, bin, { recursive: true });
  const binTower = path.join(tmp, "random-bin-clip");
  fs.cpSync(towerDir!, binTower, { recursive: true });
  toPytorchBin(bin);
  toPytorchBin(binTower);
  await convertToHf({ modelPath: src, out: path.join(tmp, "random-st-hf") });
  await convertToHf({ modelPath: bin, visionTower: binTower, out: path.join(tmp, "random-bin-hf") });
  for (const f of ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"]) {
    assert.ok(fs.readFileSync(path.join(tmp, "random-st-hf", f)).equals(fs.readFileSync(path.join(tmp, "random-bin-hf", f))), f);
  }
});

test("an original checkpoint with only tokenizer.model gets a tokenizer.json with <image> and <pad> that tokenizes like llava-hf's", async () => {
  const src = path.join(tmp, "random-spm");
  randomOriginal(src, { seed: 4 });
  fs.rmSync(path.join(src, "tokenizer.json"));
  const hf = path.join(tmp, "random-spm-hf");
  await convertToHf({ modelPath: src, out: hf });
  const ours = LlavaTokenizer.load(hf);
  const reference = LlavaTokenizer.load(MHA);
  for (const text of ["USER: <image>\nWhat is in the picture? ASSISTANT:", "Grüße, 東京 <image> and  two  spaces</s>"]) {
    assert.deepEqual(ours.encode(text), reference.encode(text), text);
  }
  assert.deepEqual(ours.encode("<pad><image>", { addSpecialTokens: false }), [32001, 32000]);
});
