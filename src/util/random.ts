/**
 * A small, fast seeded PRNG (mulberry32). Its whole state is one 32-bit integer, so a training
 * run can save it in a checkpoint and resume with the same random stream.
 */
export class Rng {
  constructor(public state: number) {
    this.state = state >>> 0;
  }

  /** a number in [0, 1) */
  next(): number {
    this.state = (this.state + MULBERRY_STEP) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Moves on as `n` calls of next() would (the state only adds MULBERRY_STEP per call), e.g. past numbers a kernel drew. */
  skip(n: number): void {
    this.state = (this.state + Math.imul(n, MULBERRY_STEP)) >>> 0;
  }
}

/**
 * What mulberry32 adds to its state per number: the i-th number after state s is a function of
 * s + i · MULBERRY_STEP alone, so a kernel can draw any stretch of the stream in parallel
 * (native/impl/elementwise.h, k_dropout).
 */
export const MULBERRY_STEP = 0x6d2b79f5;

/** The same stream as a function returning numbers in [0, 1); each user owns its own. */
export function seededRandom(seed: number): () => number {
  const rng = new Rng(seed);
  return () => rng.next();
}
