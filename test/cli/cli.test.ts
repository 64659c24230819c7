/**
 * End-to-end tests of the `llava` command as a user runs it: real processes, real files, and
 * every kind of bad input ending in one clear line and exit status 1.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CASES, FIXTURES, IMAGES, MODELS, ROOT } from "../helpers/paths.js";
import { compareCase } from "../helpers/compare.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { npyToNumbers, readNpy } from "../../src/io/npy.js";
import { NODE_FLAGS } from "../../src/util/node-flags.js";

const MHA = path.join(MODELS, "tiny-llava-1.5-mha");
const GRADIENT = path.join(IMAGES, "gradient_640x480.png");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-cli-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of the HF fixture model whose files a test may damage. */
function modelCopy(name: string): string {
  const dir = path.join(tmp, name);
  fs.cpSync(MHA, dir, { recursive: true });
  return dir;
}


test("run answers with the reference's greedy tokens", () => {
  const r = llava(["run", "--model-path", MHA, "--image-file", GRADIENT, "--query", "What is shown?", "--conv-mode", "llava_v1", "--temperature", "0", "--max-new-tokens", "20"]);
  assert.equal(r.status, 0, r.stderr);
  const meta = JSON.parse(fs.readFileSync(path.join(CASES, "tiny-llava-1.5-mha", "gradient", "meta.json"), "utf8"));
  // the fixture's 20 greedy tokens decode to meta.generated_text; run strips leading space like the reference
  assert.equal(r.stdout, `${meta.generated_text.trim()}\n`);
});

test("chat streams a multi-turn conversation from piped input and exits at end of input", () => {
  const r = llava(["chat", "--model-path", MHA, "--image-file", GRADIENT, "--conv-mode", "llava_v1", "--temperature", "0", "--max-new-tokens", "5", "--debug"], { input: "What is shown?\nAnd then?\n" });
  assert.equal(r.status, 0, r.stderr);
  assert.equal((r.stdout.match(/ASSISTANT: /g) ?? []).length, 2, r.stdout);
  assert.match(r.stdout, /exit\.\.\.\n$/);
  // the second prompt carries the first answer and the image marker of the first turn
  const prompts = [...r.stderr.matchAll(/\[prompt\] (.*)/g)].map((m) => JSON.parse(m[1]) as string);
  assert.equal(prompts.length, 2);
  assert.ok(prompts[1].startsWith(prompts[0]), "the history is kept");
  assert.match(prompts[1], /<\/s>USER: And then\? ASSISTANT:$/);
});

test("dump writes arrays that check.py accepts (when numpy is available)", (t) => {
  const out = path.join(tmp, "cand");
  const caseOut = path.join(out, "tiny-llava-1.5-mha", "gradient");
  const r = llava(["dump", "--model-path", MHA, "--image-file", GRADIENT, "--query", "What is shown?", "--out", caseOut]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(compareCase(path.join(CASES, "tiny-llava-1.5-mha", "gradient"), caseOut).filter((v) => !v.ok), []);
  assert.deepEqual(npyToNumbers(readNpy(path.join(caseOut, "generated_ids.npy"))).length, 20);
  const numpy = spawnSync("python3", ["-c", "import numpy"]);
  if (numpy.status !== 0) {
    t.skip("python3 with numpy is not installed");
    return;
  }
  const check = spawnSync("python3", [path.join(FIXTURES, "check.py"), out, "--quiet"], { encoding: "utf8" });
  assert.equal(check.status, 0, check.stdout + check.stderr);
  assert.match(check.stdout, /^14 passed, 0 failed/m);
});

test("the original format finds its vision tower relative to the working directory", () => {
  const r = llava(["run", "--model-path", "tiny-llava-1.5-orig", "--image-file", GRADIENT, "--query", "Hi", "--max-new-tokens", "3", "--temperature", "0"], { cwd: MODELS });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /\(original\)/);
});

test("bad model folders fail cleanly", () => {
  assertCleanError(llava(["run", "--model-path", path.join(tmp, "nope"), "--query", "x"]), /does not exist/);
  const empty = path.join(tmp, "empty");
  fs.mkdirSync(empty);
  assertCleanError(llava(["run", "--model-path", empty, "--query", "x"]), /config\.json/);
  const unknown = modelCopy("unknown");
  fs.writeFileSync(path.join(unknown, "config.json"), JSON.stringify({ model_type: "bert" }));
  assertCleanError(llava(["run", "--model-path", unknown, "--query", "x"]), /unknown checkpoint format/);
  const badJson = modelCopy("bad-json");
  fs.writeFileSync(path.join(badJson, "config.json"), "{ not json");
  assertCleanError(llava(["run", "--model-path", badJson, "--query", "x"]), /config\.json/);
  const noWeights = modelCopy("no-weights");
  fs.rmSync(path.join(noWeights, "model.safetensors"));
  assertCleanError(llava(["run", "--model-path", noWeights, "--query", "x"]), /no model weights/);
  const orig = path.join(tmp, "orig-no-tower");
  fs.cpSync(path.join(MODELS, "tiny-llava-1.5-orig"), orig, { recursive: true });
  assertCleanError(llava(["run", "--model-path", orig, "--query", "x"]), /vision tower "tiny-clip-vit-56"/);
});

test("corrupt safetensors files fail cleanly, naming the file", () => {
  const header = (file: string) => {
    const buf = fs.readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    return { buf, n, json: JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }> };
  };
  const rewrite = (file: string, edit: (json: Record<string, any>) => void) => {
    const { buf, n, json } = header(file);
    edit(json);
    let text = JSON.stringify(json);
    text = text.padEnd(n, " ");
    assert.equal(Buffer.byteLength(text), n, "edited header keeps its length");
    fs.writeFileSync(file, Buffer.concat([buf.subarray(0, 8), Buffer.from(text), buf.subarray(8 + n)]));
  };

  const truncated = modelCopy("truncated");
  const tf = path.join(truncated, "model.safetensors");
  fs.truncateSync(tf, fs.statSync(tf).size - 1000);
  assertCleanError(llava(["run", "--model-path", truncated, "--query", "x"]), /model\.safetensors/);

  const hugeHeader = modelCopy("huge-header");
  const hf = path.join(hugeHeader, "model.safetensors");
  const b = fs.readFileSync(hf);
  b.writeBigUInt64LE(BigInt(b.length * 2), 0);
  fs.writeFileSync(hf, b);
  assertCleanError(llava(["run", "--model-path", hugeHeader, "--query", "x"]), /model\.safetensors/);

  const badDtype = modelCopy("bad-dtype");
  rewrite(path.join(badDtype, "model.safetensors"), (j) => (j["language_model.model.norm.weight"].dtype = "Q9"));
  assertCleanError(llava(["run", "--model-path", badDtype, "--query", "x"]), /Q9/);

  const badShape = modelCopy("bad-shape");
  rewrite(path.join(badShape, "model.safetensors"), (j) => (j["language_model.model.norm.weight"].shape = [31]));
  assertCleanError(llava(["run", "--model-path", badShape, "--query", "x"]), /norm\.weight/);

  const missing = modelCopy("missing-tensor");
  rewrite(path.join(missing, "model.safetensors"), (j) => {
    j["language_model.model.norm.weightX"] = j["language_model.model.norm.weight"];
    delete j["language_model.model.norm.weight"];
  });
  assertCleanError(llava(["run", "--model-path", missing, "--query", "x"]), /missing tensor "language_model\.model\.norm\.weight"/);

  const mismatch = modelCopy("config-mismatch");
  const cfg = JSON.parse(fs.readFileSync(path.join(mismatch, "config.json"), "utf8"));
  cfg.text_config.intermediate_size = 90;
  fs.writeFileSync(path.join(mismatch, "config.json"), JSON.stringify(cfg));
  assertCleanError(llava(["run", "--model-path", mismatch, "--query", "x"]), /has shape \[86, 32\], expected \[90, 32\]/);
});

test("bad images fail cleanly", () => {
  const garbage = path.join(tmp, "garbage.png");
  fs.writeFileSync(garbage, "this is not an image at all");
  assertCleanError(llava(["run", "--model-path", MHA, "--image-file", garbage, "--query", "x"]), /garbage\.png/);
  const empty = path.join(tmp, "empty.jpg");
  fs.writeFileSync(empty, "");
  assertCleanError(llava(["run", "--model-path", MHA, "--image-file", empty, "--query", "x"]), /empty\.jpg/);
  assertCleanError(llava(["run", "--model-path", MHA, "--image-file", path.join(tmp, "absent.png"), "--query", "x"]), /absent\.png/);
  const started = Date.now();
  assertCleanError(llava(["run", "--model-path", MHA, "--image-file", "http://127.0.0.1:9/cat.png", "--query", "x"]), /127\.0\.0\.1:9/);
  assert.ok(Date.now() - started < 30_000);
});

test("bad options fail cleanly", () => {
  assertCleanError(llava(["run", "--model-path", MHA, "--query", "x", "--temperature", "hot"]), /--temperature/);
  assertCleanError(llava(["run", "--model-path", MHA, "--query", "x", "--max-new-tokens", "0"]), /--max-new-tokens/);
  assertCleanError(llava(["run", "--model-path", MHA, "--query", "x", "--bogus"]), /bogus/);
  assertCleanError(llava(["run", "--model-path", MHA, "--query", "x", "--conv-mode", "nope"]), /nope/);
  assertCleanError(llava(["frobnicate"]), /unknown command/);
  assertCleanError(llava(["run", "--model-path", MHA]), /--query/);
  assertCleanError(llava(["dump", "--model-path", MHA]), /--out/);
  const r = llava(["--help"]);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /usage: llava/);
});

test("bin/llava.js runs Node with the flags every Node the project spawns takes (NODE_FLAGS), and runs as a program", () => {
  const bin = path.join(ROOT, "bin", "llava.js");
  assert.equal(fs.readFileSync(bin, "utf8").split("\n")[0], `#!/usr/bin/env -S node ${NODE_FLAGS.join(" ")}`);
  const r = spawnSync(bin, ["--help"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^usage: llava <command>/);
});
