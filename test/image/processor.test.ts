import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { loadImage } from "../../src/image/decode.js";
import {
  anyresGridShape,
  anyresPreprocess,
  clipPreprocess,
  loadImageProcessorConfig,
  padColor,
  padPreprocess,
  parseImageProcessorConfig,
  parsePinpoints,
  patchOutputSize,
  selectBestResolution,
  type PixelTensor,
} from "../../src/image/processor.js";
import { LlavaError } from "../../src/util/errors.js";
import { CASES, IMAGES, MODELS } from "../helpers/paths.js";
import { readNpy } from "./npy.js";

const PIXEL_ATOL = 2e-5;

/** Compares against a reference [n,3,S,S] (or [3,S,S]) array: same values up to 2e-5. */
function assertPixelsMatch(got: PixelTensor, refFile: string, expectedShape: number[]): void {
  const ref = readNpy(refFile);
  assert.equal(ref.dtype, "<f4");
  assert.deepEqual(ref.shape, expectedShape, `reference shape of ${refFile}`);
  assert.equal(got.data.length, ref.data.length, `element count vs ${refFile}`);
  const refData = ref.data as Float32Array;
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < refData.length; i++) {
    const d = Math.abs(got.data[i] - refData[i]);
    if (!(d <= worst)) {
      worst = d;
      worstAt = i;
    }
  }
  assert.ok(worst <= PIXEL_ATOL, `${refFile}: max |diff| ${worst} at flat index ${worstAt}`);
}

const gradient = () => loadImage(path.join(IMAGES, "gradient_640x480.png"));

test("CLIP center-crop pixels match tiny-llava-1.5-mha/gradient", async () => {
  const cfg = await loadImageProcessorConfig(path.join(MODELS, "tiny-llava-1.5-mha"));
  const out = clipPreprocess(await gradient(), cfg);
  assert.deepEqual(out.shape, [3, 56, 56]);
  assertPixelsMatch(out, path.join(CASES, "tiny-llava-1.5-mha/gradient/pixel_values.npy"), [1, 3, 56, 56]);
});

test("CLIP center-crop pixels of a portrait image match tiny-llava-1.5-mha/train_grad", async () => {
  const cfg = await loadImageProcessorConfig(path.join(MODELS, "tiny-llava-1.5-mha"));
  const out = clipPreprocess(await loadImage(path.join(IMAGES, "checker_300x500.png")), cfg);
  assertPixelsMatch(out, path.join(CASES, "tiny-llava-1.5-mha/train_grad/pixel_values.npy"), [1, 3, 56, 56]);
});

test("LLaVA pad pixels match both the HF and the original-format cases", async () => {
  const img = await gradient();
  const hf = await loadImageProcessorConfig(path.join(MODELS, "tiny-llava-1.5-mha"));
  assertPixelsMatch(padPreprocess(img, hf), path.join(CASES, "tiny-llava-1.5-mha/gradient/pixel_values_pad.npy"), [1, 3, 56, 56]);
  const orig = await loadImageProcessorConfig(path.join(MODELS, "tiny-clip-vit-56"));
  assert.deepEqual(padColor(orig), [122, 116, 104]);
  assertPixelsMatch(padPreprocess(img, orig), path.join(CASES, "tiny-llava-1.5-orig/gradient/pixel_values_pad.npy"), [1, 3, 56, 56]);
});

test("AnyRes pixels match tiny-llava-next/gradient (HF convention)", async () => {
  const dir = path.join(MODELS, "tiny-llava-next");
  const cfg = await loadImageProcessorConfig(dir);
  const pinpoints = JSON.parse(readFileSync(path.join(dir, "config.json"), "utf8")).image_grid_pinpoints;
  const img = await gradient();
  const out = anyresPreprocess(img, cfg, pinpoints, "hf");
  assert.deepEqual(out.bestResolution, { width: 112, height: 112 });
  assert.deepEqual(out.grid, { rows: 2, cols: 2 });
  assert.deepEqual(out.shape, [5, 3, 56, 56]);
  assertPixelsMatch(out, path.join(CASES, "tiny-llava-next/gradient/pixel_values.npy"), [5, 3, 56, 56]);
  // The processor config carries the same pinpoints as the model config.
  assert.deepEqual(cfg.imageGridPinpoints, pinpoints);
  assert.deepEqual(anyresGridShape(img, pinpoints, "hf", 56), { rows: 2, cols: 2 });
});

test("AnyRes: padding is black and centred, odd pixel bottom/right", () => {
  // A 5x1 white image into a 4x4 pinpoint (tile 2): fitted 4x1 (ceil(1*4/5) = 1), pasted at
  // row (4-1)//2 = 1, so two black rows go below it and one above.
  const img = { width: 5, height: 1, data: new Uint8Array(15).fill(255) };
  const cfg = parseImageProcessorConfig(
    { size: { shortest_edge: 2 }, crop_size: 2, do_normalize: false, do_rescale: false },
    "inline",
  );
  const out = anyresPreprocess(img, cfg, [[4, 4]], "hf");
  assert.deepEqual(out.shape, [5, 3, 2, 2]);
  assert.deepEqual(out.grid, { rows: 2, cols: 2 });
  // Tiles 1-2 (top row) cover rows 0-1: row 0 black padding, row 1 image; tiles 3-4 are black.
  const tile = (t: number, c: number) => Array.from(out.data.subarray((t * 3 + c) * 4, (t * 3 + c + 1) * 4));
  assert.deepEqual(tile(1, 0), [0, 0, 255, 255]);
  assert.deepEqual(tile(2, 2), [0, 0, 255, 255]);
  assert.deepEqual(tile(3, 0), [0, 0, 0, 0]);
  assert.deepEqual(tile(4, 1), [0, 0, 0, 0]);
  // The base image is the whole picture squashed to 2x2: all white.
  assert.deepEqual(tile(0, 0), [255, 255, 255, 255]);
  assert.deepEqual(patchOutputSize({ width: 5, height: 1 }, { width: 4, height: 4 }), { width: 4, height: 1 });
  assert.deepEqual(patchOutputSize({ width: 10, height: 30 }, { width: 8, height: 8 }), { width: 3, height: 8 });
});

test("AnyRes of a 2000x1 image matches Pillow: no pinpoint keeps a pixel, the thin side stays one pixel", () => {
  // R = i*256//2000, G = 255-R, B = i*7 % 256 along the single row
  const w = 2000;
  const data = new Uint8Array(w * 3);
  for (let i = 0; i < w; i++) data.set([Math.floor((i * 256) / w), 255 - Math.floor((i * 256) / w), (i * 7) % 256], i * 3);
  const cfg = parseImageProcessorConfig({ size: { shortest_edge: 56 }, crop_size: 56, do_normalize: false, do_rescale: false }, "inline");
  const pins = [[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]];
  // int(1 * scale) is 0 for every pinpoint, so the smallest one, first in the list, wins
  assert.deepEqual(selectBestResolution({ width: w, height: 1 }, pins, "hf"), { width: 112, height: 56 });
  assert.deepEqual(patchOutputSize({ width: w, height: 1 }, { width: 112, height: 56 }), { width: 112, height: 1 });
  assert.deepEqual(patchOutputSize({ width: 1, height: 16000 }, { width: 112, height: 56 }), { width: 1, height: 56 });
  const out = anyresPreprocess({ width: w, height: 1, data }, cfg, pins, "hf");
  assert.deepEqual(out.shape, [3, 3, 56, 56]);
  // Pillow 9.4: Image.resize((112, 1), BICUBIC) pasted at row (56 - 1) // 2 = 27; (56, 56) for the base
  const px = (t: number, y: number, x: number) => [0, 1, 2].map((c) => out.data[((t * 3 + c) * 56 + y) * 56 + x]);
  assert.deepEqual([0, 1, 2, 3].flatMap((x) => px(1, 27, x)), [1, 254, 64, 3, 252, 170, 5, 250, 86, 7, 248, 170]);
  assert.deepEqual([52, 53, 54, 55].flatMap((x) => px(2, 27, x)), [247, 8, 140, 250, 5, 116, 252, 3, 139, 254, 1, 96]);
  assert.deepEqual([...px(1, 26, 0), ...px(1, 28, 0)], [0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...px(0, 0, 0), ...px(0, 55, 1)], [2, 253, 113, 6, 249, 130]);
});

test("selectBestResolution: most kept pixels, then least waste, first wins a tie", () => {
  const pins = [
    [336, 672],
    [672, 336],
    [672, 672],
    [1008, 336],
    [336, 1008],
  ];
  // 1024w x 899h (the HF conversion test image) -> 672x672.
  assert.deepEqual(selectBestResolution({ width: 1024, height: 899 }, pins, "hf"), { width: 672, height: 672 });
  // A wide 1000x300 image: HF reads (h, w) so [336, 1008] is 1008 wide; LLaVA reads (w, h).
  assert.deepEqual(selectBestResolution({ width: 1000, height: 300 }, pins, "hf"), { width: 1008, height: 336 });
  assert.deepEqual(selectBestResolution({ width: 1000, height: 300 }, pins, "llava"), { width: 1008, height: 336 });
  // A small square image fits all candidates equally: least waste decides.
  assert.deepEqual(selectBestResolution({ width: 100, height: 100 }, pins, "hf"), { width: 672, height: 336 });
  assert.deepEqual(selectBestResolution({ width: 100, height: 100 }, pins, "llava"), { width: 336, height: 672 });
  assert.deepEqual(anyresGridShape({ width: 1000, height: 300 }, pins, "llava", 336), { rows: 1, cols: 3 });
});

test("parsePinpoints accepts lists and LLaVA's Python-literal strings", () => {
  assert.deepEqual(parsePinpoints("[(336, 672), (672, 336)]"), [
    [336, 672],
    [672, 336],
  ]);
  assert.throws(() => parsePinpoints("(1x1),...,(3x3)"), LlavaError);
  assert.throws(() => parsePinpoints([[336]]), LlavaError);
  assert.throws(() => parsePinpoints([]), LlavaError);
});

test("config defaults follow transformers' CLIPImageProcessor", () => {
  const cfg = parseImageProcessorConfig({}, "empty");
  assert.deepEqual(cfg.size, { shortestEdge: 224 });
  assert.deepEqual(cfg.cropSize, { height: 224, width: 224 });
  assert.deepEqual(cfg.imageMean, [0.48145466, 0.4578275, 0.40821073]);
  assert.deepEqual(cfg.imageStd, [0.26862954, 0.26130258, 0.27577711]);
  assert.equal(cfg.resample, 3);
  assert.equal(cfg.rescaleFactor, 1 / 255);
  assert.equal(cfg.doResize && cfg.doCenterCrop && cfg.doRescale && cfg.doNormalize && cfg.doConvertRgb, true);
  assert.equal(cfg.imageGridPinpoints, null);
  // Old-style integer sizes.
  const old = parseImageProcessorConfig({ size: 336, crop_size: 336 }, "old");
  assert.deepEqual(old.size, { shortestEdge: 336 });
  assert.deepEqual(old.cropSize, { height: 336, width: 336 });
  const exact = parseImageProcessorConfig({ size: { height: 30, width: 40 } }, "exact");
  assert.deepEqual(exact.size, { height: 30, width: 40 });
});

test("clipPreprocess honours an exact {height,width} size and do_center_crop=false", async () => {
  const cfg = parseImageProcessorConfig({ size: { height: 30, width: 40 }, do_center_crop: false }, "inline");
  const out = clipPreprocess(await gradient(), cfg);
  assert.deepEqual(out.shape, [3, 30, 40]);
});

test("bad configs give LlavaErrors naming the file", async () => {
  assert.throws(() => parseImageProcessorConfig({ size: { foo: 1 } }, "x.json"), /x\.json.*size/);
  assert.throws(() => parseImageProcessorConfig({ image_mean: [1, 2] }, "x.json"), /image_mean/);
  assert.throws(() => parseImageProcessorConfig({ resample: 0 }, "x.json"), /nearest/);
  assert.throws(() => parseImageProcessorConfig({ do_resize: "yes" }, "x.json"), /do_resize/);
  const dir = await mkdtemp(path.join(os.tmpdir(), "llava-proc-test-"));
  try {
    await assert.rejects(loadImageProcessorConfig(dir), (e: unknown) => e instanceof LlavaError && /preprocessor_config\.json.*not found/.test(e.message));
    await writeFile(path.join(dir, "preprocessor_config.json"), "{ not json");
    await assert.rejects(loadImageProcessorConfig(dir), (e: unknown) => e instanceof LlavaError && /invalid JSON/.test(e.message));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("AnyRes refuses pinpoints that are not multiples of the tile size", async () => {
  const cfg = parseImageProcessorConfig({ size: { shortest_edge: 56 }, crop_size: 56 }, "inline");
  assert.throws(() => anyresPreprocess({ width: 4, height: 4, data: new Uint8Array(48) }, cfg, [[100, 100]], "hf"), /multiple/);
});
