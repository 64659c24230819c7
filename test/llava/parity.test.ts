/**
 * Fixture parity: every reference case goes through `runDump` (what `llava dump` runs) and each
 * array is compared with the reference values at the fixtures' tolerances.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runDump } from "../../src/cli/dump.js";
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
      await runDump(loaded, {
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
