/**
 * Outgoing JSON POSTs to workers, with the reference's `requests` timeout semantics: the limit is
 * on each wait (connecting, or the gap between two reads), not on the whole exchange, so a long
 * stream lives as long as it keeps sending.
 */
import http from "node:http";
import https from "node:https";

export interface PostOptions {
  /** the longest silence tolerated while connecting or reading */
  idleTimeoutMs: number;
  /** aborts the request (and its response stream) */
  signal?: AbortSignal;
}

/** POSTs `body` as JSON and resolves with the response once its headers arrive. */
export function postJson(url: string, body: unknown, opts: PostOptions): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      reject(new Error(`not a URL: ${url}`));
      return;
    }
    const client = target.protocol === "https:" ? https : target.protocol === "http:" ? http : undefined;
    if (!client) {
      reject(new Error(`not an http(s) URL: ${url}`));
      return;
    }
    const payload = Buffer.from(JSON.stringify(body ?? {}));
    const req = client.request(target, {
      method: "POST",
      headers: { "content-type": "application/json", "content-length": payload.length },
      signal: opts.signal,
    });
    // destroying the request also fails a response already streaming, so a silent worker ends it
    req.setTimeout(opts.idleTimeoutMs, () => req.destroy(new Error(`no answer from ${target.origin} in ${opts.idleTimeoutMs} ms`)));
    req.on("response", resolve);
    req.on("error", reject);
    req.end(payload);
  });
}

/** POSTs and reads the whole answer as JSON; undefined when anything fails (as the reference treats a worker's status). */
export async function postForJson(url: string, body: unknown, opts: PostOptions): Promise<unknown> {
  try {
    const res = await postJson(url, body, opts);
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    if (res.statusCode !== 200) return undefined;
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    return undefined;
  }
}

/**
 * The pieces of a NUL-delimited stream (the reference's `iter_lines(delimiter=b"\0")`), without
 * the delimiters; empty pieces are skipped and a last piece without a delimiter is kept.
 */
export async function* nulDelimited(stream: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let pending: Buffer = Buffer.alloc(0);
  for await (const chunk of stream) {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let end: number;
    while ((end = pending.indexOf(0)) >= 0) {
      if (end > 0) yield pending.subarray(0, end);
      pending = pending.subarray(end + 1);
    }
  }
  if (pending.length > 0) yield pending;
}
