import { test } from "node:test";
import assert from "node:assert/strict";
import {
  bf16BitsToF32Bits,
  bf16ToF32Array,
  bf16ToNumber,
  f16BitsToF32Bits,
  f16ToF32Array,
  f16ToNumber,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32ToBf16Array,
  f32ToF16Array,
  f64ToF32Array,
  numberToBf16,
  numberToF16,
} from "../../src/tensor/dtypes.js";

const scratchF = new Float32Array(1);
const scratchU = new Uint32Array(scratchF.buffer);
const bitsOf = (x: number): number => {
  scratchF[0] = x;
  return scratchU[0];
};
const floatOf = (bits: number): number => {
  scratchU[0] = bits;
  return scratchF[0];
};

/**
 * Independent oracle: PyTorch's c10 fp16_ieee_from_fp32_value, which rounds with float arithmetic
 * (scale to push the rounding point into place) instead of integer bit fiddling.
 */
function torchHalfFromFloat(w: number): number {
  const f = floatOf(w);
  const scaleToInf = floatOf(0x77800000); // 2^112
  const scaleToZero = floatOf(0x08800000); // 2^-110
  let base = Math.fround(Math.fround(Math.abs(f) * scaleToInf) * scaleToZero);
  const shl1 = (w * 2) % 2 ** 32;
  const sign = w & 0x80000000;
  let bias = shl1 & 0xff000000;
  bias = bias >>> 0;
  if (bias < 0x71000000) bias = 0x71000000;
  base = Math.fround(floatOf((bias >>> 1) + 0x07800000) + base);
  const bits = bitsOf(base);
  const expBits = (bits >>> 13) & 0x7c00;
  const mantBits = bits & 0x0fff;
  const nonsign = expBits + mantBits;
  return ((sign >>> 16) | (shl1 > 0xff000000 ? 0x7e00 : nonsign)) & 0xffff;
}

/** Small deterministic PRNG (mulberry32) so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

test("f16 -> f32 edge values are exact", () => {
  assert.equal(f16ToNumber(0x0001), 2 ** -24); // smallest subnormal
  assert.equal(f16ToNumber(0x03ff), 1023 * 2 ** -24); // largest subnormal
  assert.equal(f16ToNumber(0x0400), 2 ** -14); // smallest normal
  assert.equal(f16ToNumber(0x3c00), 1);
  assert.equal(f16ToNumber(0x3555), 0.333251953125);
  assert.equal(f16ToNumber(0x7bff), 65504);
  assert.equal(f16ToNumber(0xfbff), -65504);
  assert.equal(f16ToNumber(0x7c00), Infinity);
  assert.equal(f16ToNumber(0xfc00), -Infinity);
  assert.ok(Object.is(f16ToNumber(0x8000), -0));
  assert.ok(Object.is(f16ToNumber(0x0000), 0));
  assert.ok(Number.isNaN(f16ToNumber(0x7e00)));
  // NaN payload and sign survive in the f32 bits (as numpy and PyTorch keep them).
  assert.equal(f16BitsToF32Bits(0x7e00), 0x7fc00000);
  assert.equal(f16BitsToF32Bits(0x7c01), 0x7f802000);
  assert.equal(f16BitsToF32Bits(0xfe00), 0xffc00000);
});

test("f16 -> f32 -> f16 is the identity on all 65536 patterns except NaNs, which stay NaN", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToF16Array(f16ToF32Array(all));
  for (let h = 0; h < 65536; h++) {
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) assert.equal(back[h], (h & 0x8000) | 0x7e00, `NaN ${h.toString(16)}`);
    else assert.equal(back[h], h, `pattern 0x${h.toString(16)}`);
  }
});

test("f32 -> f16 rounds to nearest even at every boundary", () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [1 + 2 ** -11, 0x3c00], // halfway, ties to even (down)
    [1 + 3 * 2 ** -11, 0x3c02], // halfway, ties to even (up)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway
    [65504, 0x7bff],
    [65519.99, 0x7bff],
    [65520, 0x7c00], // halfway to 65536: ties to even -> overflow to inf
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // halfway between 0 and the smallest subnormal: ties to even
    [2 ** -25 * (1 + 2 ** -20), 0x0001],
    [3 * 2 ** -25, 0x0002], // 1.5 units: ties to even
    [5 * 2 ** -25, 0x0002], // 2.5 units: ties to even
    [1023.5 * 2 ** -24, 0x0400], // rounds up out of the subnormal range
    [1e-10, 0x0000],
    [-1e-10, 0x8000],
    [2 ** -149, 0x0000], // f32 subnormal
  ];
  for (const [x, want] of cases) {
    assert.equal(numberToF16(x), want, `${x} -> 0x${numberToF16(x).toString(16)}, want 0x${want.toString(16)}`);
  }
  assert.equal(numberToF16(NaN), 0x7e00);
  assert.equal(f32BitsToF16Bits(0xffc00001), 0xfe00);
});

test("f32 -> f16 agrees with PyTorch's float-arithmetic rounding on random and boundary bit patterns", () => {
  const next = prng(1234);
  const samples: number[] = [];
  for (let i = 0; i < 100_000; i++) samples.push(next());
  // Every half value and the f32 patterns right around each halfway point.
  for (let h = 0; h < 0x7c00; h++) {
    const w = f16BitsToF32Bits(h);
    for (const d of [-1, 0, 1, 0x1000 - 1, 0x1000, 0x1000 + 1]) samples.push((w + d) >>> 0, (w + d + 0x80000000) >>> 0);
  }
  const bits = new Uint32Array(samples);
  const ours = f32ToF16Array(new Float32Array(bits.buffer));
  for (let i = 0; i < bits.length; i++) {
    const want = torchHalfFromFloat(bits[i]);
    if (ours[i] !== want) assert.fail(`f32 0x${bits[i].toString(16)}: got 0x${ours[i].toString(16)}, torch 0x${want.toString(16)}`);
    if (f32BitsToF16Bits(bits[i]) !== want) assert.fail(`scalar path differs at 0x${bits[i].toString(16)}`);
  }
});

test("bf16 <-> f32 matches PyTorch's round-to-nearest-even", () => {
  const cases: Array<[number, number]> = [
    [0x3f800000, 0x3f80], // 1.0
    [0x3f808000, 0x3f80], // halfway, even stays
    [0x3f818000, 0x3f82], // halfway, odd rounds up
    [0x3f808001, 0x3f81], // just above halfway
    [0x3f807fff, 0x3f80], // just below halfway
    [0x7f7fffff, 0x7f80], // f32 max rounds to inf, as in PyTorch
    [0x7f800000, 0x7f80], // inf
    [0xff800000, 0xff80], // -inf
    [0x80000000, 0x8000], // -0
    [0x00000001, 0x0000], // tiny subnormal
    [0x00018000, 0x0002], // subnormal halfway, odd -> up
    [0xbf808000, 0xbf80], // negative halfway
    [0x7fc00000, 0x7fc0], // NaN
    [0xffc00000, 0x7fc0], // -NaN -> canonical positive NaN
    [0x7f800001, 0x7fc0], // signalling NaN
  ];
  for (const [w, want] of cases) assert.equal(f32BitsToBf16Bits(w), want, `0x${w.toString(16)}`);
  const arr = f32ToBf16Array(new Float32Array(new Uint32Array(cases.map(([w]) => w)).buffer));
  assert.deepEqual([...arr], cases.map(([, b]) => b));
  assert.equal(numberToBf16(3.140625), 0x4049);
  assert.equal(bf16ToNumber(0x4049), 3.140625);
  assert.equal(bf16ToNumber(0xff80), -Infinity);
  assert.equal(bf16BitsToF32Bits(0x8001), 0x80010000);

  const all = new Uint16Array(65536).map((_, i) => i);
  const widened = bf16ToF32Array(all);
  const wbits = new Uint32Array(widened.buffer);
  const back = f32ToBf16Array(widened);
  for (let b = 0; b < 65536; b++) {
    assert.equal(wbits[b], (b << 16) >>> 0);
    const isNaN = (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;
    assert.equal(back[b], isNaN ? 0x7fc0 : b);
  }
});

test("f64 -> f32 rounds like Math.fround; array helpers check lengths", () => {
  const src = new Float64Array([0.1, 1 / 3, 1e40, -1e-50, 16777217]);
  assert.deepEqual([...f64ToF32Array(src)], [...src].map(Math.fround));
  assert.throws(() => f16ToF32Array(new Uint16Array(2), new Float32Array(3)), RangeError);
  // Writing into a subarray with an offset works (used by chunked reads).
  const out = new Float32Array(4);
  f16ToF32Array(new Uint16Array([0x3c00, 0x4000]), out.subarray(2));
  assert.deepEqual([...out], [0, 0, 1, 2]);
});
