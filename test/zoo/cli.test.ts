/**
 * `llava convert` and `llava inspect` as a user runs them, and the promises about the output
 * folder: clean one-line errors, no overwriting without --force, and a failed or interrupted
 * conversion leaves nothing that looks like a finished model.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { LlavaError } from "../../src/util/errors.js";
import { convertToHf } from "../../src/zoo/to-hf.js";
import { ProgressBar, type ProgressSink } from "../../src/zoo/progress.js";
import { MODELS } from "../helpers/paths.js";
import { randomOriginal, tempDir } from "./helpers.js";
import { assertCleanError, llava } from "../helpers/cli.js";

const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const MHA = path.join(MODELS, "tiny-llava-1.5-mha");
const tmp = tempDir();


/** Entries of `dir` other than `keep`: leftovers of a failed conversion. */
const leftovers = (dir: string, keep: string[] = []) => fs.readdirSync(dir).filter((f) => !keep.includes(f));

test("convert to-hf from the command line, then refuses to overwrite without --force", () => {
  const parent = path.join(tmp, "cli-out");
  const out = path.join(parent, "llava-hf");
  const r = llava(["convert", "to-hf", "--model-path", "tiny-llava-1.5-orig", "--out", out], { cwd: MODELS });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `${out}\n`);
  assert.match(r.stderr, /wrote 80 tensors/);
  assert.ok(fs.existsSync(path.join(out, "model.safetensors")));
  assertCleanError(llava(["convert", "to-hf", "--model-path", ORIG, "--vision-tower", path.join(MODELS, "tiny-clip-vit-56"), "--out", out]), /already exists and is not empty; pass --force/);
  const again = llava(["convert", "to-hf", "--model-path", ORIG, "--vision-tower", path.join(MODELS, "tiny-clip-vit-56"), "--out", out, "--force", "--max-shard-size", "3MB"]);
  assert.equal(again.status, 0, again.stderr);
  assert.ok(fs.existsSync(path.join(out, "model.safetensors.index.json")), "replaced by the sharded output");
  assert.ok(!fs.existsSync(path.join(out, "model.safetensors")), "nothing of the old output is left");
  assert.deepEqual(leftovers(parent), ["llava-hf"]);
});

test("convert errors are one clear line", () => {
  const linear = path.join(tmp, "llava-linear");
  randomOriginal(linear, { projectorType: "linear" });
  assertCleanError(llava(["convert", "to-hf", "--model-path", linear, "--out", path.join(tmp, "x1")]), /mm_projector_type "linear" cannot be represented in the HF llava format/);
  const copy = path.join(tmp, "orig-without-tower");
  fs.cpSync(ORIG, copy, { recursive: true });
  assertCleanError(llava(["convert", "to-hf", "--model-path", copy, "--out", path.join(tmp, "x2")], { cwd: tmp }), /vision tower "tiny-clip-vit-56" \(mm_vision_tower\) was not found.*--vision-tower/);
  assertCleanError(llava(["convert", "to-hf", "--model-path", MHA, "--out", path.join(tmp, "x3")]), /already in the HF format/);
  assertCleanError(llava(["convert", "to-original", "--model-path", ORIG, "--out", path.join(tmp, "x4")]), /already in the original LLaVA format/);
  assertCleanError(llava(["convert", "to-hf", "--model-path", ORIG]), /--out is required/);
  assertCleanError(llava(["convert", "to-hf", "--model-path", ORIG, "--out", path.join(tmp, "x5"), "--max-shard-size", "lots"]), /not a size like "5GB"/);
  assertCleanError(llava(["convert", "to-onnx"]), /unknown conversion "to-onnx"/);
  assertCleanError(llava(["convert", "extract-projector", "--model-path", ORIG, "--out", path.join(tmp, "mm_projector.bin")]), /writing PyTorch \.bin files is not supported/);
  const blocker = path.join(tmp, "a-file");
  fs.writeFileSync(blocker, "");
  assertCleanError(llava(["convert", "to-hf", "--model-path", "tiny-llava-1.5-orig", "--out", path.join(blocker, "out")], { cwd: MODELS }), /cannot create the output folder/);
  for (const x of ["x1", "x2", "x3", "x4", "x5", "mm_projector.bin"]) assert.ok(!fs.existsSync(path.join(tmp, x)), `${x} was not created`);
});

test("inspect prints a report, and --json parses", () => {
  const text = llava(["inspect", "--model-path", ORIG]);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /original LLaVA \(LlavaLlamaForCausalLM\)/);
  assert.match(text.stdout, /hidden 32, layers 2, heads 4, kv heads 4, head dim 8, intermediate 86/);
  assert.match(text.stdout, /tokens per image\s+336x336: 16/);
  const json = llava(["inspect", "--model-path", path.join(MODELS, "tiny-llava-next"), "--json"]);
  assert.equal(json.status, 0, json.stderr);
  const report = JSON.parse(json.stdout);
  assert.equal(report.format, "hf-llava-next");
  assert.equal(report.llm.hiddenSize, 16);
  assert.deepEqual(report.image.pinpoints[0], [56, 112]);
  assertCleanError(llava(["inspect"]), /--model-path/);
  assertCleanError(llava(["inspect", "--model-path", path.join(tmp, "nothing")]), /does not exist/);
});

/** A progress sink that calls `act` when `after` tensors are written. */
const failingAfter = (after: number, act: () => void): ProgressSink => {
  let done = 0;
  return { start() {}, finish() {}, tensorDone() { if (++done === after) act(); } };
};

test("a conversion that fails or is interrupted half-way leaves no output, and keeps a replaced one", async () => {
  const parent = path.join(tmp, "interrupted");
  fs.mkdirSync(parent);
  const opts = { modelPath: ORIG, visionTower: path.join(MODELS, "tiny-clip-vit-56"), maxShardSize: "1MB" };
  await assert.rejects(
    convertToHf({ ...opts, out: path.join(parent, "hf"), progress: failingAfter(20, () => { throw new LlavaError("disk full (simulated)"); }) }),
    /disk full/,
  );
  assert.deepEqual(leftovers(parent), [], "no output and no temporary folder");

  // Ctrl-C between two tensors stops the conversion and removes what was written
  await assert.rejects(
    convertToHf({ ...opts, out: path.join(parent, "hf"), progress: failingAfter(10, () => process.emit("SIGINT", "SIGINT")) }),
    (e: Error) => e instanceof LlavaError && /interrupted by SIGINT/.test(e.message),
  );
  assert.deepEqual(leftovers(parent), []);
  assert.equal(process.listenerCount("SIGINT"), 0, "signal handlers removed");

  // with --force, a failure keeps the previous output as it was
  const out = path.join(parent, "hf");
  await convertToHf({ ...opts, out });
  const before = fs.readdirSync(out).sort();
  await assert.rejects(convertToHf({ ...opts, out, force: true, progress: failingAfter(5, () => { throw new LlavaError("stop"); }) }), /stop/);
  assert.deepEqual(fs.readdirSync(out).sort(), before);
  assert.deepEqual(leftovers(parent), ["hf"]);
});

test("the progress bar redraws in place on a terminal and prints occasional lines otherwise; small jobs stay quiet", () => {
  const tty = { isTTY: true, text: "", write(s: string) { this.text += s; } };
  const bar = new ProgressBar(tty, "to-hf", 1000, 0);
  bar.start(4, 4000);
  for (let i = 0; i < 4; i++) bar.tensorDone(`t${i}`, 1000);
  bar.finish();
  assert.equal((tty.text.match(/\r/g) ?? []).length, 5);
  assert.match(tty.text, /\r\[#{24}\] 100% to-hf: 4\/4 tensors, 4\.0 KB \/ 4\.0 KB\x1b\[K\n$/);
  const pipe = { text: "", write(s: string) { this.text += s; } };
  const lines = new ProgressBar(pipe, "to-hf", 1000, 0);
  lines.start(2, 2000);
  lines.tensorDone("a", 1000);
  lines.tensorDone("b", 1000);
  lines.finish();
  assert.deepEqual(pipe.text.trim().split("\n"), ["to-hf: 1/2 tensors, 1.0 KB / 2.0 KB (50%)", "to-hf: 2/2 tensors, 2.0 KB / 2.0 KB (100%)"]);
  const quiet = { text: "", write(s: string) { this.text += s; } };
  const small = new ProgressBar(quiet, "to-hf");
  small.start(1, 10);
  small.tensorDone("a", 10);
  small.finish();
  assert.equal(quiet.text, "");
});
