/**
 * Bad model folders, end to end through the `llava` command: wrongly typed config fields name
 * the file and the field; `llava inspect` and `llava run` report the same tensor problems;
 * unused tensors warn (and fail under --strict); mm_use_im_start_end models get their
 * <im_start><image><im_end> prompt or a clear refusal.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseLlamaConfig } from "../../src/io/config.js";
import { writeSafetensors } from "../../src/io/safetensors.js";
import { KVCache } from "../../src/llava/llama.js";
import { loadLlava } from "../../src/llava/load.js";
import { promptIds } from "../../src/llava/pipeline.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { LlavaError } from "../../src/util/errors.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-bad-model-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
const IMAGE = path.join(IMAGES, "gradient_640x480.png");
const TEXT = { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 32000, max_position_embeddings: 128 };
const VISION = { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, image_size: 28, patch_size: 14 };

let count = 0;
function model(format: "hf" | "original", edit: (config: Record<string, unknown>) => void = () => {}, text: Record<string, unknown> = TEXT): string {
  const dir = path.join(tmp, `${format}-${count++}`);
  writeRandomLlava(dir, { format, text, vision: VISION, tokenizerFrom: path.join(MODELS, format === "hf" ? "tiny-llava-1.5-mha" : "tiny-llava-1.5-orig") });
  const file = path.join(dir, "config.json");
  const config = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  edit(config);
  fs.writeFileSync(file, JSON.stringify(config));
  return dir;
}

const run = (dir: string, ...extra: string[]) =>
  llava(["run", "--model-path", dir, "--image-file", IMAGE, "--query", "What?", "--temperature", "0", "--max-new-tokens", "2", ...extra]);

test("wrongly typed LLaVA fields are one line naming the file and the field", () => {
  const cases: Array<[string, (c: Record<string, unknown>) => void, RegExp]> = [
    ["original", (c) => (c.mm_vision_select_layer = "-2"), /config\.json: field "mm_vision_select_layer" must be an integer, got "-2"/],
    ["original", (c) => (c.mm_projector_type = 5), /field "mm_projector_type" must be a non-empty string, got 5/],
    ["original", (c) => (c.mm_projector_type = "mlp2x_relu"), /field "mm_projector_type" is "mlp2x_relu"/],
    ["original", (c) => (c.mm_vision_select_feature = "cls"), /field "mm_vision_select_feature" must be one of "patch", "cls_patch", got "cls"/],
    ["original", (c) => (c.mm_use_im_start_end = "yes"), /field "mm_use_im_start_end" must be true or false/],
    ["original", (c) => (c.tokenizer_model_max_length = -1), /field "tokenizer_model_max_length" must be a positive integer/],
    ["original", (c) => (c.mm_hidden_size = 17), /field "mm_hidden_size" \(17\) differs from the vision tower's hidden size 16/],
    ["original", (c) => (c.mm_patch_merge_type = "spatial_unpad_anyres_max"), /field "mm_patch_merge_type" must be one of/],
    ["hf", (c) => (c.vision_feature_layer = "abc"), /field "vision_feature_layer" must be an integer, got "abc"/],
    ["hf", (c) => (c.vision_feature_layer = [-2, -5]), /field "vision_feature_layer" is a list of layers; only a single layer is supported/],
    ["hf", (c) => (c.image_token_index = -5), /field "image_token_index" must be a token id \(>= 0\), got -5/],
    ["hf", (c) => (c.vision_feature_select_strategy = "cls"), /field "vision_feature_select_strategy" must be one of "default", "full"/],
    ["hf", (c) => (c.vision_config = { ...(c.vision_config as object), image_size: 30 }), /\(vision_config\): field "image_size" \(30\) must be a multiple of patch_size \(14\)/],
  ];
  for (const [format, edit, message] of cases) {
    const dir = model(format as "hf" | "original", edit);
    assertCleanError(run(dir), message);
    // inspect reads the folder through the same spec, so it refuses with the same line
    assertCleanError(llava(["inspect", "--model-path", dir]), message);
  }
});

test("an image_token_index that is not the tokenizer's <image> is refused at load", () => {
  const dir = model("hf", (c) => (c.image_token_index = 31999));
  assertCleanError(run(dir), /image_token_index is 31999 but the tokenizer's "<image>" is token 32000/);
});

test("--vision-tower naming a folder without a CLIP config says so, not what mm_vision_tower says", () => {
  const dir = model("original");
  assertCleanError(run(dir, "--vision-tower", tmp), /--vision-tower .*: no config\.json there; expected a CLIP model folder/);
});

/** Rewrites the model's single weight file with `edit` applied to its tensors. */
function editWeights(dir: string, edit: (tensors: Map<string, { shape: number[]; data: Float32Array }>) => void): void {
  const file = path.join(dir, "model.safetensors");
  const header = JSON.parse(fs.readFileSync(file).subarray(8, 8 + Number(fs.readFileSync(file).readBigUInt64LE(0))).toString()) as Record<string, { shape: number[]; data_offsets: [number, number] }>;
  const bytes = fs.readFileSync(file);
  const start = 8 + Number(bytes.readBigUInt64LE(0));
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, h] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const raw = bytes.subarray(start + h.data_offsets[0], start + h.data_offsets[1]);
    tensors.set(name, { shape: h.shape, data: new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)) });
  }
  edit(tensors);
  writeSafetensors(file, [...tensors].map(([name, t]) => ({ name, dtype: "F32" as const, shape: t.shape, data: t.data })), { format: "pt" });
}

test("an extra tensor is a warning naming it, and an error under --strict; inspect reports it too", () => {
  const dir = model("hf");
  editWeights(dir, (t) => t.set("language_model.model.layers.7.mlp.up_proj.weight", { shape: [2], data: new Float32Array(2) }));
  const ok = run(dir);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /llava: warning: .*1 tensor\(s\) the model does not use: "language_model\.model\.layers\.7\.mlp\.up_proj\.weight"/);
  assertCleanError(run(dir, "--strict"), /the model does not use: "language_model\.model\.layers\.7\.mlp\.up_proj\.weight" \(--strict\)/);
  const report = llava(["inspect", "--model-path", dir]);
  assert.equal(report.status, 0, report.stderr);
  assert.match(report.stdout, /warning: 1 tensor\(s\) the model does not use: "language_model\.model\.layers\.7\.mlp\.up_proj\.weight"/);
});

test("inspect and run report the same missing and mis-shaped tensors, in the file's own names", () => {
  const missing = model("hf");
  editWeights(missing, (t) => t.delete("language_model.model.norm.weight"));
  const misshaped = model("original");
  editWeights(misshaped, (t) => t.set("model.mm_projector.2.bias", { shape: [31], data: new Float32Array(31) }));
  for (const [dir, problem] of [
    [missing, 'missing tensor "language_model.model.norm.weight"'],
    [misshaped, 'tensor "model.mm_projector.2.bias" has shape [31], expected [32]'],
  ] as const) {
    const escaped = problem.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    assertCleanError(run(dir), new RegExp(escaped));
    const report = llava(["inspect", "--model-path", dir, "--json"]);
    assert.equal(report.status, 0, report.stderr);
    const tensors = (JSON.parse(report.stdout) as { tensors: { missing: string[]; misshaped: string[] } }).tensors;
    assert.deepEqual([...tensors.missing.map((n) => `missing tensor "${n}"`), ...tensors.misshaped], [problem]);
  }
});

test("mm_use_im_start_end: each image becomes <im_start><image><im_end>, or the model is refused when the tokenizer lacks them", async () => {
  const refused = model("original", (c) => (c.mm_use_im_start_end = true));
  assertCleanError(run(refused), /mm_use_im_start_end is true but the tokenizer has no "<im_start>" token/);

  const dir = model("original", (c) => (c.mm_use_im_start_end = true), { ...TEXT, vocab_size: 32002 });
  const tokenizerFile = path.join(dir, "tokenizer.json");
  const tokenizer = JSON.parse(fs.readFileSync(tokenizerFile, "utf8")) as { added_tokens: object[] };
  const added = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  tokenizer.added_tokens.push(added(32000, "<im_start>"), added(32001, "<im_end>"));
  fs.writeFileSync(tokenizerFile, JSON.stringify(tokenizer));
  const loaded = await loadLlava(dir, { warn: () => {} });
  const ids = promptIds(loaded, "USER: <image>\nWhat? ASSISTANT:");
  const at = ids.indexOf(-200);
  assert.deepEqual(ids.slice(at - 1, at + 2), [32000, -200, 32001]);
  // a prompt that already wraps its image is left as it is
  assert.deepEqual(promptIds(loaded, "USER: <im_start><image><im_end>\nWhat? ASSISTANT:"), ids);
  const answered = run(dir);
  assert.equal(answered.status, 0, answered.stderr);
});

test("a KV cache larger than the machine's memory is refused, naming its size", () => {
  const sevenB = parseLlamaConfig({}, "config.json"); // transformers' LlamaConfig defaults: a 7B decoder
  assert.throws(() => new KVCache(sevenB, 1, 1_000_000, new RefBackend()), (e: Error) => e instanceof LlavaError && /a KV cache of 1000000 positions needs 976\.6 GiB/.test(e.message));
});
