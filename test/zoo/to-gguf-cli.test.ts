/** `llava convert to-gguf` as a user runs it: the pair is written; bad input is one clear line. */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { MODELS } from "../helpers/paths.js";
import { tempDir } from "./helpers.js";

const root = tempDir("llava-to-gguf-cli-");
const MODEL = path.join(MODELS, "tiny-llava-1.5-mha");

test("llava convert to-gguf writes the LLM and mmproj files and says what it wrote", () => {
  const out = path.join(root, "ok");
  const r = llava(["convert", "to-gguf", "--model-path", MODEL, "--out", out, "--type", "q8_0"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), out);
  assert.match(r.stderr, /wrote \d+ tensors .*tiny-llava-1\.5-mha-Q8_0\.gguf, mmproj-tiny-llava-1\.5-mha-f16\.gguf/);
  assert.deepEqual(fs.readdirSync(out).sort(), ["mmproj-tiny-llava-1.5-mha-f16.gguf", "tiny-llava-1.5-mha-Q8_0.gguf"]);
});

test("an unknown --type is a usage error naming the types", () => {
  const r = llava(["convert", "to-gguf", "--model-path", MODEL, "--out", path.join(root, "x"), "--type", "q3_k"]);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /^llava: --type q3_k: expected one of f32, f16, q8_0, q4_0, .*q4_k_m/m);
  assert.equal(fs.existsSync(path.join(root, "x")), false);
});

test("bad input: one line each, and no output left behind", () => {
  assertCleanError(llava(["convert", "to-gguf", "--model-path", MODEL]), /--out is required/);
  assertCleanError(llava(["convert", "to-gguf", "--model-path", path.join(root, "missing"), "--out", path.join(root, "y")]), /does not exist/);
  const taken = path.join(root, "taken");
  fs.mkdirSync(taken);
  fs.writeFileSync(path.join(taken, "keep.txt"), "x");
  assertCleanError(llava(["convert", "to-gguf", "--model-path", MODEL, "--out", taken]), /already exists and is not empty; pass --force/);
  // clip.cpp always drops the CLS position: a model that feeds it to the projector has no mmproj form
  const cls = path.join(root, "cls-model");
  writeRandomLlava(cls, {
    format: "original", tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-orig"), visionSelectFeature: "cls_patch",
    text: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 4, vocab_size: 32000 },
    vision: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, image_size: 28, patch_size: 14 },
  });
  assertCleanError(llava(["convert", "to-gguf", "--model-path", cls, "--out", path.join(root, "z")]), /drops the CLS feature/);
  assert.deepEqual(fs.readdirSync(root).filter((f) => /^(y|z)$|partial/.test(f)), []);
});
