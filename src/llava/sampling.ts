/**
 * Drawing a token from logits with temperature and top-p, as transformers' TopPLogitsWarper and
 * multinomial sampling do it: tokens in ascending order of logit (ties by ascending id), the
 * least likely dropped while their cumulative probability stays <= 1 - top_p (at least one
 * kept), then one draw from the renormalised rest, walking down from the most likely.
 *
 * `sampleSorted` does exactly that over the whole sorted vocabulary. `sampleToken` gives the same
 * token for the same logits and draw without sorting it: it sorts only the TOP most likely
 * tokens (a bounded heap, one pass) and needs the rest only as one sum. Sums over the rest are
 * then in another order than sampleSorted's, so each decision that depends on them (a
 * cumulative probability against 1 - top_p, the draw's remainder against 0) must clear a margin
 * far above their rounding error (n ulps); when one does not, or the draw reaches past the top
 * tokens, it falls back to sampleSorted.
 */

/** How many of the most likely tokens are sorted. */
const TOP = 128;
/** Relative margin a decision must clear: the sums' rounding differs by at most ~n·2^-53 (n = vocabulary) of their total. */
const MARGIN = 1e-9;

let probs = new Float64Array(0);
const heap = new Int32Array(TOP);

/** Unnormalised probabilities exp(logit / T - max) into `probs` (reused across calls); returns their sum in id order. */
function softmaxNumerators(logits: Float32Array, temperature: number): number {
  const n = logits.length;
  if (probs.length < n) probs = new Float64Array(n);
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i] / temperature);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += probs[i] = Math.exp(logits[i] / temperature - max);
  return sum;
}

let keys = new Float64Array(0);
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * Token ids in ascending order of logit, ties by ascending id (a stable sort's order), sorted as
 * numbers: each key is the logit's bits made order-preserving (-0 as +0, the comparison's tie)
 * times 2^b plus the id, exact in a double while 32 + b <= 53.
 */
function ascendingOrder(logits: Float32Array): ArrayLike<number> {
  const n = logits.length;
  const scale = 2 ** Math.max(1, Math.ceil(Math.log2(n)));
  if (scale > 2 ** 21) return Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[a] - logits[b]);
  if (keys.length < n) keys = new Float64Array(n);
  const k = keys.subarray(0, n);
  for (let i = 0; i < n; i++) {
    f32[0] = logits[i] + 0;
    const s = u32[0];
    k[i] = (s & 0x80000000 ? ~s >>> 0 : (s | 0x80000000) >>> 0) * scale + i;
  }
  k.sort();
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = k[i] % scale;
  return order;
}

/** The full-sort sampler over `probs` (`u`: the uniform draw). */
function sortedDraw(logits: Float32Array, sum: number, topP: number, u: number): number {
  const n = logits.length;
  const p = probs;
  const order = ascendingOrder(logits);
  let first = 0; // ascending order: tokens order[0 .. first) are removed
  if (topP < 1) {
    let cum = 0;
    while (first < n - 1) {
      cum += p[order[first]] / sum;
      if (cum > 1 - topP) break;
      first++;
    }
  }
  let kept = 0;
  for (let i = first; i < n; i++) kept += p[order[i]];
  let r = u * kept;
  for (let i = n - 1; i >= first; i--) {
    r -= p[order[i]];
    if (r <= 0) return order[i];
  }
  return order[n - 1];
}

/** The full-sort sampler (the reference `sampleToken` is checked against). */
export function sampleSorted(logits: Float32Array, temperature: number, topP: number, random: () => number): number {
  if (!(temperature > 0)) return argmax(logits);
  const sum = softmaxNumerators(logits, temperature);
  return sortedDraw(logits, sum, topP, random());
}

export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Whether token a comes after token b in the ascending order (larger logit, or equal and larger id). */
const after = (logits: Float32Array, a: number, b: number) => logits[a] > logits[b] || (logits[a] === logits[b] && a > b);

/** The `k` last tokens of the ascending order, most likely first (a min-heap of the best so far, then sorted). */
function topTokens(logits: Float32Array, k: number): Int32Array {
  let size = 0;
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < size && after(logits, heap[m], heap[l])) m = l;
      if (r < size && after(logits, heap[m], heap[r])) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  for (let t = 0; t < logits.length; t++) {
    if (size < k) {
      heap[size] = t;
      for (let i = size++; i > 0 && after(logits, heap[(i - 1) >> 1], heap[i]); i = (i - 1) >> 1) {
        [heap[i], heap[(i - 1) >> 1]] = [heap[(i - 1) >> 1], heap[i]];
      }
    } else if (after(logits, t, heap[0])) {
      heap[0] = t;
      down(0);
    }
  }
  return heap.slice(0, size).sort((a, b) => (after(logits, a, b) ? -1 : 1));
}

/**
 * One token from logits: temperature scaling, then transformers' TopPLogitsWarper (drop the
 * least likely tokens whose cumulative probability stays <= 1 - top_p, keeping at least one),
 * then a draw from the renormalised distribution. The same token as sampleSorted, found
 * without sorting the vocabulary (see the top of this file).
 */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, random: () => number): number {
  if (!(temperature > 0)) return argmax(logits);
  const n = logits.length;
  const sum = softmaxNumerators(logits, temperature);
  const u = random();
  const p = probs;
  const top = topTokens(logits, Math.min(TOP, n));
  const m = top.length;
  // the rest: every token below the top ones, as one sum (not in sortedDraw's order; its absolute error is a few n ulps of sum)
  let rest = 0;
  if (m < n) {
    rest = sum;
    for (let j = 0; j < m; j++) rest -= p[top[j]];
  }
  const slack = MARGIN * sum;
  // top[j] is order[n - 1 - j]; first, counted from the top: the kept tokens are top[0 .. keep)
  let keep = m;
  let kept: number;
  if (topP < 1) {
    const limit = 1 - topP;
    let cum = rest / sum;
    if (m < n && cum > limit - MARGIN) return sortedDraw(logits, sum, topP, u); // drops reach into the rest
    keep = 0;
    for (let j = m - 1; j >= 0; j--) {
      if (j === 0) {
        keep = 1; // at least one token is kept
        break;
      }
      cum += p[top[j]] / sum;
      if (m < n && Math.abs(cum - limit) <= MARGIN) return sortedDraw(logits, sum, topP, u);
      if (cum > limit) {
        keep = j + 1;
        break;
      }
    }
    kept = 0;
    for (let j = keep - 1; j >= 0; j--) kept += p[top[j]]; // ascending, as sortedDraw sums them: exact
  } else {
    kept = rest;
    for (let j = m - 1; j >= 0; j--) kept += p[top[j]];
  }
  // the draw walks down from the most likely; it must end among the kept top tokens. With top-p
  // the kept mass was summed as sortedDraw sums it; without, it includes `rest`
  const exact = topP < 1 || m === n;
  let r = u * kept;
  for (let j = 0; j < keep; j++) {
    r -= p[top[j]];
    if (!exact && Math.abs(r) <= slack) return sortedDraw(logits, sum, topP, u);
    if (r <= 0) return top[j];
  }
  return exact ? top[0] : sortedDraw(logits, sum, topP, u);
}
