import { LlavaError } from "../util/errors.js";
/** "Did you mean" suggestions for error messages about unknown names. */

/** Levenshtein edit distance between two strings. */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let prev = new Array<number>(b.length + 1);
  let cur = new Array<number>(b.length + 1);
  for (let j = 0; j <= b.length; j++) prev[j] = j;
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1;
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

/** Up to `count` candidates closest to `wanted`, nearest first (ties keep candidate order). */
export function similarNames(wanted: string, candidates: Iterable<string>, count = 3): string[] {
  const scored = [...candidates].map((name, index) => ({ name, index, d: editDistance(wanted, name) }));
  scored.sort((x, y) => x.d - y.d || x.index - y.index);
  return scored.slice(0, count).map((s) => s.name);
}

/** The error for a tensor name a store lacks, with the closest names it has. */
export function noSuchTensor(source: string, name: string, names: Map<string, unknown>): LlavaError {
  const similar = similarNames(name, names.keys(), 3);
  const hint = similar.length > 0 ? `; similar names: ${similar.map((s) => `"${s}"`).join(", ")}` : "";
  return new LlavaError(`weights ${source}: no tensor named "${name}" (${names.size} tensors)${hint}`);
}
