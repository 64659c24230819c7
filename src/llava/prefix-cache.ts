/**
 * KV caches of finished sequences, kept for the sequences that start the same way (the next turn
 * of a chat, a shared system prompt): keys and values at a position depend only on the inputs up
 * to it, so a new sequence copies the longest common prefix and runs only the rest.
 */
import type { KVCache, LlamaForCausalLM } from "./llama.js";
import { ByteLru } from "../util/lru.js";

/** What one position holds: a token id, or `<image hash>#<feature row>`. */
export type PositionKey = number | string;

interface Kept {
  keys: PositionKey[];
  cache: KVCache;
}

export class PrefixCache {
  private readonly kept: ByteLru<number, Kept>;
  private nextId = 0;

  /** `maxBytes` 0 keeps nothing */
  constructor(maxBytes: number) {
    this.kept = new ByteLru(maxBytes);
  }

  /** bytes of the caches kept */
  get bytes(): number {
    return this.kept.bytes;
  }

  /**
   * A one-row cache with room for `capacity` positions for a sequence of inputs `keys`, holding
   * the longest prefix a kept cache shares with it (`reused` positions, at most all but the last
   * input, whose output the caller needs).
   */
  take(llm: LlamaForCausalLM, keys: PositionKey[], capacity: number): { cache: KVCache; reused: number } {
    let best: [number, Kept] | null = null;
    let reused = 0;
    for (const [id, kept] of this.kept) {
      const n = commonPrefix(kept.keys, keys, Math.min(kept.cache.length, keys.length - 1));
      if (n > reused) [best, reused] = [[id, kept], n];
    }
    if (!best) return { cache: llm.newCache(1, capacity), reused: 0 };
    this.kept.get(best[0]);
    return { cache: best[1].cache.prefix(reused, capacity), reused };
  }

  /** Keeps `cache`, whose positions hold the inputs `keys` (beyond its length they are ignored); caches it extends are dropped. */
  keep(keys: PositionKey[], cache: KVCache): void {
    if (this.kept.maxBytes === 0) return;
    const held = keys.slice(0, cache.length);
    for (const [id, kept] of this.kept) {
      if (kept.keys.length <= held.length && commonPrefix(kept.keys, held, kept.keys.length) === kept.keys.length) this.kept.delete(id);
    }
    this.kept.set(this.nextId++, { keys: held, cache }, cache.bytes);
  }
}

function commonPrefix(a: PositionKey[], b: PositionKey[], max: number): number {
  let n = 0;
  while (n < max && n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}
