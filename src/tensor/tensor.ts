/**
 * Tensor: a shape, float32 data and the backend that computes on it, plus a reverse-mode
 * autograd graph. Each op output that depends on a tensor requiring grad records its inputs and
 * a backward closure; `backward()` walks that graph in reverse topological order. There is no
 * global tape or grad mode: inference on weights that do not require grad records nothing.
 * Gradient memory is reused: an intermediate's gradient buffer passes to a later one of the same
 * size once propagated, and a released leaf gradient (the optimizer's zero_grad) is kept, zeroed,
 * for the next step.
 */
import type { Backend } from "./backend.js";
import type { PackedMatrix } from "./packed.js";

export type Shape = readonly number[];

export const numel = (shape: Shape): number => shape.reduce((a, b) => a * b, 1);

interface GradNode {
  inputs: Tensor[];
  /** given d loss / d output, accumulate into the inputs' `.grad` */
  backward: (grad: Float32Array) => void;
}

export class Tensor {
  readonly shape: Shape;
  readonly data: Float32Array;
  readonly backend: Backend;
  requiresGrad: boolean;
  grad: Float32Array | null = null;
  /**
   * With `grad`: null when any row (of the first dimension) may hold a nonzero gradient, or the
   * only rows that may (an embedding table's gradient touches the rows of the batch's tokens).
   */
  gradRows: Set<number> | null = null;
  /** a released gradient buffer, zeroed, that the next gradient takes instead of a fresh one */
  private spareGrad: Float32Array | null = null;
  /** how this tensor was computed, when gradients flow through it */
  node: GradNode | null = null;

  constructor(data: Float32Array, shape: Shape, backend: Backend, requiresGrad = false) {
    if (data.length !== numel(shape)) {
      throw new Error(`tensor data has ${data.length} elements but shape [${shape.join(", ")}] needs ${numel(shape)}`);
    }
    this.data = data;
    this.shape = [...shape];
    this.backend = backend;
    this.requiresGrad = requiresGrad;
  }

  static zeros(shape: Shape, backend: Backend, requiresGrad = false): Tensor {
    return new Tensor(new Float32Array(numel(shape)), shape, backend, requiresGrad);
  }

  get size(): number {
    return this.data.length;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** size of dimension `i` (negative counts from the end) */
  dim(i: number): number {
    return this.shape[i < 0 ? this.shape.length + i : i];
  }

  /** the gradient buffer, allocated (or taken from the released one) on first use, for any row */
  gradBuffer(): Float32Array {
    this.gradRows = null;
    return this.takeGrad();
  }

  /** the gradient buffer for a caller that adds to these rows (of the first dimension) only */
  gradRowsBuffer(rows: Iterable<number>): Float32Array {
    if (!this.grad) this.gradRows = new Set(rows);
    else if (this.gradRows) for (const r of rows) this.gradRows.add(r);
    return this.takeGrad();
  }

  private takeGrad(): Float32Array {
    if (this.grad) return this.grad;
    if (this.node && recycled) this.grad = recycled.take(this.size, this.backend);
    else [this.grad, this.spareGrad] = [this.spareGrad ?? new Float32Array(this.size), null];
    return this.grad;
  }

  /**
   * Drops the gradient (`grad` becomes null, as torch's zero_grad sets it to None) but keeps its
   * buffer, zeroed where it was written, for the next one: a step reuses its gradient memory.
   */
  releaseGrad(): void {
    const g = this.grad;
    if (!g) return;
    if (this.gradRows) for (const [a, b] of rowRanges(this.gradRows, this.size / this.shape[0])) g.fill(0, a, b);
    else this.backend.zero(g);
    [this.spareGrad, this.grad, this.gradRows] = [g, null, null];
  }

  /** A tensor sharing this one's data but cut off from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape, this.backend, false);
  }

  toArray(): number[] {
    return Array.from(this.data);
  }

  /**
   * Back-propagates from this tensor. With no seed it must hold a single value (a loss) and
   * the seed is 1. Gradients accumulate into `.grad` of every tensor that requires grad.
   */
  backward(seed?: Float32Array): void {
    if (!seed && this.size !== 1) throw new Error("backward() without a seed needs a scalar tensor");
    const order = topologicalOrder(this);
    const outer = recycled;
    recycled = new GradRecycler();
    try {
      this.gradBuffer().set(seed ?? new Float32Array([1]));
      for (let i = order.length - 1; i >= 0; i--) {
        const t = order[i];
        if (!t.node || !t.grad) continue;
        t.node.backward(t.grad);
        // an intermediate gradient is dead once propagated: later ones reuse its memory
        recycled.give(t.grad);
        t.grad = null;
      }
    } finally {
      recycled = outer;
    }
  }
}

/** Gradient buffers of intermediate tensors, handed on within one backward pass, by size. */
class GradRecycler {
  private readonly free = new Map<number, Float32Array[]>();

  take(size: number, backend: Backend): Float32Array {
    const buffer = this.free.get(size)?.pop();
    if (!buffer) return new Float32Array(size);
    backend.zero(buffer);
    return buffer;
  }

  give(buffer: Float32Array): void {
    const list = this.free.get(buffer.length);
    if (list) list.push(buffer);
    else this.free.set(buffer.length, [buffer]);
  }
}

/** the recycler of the backward pass running now (a checkpointed segment runs one inside another) */
let recycled: GradRecycler | null = null;

/** The element ranges [start, end) of these rows (each `rowLength` long), ascending, adjacent rows merged. */
export function rowRanges(rows: Set<number>, rowLength: number): Array<[number, number]> {
  const sorted = Int32Array.from(rows).sort();
  const out: Array<[number, number]> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last[1] === r * rowLength) last[1] += rowLength;
    else out.push([r * rowLength, (r + 1) * rowLength]);
  }
  return out;
}

/** Tensors reachable from `root` through grad nodes, inputs before outputs. */
function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // iterative DFS: deep graphs (many layers x many ops) would overflow the call stack
  const stack: Array<[Tensor, boolean]> = [[root, false]];
  while (stack.length) {
    const [t, expanded] = stack.pop()!;
    if (expanded) {
      order.push(t);
      continue;
    }
    if (seen.has(t)) continue;
    seen.add(t);
    stack.push([t, true]);
    for (const input of t.node?.inputs ?? []) if (input.requiresGrad && !seen.has(input)) stack.push([input, false]);
  }
  return order;
}

/**
 * A buffer op outputs are carved from inside `withScratch`, instead of fresh arrays: steps whose
 * intermediates die with the step (a decode step; a training step's forward, once its backward
 * is done) then allocate no array per op.
 */
export class Scratch {
  buf = new Float32Array(0);
  used = 0;
  /** floats asked for in this run so far, across buffers: the next run starts in one of this size */
  wanted = 0;

  /** Lets go of a buffer of more than `keep` floats (64 MiB by default): a long prompt's are not held until the next. */
  trim(keep = 16 * 2 ** 20): void {
    if (this.buf.length > keep) {
      this.buf = new Float32Array(0);
      this.wanted = 0;
    }
  }
}

let scratch: Scratch | null = null;

/**
 * n floats as the allocator hands them over, not zeroed, for a caller that writes every one
 * before anything reads it: zeroing the 700 MB of a bench-small LoRA step's op outputs and
 * gradient terms took 2% of the step's profile.
 */
export function uninitialized(n: number): Float32Array {
  if (n < 1024) return new Float32Array(n);
  const b = Buffer.allocUnsafeSlow(n * 4);
  return new Float32Array(b.buffer, b.byteOffset, n);
}

/**
 * An output buffer of n values: a fresh one, or a view of the scratch buffer in use; either holds
 * whatever was there before, and every op writes all of its output (zeroing a scratch view cost
 * a 236-token prefill 3.8 ms of a single thread's 228).
 */
export function outputBuffer(n: number): Float32Array {
  const s = scratch;
  if (!s) return uninitialized(n);
  if (s.used + n > s.buf.length) {
    // views already handed out keep the old buffer; the next run starts in one of the run's size
    s.buf = new Float32Array(Math.max(2 * s.buf.length, s.used + n, 1 << 16));
    s.used = 0;
  }
  const out = s.buf.subarray(s.used, s.used + n);
  s.used += n;
  s.wanted += n;
  return out;
}

/**
 * Runs `fn` with op outputs carved from `s`, reused from its start on each run: nothing computed
 * inside may be read after the next run starts, and a graph built inside must be
 * back-propagated before then (its backward reads the outputs).
 */
export function withScratch<T>(s: Scratch, fn: () => T): T {
  if (scratch === s) return fn();
  const before = scratch;
  scratch = s;
  // a run like the last one fits in one buffer
  if (s.wanted > s.buf.length) s.buf = new Float32Array(s.wanted);
  s.used = 0;
  s.wanted = 0;
  try {
    return fn();
  } finally {
    scratch = before;
  }
}

/**
 * Builds an op result: when any input requires grad, the output does too and remembers the
 * backward closure.
 */
export function result(
  data: Float32Array, shape: Shape, inputs: Tensor[], backward: (grad: Float32Array) => void,
): Tensor {
  const backend = inputs[0].backend;
  const needsGrad = inputs.some((t) => t.requiresGrad);
  const out = new Tensor(data, shape, backend, needsGrad);
  if (needsGrad) out.node = { inputs, backward };
  return out;
}

/**
 * A frozen 2-D weight kept in a packed format (bf16, f16, q8_0, q4_0). It takes part in
 * matrix products but never receives a gradient.
 */
export class PackedTensor {
  readonly requiresGrad = false;
  constructor(readonly matrix: PackedMatrix, readonly backend: Backend) {}

  get shape(): Shape {
    return [this.matrix.rows, this.matrix.cols];
  }
}
