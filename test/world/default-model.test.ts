/** The default model rule: one folder, used by run/chat/serve and loadLlava when no model path is given. */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { assertCleanError, llava } from "../helpers/cli.js";
import { ROOT } from "../helpers/paths.js";
import { DEFAULT_MODEL_NAME, defaultModelDir, modelPathOrDefault } from "../../src/llava/default-model.js";

const shipped = fs.existsSync(path.join(defaultModelDir(), "config.json"));

test("the default model is the package's models/ folder, and a given path wins", () => {
  assert.equal(defaultModelDir(), path.join(ROOT, "models", DEFAULT_MODEL_NAME));
  assert.match(DEFAULT_MODEL_NAME, /v1/, "the name makes the reference's rule pick llava_v1");
  assert.equal(modelPathOrDefault("some/dir"), "some/dir");
});

test("without a model path the default folder is used, or a clear line says it is missing", () => {
  if (shipped) {
    assert.equal(modelPathOrDefault(undefined), defaultModelDir());
    return;
  }
  assert.throws(() => modelPathOrDefault(undefined), /no --model-path given and no default model at .*: npm run demo:train trains one/);
  const r = llava(["run", "--image-file", path.join(ROOT, "examples", "world", "shapes-0.png"), "--query", "What color is the hexagon?"]);
  assertCleanError(r, /no default model at /);
});
