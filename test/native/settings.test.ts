/**
 * The native backend's settings: process-wide thread count and kernel variant, which only
 * `configure` changes, and per-backend options (bf16Dot, exactQuant), which a second backend
 * leaves alone. Skipped when the addon is not built.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { bf16DotUnavailable, createBackend } from "../../src/tensor/backends.js";
import { NativeBackend } from "../../src/tensor/native-backend.js";
import { packMatrix } from "../../src/tensor/packed.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { llava } from "../helpers/cli.js";
import { IMAGES, MODELS, ROOT } from "../helpers/paths.js";
import { randn, tryLoadAddon } from "./helpers.js";

const { addon, skip } = tryLoadAddon();

/** Runs fn with the settings as they are now restored afterwards. */
function keepingSettings(fn: () => void): void {
  const before = addon!.settings();
  try {
    fn();
  } finally {
    addon!.configure({ threads: before.threads, isa: before.isa });
  }
}

/** A bf16 product of prefill size, which the bf16 dot path (where on) computes differently. */
function bf16Product(be: NativeBackend): Float32Array {
  const w = packMatrix(randn(40 * 64, 1), 40, 64, "bf16");
  const c = new Float32Array(9 * 40);
  be.packedMatmul(randn(9 * 64, 2), w, c, 9, false, false);
  return c;
}

test("settings: threads, the variant in use, the variants offered, bf16 dot support", { skip }, () => {
  const s = addon!.settings();
  assert.ok(Number.isInteger(s.threads) && s.threads >= 1);
  assert.ok(s.isas.includes(s.isa));
  assert.equal(s.isas.at(-1), "portable");
  assert.equal(typeof s.bf16DotSupported, "boolean");
});

test("settings: every variant this CPU can run is offered, best first", { skip: skip || (process.arch !== "x64" || !fs.existsSync("/proc/cpuinfo") ? "needs x86-64 Linux" : false) }, () => {
  const flags = new Set(/^flags\s*:(.*)$/m.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))![1].trim().split(/\s+/));
  const avx2 = ["avx2", "fma", "f16c"].every((f) => flags.has(f));
  const avx512 = avx2 && ["avx512f", "avx512bw", "avx512vl"].every((f) => flags.has(f));
  const want = [
    ...(avx512 && flags.has("avx512_vnni") ? ["avx512vnni"] : []),
    ...(avx512 ? ["avx512"] : []),
    ...(avx2 ? ["avx2"] : []),
    "portable",
  ];
  assert.deepEqual(addon!.settings().isas, want);
  keepingSettings(() => {
    for (const isa of want) {
      // bf16 dot products come with the AVX-512 tables only, where the CPU has AVX512-BF16
      assert.equal(addon!.configure({ isa }).bf16DotSupported, isa.startsWith("avx512") && flags.has("avx512_bf16"), isa);
    }
  });
});

test("settings: creating backends never changes them; configure does, for every backend", { skip }, () => {
  keepingSettings(() => {
    const { isas } = addon!.settings();
    const first = createBackend({ name: "native", threads: 1 }) as NativeBackend;
    first.configure({ isa: isas.at(-1) });
    const set = first.settings;
    new NativeBackend(addon!, { bf16Dot: true, exactQuant: true });
    createBackend({ name: "native", bf16Dot: false });
    assert.deepEqual(first.settings, set);
    const other = createBackend({ name: "native" }) as NativeBackend;
    other.configure({ threads: 2, isa: isas[0] });
    assert.deepEqual(first.settings, { ...set, threads: 2, isa: isas[0], bf16DotSupported: other.settings.bf16DotSupported });
  });
});

test("settings: a second backend's bf16Dot and exactQuant leave the first's results alone", { skip }, () => {
  const fast = createBackend({ name: "native", bf16Dot: true }) as NativeBackend;
  const before = bf16Product(fast);
  const exact = createBackend({ name: "native", bf16Dot: false, exactQuant: true }) as NativeBackend;
  assert.equal(fast.bf16Dot, true);
  assert.equal(fast.exactQuant, false);
  assert.deepEqual(bf16Product(fast), before);
  const plain = bf16Product(exact);
  // with the instruction, the two backends compute the same product differently at the same time
  assert.equal(plain.some((x, i) => x !== before[i]), fast.settings.bf16DotSupported);
});

test("bf16DotUnavailable: says why and what is done instead, or nothing where bf16 dot products run", { skip }, () => {
  assert.match(bf16DotUnavailable(new RefBackend())!, /the ref backend has no bf16 dot products, so bf16 weights multiply f32 activations exactly instead/);
  keepingSettings(() => {
    const be = new NativeBackend(addon!, { bf16Dot: true });
    for (const isa of addon!.settings().isas) {
      be.configure({ isa });
      const why = bf16DotUnavailable(be);
      if (be.settings.bf16DotSupported) assert.equal(why, undefined, isa);
      else assert.match(why!, new RegExp(`^the ${isa} kernels in use have no bf16 dot-product instruction \\(AVX512-BF16.*so bf16 weights multiply f32 activations exactly`));
    }
  });
});

test("--dtype bf16 says in one warning line when bf16 dot products are not used, and why", () => {
  const run = (backend: string) =>
    llava(["run", "--model-path", path.join(MODELS, "tiny-llava-1.5-mha"), "--image-file", path.join(IMAGES, "gradient_640x480.png"), "--query", "hi", "--dtype", "bf16", "--backend", backend, "--max-new-tokens", "1", "--temperature", "0"]);
  const warnings = (stderr: string) => stderr.split("\n").filter((l) => l.startsWith("[WARNING] --dtype bf16: "));
  const ref = run("ref");
  assert.equal(ref.status, 0, ref.stderr);
  assert.deepEqual(warnings(ref.stderr), [`[WARNING] --dtype bf16: ${bf16DotUnavailable(new RefBackend())}`]);
  if (skip) return;
  const native = run("native");
  assert.equal(native.status, 0, native.stderr);
  assert.equal(warnings(native.stderr).length, addon!.settings().bf16DotSupported ? 0 : 1, native.stderr);
});

test("LLAVA_THREADS sizes the pool when the process creates its first native backend, and never again", { skip }, () => {
  const script = `
    import { createBackend } from ${JSON.stringify(path.join(ROOT, "dist", "src", "tensor", "backends.js"))};
    const first = createBackend({ name: "native" });
    const atFirst = first.settings.threads;
    first.configure({ threads: 1 });
    createBackend({ name: "native" });
    console.log(JSON.stringify([atFirst, first.settings.threads]));`;
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, LLAVA_THREADS: "3" }, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), [3, 1]);
});
