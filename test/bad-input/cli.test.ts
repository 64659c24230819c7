/**
 * Bad input to the `llava` commands that generate or dump: each ends in one clear line and a
 * non-zero status (or, for a reader that stops reading, quietly), checked before the model loads
 * where it can be, and never leaves half-written output.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { assertCleanError, CLI, llava } from "../helpers/cli.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

const MHA = path.join(MODELS, "tiny-llava-1.5-mha");
const ORIG = path.join(MODELS, "tiny-llava-1.5-orig");
const TOWER = path.join(MODELS, "tiny-clip-vit-56");
const GRADIENT = path.join(IMAGES, "gradient_640x480.png");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-bad-cli-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

const RUN = ["run", "--model-path", MHA, "--query", "Tell me a long story", "--temperature", "0"];

/** A copy of the HF fixture model whose final norm weights are NaN: every logit is NaN. */
function nanModel(): string {
  const broken = path.join(tmp, "nan-model");
  if (fs.existsSync(broken)) return broken;
  fs.cpSync(MHA, broken, { recursive: true });
  const file = path.join(broken, "model.safetensors");
  const buf = fs.readFileSync(file);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString("utf8"));
  const [start, end] = header["language_model.model.norm.weight"].data_offsets as number[];
  Buffer.from(new Float32Array((end - start) / 4).fill(NaN).buffer).copy(buf, 8 + headerLength + start);
  fs.writeFileSync(file, buf);
  return broken;
}

/** The command failed before it spent time loading the model. */
function assertRefusedBeforeLoad(r: ReturnType<typeof llava>, mention: RegExp): void {
  assertCleanError(r, mention);
  assert.doesNotMatch(r.stderr, /^loaded /m, "the model was loaded first");
}

test("options are checked before the model loads", () => {
  assertRefusedBeforeLoad(llava([...RUN, "--temperature", "hot"]), /--temperature must be a number >= 0, got "hot"/);
  assertRefusedBeforeLoad(llava([...RUN, "--top-p", "0"]), /--top-p/);
  assertRefusedBeforeLoad(llava([...RUN, "--seed", "-1"]), /--seed/);
  assertRefusedBeforeLoad(llava([...RUN, "--conv-mode", "llava_v9"]), /--conv-mode "llava_v9" is not a template; valid names: .*llava_v1/);
  assertRefusedBeforeLoad(llava(["run", "--model-path", MHA]), /run needs --query/);
  assertRefusedBeforeLoad(llava([...RUN, "--image-file", `${GRADIENT},${GRADIENT}`, "--sep", ""]), /--sep must be a non-empty separator/);
  assertRefusedBeforeLoad(llava([...RUN, "--image-file", `${GRADIENT},,${GRADIENT}`]), /empty path/);
  assertRefusedBeforeLoad(llava([...RUN, "--image-file", path.join(tmp, "absent.png")]), /absent\.png/);
  assertRefusedBeforeLoad(llava(["chat", "--model-path", MHA, "--max-new-tokens", "1.5"]), /--max-new-tokens must be a whole number/);
  assertRefusedBeforeLoad(llava(["chat", "--model-path", MHA, "--context-length", "0"]), /--context-length/);
  assertRefusedBeforeLoad(llava(["dump", "--model-path", MHA, "--conv-mode", "nope", "--out", path.join(tmp, "d0")]), /--conv-mode "nope"/);
  // a separator that is not the default works
  const sep = llava([...RUN, "--image-file", `${GRADIENT};${GRADIENT}`, "--sep", ";", "--max-new-tokens", "2"]);
  assert.equal(sep.status, 0, sep.stderr);
});

test("dump refuses the sampling options it would ignore", () => {
  for (const [flag, value] of [["--temperature", "0.7"], ["--top-p", "0.9"], ["--seed", "3"]]) {
    assertRefusedBeforeLoad(llava(["dump", "--model-path", MHA, flag, value, "--out", path.join(tmp, "d1")]), new RegExp(`dump always decodes greedily .*${flag} does not apply`));
  }
  assert.ok(!fs.existsSync(path.join(tmp, "d1")));
});

test("a parse error or a message with line breaks is one line", () => {
  assertRefusedBeforeLoad(llava([...RUN, "--bogus"]), /^llava: run: Unknown option '--bogus' \(see llava run --help\)$/m);
  assertRefusedBeforeLoad(llava(["frobnicate"]), /unknown command "frobnicate"/);
  assertCleanError(llava(["convert", "to-hf", "--bogus"]), /convert to-hf: Unknown option '--bogus'/);
  const r = llava([...RUN, "--temperature", "very\nhot\n"]);
  assertRefusedBeforeLoad(r, /--temperature must be a number >= 0, got "very hot ?"/);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
});

test("a reader that closes the pipe early ends the command quietly", () => {
  const shell = spawnSync("bash", ["-c", `"${process.execPath}" "${CLI}" "$@" | head -c 5; echo "status \${PIPESTATUS[0]}" >&2`, "bash", ...RUN, "--max-new-tokens", "300"], { encoding: "utf8", timeout: 60_000 });
  assert.equal(shell.stdout.length, 5);
  assert.match(shell.stderr, /^status 0$/m, shell.stderr);
  assert.doesNotMatch(shell.stderr, /EPIPE|^\s+at /m, shell.stderr);
});

test("a full standard output is one error line", () => {
  const out = fs.openSync("/dev/full", "w");
  try {
    const r = spawnSync(process.execPath, [CLI, ...RUN, "--max-new-tokens", "5"], { stdio: ["ignore", out, "pipe"], encoding: "utf8", timeout: 60_000 });
    assertCleanError({ status: r.status, stdout: "", stderr: r.stderr }, /cannot write to standard output: no space left on device/);
  } finally {
    fs.closeSync(out);
  }
});

test("an output under /proc or under a file is one error line, not a hang", () => {
  assertCleanError(llava(["dump", "--model-path", MHA, "--out", "/proc/llava-nope/out"]), /cannot create the output folder \/proc\/llava-nope: this file system does not allow it/);
  assertCleanError(llava(["convert", "to-hf", "--model-path", ORIG, "--vision-tower", TOWER, "--out", "/proc/llava-nope/hf"]), /cannot create the output folder \/proc\/llava-nope/);
  assertCleanError(llava(["convert", "extract-projector", "--model-path", ORIG, "--out", "/proc/llava-nope/p.safetensors"]), /cannot create the output folder \/proc\/llava-nope/);
  const file = path.join(tmp, "a-file");
  fs.writeFileSync(file, "x");
  assertCleanError(llava(["dump", "--model-path", MHA, "--out", path.join(file, "sub", "out")]), /a-file.*a parent path is not a directory/);
  assertRefusedBeforeLoad(llava(["dump", "--model-path", MHA, "--out", file]), /is a file, not a folder/);
});

test("dump replaces its output whole, or leaves it as it was", () => {
  const out = path.join(tmp, "dump");
  const dump = (...extra: string[]) => llava(["dump", "--model-path", MHA, "--image-file", GRADIENT, "--max-new-tokens", "2", "--out", out, ...extra]);
  const trained = dump("--answer", "A gradient.");
  assert.equal(trained.status, 0, trained.stderr);
  assert.ok(fs.existsSync(path.join(out, "grad_linear_1_weight.npy")));
  assertRefusedBeforeLoad(dump(), /already exists and is not empty; pass --force/);
  const again = dump("--force");
  assert.equal(again.status, 0, again.stderr);
  const files = fs.readdirSync(out);
  assert.ok(files.includes("generated_ids.npy") && files.includes("prompt.txt"), `${files}`);
  assert.ok(!files.some((f) => f.startsWith("grad_") || f === "loss.npy" || f === "labels.npy"), `stale arrays kept: ${files}`);
  // a run that fails (NaN logits in the greedy ids, after the forward passes) leaves no folder behind
  const failed = path.join(tmp, "failed");
  assertCleanError(llava(["dump", "--model-path", nanModel(), "--out", failed]), /NaN logits/);
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes("failed")), []);
  // nor does it touch an existing output
  assertCleanError(llava(["dump", "--model-path", nanModel(), "--out", out, "--force"]), /NaN logits/);
  assert.deepEqual(fs.readdirSync(out).sort(), files.sort());
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.startsWith(".dump")), []);
});

test("non-finite weights are an error naming the step, greedy or sampling", () => {
  for (const temperature of ["0", "0.7"]) {
    const r = llava(["run", "--model-path", nanModel(), "--query", "Hi", "--temperature", temperature]);
    assertCleanError(r, /the model produced (\d+) NaN logits \(of \1\) at generation step 1 \(sequence position \d+\); the weights or the activations are not finite/);
    assert.equal(r.stdout, "");
  }
});

test("prompt and answer are held to the model's context", () => {
  const long = "word ".repeat(3000);
  assertCleanError(llava(["run", "--model-path", MHA, "--query", long]), /the prompt fills \d{4} positions .* the context holds 512 \(max_position_embeddings\)/);
  assertCleanError(llava([...RUN, "--context-length", "40"]), /the context holds 40 \(the context length asked for\)/);
  // a budget far beyond the context is capped: the answer ends when the context is full
  const big = llava([...RUN, "--max-new-tokens", "300000000", "--context-length", "60"]);
  assert.equal(big.status, 0, big.stderr);
  assert.ok(big.stdout.length > 1, big.stdout);
});
