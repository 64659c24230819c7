import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import sharp from "sharp";
import { encodePng, loadImage, type RgbImage } from "../../src/image/decode.js";
import { LlavaError } from "../../src/util/errors.js";
import { IMAGES } from "../helpers/paths.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "llava-image-test-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A small image with distinct pixels: (x*40, y*60, 200 - x*10). */
function sample(width = 5, height = 4): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x * 40, y * 60, 200 - x * 10], (y * width + x) * 3);
  }
  return { width, height, data };
}

function raw(img: RgbImage) {
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } });
}

async function save(name: string, bytes: Uint8Array): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, bytes);
  return file;
}

test("PNG round trip through encodePng and a file path is exact", async () => {
  const img = sample();
  const file = await save("a.png", await encodePng(img));
  const back = await loadImage(file);
  assert.equal(back.width, img.width);
  assert.equal(back.height, img.height);
  assert.deepEqual(back.data, img.data);
});

test("raw bytes and base64 data URLs decode the same image", async () => {
  const img = sample(3, 2);
  const png = await encodePng(img);
  assert.deepEqual((await loadImage(png)).data, img.data);
  const url = `data:image/png;base64,${png.toString("base64")}`;
  assert.deepEqual((await loadImage(url)).data, img.data);
});

test("lossless WebP decodes exactly", async () => {
  const img = sample();
  const webp = await raw(img).webp({ lossless: true }).toBuffer();
  assert.deepEqual((await loadImage(webp)).data, img.data);
});

test("JPEG decodes to RGB of the right size and close colours", async () => {
  const flat: RgbImage = { width: 16, height: 8, data: new Uint8Array(16 * 8 * 3).fill(0) };
  for (let i = 0; i < flat.data.length; i += 3) flat.data.set([200, 100, 50], i);
  const jpg = await raw(flat).jpeg({ quality: 95 }).toBuffer();
  const back = await loadImage(jpg);
  assert.equal(back.width, 16);
  assert.equal(back.height, 8);
  for (let i = 0; i < back.data.length; i++) assert.ok(Math.abs(back.data[i] - flat.data[i]) <= 3);
});

test("EXIF orientation is ignored, like PIL (no auto-rotation)", async () => {
  const img = sample(6, 2);
  const jpg = await raw(img).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
  assert.equal((await sharp(jpg).metadata()).orientation, 6);
  const back = await loadImage(jpg);
  assert.equal(back.width, 6);
  assert.equal(back.height, 2);
});

test("greyscale is replicated to three channels", async () => {
  const grey = Uint8Array.from([0, 50, 100, 255, 7, 9]);
  const png = await sharp(grey, { raw: { width: 3, height: 2, channels: 1 } }).toColourspace("b-w").png().toBuffer();
  assert.equal((await sharp(png).metadata()).channels, 1);
  const back = await loadImage(png);
  assert.deepEqual(Array.from(back.data), Array.from(grey).flatMap((v) => [v, v, v]));
});

test("alpha is dropped without compositing (PIL convert('RGB'))", async () => {
  const rgba = Uint8Array.from([10, 20, 30, 0, 40, 50, 60, 128, 70, 80, 90, 255, 1, 2, 3, 4]);
  const png = await sharp(rgba, { raw: { width: 2, height: 2, channels: 4 } }).png().toBuffer();
  const back = await loadImage(png);
  assert.deepEqual(Array.from(back.data), [10, 20, 30, 40, 50, 60, 70, 80, 90, 1, 2, 3]);
  const la = Uint8Array.from([10, 0, 200, 128]);
  const laPng = await sharp(la, { raw: { width: 2, height: 1, channels: 2 } }).toColourspace("b-w").png().toBuffer();
  assert.deepEqual(Array.from((await loadImage(laPng)).data), [10, 10, 10, 200, 200, 200]);
});

test("16-bit greyscale is clipped at 255 as PIL's I;16 -> RGB does", async () => {
  const values = new Uint16Array([0, 200, 255, 256, 25700, 65535]);
  const png = await sharp(values, { raw: { width: 3, height: 2, channels: 1 } }).toColourspace("grey16").png().toBuffer();
  const meta = await sharp(png).metadata();
  assert.equal(meta.depth, "ushort");
  const back = await loadImage(png);
  assert.deepEqual(Array.from(back.data), [0, 200, 255, 255, 255, 255].flatMap((v) => [v, v, v]));
});

test("a palette PNG is expanded", async () => {
  const img = sample(4, 2);
  const png = await raw(img).png({ palette: true, colours: 256, dither: 0 }).toBuffer();
  assert.equal((await sharp(png).metadata()).isPalette, true);
  assert.deepEqual((await loadImage(png)).data, img.data);
});

test("GIF: the first frame of an animation is used", async () => {
  const red = new Uint8Array(2 * 2 * 3).map((_, i) => (i % 3 === 0 ? 255 : 0));
  const blue = new Uint8Array(2 * 2 * 3).map((_, i) => (i % 3 === 2 ? 255 : 0));
  const both = new Uint8Array([...red, ...blue]);
  const gif = await sharp(both, { raw: { width: 2, height: 4, channels: 3, pageHeight: 2 } }).gif().toBuffer();
  assert.equal((await sharp(gif).metadata()).pages, 2);
  const back = await loadImage(gif);
  assert.equal(back.width, 2);
  assert.equal(back.height, 2);
  assert.deepEqual(back.data, red);
});

test("GIF: transparent pixels show their palette colour, as in PIL", async () => {
  // Hand-assembled 2x1 GIF: palette [(10,20,30), (200,100,50), ...], index 0 transparent,
  // pixels [0, 1]. PIL's convert("RGB") gives [(10,20,30), (200,100,50)].
  const gif = Uint8Array.from([
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 2, 0, 1, 0, 0x81, 0, 0, 10, 20, 30, 200, 100, 50, 0, 0, 0, 255, 255, 255, 0x21,
    0xf9, 4, 0x01, 0, 0, 0, 0, 0x2c, 0, 0, 0, 0, 2, 0, 1, 0, 0, 2, 2, 0x44, 0x0a, 0, 0x3b,
  ]);
  const back = await loadImage(gif);
  assert.deepEqual(Array.from(back.data), [10, 20, 30, 200, 100, 50]);
});

test("CMYK JPEG decodes to RGB with PIL's naive conversion", async () => {
  const flat = new Uint8Array(8 * 8 * 3);
  for (let i = 0; i < flat.length; i += 3) flat.set([200, 100, 50], i);
  const jpg = await sharp(flat, { raw: { width: 8, height: 8, channels: 3 } }).toColourspace("cmyk").jpeg({ quality: 100 }).toBuffer();
  assert.equal((await sharp(jpg).metadata()).space, "cmyk");
  const back = await loadImage(jpg);
  assert.equal(back.data.length, 8 * 8 * 3);
  for (let i = 0; i < back.data.length; i += 3) {
    const d = [back.data[i] - 200, back.data[i + 1] - 100, back.data[i + 2] - 50];
    assert.ok(d.every((v) => Math.abs(v) < 40), `pixel ${back.data.subarray(i, i + 3)}`);
  }
});

test("the fixture PNG decodes at its size", async () => {
  const img = await loadImage(path.join(IMAGES, "gradient_640x480.png"));
  assert.equal(img.width, 640);
  assert.equal(img.height, 480);
  assert.equal(img.data.length, 640 * 480 * 3);
});

async function rejectsWith(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof LlavaError, `expected LlavaError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

test("a missing file names the file", async () => {
  const file = path.join(dir, "nope.png");
  await rejectsWith(loadImage(file), new RegExp(`${escape(file)}.*not found`));
});

test("a zero-size file names the file and says it is empty", async () => {
  const file = await save("empty.jpg", new Uint8Array(0));
  await rejectsWith(loadImage(file), new RegExp(`${escape(file)}.*empty`));
});

test("a directory is not an image", async () => {
  const sub = path.join(dir, "folder.png");
  await mkdir(sub, { recursive: true });
  await rejectsWith(loadImage(sub), /not a regular file/);
});

test("garbage bytes name the source and say it cannot be decoded", async () => {
  const file = await save("garbage.png", new TextEncoder().encode("this is not an image at all"));
  await rejectsWith(loadImage(file), new RegExp(`${escape(file)}.*cannot decode`));
  await rejectsWith(loadImage(new Uint8Array([1, 2, 3, 4]), { what: "upload #3" }), /upload #3.*cannot decode/);
  await rejectsWith(loadImage(new Uint8Array(0)), /empty/);
});

test("a truncated PNG is refused", async () => {
  const png = await encodePng(sample(40, 40));
  const file = await save("truncated.png", png.subarray(0, Math.floor(png.length / 2)));
  await rejectsWith(loadImage(file), new RegExp(escape(file)));
});

test("bad data URLs are explained", async () => {
  await rejectsWith(loadImage("data:text/plain;base64,aGVsbG8="), /not an image/);
  await rejectsWith(loadImage("data:image/png,rawtext"), /base64/);
  await rejectsWith(loadImage("data:image/png;base64,"), /no bytes/);
});

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

test("http URLs are downloaded; HTTP errors name the URL and status", async () => {
  const png = await encodePng(sample(3, 3));
  const server = createServer((req, res) => {
    if (req.url === "/img.png") {
      res.writeHead(200, { "content-type": "image/png" });
      res.end(png);
    } else {
      res.writeHead(404);
      res.end("missing");
    }
  });
  const port = await listen(server);
  try {
    const img = await loadImage(`http://127.0.0.1:${port}/img.png`);
    assert.deepEqual(img.data, sample(3, 3).data);
    await rejectsWith(loadImage(`http://127.0.0.1:${port}/other.png`), new RegExp(`127\\.0\\.0\\.1:${port}/other\\.png.*404`));
  } finally {
    await close(server);
  }
});

test("an unreachable URL rejects quickly with a LlavaError naming it", async () => {
  // Take a free port, then close it so nothing listens there.
  const server = createServer();
  const port = await listen(server);
  await close(server);
  const url = `http://127.0.0.1:${port}/x.png`;
  const started = Date.now();
  await rejectsWith(loadImage(url), new RegExp(`${escape(url)}.*cannot download`));
  assert.ok(Date.now() - started < 5000, "should fail fast on a refused connection");
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
