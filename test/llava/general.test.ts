/**
 * The model is right in general, not only on the fixture cases: random-weight checkpoints with
 * other shapes and settings go through `llava dump`, and the results are compared with an
 * independent float64 oracle (test/helpers/oracle.ts), itself checked against the fixtures.
 * Where a fixture case has the scenario's input (its image, question, prompt ids and pixels),
 * the oracle starts from the fixture's ids and pixels, not from what the project computed; only
 * inputs no fixture has (several images, a system prompt) start from the dump's.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import sharp from "sharp";
import { dumpTrace } from "../helpers/dump.js";
import { WeightStore, writeSafetensors } from "../../src/io/safetensors.js";
import { loadLlava } from "../../src/llava/load.js";
import { writeRandomLlava, type RandomLlavaSpec } from "../../src/llava/random-checkpoint.js";
import { seededRandom } from "../../src/util/random.js";
import { Oracle, type OracleConfig, type OracleNames } from "../helpers/oracle.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";
import { compareCase } from "../helpers/compare.js";
import { readNpyFile } from "../helpers/npy-reader.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-general-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

/** A noise image of the given size, written as PNG. */
async function noiseImage(name: string, width: number, height: number, seed: number): Promise<string> {
  const r = seededRandom(seed);
  const data = Buffer.alloc(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  const file = path.join(tmp, name);
  await sharp(data, { raw: { width, height, channels: 3 } }).png().toFile(file);
  return file;
}

const read = (dir: string, name: string) => Array.from(readNpyFile(path.join(dir, `${name}.npy`)).values);

function assertClose(name: string, got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number) {
  assert.equal(got.length, want.length, `${name}: length`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i] - want[i]);
    worst = Math.max(worst, err);
    assert.ok(err <= atol + rtol * Math.abs(want[i]), `${name}[${i}]: ${got[i]} vs oracle ${want[i]}`);
  }
  return worst;
}

interface Scenario {
  name: string;
  spec: Omit<RandomLlavaSpec, "tokenizerFrom">;
  /** a fixture case whose image, question, ids and pixels are the input, or noise images of these sizes */
  input: { fixtureCase: string } | { noise: Array<[number, number]>; system: string };
  oracle: Omit<OracleConfig, "text" | "vision"> & { text: OracleConfig["text"]; vision: OracleConfig["vision"] };
}

const scenarios: Scenario[] = [
  {
    name: "HF, grouped-query attention, rope_theta 5e5, eps 1e-6, defaults omitted, two images, system prompt",
    spec: {
      format: "hf", seed: 11,
      text: { hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, rope_theta: 500000, rms_norm_eps: 1e-6, vocab_size: 32001 },
      vision: { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 2, image_size: 28, patch_size: 14 },
    },
    input: { noise: [[100, 37], [20, 90]], system: "You describe images tersely." },
    oracle: {
      selectLayer: -2, keepCls: false, projectorDepth: 2,
      text: { hidden: 24, heads: 4, kvHeads: 2, headDim: 6, layers: 2, eps: 1e-6, theta: 500000, vocab: 32001 },
      vision: { hidden: 32, heads: 2, layers: 2, patch: 14, image: 28, eps: 1e-5, act: "quick_gelu" },
    },
  },
  {
    name: "original format, pad mode, mlp3x_gelu projector, cls_patch, last layer, gelu tower, multi-query attention",
    spec: {
      format: "original", seed: 12, projectorType: "mlp3x_gelu", imageAspectRatio: "pad", visionSelectLayer: -1, visionSelectFeature: "cls_patch",
      text: { hidden_size: 16, intermediate_size: 30, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 1, rope_theta: 1000, rms_norm_eps: 1e-5, vocab_size: 32000 },
      vision: { hidden_size: 24, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 3, image_size: 56, patch_size: 14, hidden_act: "gelu", layer_norm_eps: 1e-6 },
    },
    input: { fixtureCase: "tiny-llava-1.5-orig/gradient" },
    oracle: {
      selectLayer: -1, keepCls: true, projectorDepth: 3,
      text: { hidden: 16, heads: 4, kvHeads: 1, headDim: 4, layers: 3, eps: 1e-5, theta: 1000, vocab: 32000 },
      vision: { hidden: 24, heads: 3, layers: 2, patch: 14, image: 56, eps: 1e-6, act: "gelu" },
    },
  },
  {
    name: "HF, Mistral decoder with a sliding window shorter than the prompt",
    spec: {
      format: "hf", seed: 15,
      text: { model_type: "mistral", hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, sliding_window: 7, rope_theta: 1000000, vocab_size: 32001 },
      vision: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, image_size: 56, patch_size: 14 },
    },
    input: { fixtureCase: "tiny-llava-1.5-mha/gradient" },
    oracle: {
      selectLayer: -2, keepCls: false, projectorDepth: 2,
      text: { hidden: 16, heads: 4, kvHeads: 2, headDim: 4, layers: 2, eps: 1e-6, theta: 1000000, vocab: 32001, window: 7 },
      vision: { hidden: 16, heads: 2, layers: 1, patch: 14, image: 56, eps: 1e-5, act: "quick_gelu" },
    },
  },
  {
    name: "original format, square (center crop) mode, linear projector, positive select layer",
    spec: {
      format: "original", seed: 13, projectorType: "linear", imageAspectRatio: "square", visionSelectLayer: 1,
      text: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32000 },
      vision: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, image_size: 56, patch_size: 14 },
    },
    input: { fixtureCase: "tiny-llava-1.5-orig/gradient" },
    oracle: {
      selectLayer: 1, keepCls: false, projectorDepth: 1,
      text: { hidden: 16, heads: 2, kvHeads: 2, headDim: 8, layers: 1, eps: 1e-6, theta: 10000, vocab: 32000 },
      vision: { hidden: 16, heads: 2, layers: 2, patch: 14, image: 56, eps: 1e-5, act: "quick_gelu" },
    },
  },
  {
    name: "original format, identity projector (equal widths)",
    spec: {
      format: "original", seed: 14, projectorType: "identity", imageAspectRatio: "pad",
      text: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32000 },
      vision: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, image_size: 56, patch_size: 14 },
    },
    input: { fixtureCase: "tiny-llava-1.5-orig/gradient" },
    oracle: {
      selectLayer: -2, keepCls: false, projectorDepth: 0,
      text: { hidden: 16, heads: 2, kvHeads: 2, headDim: 8, layers: 1, eps: 1e-6, theta: 10000, vocab: 32000 },
      vision: { hidden: 16, heads: 2, layers: 2, patch: 14, image: 56, eps: 1e-5, act: "quick_gelu" },
    },
  },
];

/** What a scenario asks about, and the fixture case (if any) whose ids and pixels are the oracle's input. */
async function scenarioInput(sc: Scenario): Promise<{ images: string[]; query: string; system?: string; fixture: string | null }> {
  if ("noise" in sc.input) {
    const images = await Promise.all(sc.input.noise.map(([w, h], i) => noiseImage(`${sc.spec.seed}-${i}.png`, w, h, i + (sc.spec.seed ?? 0))));
    return { images, query: "Describe both.", system: sc.input.system, fixture: null };
  }
  const fixture = path.join(CASES, sc.input.fixtureCase);
  const meta = JSON.parse(fs.readFileSync(path.join(fixture, "meta.json"), "utf8")) as { images: string[]; question: string };
  return { images: meta.images.map((f) => path.join(IMAGES, f)), query: meta.question, fixture };
}

for (const sc of scenarios) {
  test(`matches the float64 oracle: ${sc.name}`, async () => {
    const dir = path.join(tmp, sc.spec.format + sc.spec.seed);
    const tokenizerFrom = path.join(MODELS, sc.spec.format === "hf" ? "tiny-llava-1.5-mha" : "tiny-llava-1.5-orig");
    const { towerDir } = writeRandomLlava(dir, { ...sc.spec, tokenizerFrom });
    const { fixture, ...input } = await scenarioInput(sc);
    const out = path.join(dir, "dump");
    const loaded = await loadLlava(dir);
    await dumpTrace(loaded, { ...input, convMode: "llava_v1", maxNewTokens: 4, out });

    const hf = sc.spec.format === "hf";
    const names: OracleNames = hf
      ? { vision: "vision_tower.vision_model.", projector: (i) => `multi_modal_projector.linear_${i + 1}.`, llm: "language_model.model.", head: "language_model.lm_head." }
      : { vision: "vision_model.", projector: (i) => (sc.spec.projectorType === "linear" ? "model.mm_projector." : `model.mm_projector.${2 * i}.`), llm: "model.", head: "lm_head." };
    const store = WeightStore.open(dir);
    const oracle = new Oracle(store, towerDir ? WeightStore.open(towerDir) : store, sc.oracle, names);
    // the oracle's input: the fixture's ids and pixels where it has them (the dump must agree), else the dump's
    const pixelsName = sc.spec.imageAspectRatio === "pad" ? "pixel_values_pad" : "pixel_values";
    const pixels = readNpyFile(path.join(fixture ?? out, `${pixelsName}.npy`));
    const ids = read(fixture ?? out, "input_ids");
    if (fixture) {
      assert.deepEqual(read(out, "input_ids"), ids, "the dump's prompt ids are the fixture's");
      assertClose(pixelsName, read(out, pixelsName), pixels.values, 2e-5, 0);
    }
    const per = pixels.shape.slice(1).reduce((a, b) => a * b, 1);
    const features = input.images.map((_, i) => oracle.imageFeatures(pixels.values.subarray(i * per, (i + 1) * per)));
    assertClose("projector_output", read(out, "projector_output"), features.flatMap((f) => f.flatMap((r) => Array.from(r))), 2e-4, 1e-4);

    const marker = hf ? 32000 : -200;
    assert.equal(ids.filter((i) => i === marker).length, input.images.length);
    if (input.system) assert.ok(fs.readFileSync(path.join(out, "prompt.txt"), "utf8").startsWith(input.system));
    const embeds = oracle.embed(ids, marker, features);
    const logits = oracle.logits(embeds);
    assertClose("logits_all", read(out, "logits_all"), logits.flatMap((r) => Array.from(r)), 1e-3, 1e-4);

    // greedy continuation through the KV cache equals full recomputation
    const generated = read(out, "generated_ids");
    const seq = [...embeds];
    const table = store.readF32(`${names.llm}embed_tokens.weight`);
    const d = sc.oracle.text.hidden;
    for (const token of generated) {
      const last = oracle.logits(seq, true)[0];
      let best = 0;
      for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
      assert.equal(token, best);
      seq.push(Float64Array.from(table.subarray(token * d, (token + 1) * d)));
    }
    store.close();
  });
}

test("the oracle itself reproduces the fixture logits", async () => {
  const store = WeightStore.open(path.join(MODELS, "tiny-llava-1.5-mha"));
  const oracle = new Oracle(store, store, {
    selectLayer: -2, keepCls: false, projectorDepth: 2,
    text: { hidden: 32, heads: 4, kvHeads: 4, headDim: 8, layers: 2, eps: 1e-5, theta: 10000, vocab: 32001 },
    vision: { hidden: 48, heads: 4, layers: 3, patch: 14, image: 56, eps: 1e-5, act: "quick_gelu" },
  }, { vision: "vision_tower.vision_model.", projector: (i) => `multi_modal_projector.linear_${i + 1}.`, llm: "language_model.model.", head: "language_model.lm_head." });
  const ref = path.join(CASES, "tiny-llava-1.5-mha", "gradient");
  const pixels = readNpyFile(path.join(ref, "pixel_values.npy")).values;
  const features = oracle.imageFeatures(pixels);
  const embeds = oracle.embed(read(ref, "input_ids"), 32000, [features]);
  const last = oracle.logits(embeds, true)[0];
  assertClose("logits_last", read(ref, "logits_last"), last, 1e-3, 1e-4);
  store.close();
  assert.ok(fs.existsSync(path.join(IMAGES, "gradient_640x480.png")));
});

test("the newer HF key layout (model.language_model.*) loads to the same outputs", async () => {
  const dir = path.join(tmp, "new-layout");
  fs.cpSync(path.join(MODELS, "tiny-llava-1.5-mha"), dir, { recursive: true });
  const old = WeightStore.open(path.join(dir, "model.safetensors"));
  const rename = (n: string) =>
    n.replace(/^language_model\.model\./, "model.language_model.").replace(/^language_model\.lm_head\./, "lm_head.")
      .replace(/^vision_tower\./, "model.vision_tower.").replace(/^multi_modal_projector\./, "model.multi_modal_projector.");
  const tensors = old.names().map((n) => ({ name: rename(n), dtype: "F32" as const, shape: old.info(n).shape, data: old.readF32(n) }));
  old.close();
  assert.ok(tensors.some((t) => t.name.startsWith("model.language_model.")));
  writeSafetensors(path.join(dir, "model.safetensors"), tensors, { format: "pt" });
  const out = path.join(dir, "dump");
  await dumpTrace(await loadLlava(dir), { images: [path.join(IMAGES, "gradient_640x480.png")], query: "What is shown?", convMode: "llava_v1", maxNewTokens: 20, out });
  assert.deepEqual(compareCase(path.join(CASES, "tiny-llava-1.5-mha", "gradient"), out).filter((v) => !v.ok), []);
});

test("bf16 and f16 checkpoints load (converted to f32 on load) and stay close to the f32 model", async () => {
  const logitsFor = async (dtype: "F32" | "BF16" | "F16") => {
    const spec: RandomLlavaSpec = {
      format: "hf", seed: 21, dtype, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
      text: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32001 },
      vision: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, image_size: 28, patch_size: 14 },
    };
    const dir = path.join(tmp, `half-${dtype}`);
    writeRandomLlava(dir, spec);
    const store = WeightStore.open(dir);
    assert.equal(store.info("language_model.model.norm.weight").dtype, dtype);
    store.close();
    const out = path.join(dir, "dump");
    await dumpTrace(await loadLlava(dir), { images: [], query: "Hi", convMode: "llava_v1", maxNewTokens: 2, out });
    return read(out, "logits_last");
  };
  const ref = await logitsFor("F32");
  const rms = (a: number[]) => Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length);
  for (const [dtype, bound] of [["F16", 0.005], ["BF16", 0.05]] as const) {
    const got = await logitsFor(dtype);
    const rel = rms(got.map((x, i) => x - ref[i])) / rms(ref);
    assert.ok(rel > 0 && rel < bound, `${dtype}: relative RMS difference ${rel}`);
  }
});

test("a checkpoint saved as pytorch_model.bin (torch.save zip) gives the fixture outputs", async () => {
  const { OrderedDict, tensor, torchSaveZip } = await import("../io/torch-save.js");
  const dir = path.join(tmp, "bin-model");
  fs.cpSync(path.join(MODELS, "tiny-llava-1.5-mha"), dir, { recursive: true });
  const st = WeightStore.open(path.join(dir, "model.safetensors"));
  const entries = st.names().map((n) => [n, tensor("F32", Array.from(st.readF32(n)), st.info(n).shape)] as [string, unknown]);
  st.close();
  fs.rmSync(path.join(dir, "model.safetensors"));
  fs.writeFileSync(path.join(dir, "pytorch_model.bin"), torchSaveZip(new OrderedDict(entries)));
  const out = path.join(dir, "dump");
  await dumpTrace(await loadLlava(dir), { images: [path.join(IMAGES, "gradient_640x480.png")], query: "What is shown?", convMode: "llava_v1", maxNewTokens: 20, out });
  assert.deepEqual(compareCase(path.join(CASES, "tiny-llava-1.5-mha", "gradient"), out).filter((v) => !v.ok), []);
});

test("a sharded checkpoint (model-0000N-of-0000M + index) loads like the single file", async () => {
  const spec: RandomLlavaSpec = {
    format: "hf", seed: 41, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
    text: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 32001 },
    vision: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, image_size: 28, patch_size: 14 },
  };
  const single = path.join(tmp, "single");
  const sharded = path.join(tmp, "sharded");
  writeRandomLlava(single, spec);
  writeRandomLlava(sharded, { ...spec, maxShardBytes: 20_000 });
  const shards = fs.readdirSync(sharded).filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
  assert.ok(shards.length >= 3, `${shards.length} shards`);
  const logits = async (dir: string) => {
    const out = path.join(dir, "dump");
    await dumpTrace(await loadLlava(dir), { images: [], query: "Hi", convMode: "llava_v1", maxNewTokens: 2, out });
    return read(out, "logits_last");
  };
  assert.deepEqual(await logits(sharded), await logits(single));
});

test("a 34B-style checkpoint: image token 64000, chatml_direct prompt, ids and splice follow the config", async () => {
  const dir = path.join(tmp, "llava-v1.6-34b-style");
  writeRandomLlava(dir, {
    format: "hf", seed: 51, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
    text: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 64001 },
    vision: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2, image_size: 28, patch_size: 14 },
  });
  // move <image> to id 64000 in the tokenizer and the config, as Nous-Hermes-2-Yi-34B has it
  const edit = (file: string, fn: (j: any) => void) => {
    const j = JSON.parse(fs.readFileSync(path.join(dir, file), "utf8"));
    fn(j);
    fs.writeFileSync(path.join(dir, file), JSON.stringify(j));
  };
  edit("tokenizer.json", (j) => (j.added_tokens.find((t: { content: string }) => t.content === "<image>").id = 64000));
  edit("tokenizer_config.json", (j) => {
    j.added_tokens_decoder["64000"] = j.added_tokens_decoder["32000"];
    delete j.added_tokens_decoder["32000"];
  });
  edit("config.json", (j) => (j.image_token_index = 64000));
  const out = path.join(dir, "dump");
  const loaded = await loadLlava(dir);
  await dumpTrace(loaded, { images: [await noiseImage("yi.png", 50, 30, 5)], query: "What is this?", convMode: "chatml_direct", maxNewTokens: 2, out });
  const prompt = fs.readFileSync(path.join(out, "prompt.txt"), "utf8");
  assert.equal(prompt, "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nWhat is this?<|im_end|><|im_start|>assistant\n");
  const ids = read(out, "input_ids");
  assert.equal(ids.filter((i) => i === 64000).length, 1);
  const expanded = read(out, "input_ids_expanded");
  assert.equal(expanded.filter((i) => i === 64000).length, 4);
  assert.equal(read(out, "inputs_embeds").length, expanded.length * 16);
  assert.equal(read(out, "logits_last").length, 64001);
});
