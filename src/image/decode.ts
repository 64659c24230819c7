/**
 * Image loading: bytes from a path, an http(s) URL, a data: URL or a buffer, decoded with sharp
 * and converted to 8-bit RGB exactly the way PIL's `Image.open(f).convert("RGB")` does, because
 * that is what LLaVA and Hugging Face feed their preprocessors.
 *
 * PIL rules reproduced here: alpha is dropped without compositing, greyscale is replicated to
 * three channels, palettes are expanded, EXIF orientation and embedded ICC profiles are ignored,
 * animated images give their first frame (transparent GIF pixels show their palette colour, as
 * in PIL's palette mode), 16-bit greyscale is clipped to 255 (PIL's I;16 -> RGB),
 * CMYK uses PIL's naive inversion instead of a colour profile.
 *
 * Limits (`ImageLimits`) keep one request from exhausting memory: the pixels of all its images,
 * judged from their headers before any is decoded, and the bytes of each download.
 */
import { readFile, stat } from "node:fs/promises";
import sharp, { type Metadata } from "sharp";
import { LlavaError } from "../util/errors.js";
import { gifFirstFrameTransparentColor } from "./gif.js";

/** An 8-bit RGB image, channels interleaved, rows top to bottom. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

const FETCH_TIMEOUT_MS = 15_000;

type Pipeline = ReturnType<typeof sharp>;

/** What one request may make the loader read and allocate. */
export interface ImageLimits {
  /** decoded pixels (width x height) over all the images of one request */
  maxPixels: number;
  /** bytes of one downloaded image */
  maxDownloadBytes: number;
}

/** Each limit's default and the environment variable that overrides it. */
const LIMIT_SETTINGS: Record<keyof ImageLimits, { env: string; fallback: number }> = {
  // PIL refuses one image above 2 x Image.MAX_IMAGE_PIXELS as a decompression bomb
  maxPixels: { env: "LLAVA_MAX_IMAGE_PIXELS", fallback: 2 * 89_478_485 },
  maxDownloadBytes: { env: "LLAVA_MAX_IMAGE_BYTES", fallback: 100 * 2 ** 20 },
};

/** The limits in force: those given, else the environment variables, else the defaults. */
export function imageLimits(given: Partial<ImageLimits> = {}): ImageLimits {
  const pick = (key: keyof ImageLimits): number => {
    const { env, fallback } = LIMIT_SETTINGS[key];
    const value = given[key] ?? (process.env[env] ? Number(process.env[env]) : fallback);
    if (!Number.isSafeInteger(value) || value < 1) {
      const shown = given[key] !== undefined ? `${key} ${given[key]}` : `${env}=${process.env[env]}`;
      throw new LlavaError(`image limit ${shown}: expected a positive integer`);
    }
    return value;
  };
  return { maxPixels: pick("maxPixels"), maxDownloadBytes: pick("maxDownloadBytes") };
}

/** e.g. "over the limit of 1,024 bytes per image (LLAVA_MAX_IMAGE_BYTES)" */
function overLimit(key: keyof ImageLimits, limit: number, what: string): string {
  return `over the limit of ${count(limit)} ${what} (${LIMIT_SETTINGS[key].env})`;
}

function count(n: number): string {
  return n.toLocaleString("en-US");
}

export interface LoadImageOptions extends Partial<ImageLimits> {
  /** names the source in error messages (defaults to the path or URL, or "bytes") */
  what?: string;
}

/**
 * Loads and decodes an image. `source` is a local path, an http(s):// URL, a data:image/...;base64
 * URL, or the encoded bytes themselves.
 */
export async function loadImage(source: string | Uint8Array, options: LoadImageOptions = {}): Promise<RgbImage> {
  const limits = imageLimits(options);
  const [image] = await decodeAll([await readSource(source, options.what, limits)], limits);
  return image;
}

/**
 * Loads the images of one request, refusing them before any is decoded when their sizes (read
 * from the headers) add up to more than `maxPixels`.
 */
export async function loadImages(
  sources: ReadonlyArray<string | Uint8Array>, given: Partial<ImageLimits> = {},
): Promise<RgbImage[]> {
  const limits = imageLimits(given);
  const bytesLabel = (i: number) => (sources.length > 1 ? `bytes #${i + 1}` : undefined);
  const read = sources.map((s, i) => readSource(s, typeof s === "string" ? undefined : bytesLabel(i), limits));
  return decodeAll(await Promise.all(read), limits);
}

/** Encoded bytes and how error messages name them. */
interface Encoded {
  bytes: Uint8Array;
  label: string;
}

async function readSource(source: string | Uint8Array, what: string | undefined, limits: ImageLimits): Promise<Encoded> {
  if (typeof source !== "string") return { bytes: source, label: what ?? "bytes" };
  if (/^https?:\/\//i.test(source)) {
    return { bytes: await fetchBytes(source, limits.maxDownloadBytes), label: what ?? source };
  }
  if (/^data:/i.test(source)) {
    const label = what ?? `data URL (${source.slice(0, 30)}...)`;
    return { bytes: decodeDataUrl(source, label), label };
  }
  return { bytes: await readImageFile(source), label: what ?? source };
}

/** Encodes an RGB image as PNG (lossless, so a round trip gives the same pixels). */
export async function encodePng(img: RgbImage): Promise<Buffer> {
  checkImageShape(img);
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .png()
    .toBuffer();
}

async function readImageFile(path: string): Promise<Uint8Array> {
  let size: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new LlavaError(`image ${path}: not a regular file`);
    size = info.size;
  } catch (err) {
    if (err instanceof LlavaError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "file not found" : describe(err);
    throw new LlavaError(`image ${path}: ${why}`);
  }
  if (size === 0) throw new LlavaError(`image ${path}: the file is empty (0 bytes)`);
  try {
    return await readFile(path);
  } catch (err) {
    throw new LlavaError(`image ${path}: cannot read the file: ${describe(err)}`);
  }
}

/** Downloads `url`, giving up as soon as the body grows past `maxBytes`. */
async function fetchBytes(url: string, maxBytes: number): Promise<Uint8Array> {
  const tooBig = () => new LlavaError(`image ${url}: the download is ${overLimit("maxDownloadBytes", maxBytes, "bytes per image")}`);
  const failed = (err: unknown, doing: string) => {
    const name = (err as Error)?.name;
    if (name === "TimeoutError" || name === "AbortError") {
      return new LlavaError(`image ${url}: no complete answer within ${FETCH_TIMEOUT_MS / 1000} s`);
    }
    return new LlavaError(`image ${url}: ${doing}: ${describe(err)}`);
  };
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS), redirect: "follow" });
  } catch (err) {
    throw failed(err, "cannot download");
  }
  if (!response.ok) {
    void response.body?.cancel().catch(() => {});
    throw new LlavaError(`image ${url}: the server answered HTTP ${response.status} ${response.statusText}`.trimEnd());
  }
  if (Number(response.headers.get("content-length")) > maxBytes) {
    void response.body?.cancel().catch(() => {});
    throw tooBig();
  }
  if (!response.body) return new Uint8Array(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let received = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received += value.length;
      if (received > maxBytes) {
        // cancelling closes the connection: nothing more is read
        void reader.cancel().catch(() => {});
        throw tooBig();
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof LlavaError) throw err;
    throw failed(err, "download interrupted");
  }
  return Buffer.concat(chunks, received);
}

function decodeDataUrl(url: string, label: string): Uint8Array {
  const match = /^data:([^,]*?),(.*)$/is.exec(url);
  if (!match) throw new LlavaError(`${label}: malformed data URL (no comma)`);
  const [, header, payload] = match;
  if (!/^image\//i.test(header)) throw new LlavaError(`${label}: data URL is not an image (media type "${header}")`);
  if (!/;base64$/i.test(header)) throw new LlavaError(`${label}: only base64 data URLs are supported`);
  const bytes = Buffer.from(payload.replace(/\s+/g, ""), "base64");
  if (bytes.length === 0) throw new LlavaError(`${label}: the data URL holds no bytes`);
  return bytes;
}

// ignoreIcc: PIL never applies embedded colour profiles. failOn "error": PIL shrugs off decoder
// warnings (e.g. extraneous JPEG bytes) but refuses truncated or corrupt data. limitInputPixels:
// sharp refuses from the header, before allocating, anything larger than the size we checked.
function open(bytes: Uint8Array, pixels: number): Pipeline {
  return sharp(bytes, { ignoreIcc: true, failOn: "error", pages: 1, page: 0, limitInputPixels: pixels });
}

/** Reads every header, checks the request's pixel total, then decodes one image at a time. */
async function decodeAll(encoded: Encoded[], limits: ImageLimits): Promise<RgbImage[]> {
  const metas = await Promise.all(encoded.map(readHeader));
  let total = 0;
  metas.forEach((meta, i) => {
    const pixels = meta.width * meta.height;
    total += pixels;
    if (total > limits.maxPixels) {
      const size = `${meta.width}x${meta.height}`;
      const what = total === pixels ? `is ${count(pixels)} pixels` : `brings the request's images to ${count(total)} pixels`;
      throw new LlavaError(`image ${encoded[i].label}: ${size} ${what}, ${overLimit("maxPixels", limits.maxPixels, "pixels per request")}`);
    }
  });
  const images: RgbImage[] = [];
  for (let i = 0; i < encoded.length; i++) images.push(await decodeImage(encoded[i], metas[i]));
  return images;
}

type Header = Metadata & { width: number; height: number };

async function readHeader({ bytes, label }: Encoded): Promise<Header> {
  if (bytes.length === 0) throw new LlavaError(`image ${label}: no bytes to decode (empty input)`);
  let meta: Metadata;
  try {
    meta = await open(bytes, 0).metadata();
  } catch (err) {
    throw new LlavaError(`image ${label}: cannot decode: ${describe(err)}`);
  }
  if (!meta.width || !meta.height) throw new LlavaError(`image ${label}: cannot decode: no image size in the header`);
  return meta as Header;
}

/** Decodes encoded image bytes to PIL-style RGB. */
async function decodeImage({ bytes, label }: Encoded, meta: Header): Promise<RgbImage> {
  const pipeline = () => open(bytes, meta.width * meta.height);
  try {
    if (meta.space === "cmyk") return await decodeCmyk(pipeline());
    if (meta.depth === "ushort" && meta.channels === 1) return await decodeGrey16(pipeline());
    const { data, info } = await pipeline().raw().toBuffer({ resolveWithObject: true });
    const rgb = toRgb(data, info.width, info.height, info.channels);
    if (meta.format === "gif" && info.channels === 4) {
      const color = gifFirstFrameTransparentColor(bytes);
      if (color) paintTransparent(rgb, data, color);
    }
    return rgb;
  } catch (err) {
    if (err instanceof LlavaError) throw err;
    throw new LlavaError(`image ${label}: cannot decode: ${describe(err)}`);
  }
}

/** 1/2/3/4-channel 8-bit pixels to RGB: replicate grey, drop alpha (PIL L/LA/RGB/RGBA -> RGB). */
function toRgb(src: Uint8Array, width: number, height: number, channels: number): RgbImage {
  const n = width * height;
  const out = new Uint8Array(n * 3);
  if (channels === 3) {
    out.set(src.subarray(0, n * 3));
  } else if (channels === 4) {
    for (let i = 0; i < n; i++) {
      out[i * 3] = src[i * 4];
      out[i * 3 + 1] = src[i * 4 + 1];
      out[i * 3 + 2] = src[i * 4 + 2];
    }
  } else if (channels === 1 || channels === 2) {
    for (let i = 0; i < n; i++) {
      const v = src[i * channels];
      out[i * 3] = v;
      out[i * 3 + 1] = v;
      out[i * 3 + 2] = v;
    }
  } else {
    throw new LlavaError(`unsupported number of image channels: ${channels}`);
  }
  return { width, height, data: out };
}

/** Gives fully transparent pixels (RGBA source `rgba`) the colour PIL shows for them. */
function paintTransparent(img: RgbImage, rgba: Uint8Array, color: [number, number, number]): void {
  const n = img.width * img.height;
  for (let i = 0; i < n; i++) {
    if (rgba[i * 4 + 3] === 0) img.data.set(color, i * 3);
  }
}

/** PIL opens 16-bit greyscale as I;16 and its RGB conversion clips values to 255 (no scaling). */
async function decodeGrey16(pipeline: Pipeline): Promise<RgbImage> {
  const { data, info } = await pipeline
    .toColourspace("grey16")
    .raw({ depth: "ushort" })
    .toBuffer({ resolveWithObject: true });
  const n = info.width * info.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const v = Math.min(data.readUInt16LE(i * 2 * info.channels), 255);
    out[i * 3] = v;
    out[i * 3 + 1] = v;
    out[i * 3 + 2] = v;
  }
  return { width: info.width, height: info.height, data: out };
}

/** CMYK to RGB the way PIL's cmyk2rgb does: nk = 255 - K; c' = nk - round(C*nk/255). */
async function decodeCmyk(pipeline: Pipeline): Promise<RgbImage> {
  const { data, info } = await pipeline
    .pipelineColourspace("cmyk")
    .toColourspace("cmyk")
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels < 4) throw new LlavaError(`CMYK image decoded to ${info.channels} channels`);
  const n = info.width * info.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const p = i * info.channels;
    const nk = 255 - data[p + 3];
    for (let c = 0; c < 3; c++) {
      out[i * 3 + c] = clip8(nk - mulDiv255(data[p + c], nk));
    }
  }
  return { width: info.width, height: info.height, data: out };
}

/** PIL's MULDIV255: a*b/255 rounded, in integer arithmetic. */
function mulDiv255(a: number, b: number): number {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

function clip8(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : v;
}

/** Throws a LlavaError when `img` is not a consistent RGB image. */
export function checkImageShape(img: RgbImage, what = "image"): void {
  const ok =
    Number.isInteger(img.width) &&
    Number.isInteger(img.height) &&
    img.width > 0 &&
    img.height > 0 &&
    img.data.length === img.width * img.height * 3;
  if (!ok) {
    throw new LlavaError(
      `${what}: expected ${img.width}x${img.height} RGB pixels (${img.width * img.height * 3} bytes), got ${img.data.length} bytes`,
    );
  }
}

/** An error's message (and cause) on one line: libvips reports one problem per line, often twice. */
function describe(err: unknown): string {
  let text = String(err);
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    const causeText = cause instanceof Error ? cause.message : cause ? String(cause) : "";
    text = causeText && !err.message.includes(causeText) ? `${err.message} (${causeText})` : err.message;
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
  return [...new Set(lines)].join("; ");
}
