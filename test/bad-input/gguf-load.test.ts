/** A GGUF pair that cannot be a LLaVA model fails with one clear line before any weight is read. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { loadLlava } from "../../src/llava/load.js";
import { ggufConvMode } from "../../src/llava/gguf-load.js";
import { LlavaError } from "../../src/util/errors.js";
import { MODELS } from "../helpers/paths.js";
import { kv } from "../io/gguf-build.js";
import { tempDir } from "../helpers/tmp.js";
import { writeGgufPair, type PairOptions } from "../llava/gguf-pair.js";

const dir = tempDir("llava-gguf-bad-load-");
const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const CLIP = path.join(MODELS, "tiny-clip-vit-56");
let n = 0;
const pair = (opts: Partial<PairOptions> = {}, model = ORIG) => writeGgufPair(model, path.join(dir, `p${n++}`), { type: "F32", visionTower: CLIP, ...opts });

async function expectLoadError(modelPath: string, mmproj: string | undefined, pattern: RegExp): Promise<void> {
  await assert.rejects(loadLlava(modelPath, { mmproj, warn: () => {} }), (e: Error) => {
    assert.ok(e instanceof LlavaError, `not a LlavaError: ${e.stack}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes("\n"), `one line: ${e.message}`);
    return true;
  });
}

test("an mmproj that does not fit the LLM's hidden size", async () => {
  const llm = pair();
  const next = pair({}, path.join(MODELS, "tiny-llava-next"));
  await expectLoadError(llm.model, next.mmproj, /does not fit the language model: its projector gives 16 features but the language model's hidden size is 32/);
});

test("a language model of another architecture; the two files swapped; the wrong tokenizer", async () => {
  const p = pair({ llmKv: [kv("general.architecture", "gpt2")] });
  await expectLoadError(p.model, p.mmproj, /architecture "gpt2" is not a LLaMA-family language model \(supported: llama\)/);
  const good = pair();
  await expectLoadError(good.mmproj, good.model, /is a vision \(mmproj\) file; pass the language model with --model-path and this file with --mmproj/);
  const tok = pair({ llmKv: [kv("tokenizer.ggml.model", "bert")] });
  await expectLoadError(tok.model, tok.mmproj, /tokenizer model "bert" is not supported/);
});

test("a vision file without a LLaVA projector, or with a projector type not supported", async () => {
  const p = pair({ visionKv: [kv("clip.projector_type", "ldp")] });
  await expectLoadError(p.model, p.mmproj, /projector type "ldp" is not supported \(only "mlp"/);
  const q = pair({ drop: ["mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"] });
  await expectLoadError(q.model, q.mmproj, /has no projector tensors/);
});

test("a missing tensor or a missing hyperparameter is named", async () => {
  const p = pair({ drop: ["blk.1.attn_k.weight"] });
  await expectLoadError(p.model, p.mmproj, /missing tensor "blk\.1\.attn_k\.weight"/);
  const q = pair({ llmKv: [kv("llama.block_count", "two")] });
  await expectLoadError(q.model, q.mmproj, /metadata "llama.block_count" should be a number/);
});

test("a weight type this project cannot load is named, with the supported list", async () => {
  const p = pair();
  const bytes = fs.readFileSync(p.model);
  // retype output_norm.weight (32 f32 values, 128 bytes) as IQ4_NL, a type of 32-weight blocks of 18 bytes the loader lacks
  const at = bytes.indexOf(Buffer.from("output_norm.weight")) + "output_norm.weight".length + 4 + 8;
  bytes.writeUInt32LE(20, at);
  fs.writeFileSync(p.model, bytes);
  await expectLoadError(p.model, p.mmproj, /tensor "output_norm.weight" is of type IQ4_NL, which this project cannot load \(supported: F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16\)/);
});

test("finding the pair: --mmproj required when none is beside the model, refused for a checkpoint folder", async () => {
  const p = pair();
  const alone = path.join(dir, "alone");
  fs.mkdirSync(alone);
  fs.copyFileSync(p.model, path.join(alone, "model.gguf"));
  await expectLoadError(path.join(alone, "model.gguf"), undefined, /needs its vision file: pass it with --mmproj/);
  await expectLoadError(alone, undefined, /needs its vision file/);
  await expectLoadError(ORIG, p.mmproj, /--mmproj goes with a GGUF language model/);
  await expectLoadError(p.model, path.join(dir, "nope.gguf"), /--mmproj .*nope\.gguf does not exist/);
  // the mmproj beside the model is found
  const loaded = await loadLlava(p.model, { warn: () => {} });
  assert.equal(loaded.spec.gguf?.mmproj, p.mmproj);
});

test("the template comes from general.name, the file or folder name, or the chat template", () => {
  const gguf = (name: string | null, model: string, chatTemplate: string | null = null) => ({ model, mmproj: "x", name, chatTemplate });
  assert.equal(ggufConvMode(gguf("llava-v1.5-7b", "/m/ggml-model-q4_k.gguf")), "llava_v1");
  assert.equal(ggufConvMode(gguf("model", "/m/llava-v1.6-mistral-7b.Q4_K_M.gguf")), "mistral_instruct");
  assert.equal(ggufConvMode(gguf(null, "/llava-llama-2-13b/ggml-model.gguf")), "llava_llama_2");
  assert.equal(ggufConvMode(gguf("x", "/m/model.gguf", "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}")), "chatml_direct");
  assert.equal(ggufConvMode(gguf("x", "/m/model.gguf", "{{ 'USER: ' + m }} ASSISTANT:")), "llava_v1");
  assert.equal(ggufConvMode(gguf("x", "/m/model.gguf")), "llava_v0");
});
