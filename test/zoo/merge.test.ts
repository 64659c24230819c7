/**
 * `llava convert merge-lora` equals the unmerged LoRA model (f32, and bf16 stored as bf16), and
 * `llava convert extract-projector` gives a projector-only checkpoint that loads with --model-base.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { WeightStore, writeSafetensors, type TensorToWrite } from "../../src/io/safetensors.js";
import { seededRandom } from "../../src/util/random.js";
import { LlavaError } from "../../src/util/errors.js";
import { extractProjector } from "../../src/zoo/extract-projector.js";
import { mergeLora } from "../../src/zoo/merge-lora.js";
import { assertSameOutputs, dumpModel, randomOriginal, readAll, tempDir, TINY_TEXT } from "./helpers.js";
import { IMAGES } from "../helpers/paths.js";

const tmp = tempDir();
const IMAGE = path.join(IMAGES, "checker_300x500.png");
const R = 4;
const ALPHA = 8;
const TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
const isProjector = (n: string) => n.startsWith("model.mm_projector.");

/** A full model, its base LLM (no projector) and a LoRA checkpoint on that base. */
function setUp(name: string, dtype: "F32" | "BF16") {
  const full = path.join(tmp, `llava-${name}`);
  const { towerDir } = randomOriginal(full, { seed: 31, dtype });
  const config = JSON.parse(fs.readFileSync(path.join(full, "config.json"), "utf8"));
  const tensors = readAll(full);
  const copyTokenizer = (to: string) => {
    for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]) fs.copyFileSync(path.join(full, f), path.join(to, f));
  };
  const base = path.join(tmp, `vicuna-base-${name}`);
  fs.mkdirSync(base);
  copyTokenizer(base);
  writeSafetensors(path.join(base, "model.safetensors"), tensors.filter((t) => !isProjector(t.name)), { format: "pt" });
  fs.writeFileSync(path.join(base, "config.json"), JSON.stringify({ architectures: ["LlamaForCausalLM"], model_type: "llama", ...TINY_TEXT }));

  const random = seededRandom(5);
  const lora: TensorToWrite[] = [];
  for (const t of tensors) {
    const m = /^model\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.weight$/.exec(t.name);
    if (!m || !TARGETS.includes(m[2])) continue;
    const [out, inp] = t.shape;
    const stem = `base_model.model.${t.name.slice(0, -".weight".length)}`;
    lora.push(
      { name: `${stem}.lora_A.weight`, dtype: "F32", shape: [R, inp], data: Float32Array.from({ length: R * inp }, () => random() - 0.5) },
      { name: `${stem}.lora_B.default.weight`, dtype: "F32", shape: [out, R], data: Float32Array.from({ length: out * R }, () => random() - 0.5) },
    );
  }
  const loraDir = path.join(tmp, `llava-${name}-lora`);
  fs.mkdirSync(loraDir);
  fs.writeFileSync(path.join(loraDir, "config.json"), JSON.stringify(config));
  fs.writeFileSync(path.join(loraDir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: R, lora_alpha: ALPHA, target_modules: TARGETS, bias: "none" }));
  writeSafetensors(path.join(loraDir, "adapter_model.safetensors"), lora);
  writeSafetensors(path.join(loraDir, "non_lora_trainables.safetensors"),
    tensors.filter((t) => isProjector(t.name)).map((t) => ({ ...t, name: `base_model.model.${t.name}` })));
  return { full, base, loraDir, towerDir: towerDir! };
}

test("merge-lora writes a full checkpoint that equals the unmerged LoRA model", async () => {
  const { full, base, loraDir, towerDir } = setUp("f32", "F32");
  const merged = path.join(tmp, "merged-f32");
  const result = await mergeLora({ modelPath: loraDir, modelBase: base, out: merged });
  assert.match(result.notes.join("\n"), /into 14 Linear layers/);
  const unmerged = await dumpModel(loraDir, IMAGE, { modelBase: base, visionTower: towerDir });
  const mergedOut = await dumpModel(merged, IMAGE);
  assertSameOutputs(unmerged, mergedOut, 32000, 2e-4);
  // the adapter changed the model, and the merged folder is a complete original checkpoint
  const plain = await dumpModel(full, IMAGE);
  assert.ok(plain.logits.some((x, i) => Math.abs(x - mergedOut.logits[i]) > 1e-2));
  const store = WeightStore.open(merged);
  assert.deepEqual(store.names(), WeightStore.open(full).names());
  store.close();
  assert.ok(fs.existsSync(path.join(merged, "tokenizer.json")));
});

test("merge-lora keeps bf16 weights in bf16, rounding only the merged ones", async () => {
  const { base, loraDir, full } = setUp("bf16", "BF16");
  const merged = path.join(tmp, "merged-bf16");
  await mergeLora({ modelPath: loraDir, modelBase: base, out: merged });
  const store = WeightStore.open(merged);
  const source = WeightStore.open(full);
  const adapter = WeightStore.open(path.join(loraDir, "adapter_model.safetensors"));
  try {
    let changed = 0;
    for (const n of store.names()) {
      assert.equal(store.info(n).dtype, "BF16", n);
      if (!/_proj\.weight$/.test(n)) {
        assert.ok(Buffer.from(store.readRaw(n).bytes).equals(Buffer.from(source.readRaw(n).bytes)), `${n} copied as stored`);
        continue;
      }
      // W + (alpha / r) B A in f64, against the stored bf16 value: within half a bf16 step (plus f32 slack)
      const stem = `base_model.model.${n.slice(0, -".weight".length)}`;
      const [out, inp] = store.info(n).shape;
      const w = source.readF32(n);
      const a = adapter.readF32(`${stem}.lora_A.weight`);
      const b = adapter.readF32(`${stem}.lora_B.default.weight`);
      const got = store.readF32(n);
      for (let i = 0; i < out; i++) {
        for (let j = 0; j < inp; j++) {
          let s = 0;
          for (let k = 0; k < R; k++) s += b[i * R + k] * a[k * inp + j];
          const want = w[i * inp + j] + (ALPHA / R) * s;
          const step = 2 ** (Math.floor(Math.log2(Math.abs(want) || 1e-30)) - 7);
          assert.ok(Math.abs(got[i * inp + j] - want) <= step / 2 + 1e-6 * Math.abs(want), `${n}[${i},${j}]: ${got[i * inp + j]} vs ${want}`);
        }
      }
      changed++;
    }
    assert.equal(changed, 14);
  } finally {
    store.close();
    source.close();
    adapter.close();
  }
});

test("merge-lora refuses adapters that do not fit the base", async () => {
  const { base, loraDir } = setUp("bad", "F32");
  fs.writeFileSync(path.join(loraDir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: R, lora_alpha: ALPHA, target_modules: ["q_proj"], bias: "none" }));
  await assert.rejects(mergeLora({ modelPath: loraDir, modelBase: base, out: path.join(tmp, "merged-bad") }),
    (e: Error) => e instanceof LlavaError && /does not match the base model/.test(e.message));
  assert.ok(!fs.existsSync(path.join(tmp, "merged-bad")));
  await assert.rejects(mergeLora({ modelPath: base, modelBase: base, out: path.join(tmp, "merged-bad") }), LlavaError);
});

test("extract-projector writes the projector tensors, which load as a projector-only checkpoint with --model-base", async () => {
  const { full, base, towerDir } = setUp("proj", "F32");
  const dir = path.join(tmp, "llava-projector");
  const result = await extractProjector({ modelPath: full, out: path.join(dir, "mm_projector.safetensors") });
  assert.equal(result.tensors, 4);
  const store = WeightStore.open(path.join(dir, "mm_projector.safetensors"));
  assert.deepEqual(store.names(), ["model.mm_projector.0.bias", "model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.mm_projector.2.weight"]);
  store.close();
  fs.copyFileSync(path.join(full, "config.json"), path.join(dir, "config.json"));
  assertSameOutputs(await dumpModel(dir, IMAGE, { modelBase: base, visionTower: towerDir }), await dumpModel(full, IMAGE), 32000, 0);
  await assert.rejects(extractProjector({ modelPath: full, out: path.join(tmp, "mm_projector.bin") }),
    (e: Error) => e instanceof LlavaError && /\.bin files is not supported/.test(e.message));
  await assert.rejects(extractProjector({ modelPath: full, out: path.join(dir, "mm_projector.safetensors") }),
    (e: Error) => e instanceof LlavaError && /already exists/.test(e.message));
});
