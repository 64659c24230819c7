import { test } from "node:test";
import assert from "node:assert/strict";
import type { RgbImage } from "../../src/image/decode.js";
import { centerCrop, cropRegion, expandToSquare, pasteOnCanvas, toNormalizedCHW } from "../../src/image/transforms.js";
import { LlavaError } from "../../src/util/errors.js";

/** An image whose pixel (x, y) is (x, y, 7): positions can be read back from the values. */
function coords(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x, y, 7], (y * width + x) * 3);
  }
  return { width, height, data };
}

function pixel(img: RgbImage, x: number, y: number): number[] {
  const i = (y * img.width + x) * 3;
  return Array.from(img.data.subarray(i, i + 3));
}

test("centerCrop takes top=(H-h)//2, left=(W-w)//2", () => {
  const out = centerCrop(coords(10, 7), 4, 4);
  assert.equal(out.width, 4);
  assert.equal(out.height, 4);
  assert.deepEqual(pixel(out, 0, 0), [3, 1, 7]);
  assert.deepEqual(pixel(out, 3, 3), [6, 4, 7]);
});

test("centerCrop larger than the image pads with black like transformers", () => {
  // 3x2 image, crop 6x5: transformers pads to 6x5 with the image at (ceil(3/2), ceil(3/2)) = (2, 2).
  const out = centerCrop(coords(3, 2), 6, 5);
  assert.equal(out.width, 6);
  assert.equal(out.height, 5);
  assert.deepEqual(pixel(out, 2, 2), [0, 0, 7]);
  assert.deepEqual(pixel(out, 4, 3), [2, 1, 7]);
  assert.deepEqual(pixel(out, 1, 2), [0, 0, 0]);
  assert.deepEqual(pixel(out, 2, 4), [0, 0, 0]);
});

test("centerCrop wider than the image but shorter crops one axis and pads the other", () => {
  // 10x3 image, crop 4x6: rows padded (image at row ceil(3/2) = 2), columns cropped from 3.
  const out = centerCrop(coords(10, 3), 4, 6);
  assert.equal(out.width, 4);
  assert.equal(out.height, 6);
  assert.deepEqual(pixel(out, 0, 2), [3, 0, 7]);
  assert.deepEqual(pixel(out, 3, 4), [6, 2, 7]);
  assert.deepEqual(pixel(out, 0, 1), [0, 0, 0]);
  assert.deepEqual(pixel(out, 0, 5), [0, 0, 0]);
});

test("expandToSquare pastes at ((S-w)//2, (S-h)//2) on the fill colour", () => {
  const wide = expandToSquare(coords(5, 2), [122, 116, 104]);
  assert.equal(wide.width, 5);
  assert.equal(wide.height, 5);
  assert.deepEqual(pixel(wide, 0, 0), [122, 116, 104]);
  assert.deepEqual(pixel(wide, 0, 1), [0, 0, 7]);
  assert.deepEqual(pixel(wide, 4, 2), [4, 1, 7]);
  assert.deepEqual(pixel(wide, 4, 3), [122, 116, 104]);
  const tall = expandToSquare(coords(2, 5), [1, 2, 3]);
  assert.deepEqual(pixel(tall, 1, 0), [0, 0, 7]);
  assert.deepEqual(pixel(tall, 0, 0), [1, 2, 3]);
  const square = coords(3, 3);
  assert.equal(expandToSquare(square, [0, 0, 0]), square);
});

test("pasteOnCanvas clips what falls outside", () => {
  const out = pasteOnCanvas(coords(3, 3), 4, 4, 2, -1, [9, 9, 9]);
  assert.deepEqual(pixel(out, 2, 0), [0, 1, 7]);
  assert.deepEqual(pixel(out, 3, 1), [1, 2, 7]);
  assert.deepEqual(pixel(out, 2, 2), [9, 9, 9]);
  assert.deepEqual(pixel(out, 1, 0), [9, 9, 9]);
});

test("cropRegion refuses a window outside the image", () => {
  assert.deepEqual(pixel(cropRegion(coords(5, 5), 1, 2, 2, 2), 1, 1), [2, 3, 7]);
  assert.throws(() => cropRegion(coords(5, 5), 4, 0, 2, 2), LlavaError);
});

test("toNormalizedCHW is channel-first float32 (x*rescale - mean) / std", () => {
  const img: RgbImage = { width: 2, height: 1, data: Uint8Array.from([0, 128, 255, 255, 1, 64]) };
  const mean = [0.48145466, 0.4578275, 0.40821073];
  const std = [0.26862954, 0.26130258, 0.27577711];
  const out = toNormalizedCHW(img, mean, std);
  assert.equal(out.length, 6);
  const f = Math.fround;
  const expect = (v: number, c: number) => f(f(f(v * (1 / 255)) - f(mean[c])) / f(std[c]));
  assert.deepEqual(Array.from(out), [expect(0, 0), expect(255, 0), expect(128, 1), expect(1, 1), expect(255, 2), expect(64, 2)]);
  // Known float32 values of (v/255 - mean)/std for the OpenAI CLIP constants.
  assert.ok(Math.abs(out[0] - -1.7922625) < 1e-6);
  assert.ok(Math.abs(out[1] - 1.9303361) < 1e-6);
  // Identity settings leave the raw values.
  assert.deepEqual(Array.from(toNormalizedCHW(img, [0, 0, 0], [1, 1, 1], 1)), [0, 255, 128, 1, 255, 64]);
  assert.throws(() => toNormalizedCHW(img, [0, 0], [1, 1, 1]), LlavaError);
});
