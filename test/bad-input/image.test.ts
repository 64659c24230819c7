/**
 * Images that must be refused with one clear line: too many pixels for one request (judged from
 * the headers, before any pixel is allocated), downloads that grow past their limit, cut-off
 * files whose decoder reports several lines, and limits set to nonsense.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import sharp from "sharp";
import { imageLimits, loadImage, loadImages } from "../../src/image/decode.js";
import { LlavaError } from "../../src/util/errors.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { IMAGES, MODELS } from "../helpers/paths.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "llava-bad-image-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function rejectsWith(promise: Promise<unknown>, pattern: RegExp): Promise<LlavaError> {
  let caught: unknown;
  await assert.rejects(promise, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof LlavaError, `expected LlavaError, got ${String(caught)}`);
  assert.match(caught.message, pattern);
  assert.doesNotMatch(caught.message, /\n/, "one line");
  return caught;
}

/** CRC-32 as PNG chunks use it. */
function crc32(bytes: Uint8Array): number {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), 8 + data.length);
  return out;
}

/** An 8-bit RGB PNG of the given scanlines (each a filter byte, 0, then the row's pixels). */
function png(width: number, height: number, scanlines: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bits per channel
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    chunk("IDAT", zlib.deflateSync(scanlines)),
    chunk("IEND", new Uint8Array(0)),
  ]);
}

/** RGB pixels as PNG scanlines. */
function scanlines(width: number, height: number, data: Buffer): Buffer {
  const rows = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++) data.copy(rows, y * (1 + width * 3) + 1, y * width * 3, (y + 1) * width * 3);
  return rows;
}

/**
 * A ~130-byte PNG whose header says width x height: only its first row is present, so decoding
 * it would allocate the full size before failing; a header check refuses it at once.
 */
function hugePng(width: number, height: number): Buffer {
  return png(width, height, Buffer.alloc(1 + width * 3));
}

test("a 16383x16383 image given four times is refused from its header, naming the limit", async () => {
  const file = path.join(tmp, "huge.png");
  fs.writeFileSync(file, hugePng(16383, 16383));
  const started = Date.now();
  const rss = process.memoryUsage().rss;
  // one is already over the default (PIL's decompression-bomb size)
  await rejectsWith(loadImages([file, file, file, file]), /huge\.png: 16383x16383 is 268,402,689 pixels, over the limit of 178,956,970 pixels per request \(LLAVA_MAX_IMAGE_PIXELS\)/);
  // raised for one image, the four still add up to too many
  await rejectsWith(
    loadImages([file, file, file, file], { maxPixels: 300_000_000 }),
    /huge\.png: 16383x16383 brings the request's images to 536,805,378 pixels, over the limit of 300,000,000/,
  );
  assert.ok(Date.now() - started < 5000, "refused without decoding");
  assert.ok(process.memoryUsage().rss - rss < 200 * 2 ** 20, "no pixel buffer was allocated");
  // with room for it, the decoder is reached (and finds the cut-off data)
  await rejectsWith(loadImage(file, { maxPixels: 300_000_000 }), /huge\.png: cannot decode/);
});

test("the pixel limit counts every image of a request; each under it alone still loads", async () => {
  const gradient = path.join(IMAGES, "gradient_640x480.png");
  const pixels = 640 * 480;
  assert.equal((await loadImages([gradient, gradient], { maxPixels: 2 * pixels })).length, 2);
  await rejectsWith(loadImages([gradient, gradient, gradient], { maxPixels: 2 * pixels }), /brings the request's images to 921,600 pixels, over the limit of 614,400 pixels per request/);
  await rejectsWith(loadImage(gradient, { maxPixels: pixels - 1 }), /gradient_640x480\.png: 640x480 is 307,200 pixels, over the limit/);
});

test("limits come from the options, else the environment, and nonsense is refused", () => {
  const saved = { ...process.env };
  try {
    delete process.env.LLAVA_MAX_IMAGE_PIXELS;
    delete process.env.LLAVA_MAX_IMAGE_BYTES;
    assert.deepEqual(imageLimits(), { maxPixels: 178_956_970, maxDownloadBytes: 100 * 2 ** 20 });
    process.env.LLAVA_MAX_IMAGE_PIXELS = "1000";
    process.env.LLAVA_MAX_IMAGE_BYTES = "2048";
    assert.deepEqual(imageLimits(), { maxPixels: 1000, maxDownloadBytes: 2048 });
    assert.deepEqual(imageLimits({ maxPixels: 5 }), { maxPixels: 5, maxDownloadBytes: 2048 });
    process.env.LLAVA_MAX_IMAGE_PIXELS = "lots";
    assert.throws(() => imageLimits(), (e: unknown) => e instanceof LlavaError && /LLAVA_MAX_IMAGE_PIXELS=lots: expected a positive integer/.test(e.message));
    assert.throws(() => imageLimits({ maxPixels: 10, maxDownloadBytes: 0 }), /maxDownloadBytes 0: expected a positive integer/);
  } finally {
    process.env = saved;
  }
});

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

function close(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

test("an endless download stops being read as soon as it passes the byte limit", { timeout: 10_000 }, async () => {
  let sent = 0;
  let closed!: () => void;
  const connectionClosed = new Promise<void>((resolve) => (closed = resolve));
  const block = Buffer.alloc(64 * 1024, 0xab);
  const server = createServer((req, res) => {
    res.writeHead(200, { "content-type": "image/png" }); // no length: the body never ends
    const pump = () => {
      for (let more = true; more && !res.destroyed; sent += block.length) more = res.write(block);
    };
    res.on("drain", pump);
    res.on("close", closed);
    pump();
  });
  const base = await listen(server);
  try {
    const started = Date.now();
    await rejectsWith(loadImage(`${base}/endless.png`, { maxDownloadBytes: 2 ** 20 }), /endless\.png: the download is over the limit of 1,048,576 bytes per image \(LLAVA_MAX_IMAGE_BYTES\)/);
    await connectionClosed;
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
    // what the server managed to write before the client hung up: the limit plus socket buffers
    assert.ok(sent < 64 * 2 ** 20, `the server sent ${sent} bytes`);
  } finally {
    await close(server);
  }
});

test("a declared Content-Length over the limit is refused before the body is read", async () => {
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#808080" } }).png().toBuffer();
  const server = createServer((req, res) => {
    res.writeHead(200, { "content-type": "image/png", "content-length": png.length });
    res.end(png);
  });
  const base = await listen(server);
  try {
    await rejectsWith(loadImage(`${base}/a.png`, { maxDownloadBytes: png.length - 1 }), /a\.png: the download is over the limit/);
    assert.equal((await loadImage(`${base}/a.png`, { maxDownloadBytes: png.length })).width, 64);
  } finally {
    await close(server);
  }
});

test("a cut-off JPEG gives one line naming the file, though libvips reports several", async () => {
  const jpg = await sharp({ create: { width: 200, height: 200, channels: 3, background: "#336699" } }).jpeg().toBuffer();
  const file = path.join(tmp, "cut.jpg");
  fs.writeFileSync(file, jpg.subarray(0, 300));
  const err = await rejectsWith(loadImage(file), /cut\.jpg: cannot decode: .*JPEG/);
  assert.equal(err.message.match(/premature end of JPEG image/g)?.length ?? 0, 1, err.message);
});

test("llava run refuses an over-limit image set by LLAVA_MAX_IMAGE_PIXELS in one line", () => {
  const image = path.join(IMAGES, "gradient_640x480.png");
  const saved = process.env.LLAVA_MAX_IMAGE_PIXELS;
  process.env.LLAVA_MAX_IMAGE_PIXELS = "500000";
  try {
    const r = llava(["run", "--model-path", path.join(MODELS, "tiny-llava-1.5-mha"), "--image-file", `${image},${image}`, "--query", "x", "--max-new-tokens", "2"]);
    assertCleanError(r, /gradient_640x480\.png: 640x480 brings the request's images to 614,400 pixels, over the limit of 500,000 pixels per request \(LLAVA_MAX_IMAGE_PIXELS\)/);
    assert.equal(r.stdout.trim().split("\n").filter((l) => !l.startsWith("loaded ")).join(""), "", "no answer");
  } finally {
    if (saved === undefined) delete process.env.LLAVA_MAX_IMAGE_PIXELS;
    else process.env.LLAVA_MAX_IMAGE_PIXELS = saved;
  }
});

test("llava run answers about very wide and very tall images on the NeXT model", () => {
  const next = path.join(MODELS, "tiny-llava-next");
  for (const [w, h] of [[300, 2], [2000, 1], [16000, 1], [1, 16000]]) {
    const file = path.join(tmp, `${w}x${h}.png`);
    const data = Buffer.alloc(w * h * 3);
    for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 256;
    fs.writeFileSync(file, png(w, h, scanlines(w, h, data)));
    const r = llava(["run", "--model-path", next, "--image-file", file, "--query", "What is shown?", "--temperature", "0", "--max-new-tokens", "3"]);
    assert.equal(r.status, 0, `${w}x${h}: ${r.stderr}`);
    assert.ok(r.stdout.trim().length > 0, `${w}x${h}: an answer`);
  }
});

