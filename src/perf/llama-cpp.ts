/**
 * llama.cpp, the peer, through node-llama-cpp (an optional dependency): the same protocol on the
 * same weights written as GGUF, with a text-only prompt of the same length (node-llama-cpp takes
 * no image) and the same thread count. llama.cpp keeps its default f16 KV cache: with an f32 one
 * as ours its decode measured half as fast, which is not how its users run it.
 */
import { LlavaError } from "../util/errors.js";
import { DECODE_TOKENS } from "./protocol.js";

type NodeLlamaCpp = typeof import("node-llama-cpp");

/** node-llama-cpp's module, or null when it is not installed. */
export async function importLlamaCpp(): Promise<NodeLlamaCpp | null> {
  try {
    return await import("node-llama-cpp");
  } catch {
    return null;
  }
}

export interface PeerResult {
  /** prefill tok/s and decode tok/s per timed run */
  prefill: number[];
  decode: number[];
  /** which llama.cpp build ran (npm's prebuilt binary or a local build) and the CPU features it was built with */
  build: string;
}

/** llama.cpp's prefill of `ids` and decode of DECODE_TOKENS greedy tokens after them, each `runs` times after a warm-up. */
export async function measureLlamaCpp(lib: NodeLlamaCpp, ggufFile: string, ids: number[], threads: number, runs: number): Promise<PeerResult> {
  // only the prebuilt binary from npm: never build, never download
  const llama = await lib.getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: lib.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: ggufFile });
  try {
    const context = await model.createContext({ contextSize: ids.length + DECODE_TOKENS + 16, batchSize: ids.length, threads });
    const sequence = context.getSequence();
    const tokens = ids as import("node-llama-cpp").Token[];
    const prefill = async () => {
      await sequence.clearHistory();
      const t = performance.now();
      await sequence.evaluateWithoutGeneratingNewTokens(tokens);
      return ids.length / ((performance.now() - t) / 1000);
    };
    const decode = async () => {
      await sequence.clearHistory();
      const stamps: number[] = [];
      for await (const _ of sequence.evaluate(tokens, { temperature: 0 })) {
        stamps.push(performance.now());
        if (stamps.length > DECODE_TOKENS) break;
      }
      if (stamps.length <= DECODE_TOKENS) throw new LlavaError(`llama.cpp stopped after ${stamps.length} of ${DECODE_TOKENS + 1} tokens`);
      return DECODE_TOKENS / ((stamps[DECODE_TOKENS] - stamps[0]) / 1000);
    };
    const result: PeerResult = { prefill: [], decode: [], build: `${llama.buildType}: ${llama.systemInfo}` };
    for (const [name, fn] of [["prefill", prefill], ["decode", decode]] as const) {
      await fn();
      for (let r = 0; r < runs; r++) result[name].push(await fn());
    }
    return result;
  } finally {
    await model.dispose();
    await llama.dispose();
  }
}
