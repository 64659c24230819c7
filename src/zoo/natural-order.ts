/** Ordering of tensor names for writing checkpoints. */

/** Names sorted as a person reads them: layer 10 after layer 9. */
export function naturalCompare(a: string, b: string): number {
  const pa = a.split(/(\d+)/);
  const pb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    if (pa[i] === pb[i]) continue;
    const numeric = i % 2 === 1;
    return numeric ? Number(pa[i]) - Number(pb[i]) : pa[i] < pb[i] ? -1 : 1;
  }
  return pa.length - pb.length;
}
