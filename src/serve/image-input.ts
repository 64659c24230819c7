/**
 * Images sent to the public APIs: base64 (Ollama), data URLs and http(s) URLs (OpenAI), each
 * decoded the way every other llava-ts image is (image/decode.ts). Each image is held to a byte
 * limit (413 beyond it); a URL is fetched with a deadline and, unless allowed, never from a
 * private, loopback or link-local address, whatever its host name resolves to (checked on the
 * address actually connected to, so a redirect or a DNS answer cannot slip past).
 */
import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { loadImage, type RgbImage } from "../image/decode.js";
import { LlavaError } from "../util/errors.js";
import { HttpError } from "./http-app.js";

export interface ImageInputOptions {
  /** encoded bytes of one image */
  maxImageBytes: number;
  /** fetch URLs that resolve to private, loopback or link-local addresses */
  allowPrivateUrls: boolean;
  /** the whole download of one URL, redirects included */
  urlTimeoutMs: number;
  /** decoded pixels the request's images may still take, shared by all of them */
  pixelBudget: { left: number };
  /** the client went away */
  signal?: AbortSignal;
}

export const DEFAULT_MAX_IMAGE_BYTES = 20 * 2 ** 20;
export const DEFAULT_URL_TIMEOUT_MS = 10_000;
const MAX_REDIRECTS = 5;

/** Decodes a base64 image (a data URL is taken too); `what` names it in errors. */
export async function imageFromBase64(base64: string, what: string, opts: ImageInputOptions): Promise<RgbImage> {
  if (/^data:/i.test(base64)) return imageFromUrl(base64, what, opts);
  checkSize(base64Bytes(base64), what, opts.maxImageBytes);
  return decode(Buffer.from(base64, "base64"), what, opts.pixelBudget);
}

/** Decodes the image at a data: or http(s): URL. */
export async function imageFromUrl(url: string, what: string, opts: ImageInputOptions): Promise<RgbImage> {
  if (/^data:/i.test(url)) {
    checkSize(base64Bytes(url.slice(url.indexOf(",") + 1)), what, opts.maxImageBytes);
    return decode(url, what, opts.pixelBudget);
  }
  if (!/^https?:\/\//i.test(url)) throw new HttpError(400, `${what}: expected a data: or http(s): URL`);
  return decode(await download(url, what, opts), what, opts.pixelBudget);
}

/** Decodes within the pixels the request has left (so many images cannot add up to too much memory). */
async function decode(source: string | Buffer, what: string, budget: { left: number }): Promise<RgbImage> {
  if (budget.left < 1) throw new HttpError(400, `${what}: the request's images already use all the pixels a request may take`);
  try {
    const image = await loadImage(source, { what, maxPixels: budget.left });
    budget.left -= image.width * image.height;
    return image;
  } catch (err) {
    if (err instanceof LlavaError) throw new HttpError(400, err.message);
    throw err;
  }
}

/** The byte count a base64 text decodes to. */
function base64Bytes(text: string): number {
  const clean = text.replace(/\s+/g, "");
  return Math.floor((clean.length * 3) / 4) - (clean.endsWith("==") ? 2 : clean.endsWith("=") ? 1 : 0);
}

function checkSize(bytes: number, what: string, limit: number): void {
  if (bytes > limit) throw new HttpError(413, `${what}: ${bytes} bytes is over the limit of ${limit} bytes per image`);
}

/** Private, loopback, link-local, shared, multicast and reserved ranges (IPv4-mapped IPv6 addresses are checked as IPv4). */
const PRIVATE_RANGES = new net.BlockList();
for (const [address, prefix] of [["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12], ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 3]] as const) {
  PRIVATE_RANGES.addSubnet(address, prefix, "ipv4");
}
for (const [address, prefix] of [["::", 127], ["64:ff9b::", 96], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8]] as const) {
  PRIVATE_RANGES.addSubnet(address, prefix, "ipv6");
}

export function isPrivateAddress(address: string): boolean {
  const family = net.isIP(address);
  return family !== 0 && PRIVATE_RANGES.check(address, family === 4 ? "ipv4" : "ipv6");
}

class PrivateAddressError extends Error {}

/** dns.lookup that refuses host names resolving to any private address. */
const publicLookup: net.LookupFunction = (hostname, options, callback) => {
  dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, "", 0);
    const refused = addresses.find((a) => isPrivateAddress(a.address));
    if (refused) return callback(new PrivateAddressError(`${hostname} resolves to the private address ${refused.address}`), "", 0);
    if (options.all) return (callback as unknown as (e: null, all: dns.LookupAddress[]) => void)(null, addresses);
    callback(null, addresses[0].address, addresses[0].family);
  });
};

/** GETs `url`, following redirects, within the deadline and the byte limit. */
async function download(url: string, what: string, opts: ImageInputOptions): Promise<Buffer> {
  const deadline = AbortSignal.timeout(opts.urlTimeoutMs);
  const signal = opts.signal ? AbortSignal.any([deadline, opts.signal]) : deadline;
  let target = new URL(url);
  for (let redirects = 0; ; redirects++) {
    const host = target.hostname.replace(/^\[|\]$/g, "");
    if (!opts.allowPrivateUrls && isPrivateAddress(host)) throw new HttpError(400, `${what}: ${host} is a private address, which image URLs may not name`);
    let res: http.IncomingMessage;
    try {
      res = await get(target, opts.allowPrivateUrls ? undefined : publicLookup, signal);
    } catch (err) {
      throw downloadError(err, what, opts, signal);
    }
    const location = res.headers.location;
    if (res.statusCode !== undefined && res.statusCode >= 300 && res.statusCode < 400 && location) {
      res.destroy();
      if (redirects === MAX_REDIRECTS) throw new HttpError(400, `${what}: more than ${MAX_REDIRECTS} redirects`);
      target = new URL(location, target);
      if (!/^https?:$/.test(target.protocol)) throw new HttpError(400, `${what}: redirected to a URL that is not http(s)`);
      continue;
    }
    if (res.statusCode !== 200) {
      res.destroy();
      throw new HttpError(400, `${what}: the image server answered HTTP ${res.statusCode}`);
    }
    if (Number(res.headers["content-length"]) > opts.maxImageBytes) {
      res.destroy();
      checkSize(Number(res.headers["content-length"]), what, opts.maxImageBytes);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of res) {
        size += (chunk as Buffer).length;
        if (size > opts.maxImageBytes) {
          res.destroy();
          checkSize(size, what, opts.maxImageBytes);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (err) {
      if (err instanceof HttpError) throw err;
      throw downloadError(err, what, opts, signal);
    }
    return Buffer.concat(chunks);
  }
}

function get(target: URL, lookup: net.LookupFunction | undefined, signal: AbortSignal): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const client = target.protocol === "https:" ? https : http;
    const req = client.get(target, { lookup, signal }, resolve);
    req.on("error", reject);
  });
}

function downloadError(err: unknown, what: string, opts: ImageInputOptions, signal: AbortSignal): Error {
  if (opts.signal?.aborted) return opts.signal.reason as Error;
  if (err instanceof PrivateAddressError) return new HttpError(400, `${what}: ${err.message}, which image URLs may not name`);
  if (signal.aborted) return new HttpError(400, `${what}: the image did not arrive within ${opts.urlTimeoutMs} ms`);
  return new HttpError(400, `${what}: cannot download: ${(err as Error).message}`);
}
