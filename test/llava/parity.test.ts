/**
 * Fixture parity: every reference case goes through the model layer's trace (what `llava dump` writes) and each
 * array is compared with the reference values at the fixtures' tolerances. The comparison itself
 * is tested too: it must be able to fail.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { dumpTrace } from "../helpers/dump.js";
import { loadLlava } from "../../src/llava/load.js";
import type { Backend } from "../../src/tensor/backend.js";
import { createBackend } from "../../src/tensor/backends.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { compareCase } from "../helpers/compare.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";

interface Meta {
  images: string[];
  question?: string;
  system?: string | null;
  text?: string;
}

const PARITY_CASES = ["tiny-llava-1.5-mha/gradient", "tiny-llava-1.5-mha/text_only", "tiny-llava-1.5-mha/train_grad", "tiny-llava-1.5-orig/gradient", "tiny-llava-next/gradient"];

const native = (() => {
  try {
    return createBackend({ name: "native" });
  } catch {
    return null;
  }
})();
const BACKENDS: Array<[string, Backend | null]> = [["ref", new RefBackend()], ["native", native]];

for (const [backendName, backend] of BACKENDS) for (const name of PARITY_CASES) {
  test(`fixture parity (${backendName} backend): ${name}`, async (t) => {
    if (!backend) return t.skip("the native addon is not built");
    const [model] = name.split("/");
    const refDir = path.join(CASES, name);
    const meta = JSON.parse(fs.readFileSync(path.join(refDir, "meta.json"), "utf8")) as Meta;
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "llava-parity-"));
    try {
      // the original format names its tower relative to the models folder
      const loaded = await loadLlava(path.join(MODELS, model), { backend, visionTower: model.endsWith("orig") ? path.join(MODELS, "tiny-clip-vit-56") : undefined });
      const answer = meta.text ? /ASSISTANT: (.*)<\/s>$/s.exec(meta.text)![1] : undefined;
      await dumpTrace(loaded, {
        images: meta.images.map((f) => path.join(IMAGES, f)),
        query: meta.question ?? "What is shown?",
        system: meta.system ?? undefined,
        answer,
        convMode: "llava_v1",
        maxNewTokens: 20,
        out,
      });
      const verdicts = compareCase(refDir, out);
      const failed = verdicts.filter((v) => !v.ok);
      assert.deepEqual(failed, [], verdicts.map((v) => `${v.ok ? "PASS" : "FAIL"} ${v.name}: ${v.detail}`).join("\n"));
      assert.ok(verdicts.length >= 6, `only ${verdicts.length} arrays compared`);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
}

/** A copy of a reference case to tamper with, as reference (`ref`) and as candidate (`cand`). */
function tamperable(t: TestContext, name: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "llava-compare-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const [ref, cand] = [path.join(dir, "ref"), path.join(dir, "cand")];
  fs.cpSync(path.join(CASES, name), ref, { recursive: true });
  fs.cpSync(path.join(CASES, name), cand, { recursive: true });
  return { ref, cand };
}

/** Changes the last element of a little-endian float32 or int64 array file in place; returns it. */
function changeLast(file: string, change: (x: number) => number): number {
  const bytes = fs.readFileSync(file);
  const float = fs.readFileSync(file, "latin1").includes("'<f4'");
  const at = bytes.length - (float ? 4 : 8);
  const x = change(float ? bytes.readFloatLE(at) : Number(bytes.readBigInt64LE(at)));
  if (float) bytes.writeFloatLE(x, at);
  else bytes.writeBigInt64LE(BigInt(x), at);
  fs.writeFileSync(file, bytes);
  return x;
}

const failures = (ref: string, cand: string) => compareCase(ref, cand).filter((v) => !v.ok).map((v) => `${v.name}: ${v.detail}`);

test("comparison: a reference case equals itself, array by array", () => {
  const dir = path.join(CASES, "tiny-llava-1.5-mha", "gradient");
  const verdicts = compareCase(dir, dir);
  assert.deepEqual(verdicts.filter((v) => !v.ok), []);
  assert.equal(verdicts.length, fs.readdirSync(dir).filter((f) => f.endsWith(".npy")).length - 2, "every array but the two auxiliary ones");
});

test("comparison: a value just inside its tolerance passes, just outside fails", (t) => {
  const { ref, cand } = tamperable(t, "tiny-llava-1.5-mha/gradient");
  const file = path.join(cand, "logits_last.npy");
  let bound = 0;
  changeLast(file, (r) => {
    bound = 1e-3 + 1e-4 * Math.abs(r);
    return r + 0.5 * bound;
  });
  assert.deepEqual(failures(ref, cand), []);
  changeLast(file, (x) => x + bound);
  assert.deepEqual(failures(ref, cand).map((f) => f.split(":")[0]), ["logits_last"]);
});

test("comparison: an array with no tolerance rule, a missing array, a changed id or shape fail", (t) => {
  const { ref, cand } = tamperable(t, "tiny-llava-1.5-mha/gradient");
  for (const dir of [ref, cand]) fs.copyFileSync(path.join(ref, "logits_last.npy"), path.join(dir, "logits_unknown.npy"));
  assert.deepEqual(failures(ref, cand), ["logits_unknown: no tolerance rule for this array"]);
  fs.rmSync(path.join(ref, "logits_unknown.npy"));

  fs.rmSync(path.join(cand, "projector_output.npy"));
  fs.copyFileSync(path.join(ref, "pixel_values.npy"), path.join(cand, "image_features.npy"));
  const id = changeLast(path.join(cand, "generated_ids.npy"), (x) => x + 1);
  assert.deepEqual(failures(ref, cand), [
    `generated_ids: first mismatch at 19: ${id} vs ${id - 1}`,
    "image_features: shape [1,3,56,56] vs reference [1,16,48]",
    "projector_output: not dumped",
  ]);
});
