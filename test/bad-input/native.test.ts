/**
 * Bad settings of the native backend: the addon's configure rejects them whole (nothing
 * changes), and the command reports bad thread counts in one clean line.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { assertCleanError, CLI, llava } from "../helpers/cli.js";
import { IMAGES, MODELS } from "../helpers/paths.js";
import { tryLoadAddon } from "../native/helpers.js";

const { addon, skip } = tryLoadAddon();
const RUN = ["run", "--model-path", path.join(MODELS, "tiny-llava-1.5-mha"), "--image-file", path.join(IMAGES, "gradient_640x480.png"), "--query", "hi", "--max-new-tokens", "1"];

test("configure rejects a bad change whole: the settings stay as they were", { skip }, () => {
  const before = addon!.settings();
  try {
    const set = addon!.configure({ threads: 1 });
    assert.throws(() => addon!.configure({ threads: 2, isa: "sparc" }), /native configure: kernel variant "sparc" is not available/);
    for (const threads of [0, 1025, 1.5, -1]) assert.throws(() => addon!.configure({ threads, isa: set.isas.at(-1) }), RangeError);
    assert.throws(() => addon!.configure({ threads: "2" as unknown as number }), /threads must be a number/);
    assert.throws(() => addon!.configure({ isa: 3 as unknown as string }), /isa must be a string/);
    assert.throws(() => addon!.configure(null as unknown as object), /settings must be an object/);
    assert.deepEqual(addon!.settings(), set);
  } finally {
    addon!.configure({ threads: before.threads, isa: before.isa });
  }
});

test("--threads out of range and a bad LLAVA_THREADS end in one clean error line", () => {
  assertCleanError(llava([...RUN, "--threads", "0"]), /--threads must be a whole number from 1 to 1024, got "0"/);
  assertCleanError(llava([...RUN, "--threads", "1025"]), /--threads/);
  const r = spawnSync(process.execPath, [CLI, ...RUN], { env: { ...process.env, LLAVA_THREADS: "many" }, encoding: "utf8", timeout: 60_000 });
  assertCleanError({ status: r.status, stdout: r.stdout, stderr: r.stderr }, /LLAVA_THREADS: expected a whole number of threads from 1 to 1024, got "many"/);
});
