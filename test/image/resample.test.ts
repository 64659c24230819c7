import { test } from "node:test";
import assert from "node:assert/strict";
import type { RgbImage } from "../../src/image/decode.js";
import { filterFromPilResample, resize, resizeBicubic } from "../../src/image/resample.js";
import { LlavaError } from "../../src/util/errors.js";

function rgb(width: number, height: number, values: number[]): RgbImage {
  assert.equal(values.length, width * height * 3);
  return { width, height, data: Uint8Array.from(values) };
}

/** Deterministic pseudo-random image (LCG), so the tests need no fixtures. */
function noise(width: number, height: number, seed: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  let s = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s >>> 24;
  }
  return { width, height, data };
}

// Expected values below are Pillow 9.4's `Image.fromarray(a).resize((W, H), resample)` outputs.

test("bicubic 2x2 -> 4x4 upscale matches Pillow", () => {
  const img = rgb(2, 2, [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]);
  const out = resizeBicubic(img, 4, 4);
  assert.deepEqual(
    Array.from(out.data),
    [
      0, 0, 0, 58, 0, 0, 220, 0, 0, 255, 0, 0, 0, 53, 0, 42, 42, 11, 160, 11, 42, 202, 0, 53, 0, 202, 0, 11, 160, 42,
      42, 42, 160, 53, 0, 202, 0, 255, 0, 0, 220, 58, 0, 58, 220, 0, 0, 255,
    ],
  );
});

test("bicubic 4x1 -> 2x1 downscale uses the widened (antialiasing) support", () => {
  const img = rgb(4, 1, [0, 10, 20, 60, 70, 80, 120, 130, 140, 180, 190, 200]);
  assert.deepEqual(Array.from(resizeBicubic(img, 2, 1).data), [35, 45, 55, 145, 155, 165]);
});

test("bicubic overshoot on a 0/255 checkerboard is clipped like Pillow", () => {
  const values: number[] = [];
  for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) values.push(...Array(3).fill(255 * ((x + y) % 2)));
  const out = resizeBicubic(rgb(4, 4, values), 7, 5);
  const grey = Array.from(out.data).filter((_, i) => i % 3 === 0);
  assert.deepEqual(grey, [
    0, 83, 255, 128, 0, 172, 255, 202, 151, 56, 128, 199, 104, 53, 128, 128, 128, 128, 128, 128, 128, 53, 104, 199, 128,
    56, 151, 202, 255, 172, 0, 128, 255, 83, 0,
  ]);
});

const SMALL = rgb(5, 3, [
  171, 206, 5, 206, 120, 131, 161, 73, 250, 13, 71, 98, 146, 104, 33, 11, 0, 12, 38, 255, 48, 167, 192, 60, 72, 111, 67,
  249, 45, 229, 204, 216, 29, 100, 160, 126, 170, 173, 169, 15, 245, 142, 231, 69, 92,
]);

test("bicubic 5x3 -> 3x7 (shrink one axis, grow the other) matches Pillow", () => {
  assert.deepEqual(
    Array.from(resizeBicubic(SMALL, 3, 7).data),
    [
      207, 178, 61, 138, 66, 214, 76, 91, 49, 174, 165, 55, 134, 90, 185, 94, 86, 69, 86, 132, 37, 125, 147, 111, 139, 72,
      120, 21, 110, 26, 115, 200, 54, 177, 68, 162, 72, 141, 43, 112, 204, 91, 166, 101, 147, 148, 182, 65, 111, 192, 149,
      143, 138, 118, 177, 198, 73, 111, 189, 170, 135, 152, 108,
    ],
  );
});

test("bilinear 5x3 -> 2x2 matches Pillow", () => {
  assert.deepEqual(Array.from(resize(SMALL, 2, 2, "bilinear").data), [133, 141, 88, 117, 96, 114, 113, 173, 81, 132, 149, 126]);
});

test("same size returns an equal copy, not the same buffer", () => {
  const img = noise(7, 5, 1);
  const out = resizeBicubic(img, 7, 5);
  assert.deepEqual(out.data, img.data);
  assert.notEqual(out.data, img.data);
});

test("a 1x1 image upscales to a flat image", () => {
  const out = resizeBicubic(rgb(1, 1, [12, 200, 99]), 5, 4);
  for (let i = 0; i < out.data.length; i += 3) assert.deepEqual(Array.from(out.data.subarray(i, i + 3)), [12, 200, 99]);
});

test("a constant image stays constant at any size (weights are normalised)", () => {
  const flat = rgb(9, 6, Array(9 * 6).fill([77, 3, 250]).flat());
  for (const [w, h] of [[2, 2], [20, 3], [9, 13], [4, 6]]) {
    const out = resizeBicubic(flat, w, h);
    assert.equal(out.width, w);
    assert.equal(out.height, h);
    for (let i = 0; i < out.data.length; i += 3) assert.deepEqual(Array.from(out.data.subarray(i, i + 3)), [77, 3, 250]);
  }
});

/**
 * An independent double-precision separable bicubic following Pillow's window and
 * normalisation rules, without fixed point or rounding (but clipped after each pass, as Pillow's
 * uint8 intermediate is): the integer implementation must stay within 2 levels of it (one
 * rounding per pass) on random images of odd sizes.
 */
function referenceBicubic(img: RgbImage, width: number, height: number): Float64Array {
  const cubic = (x: number) => {
    x = Math.abs(x);
    if (x < 1) return 1.5 * x * x * x - 2.5 * x * x + 1;
    if (x < 2) return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
    return 0;
  };
  const weights = (inSize: number, outSize: number) => {
    const scale = inSize / outSize;
    const fs = Math.max(scale, 1);
    const support = 2 * fs;
    return Array.from({ length: outSize }, (_, o) => {
      const center = (o + 0.5) * scale;
      const lo = Math.max(Math.trunc(center - support + 0.5), 0);
      const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
      const w = [];
      for (let i = lo; i < hi; i++) w.push(cubic((i - center + 0.5) / fs));
      const sum = w.reduce((a, b) => a + b, 0);
      return { lo, w: w.map((v) => v / sum) };
    });
  };
  const wx = img.width === width ? null : weights(img.width, width);
  const wy = img.height === height ? null : weights(img.height, height);
  const mid = new Float64Array(width * img.height * 3);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        if (!wx) s = img.data[(y * img.width + x) * 3 + c];
        else wx[x].w.forEach((w, k) => (s += w * img.data[(y * img.width + wx[x].lo + k) * 3 + c]));
        mid[(y * width + x) * 3 + c] = Math.min(255, Math.max(0, s)); // the intermediate is uint8
      }
    }
  }
  const out = new Float64Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        if (!wy) s = mid[(y * width + x) * 3 + c];
        else wy[y].w.forEach((w, k) => (s += w * mid[((wy[y].lo + k) * width + x) * 3 + c]));
        out[(y * width + x) * 3 + c] = Math.min(255, Math.max(0, s));
      }
    }
  }
  return out;
}

test("fixed-point bicubic stays within 2 levels of a double-precision reference", () => {
  const cases: Array<[number, number, number, number]> = [
    [31, 17, 12, 40],
    [64, 48, 17, 13],
    [13, 29, 56, 56],
    [100, 7, 33, 7],
    [7, 100, 7, 21],
  ];
  cases.forEach(([w, h, W, H], i) => {
    const img = noise(w, h, 100 + i);
    const got = resizeBicubic(img, W, H);
    const ref = referenceBicubic(img, W, H);
    let worst = 0;
    for (let k = 0; k < ref.length; k++) worst = Math.max(worst, Math.abs(got.data[k] - ref[k]));
    assert.ok(worst <= 2, `${w}x${h} -> ${W}x${H}: off by ${worst}`);
  });
});

test("bad target sizes and PIL filter numbers give LlavaErrors", () => {
  assert.throws(() => resizeBicubic(SMALL, 0, 3), LlavaError);
  assert.throws(() => resizeBicubic(SMALL, 2.5, 3), LlavaError);
  assert.throws(() => resizeBicubic({ width: 4, height: 4, data: new Uint8Array(10) }, 2, 2), LlavaError);
  assert.equal(filterFromPilResample(3), "bicubic");
  assert.equal(filterFromPilResample(2), "bilinear");
  assert.throws(() => filterFromPilResample(0), /nearest/);
  assert.throws(() => filterFromPilResample(9), LlavaError);
});
