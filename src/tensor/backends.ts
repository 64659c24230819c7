/**
 * Choosing a backend: "native" (the C++ addon), "ref" (plain TypeScript) or "auto" (native
 * when the addon loads, else ref with one warning per process). The environment variables
 * LLAVA_BACKEND, LLAVA_THREADS, LLAVA_BF16_DOT and LLAVA_EXACT_QUANT give the defaults.
 *
 * bf16Dot and exactQuant belong to the backend created. The thread count is process-wide (one
 * pool shared by every native backend): it changes only when `threads` is given, or, from
 * LLAVA_THREADS, when the process creates its first native backend; never implicitly later.
 */
import type { Backend } from "./backend.js";
import { loadNativeAddon, MAX_NATIVE_THREADS, NativeBackend, type NativeAddon } from "./native-backend.js";
import { RefBackend } from "./ref-backend.js";
import { check, LlavaError } from "../util/errors.js";

export type BackendName = "native" | "ref" | "auto";

export interface BackendOptions {
  /** default: env LLAVA_BACKEND, else "auto" */
  name?: BackendName;
  /**
   * kernel threads of the native backend, for the whole process (every native backend shares
   * one pool); default: leave them as they are (at first: env LLAVA_THREADS, else one per
   * hardware thread)
   */
  threads?: number;
  /**
   * native only: bf16 weights times bf16-rounded activations for prefill-sized products (about
   * 2x faster, not exact; see NativeBackendOptions.bf16Dot and bf16DotUnavailable). Default: env
   * LLAVA_BF16_DOT=1, else off.
   */
  bf16Dot?: boolean;
  /**
   * native only: q8_0/q4_0/q4_k/q5_k/q6_k forward products with f32 activations (exact, like the reference)
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
// Addons whose thread count LLAVA_THREADS has had its one chance to set.
const envThreadsApplied = new WeakSet<NativeAddon>();

function parseThreads(value: number | string | undefined, source: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  const n = typeof value === "number" ? value : Number(value);
  check(Number.isInteger(n) && n >= 1 && n <= MAX_NATIVE_THREADS, `${source}: expected a whole number of threads from 1 to ${MAX_NATIVE_THREADS}, got ${JSON.stringify(value)}`);
  return n;
}

export function createBackend(opts: BackendOptions = {}): Backend {
  const envName = process.env.LLAVA_BACKEND;
  const name = opts.name ?? (envName ? (envName as BackendName) : "auto");
  check(NAMES.includes(name), `${opts.name ? "createBackend name" : "LLAVA_BACKEND"}: expected one of ${NAMES.join(", ")}, got "${name}"`);
  const envThreads = parseThreads(process.env.LLAVA_THREADS, "LLAVA_THREADS");
  const threads = opts.threads !== undefined ? parseThreads(opts.threads, "createBackend threads") : undefined;
  if (name === "ref") return new RefBackend();
  let addon: NativeAddon;
  try {
    addon = loadNativeAddon(opts.addonPath);
  } catch (e) {
    if (name === "native" || !(e instanceof LlavaError)) throw e;
    if (!fallbackWarning.printed) {
      fallbackWarning.printed = true;
      process.stderr.write(`llava-ts: ${e.message} Falling back to the TypeScript reference backend (slow).\n`);
    }
    return new RefBackend();
  }
  const backend = new NativeBackend(addon, {
    exactQuant: opts.exactQuant ?? process.env.LLAVA_EXACT_QUANT === "1",
    bf16Dot: opts.bf16Dot ?? process.env.LLAVA_BF16_DOT === "1",
  });
  const wanted = threads ?? (envThreadsApplied.has(addon) ? undefined : envThreads);
  envThreadsApplied.add(addon);
  if (wanted !== undefined) backend.configure({ threads: wanted });
  return backend;
}

/**
 * Why `backend` cannot multiply bf16 weights with bf16 dot products, and what it does instead
 * (one line for the user); undefined when it can.
 */
export function bf16DotUnavailable(backend: Backend): string | undefined {
  const instead = "so bf16 weights multiply f32 activations exactly instead (results differ slightly from a bf16 model in PyTorch)";
  if (!(backend instanceof NativeBackend)) return `the ${backend.name} backend has no bf16 dot products, ${instead}`;
  const { bf16DotSupported, isa } = backend.settings;
  if (bf16DotSupported) return undefined;
  return `the ${isa} kernels in use have no bf16 dot-product instruction (AVX512-BF16, absent on this CPU unless another variant was chosen), ${instead}, at about half the speed on prompts`;
}
