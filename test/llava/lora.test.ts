/**
 * --model-base: an unmerged LoRA checkpoint on its base LLM equals its merged form, a
 * projector-only checkpoint on its base equals the full model, and mismatches fail clearly.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { dumpTrace } from "../helpers/dump.js";
import { npyToNumbers, readNpy } from "../../src/io/npy.js";
import { WeightStore, writeSafetensors, type TensorToWrite } from "../../src/io/safetensors.js";
import { seededRandom } from "../../src/util/random.js";
import { loadLlava } from "../../src/llava/load.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { LlavaError } from "../../src/util/errors.js";
import { IMAGES, MODELS } from "../helpers/paths.js";
import { OrderedDict, tensor, torchSaveZip } from "../io/torch-save.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-lora-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

const R = 4;
const ALPHA = 8;
const TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

const full = path.join(tmp, "llava-full");
const { towerDir } = writeRandomLlava(full, {
  format: "original", seed: 31, tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-orig"),
  text: { hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 32000 },
  vision: { hidden_size: 24, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, image_size: 28, patch_size: 14 },
});
const fullConfig = JSON.parse(fs.readFileSync(path.join(full, "config.json"), "utf8"));
const store = WeightStore.open(full);
const tensors: TensorToWrite[] = store.names().map((name) => ({ name, dtype: "F32", shape: store.info(name).shape, data: store.readF32(name) }));
store.close();
const isProjector = (n: string) => n.startsWith("model.mm_projector.");

function copyTokenizer(to: string) {
  for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]) fs.copyFileSync(path.join(full, f), path.join(to, f));
}

// the base LLM: a plain LlamaForCausalLM folder without the projector
const base = path.join(tmp, "vicuna-base");
fs.mkdirSync(base);
copyTokenizer(base);
writeSafetensors(path.join(base, "model.safetensors"), tensors.filter((t) => !isProjector(t.name)), { format: "pt" });
fs.writeFileSync(path.join(base, "config.json"), JSON.stringify({ architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, vocab_size: 32000 }));

// random LoRA factors for every targeted layer
const random = seededRandom(5);
const lora: TensorToWrite[] = [];
const merged = tensors.map((t) => ({ ...t, data: new Float32Array(t.data as Float32Array) }));
for (const t of merged) {
  const m = /^model\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.weight$/.exec(t.name);
  if (!m || !TARGETS.includes(m[2])) continue;
  const [out, inp] = t.shape;
  const a = Float32Array.from({ length: R * inp }, () => random() - 0.5);
  const b = Float32Array.from({ length: out * R }, () => random() - 0.5);
  const stem = `base_model.model.${t.name.slice(0, -".weight".length)}`;
  lora.push({ name: `${stem}.lora_A.weight`, dtype: "F32", shape: [R, inp], data: a }, { name: `${stem}.lora_B.weight`, dtype: "F32", shape: [out, R], data: b });
  const w = t.data;
  for (let i = 0; i < out; i++) for (let j = 0; j < inp; j++) for (let k = 0; k < R; k++) w[i * inp + j] += (ALPHA / R) * b[i * R + k] * a[k * inp + j];
}

/** Writes tensors as safetensors, or as a torch.save .bin file as the reference's training saves them. */
function save(file: string, ts: TensorToWrite[]) {
  if (file.endsWith(".safetensors")) return writeSafetensors(file, ts);
  fs.writeFileSync(file, torchSaveZip(new OrderedDict(ts.map((t) => [t.name, tensor("F32", Array.from(t.data as Float32Array), t.shape)]))));
}

function loraDir(name: string, adapter = lora, extra?: (dir: string) => void, ext = ".safetensors") {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(fullConfig));
  fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify({ peft_type: "LORA", r: R, lora_alpha: ALPHA, target_modules: TARGETS, bias: "none", lora_dropout: 0.05 }));
  save(path.join(dir, `adapter_model${ext}`), adapter);
  save(path.join(dir, `non_lora_trainables${ext}`), tensors.filter((t) => isProjector(t.name)).map((t) => ({ ...t, name: `base_model.model.${t.name}` })));
  extra?.(dir);
  return dir;
}

async function logits(modelPath: string, modelBase?: string): Promise<{ all: number[]; ids: number[] }> {
  const out = path.join(tmp, `dump-${path.basename(modelPath)}-${Math.floor(random() * 1e9)}`);
  const loaded = await loadLlava(modelPath, { modelBase, visionTower: towerDir! });
  await dumpTrace(loaded, { images: [path.join(IMAGES, "checker_300x500.png")], query: "What is it?", convMode: "llava_v1", maxNewTokens: 5, out });
  return { all: npyToNumbers(readNpy(path.join(out, "logits_all.npy"))), ids: npyToNumbers(readNpy(path.join(out, "generated_ids.npy"))) };
}

function assertClose(a: number[], b: number[], tol: number) {
  assert.equal(a.length, b.length);
  let worst = 0;
  a.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - b[i]))));
  assert.ok(worst < tol, `max difference ${worst}`);
}

test("an unmerged LoRA checkpoint on its base equals the merged model", async () => {
  const mergedDir = path.join(tmp, "llava-merged");
  fs.mkdirSync(mergedDir);
  copyTokenizer(mergedDir);
  fs.writeFileSync(path.join(mergedDir, "config.json"), JSON.stringify(fullConfig));
  writeSafetensors(path.join(mergedDir, "model.safetensors"), merged, { format: "pt" });
  const unmerged = await logits(loraDir("llava-lora"), base);
  const reference = await logits(mergedDir);
  assertClose(unmerged.all, reference.all, 2e-4);
  assert.deepEqual(unmerged.ids, reference.ids);
  // the same adapter saved as the reference saves it: adapter_model.bin + non_lora_trainables.bin
  const fromBin = await logits(loraDir("llava-lora-bin", lora, undefined, ".bin"), base);
  assert.deepEqual(fromBin.all, unmerged.all);
  // and the adapter really changes the model
  const plain = await logits(full);
  assert.ok(plain.all.some((x, i) => Math.abs(x - reference.all[i]) > 1e-2));
});

test("a projector-only checkpoint on its base equals the full model", async () => {
  const dir = path.join(tmp, "llava-projector");
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(fullConfig));
  writeSafetensors(path.join(dir, "mm_projector.safetensors"), tensors.filter((t) => isProjector(t.name)));
  const got = await logits(dir, base);
  const want = await logits(full);
  assert.deepEqual(got.all, want.all);
});

test("--model-base mismatches fail with a clear message before generation", async () => {
  const both = loraDir("llava-both", lora, (d) => fs.writeFileSync(path.join(d, "mm_projector.safetensors"), fs.readFileSync(path.join(d, "non_lora_trainables.safetensors"))));
  await assert.rejects(loadLlava(both, { modelBase: base, visionTower: towerDir! }), (e: Error) => e instanceof LlavaError && /both a LoRA adapter/.test(e.message));
  await assert.rejects(loadLlava(full, { modelBase: base, visionTower: towerDir! }), (e: Error) => e instanceof LlavaError && /holds a full model/.test(e.message));
  const renamed = lora.map((t) => ({ ...t, name: t.name.replace("layers.1.", "layers.7.") }));
  await assert.rejects(loadLlava(loraDir("llava-lora-other", renamed), { modelBase: base, visionTower: towerDir! }),
    (e: Error) => e instanceof LlavaError && /no LoRA weights for targeted layer "model\.layers\.1\./.test(e.message));
  const extra = [...lora, { ...lora[0], name: lora[0].name.replace("layers.0.", "layers.9.") }];
  await assert.rejects(loadLlava(loraDir("llava-lora-extra", extra), { modelBase: base, visionTower: towerDir! }),
    (e: Error) => e instanceof LlavaError && /does not match the base model/.test(e.message));
  const wrongRank = lora.map((t) => (t.name.endsWith("lora_A.weight") ? { ...t, shape: [R / 2, t.shape[1] * 2] } : t));
  await assert.rejects(loadLlava(loraDir("llava-lora-rank", wrongRank), { modelBase: base, visionTower: towerDir! }),
    (e: Error) => e instanceof LlavaError && /lora_A\.weight" has shape/.test(e.message));
  await assert.rejects(loadLlava(loraDir("llava-lora-nobase"), { modelBase: path.join(tmp, "absent"), visionTower: towerDir! }),
    (e: Error) => e instanceof LlavaError && /--model-base/.test(e.message));
});
