/** Order statistics of the benchmarks' repeated measurements. */

/** The value below which a fraction `q` of `xs` lies (the upper one of two middles). */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

export const median = (xs: number[]): number => quantile(xs, 0.5);
