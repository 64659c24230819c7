/**
 * AnyRes beyond the fixture image: for wide, tall, tiny and exact-pinpoint images the NeXT model
 * splices exactly the features transformers' pack_image_features would, written here again
 * independently with plain index arithmetic, and as many as the HF processor counts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import sharp from "sharp";
import { dumpTrace } from "../helpers/dump.js";
import { npyToNumbers, readNpy } from "../../src/io/npy.js";
import { mergeAnyresFeatures } from "../../src/llava/anyres.js";
import { loadLlava } from "../../src/llava/load.js";
import { RefBackend } from "../../src/tensor/ref-backend.js";
import { Tensor } from "../../src/tensor/tensor.js";
import { seededRandom } from "../../src/util/random.js";
import { MODELS } from "../helpers/paths.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-anyres-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
const read = (dir: string, name: string) => npyToNumbers(readNpy(path.join(dir, `${name}.npy`)));

// the tiny NeXT fixture: 56 px tiles, 4x4 features per tile, pinpoints (height, width)
const PINPOINTS = [[56, 112], [112, 56], [112, 112], [168, 56], [56, 168]];
const TILE = 56;
const SIDE = 4;

/** HF select_best_resolution on (height, width) pairs. */
function bestResolution(h: number, w: number): [number, number] {
  let best: [number, number] = [0, 0];
  let bestEff = -1;
  let bestWaste = Infinity;
  for (const [ph, pw] of PINPOINTS) {
    const s = Math.min(pw / w, ph / h);
    const eff = Math.min(Math.floor(w * s) * Math.floor(h * s), w * h);
    const waste = pw * ph - eff;
    if (eff > bestEff || (eff === bestEff && waste < bestWaste)) [best, bestEff, bestWaste] = [[ph, pw], eff, waste];
  }
  return best;
}

/** transformers' pack_image_features for one image, on [tiles][n][C] nested arrays. */
function packHf(tiles: number[][][], h: number, w: number, newline: number[]): number[][] {
  const [bh, bw] = bestResolution(h, w);
  const rows = bh / TILE;
  const cols = bw / TILE;
  const H = rows * SIDE;
  const W = cols * SIDE;
  // grid[y][x] = feature of tile (y / SIDE, x / SIDE), position (y % SIDE, x % SIDE)
  const at = (y: number, x: number) => tiles[1 + Math.floor(y / SIDE) * cols + Math.floor(x / SIDE)][(y % SIDE) * SIDE + (x % SIDE)];
  let y0 = 0, y1 = H, x0 = 0, x1 = W;
  if (w / h > W / H) {
    const newH = Math.trunc(Math.round(h * (W / w) * 1e7) / 1e7);
    const pad = Math.floor((H - newH) / 2);
    [y0, y1] = [pad, H - pad];
  } else {
    const newW = Math.trunc(Math.round(w * (H / h) * 1e7) / 1e7);
    const pad = Math.floor((W - newW) / 2);
    [x0, x1] = [pad, W - pad];
  }
  const out = [...tiles[0]];
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) out.push(at(y, x));
    out.push(newline);
  }
  return out;
}

for (const [w, h, what] of [[300, 50, "a wide"], [50, 300, "a tall"], [10, 10, "a tiny"], [112, 56, "an exact-pinpoint"], [57, 113, "an odd-sized"],
  [300, 2, "a very wide"], [2000, 1, "a one-row"], [16000, 1, "a 16000-px-wide"], [1, 16000, "a one-column"]] as const) {
  test(`AnyRes packing matches transformers for ${what} image (${w}x${h})`, async () => {
    const r = seededRandom(w * 1000 + h);
    const data = Buffer.from(Array.from({ length: w * h * 3 }, () => Math.floor(r() * 256)));
    const file = path.join(tmp, `${w}x${h}.png`);
    await sharp(data, { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
    const out = path.join(tmp, `out-${w}x${h}`);
    const loaded = await loadLlava(path.join(MODELS, "tiny-llava-next"));
    await dumpTrace(loaded, { images: [file], query: "What is shown?", convMode: "llava_v1", maxNewTokens: 1, out });
    const d = 16;
    const projected = read(out, "projector_output");
    const tiles = Array.from({ length: projected.length / (SIDE * SIDE * d) }, (_, t) =>
      Array.from({ length: SIDE * SIDE }, (_, i) => projected.slice((t * SIDE * SIDE + i) * d, (t * SIDE * SIDE + i + 1) * d)));
    const [bh, bw] = bestResolution(h, w);
    assert.equal(tiles.length, 1 + (bh / TILE) * (bw / TILE));
    const want = packHf(tiles, h, w, Array.from(loaded.model.imageNewline!.data)).flat();
    assert.deepEqual(read(out, "image_features_packed"), want);
    assert.equal(read(out, "input_ids_expanded").filter((i) => i === 32000).length, want.length / d);
    assert.deepEqual(read(out, "image_sizes"), [h, w]);
  });
}

test("flat and spatial merges order the tile features as the original LLaVA code does", () => {
  const be = new RefBackend();
  // 1 base tile + a 2x3 grid of tiles, 2x2 features each, C = 1: value = tile * 10 + position
  const tiles = 7;
  const feats = new Tensor(Float32Array.from({ length: tiles * 4 }, (_, i) => Math.floor(i / 4) * 10 + (i % 4)), [tiles, 4, 1], be);
  const layout = { rows: 2, cols: 3, width: 300, height: 200 };
  assert.deepEqual(mergeAnyresFeatures(feats, layout, "flat", null, false).toArray(), Array.from(feats.data));
  // spatial: base, then the full grid row by row: (row, y, col, x)
  const spatial = [0, 1, 2, 3];
  for (let row = 0; row < 2; row++) for (let y = 0; y < 2; y++) for (let col = 0; col < 3; col++) for (let x = 0; x < 2; x++) {
    spatial.push((1 + row * 3 + col) * 10 + y * 2 + x);
  }
  assert.deepEqual(mergeAnyresFeatures(feats, layout, "spatial", null, false).toArray(), spatial);
  // a single tile: spatial_unpad adds one newline after the base features
  const one = new Tensor(Float32Array.from([1, 2, 3, 4]), [1, 4, 1], be);
  const newline = new Tensor(Float32Array.from([9]), [1], be);
  assert.deepEqual(mergeAnyresFeatures(one, layout, "spatial_unpad", newline, false).toArray(), [1, 2, 3, 4, 9]);
});

test("unpadding that keeps no row leaves the base features alone; no column, a newline per row", () => {
  const be = new RefBackend();
  // 1 base tile + 3 tiles of 2x2 features, C = 1: value = tile * 10 + position
  const feats = new Tensor(Float32Array.from({ length: 16 }, (_, i) => Math.floor(i / 4) * 10 + (i % 4)), [4, 4, 1], be);
  const newline = new Tensor(Float32Array.from([9]), [1], be);
  for (const hfRounding of [true, false]) {
    // a 2x6 grid for a 3000x1 image: int(1 * 6/3000) = 0 rows, padding 1 above and below
    const wide = mergeAnyresFeatures(feats, { rows: 1, cols: 3, width: 3000, height: 1 }, "spatial_unpad", newline, hfRounding);
    assert.deepEqual(wide.toArray(), [0, 1, 2, 3]);
    // a 6x2 grid for a 1x3000 image: no column survives, each of the 6 rows still ends in a newline
    const tall = mergeAnyresFeatures(feats, { rows: 3, cols: 1, width: 1, height: 3000 }, "spatial_unpad", newline, hfRounding);
    assert.deepEqual(tall.toArray(), [0, 1, 2, 3, 9, 9, 9, 9, 9, 9]);
  }
});

test("the original format truncates the spliced sequence to tokenizer_model_max_length", async () => {
  const dir = path.join(tmp, "orig-truncated");
  fs.cpSync(path.join(MODELS, "tiny-llava-1.5-orig"), dir, { recursive: true });
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
  cfg.tokenizer_model_max_length = 30;
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(cfg));
  const loaded = await loadLlava(dir, { visionTower: path.join(MODELS, "tiny-clip-vit-56") });
  const out = path.join(tmp, "truncated");
  await dumpTrace(loaded, { images: [], query: "Tell me a joke about a very long prompt that goes on.", convMode: "llava_v1", maxNewTokens: 1, out });
  assert.ok(read(out, "input_ids").length > 30);
  assert.equal(read(out, "inputs_embeds").length, 30 * 32);
});
