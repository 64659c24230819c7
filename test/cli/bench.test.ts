/**
 * `llava bench` on a tiny random model: every phase gives a JSON line with the machine, the
 * rooflines of the run and positive figures; bad input is one line; llama.cpp runs on the same
 * weights as GGUF when node-llama-cpp loads; and PyTorch trains the same steps, to the same
 * first loss, when Python has torch (CI installs Debian's python3-torch).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { assertCleanError, type CliResult, llava } from "../helpers/cli.js";
import { MODELS } from "../helpers/paths.js";
import { findTorch } from "../../src/perf/torch-peer.js";

/** Why llama.cpp cannot run here, or null when node-llama-cpp's prebuilt binary loads. */
async function llamaCppMissing(): Promise<string | null> {
  try {
    const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
    const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error });
    await llama.dispose();
    return null;
  } catch (err) {
    return `node-llama-cpp does not load: ${(err as Error).message.split("\n")[0]}`;
  }
}

// asked before any test is registered: a test registered after the others would run after their clean-up
const llamaCppSkip = await llamaCppMissing();
const torchSkip = findTorch() ? false : "no python3 imports torch (Debian: apt-get install python3-torch)";

const work = fs.mkdtempSync(path.join(os.tmpdir(), "cli-bench-"));
after(() => fs.rmSync(work, { recursive: true, force: true }));
const model = path.join(work, "tiny");

before(() => {
  // LLaMA's tokenizer; rows of whole 256-blocks so every GGUF type holds them; grouped K/V heads
  writeRandomLlava(model, {
    format: "hf", tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"), seed: 7,
    text: { hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32001, max_position_embeddings: 256 },
    vision: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, image_size: 56, patch_size: 14, projection_dim: 32 },
  });
});

type Line = Record<string, unknown> & { phase: string; engine: string; median: number; min: number; max: number };

function jsonLines(r: CliResult): Line[] {
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split("\n").map((l) => JSON.parse(l) as Line);
}

const positive = (x: unknown) => typeof x === "number" && Number.isFinite(x) && x > 0;

test("every phase: one JSON line with the machine, the rooflines of the run and positive figures", () => {
  const phases = ["encode", "prefill", "decode", "train_proj", "train_lora", "train_full"];
  const lines = jsonLines(llava(["bench", "--model-path", model, "--threads", "1", "--runs", "1", "--peers", "none", "--json", "--phases", phases.join(",")]));
  assert.deepEqual(lines.map((l) => l.phase), phases);
  for (const l of lines) {
    assert.equal(l.engine, "llava-ts");
    assert.equal(l.model, "tiny");
    assert.equal(l.precision, "f32");
    assert.equal(l.threads, 1);
    assert.equal(l.runs, 1);
    assert.ok(typeof l.cpu === "string" && l.cpu.length > 0, "the CPU model");
    assert.ok(Array.isArray(l.simd), "the SIMD features");
    for (const key of ["median", "min", "max", "peak_rss_bytes", "read_gb_per_s", "gemm_f32_gflops", "load_ms"]) assert.ok(positive(l[key]), `${l.phase} ${key}: ${String(l[key])}`);
    assert.ok(l.min <= l.median && l.median <= l.max, `${l.phase}: min <= median <= max`);
    assert.equal(l.unit, l.phase === "prefill" || l.phase === "decode" ? "tokens/s" : "ms");
    if (!l.phase.startsWith("train")) assert.ok(positive(l.fraction_of_roofline), `${l.phase} fraction of its roofline`);
  }
  const byPhase = Object.fromEntries(lines.map((l) => [l.phase, l]));
  // 40 text tokens and the 4x4 patches of the 56-pixel image
  assert.equal(byPhase.prefill.prompt_tokens, 40 + 16);
  // decode streams every LLM weight but the embedding table once per token: 2 layers and lm_head, f32
  const layer = 4 * (256 * 256 * 2 + 256 * 128 * 2 + 3 * 256 * 512) + 4 * 2 * 256;
  assert.equal(byPhase.decode.weight_bytes_per_token, 2 * layer + 4 * 256 + 4 * 32001 * 256);
  // and reads the f32 keys and values of 2 layers (kv heads x head dim = 128) at each position of
  // its context: the 56-position prompt and, on average, half of the 64 answer tokens and itself
  assert.equal(byPhase.decode.kv_bytes_per_token, 2 * 2 * 128 * 4 * (56 + 65 / 2));
  const trained = (p: string) => byPhase[p].trainable_params as number;
  assert.ok(trained("train_proj") > 0 && trained("train_proj") < trained("train_lora") && trained("train_lora") < trained("train_full"), "projector < LoRA < full LLM");
});

test("without --json, a table names the machine, its rooflines and each figure", () => {
  const r = llava(["bench", "--model-path", model, "--threads", "1", "--runs", "1", "--peers", "none", "--phases", "encode", "--precision", "q8_0"]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /rooflines at 1 thread\(s\): read [\d.]+ GB\/s, f32 GEMM [\d.]+ GFLOP\/s/);
  assert.match(r.stdout, /^q8_0\s+1\s+encode\s+llava-ts\s+[\d.]+/m);
});

test("bad input: a missing or corrupt model is one line and exit 1; a bad option a usage error, exit 2", () => {
  assertCleanError(llava(["bench", "--model-path", path.join(work, "nowhere"), "--json"]), /nowhere/);
  const corrupt = path.join(work, "corrupt");
  fs.cpSync(model, corrupt, { recursive: true });
  fs.writeFileSync(path.join(corrupt, "model.safetensors"), "not a safetensors file");
  assertCleanError(llava(["bench", "--model-path", corrupt, "--json", "--peers", "none"]), /model\.safetensors/);
  for (const [args, mention] of [
    [["--phases", "prefill,warp"], /--phases: unknown "warp"/],
    [["--precision", "q3_x"], /--precision: unknown "q3_x"/],
    [["--precision", "q8_0", "--phases", "train_full"], /--phases train_full .* f32/],
    [["--model", "bench-small"], /give --model-path DIR or --model NAME/],
    [["--runs", "0"], /--runs/],
    [["--peers", "some"], /--peers/],
  ] as const) {
    const r = llava(["bench", "--model-path", model, ...args]);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^llava: ${mention.source}`), r.stderr);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

test("llama.cpp on the same weights as GGUF: its prefill and decode beside ours, with the ratio", { skip: llamaCppSkip ?? false }, () => {
  const cache = path.join(work, "cache");
  const args = ["bench", "--model-path", model, "--threads", "1", "--runs", "2", "--json", "--phases", "prefill,decode", "--precision", "q8_0", "--cache-dir", cache];
  const r = llava(args);
  const lines = jsonLines(r);
  assert.match(r.stderr, /text-only/, "the output says the peer's prompt has no image");
  assert.deepEqual(lines.map((l) => `${l.phase} ${l.engine}`), ["prefill llava-ts", "prefill llama.cpp", "decode llava-ts", "decode llama.cpp"]);
  for (let i = 0; i < lines.length; i += 2) {
    const [ours, theirs] = [lines[i], lines[i + 1]];
    assert.equal(theirs.gguf_type, "q8_0");
    assert.equal(theirs.runs, 2);
    for (const key of ["median", "min", "max", "peak_rss_bytes"]) assert.ok(positive(theirs[key]), `llama.cpp ${theirs.phase} ${key}`);
    assert.equal(ours.llama_cpp, theirs.median);
    assert.equal(ours.ratio_to_llama_cpp, ours.median / theirs.median);
  }
  // the GGUF copy is written once
  assert.equal(fs.readdirSync(path.join(cache, "gguf")).length, 1);
  jsonLines(llava(args));
  assert.equal(fs.readdirSync(path.join(cache, "gguf")).length, 1);
});

test("PyTorch trains the same steps: the same first loss and trainable parameters, its times beside ours", { skip: torchSkip }, () => {
  const r = llava(["bench", "--model-path", model, "--threads", "1", "--runs", "1", "--json", "--phases", "train_proj,train_lora,train_full"]);
  const lines = jsonLines(r);
  assert.match(r.stderr, /PyTorch [\d.]+\S* trains the same steps in f32/);
  assert.deepEqual(lines.map((l) => `${l.phase} ${l.engine}`), ["train_proj llava-ts", "train_proj pytorch", "train_lora llava-ts", "train_lora pytorch", "train_full llava-ts", "train_full pytorch"]);
  for (let i = 0; i < lines.length; i += 2) {
    const [ours, theirs] = [lines[i], lines[i + 1]];
    for (const key of ["median", "min", "max", "peak_rss_bytes"]) assert.ok(positive(theirs[key]), `PyTorch ${theirs.phase} ${key}`);
    assert.equal(theirs.trainable_params, ours.trainable_params, `${ours.phase}: the same parameters train`);
    const [a, b] = [ours.first_loss as number, theirs.first_loss as number];
    assert.ok(positive(a) && Math.abs(a - b) <= 1e-5 * a, `${ours.phase}: first loss ${a} against PyTorch's ${b}`);
    assert.equal(ours.pytorch_first_loss, b);
    assert.equal(ours.ratio_to_pytorch, theirs.median / ours.median);
  }
});
