/** `llava inspect` on a GGUF pair: the files, their GGML types and sizes, the model and its memory as the loader would keep it. */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { inspectModel } from "../../src/zoo/inspect.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { MODELS } from "../helpers/paths.js";
import { tempDir } from "../helpers/tmp.js";
import { writeGgufPair } from "./gguf-pair.js";

const dir = tempDir("llava-gguf-inspect-");
const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const CLIP = path.join(MODELS, "tiny-clip-vit-56");

test("inspect reports a Q8_0 pair's types, sizes and memory, and agrees with the checkpoint it came from", () => {
  const pair = writeGgufPair(ORIG, path.join(dir, "q8"), { type: "Q8_0", visionTower: CLIP });
  const r = inspectModel(pair.model, { mmproj: pair.mmproj });
  const checkpoint = inspectModel(ORIG, { visionTower: CLIP });
  assert.deepEqual(r.llm, checkpoint.llm);
  assert.equal(r.parameters.llm, checkpoint.parameters.llm);
  assert.equal(r.parameters.projector, checkpoint.parameters.projector);
  assert.equal(r.vision.layers, 2, "the mmproj holds the tower up to the selected layer");
  assert.equal(r.selectLayer, -1);
  assert.deepEqual(r.tensors, { missing: [], misshaped: [], unused: [] });
  const [llm, vision] = r.gguf!;
  assert.equal(llm.architecture, "llama");
  assert.equal(vision.architecture, "clip");
  // the LLM's matrices with whole 32-blocks are Q8_0: q/k/v/o, gate/up, embeddings and lm_head; down_proj (86 columns) and the norms stay F32
  assert.equal(llm.types.Q8_0.tensors, 2 * 6 + 2);
  assert.equal(llm.types.F32.tensors, 2 * 3 + 1);
  assert.equal(llm.types.Q8_0.bytes, (llm.types.Q8_0.parameters / 32) * 34);
  // as stored: the Q8_0 matrices at 34 bytes a block, the rest in f32; --load-4bit changes only what is stored f32
  const q8Bytes = llm.types.Q8_0.bytes;
  assert.equal(r.memory.weights.f32, q8Bytes + 4 * (r.parameters.total - llm.types.Q8_0.parameters));
  assert.ok(r.memory.weights.q4_0 <= r.memory.weights.f32);
  assert.ok(r.memory.weights.f32 < checkpoint.memory.weights.f32 / 2);
});

test("llava inspect on a GGUF from the command line; a bad mmproj is one line", () => {
  const pair = writeGgufPair(ORIG, path.join(dir, "cli"), { type: "Q4_0", visionTower: CLIP });
  const text = llava(["inspect", "--model-path", pair.model, "--mmproj", pair.mmproj]);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /GGUF pair/);
  assert.match(text.stdout, /model-q4_0\.gguf\s+GGUF v3, llama "tiny-llava-1.5-orig"/);
  assert.match(text.stdout, /Q4_0\s+14 tensors/);
  assert.match(text.stdout, /as stored/);
  const json = llava(["inspect", "--model-path", path.dirname(pair.model), "--json"]);
  assert.equal(json.status, 0, json.stderr);
  assert.equal(JSON.parse(json.stdout).gguf[1].architecture, "clip");
  assertCleanError(llava(["inspect", "--model-path", pair.model, "--mmproj", pair.model]), /architecture "llama" is not a vision \(mmproj\) file/);
});
