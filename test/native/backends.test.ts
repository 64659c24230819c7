import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { createBackend } from "../../src/tensor/backends.js";
import { defaultAddonPath, NativeBackend } from "../../src/tensor/native-backend.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { LlavaError } from "../../src/util/errors.js";
import { ROOT } from "../helpers/paths.js";
import fs from "node:fs";

const missing = path.join(ROOT, "build", "no-such-dir", "llava_native.node");
const built = fs.existsSync(defaultAddonPath());

/** Captures what `fn` writes to stderr. */
function stderrOf(fn: () => void): string {
  const original = process.stderr.write.bind(process.stderr);
  let text = "";
  process.stderr.write = ((chunk: string | Uint8Array) => {
    text += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    fn();
  } finally {
    process.stderr.write = original;
  }
  return text;
}

test("createBackend: ref is the TypeScript reference backend", () => {
  const be = createBackend({ name: "ref" });
  assert.ok(be instanceof RefBackend);
  assert.equal(be.name, "ref");
});

test("createBackend: auto falls back to ref with one warning per process when the addon is absent", () => {
  let first: unknown;
  let second: unknown;
  const warned = stderrOf(() => {
    first = createBackend({ name: "auto", addonPath: missing });
    second = createBackend({ name: "auto", addonPath: missing });
  });
  assert.ok(first instanceof RefBackend);
  assert.ok(second instanceof RefBackend);
  assert.equal(warned.split("\n").filter((l) => l.includes("Falling back")).length, 1, warned);
  assert.match(warned, /no-such-dir/);
});

test("createBackend: native without the addon throws a LlavaError naming the file", () => {
  assert.throws(() => createBackend({ name: "native", addonPath: missing }), (e: Error) => e instanceof LlavaError && e.message.includes(missing));
});

test("createBackend: bad names and thread counts are LlavaErrors", () => {
  assert.throws(() => createBackend({ name: "gpu" as "auto" }), LlavaError);
  assert.throws(() => createBackend({ name: "ref", threads: 0 }), /whole number of threads/);
});

test("createBackend: native with a thread count", { skip: built ? false : "the native addon is not built" }, () => {
  const be = createBackend({ name: "native", threads: 1 }) as NativeBackend;
  assert.equal(be.name, "native");
  assert.equal(be.settings.threads, 1);
  const auto = createBackend({ name: "auto", threads: 2 }) as NativeBackend;
  assert.equal(auto.name, "native");
  assert.equal(auto.settings.threads, 2);
});

test("createBackend: exactQuant from the option or LLAVA_EXACT_QUANT=1, off by default", { skip: built ? false : "the native addon is not built" }, () => {
  const saved = process.env.LLAVA_EXACT_QUANT;
  const exactOf = (opts: Parameters<typeof createBackend>[0]) => (createBackend(opts) as NativeBackend).exactQuant;
  try {
    delete process.env.LLAVA_EXACT_QUANT;
    assert.equal(exactOf({ name: "native" }), false);
    assert.equal(exactOf({ name: "native", exactQuant: true }), true);
    process.env.LLAVA_EXACT_QUANT = "1";
    assert.equal(exactOf({ name: "native" }), true);
    assert.equal(exactOf({ name: "native", exactQuant: false }), false);
  } finally {
    if (saved === undefined) delete process.env.LLAVA_EXACT_QUANT;
    else process.env.LLAVA_EXACT_QUANT = saved;
  }
});
