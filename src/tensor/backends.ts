/**
 * Choosing a backend: "native" (the C++ addon), "ref" (plain TypeScript) or "auto" (native
 * when the addon loads, else ref with one warning per process). The environment variables
 * LLAVA_BACKEND, LLAVA_THREADS, LLAVA_BF16_DOT and LLAVA_EXACT_QUANT give the defaults.
 */
import type { Backend } from "./backend.js";
import { loadNativeAddon, NativeBackend } from "./native-backend.js";
import { RefBackend } from "./ref-backend.js";
import { check, LlavaError } from "../util/errors.js";

export type BackendName = "native" | "ref" | "auto";

export interface BackendOptions {
  /** default: env LLAVA_BACKEND, else "auto" */
  name?: BackendName;
  /** kernel threads of the native backend; default: env LLAVA_THREADS, else one per hardware thread */
  threads?: number;
  /**
   * native only: bf16 weights times bf16-rounded activations for prefill-sized products (about
   * 2x faster, not exact; see NativeBackend.setBf16Dot). Default: env LLAVA_BF16_DOT=1, else off.
   */
  bf16Dot?: boolean;
  /**
   * native only: q8_0/q4_0 forward products with f32 activations (exact, like the reference)
   * instead of integer-quantized ones (faster; see NativeBackendOptions). Default: env
   * LLAVA_EXACT_QUANT=1, else off.
   */
  exactQuant?: boolean;
  /** the addon file (default build/Release/llava_native.node in the package); for tests */
  addonPath?: string;
}

const NAMES: readonly BackendName[] = ["native", "ref", "auto"];

// The fallback warning is printed once per process, however many backends are created.
const fallbackWarning = { printed: false };

function parseThreads(value: number | string | undefined, source: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  const n = typeof value === "number" ? value : Number(value);
  check(Number.isInteger(n) && n >= 1 && n <= 1024, `${source}: expected a whole number of threads from 1 to 1024, got ${JSON.stringify(value)}`);
  return n;
}

export function createBackend(opts: BackendOptions = {}): Backend {
  const envName = process.env.LLAVA_BACKEND;
  const name = opts.name ?? (envName ? (envName as BackendName) : "auto");
  check(NAMES.includes(name), `${opts.name ? "createBackend name" : "LLAVA_BACKEND"}: expected one of ${NAMES.join(", ")}, got "${name}"`);
  const threads = opts.threads !== undefined ? parseThreads(opts.threads, "createBackend threads") : parseThreads(process.env.LLAVA_THREADS, "LLAVA_THREADS");
  if (name === "ref") return new RefBackend();
  let backend: NativeBackend;
  try {
    backend = new NativeBackend(loadNativeAddon(opts.addonPath), { exactQuant: opts.exactQuant ?? process.env.LLAVA_EXACT_QUANT === "1" });
  } catch (e) {
    if (name === "native" || !(e instanceof LlavaError)) throw e;
    if (!fallbackWarning.printed) {
      fallbackWarning.printed = true;
      process.stderr.write(`llava-ts: ${e.message} Falling back to the TypeScript reference backend (slow).\n`);
    }
    return new RefBackend();
  }
  if (threads !== undefined) backend.setThreads(threads);
  backend.setBf16Dot(opts.bf16Dot ?? process.env.LLAVA_BF16_DOT === "1");
  return backend;
}
