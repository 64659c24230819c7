/**
 * A model worker for the controller's tests: a real node:http server on loopback that answers
 * /worker_get_status and streams NUL-delimited JSON on /worker_generate_stream the way the
 * reference's worker does, or misbehaves (hangs, dies, fails) as told.
 */
import { streamChunk } from "../../src/serve/protocol.js";
import { startLoopbackServer } from "./loopback-server.js";

export type StreamBehaviour =
  | { kind: "stream"; texts: string[]; /** waits for this before each chunk after the first */ gate?: () => Promise<void> }
  /** as the reference's worker answers: the request's prompt followed by the pieces so far */
  | { kind: "answer"; pieces: string[]; gate?: () => Promise<void> }
  | { kind: "error-chunk"; text: string; code: number }
  | { kind: "hang-after-first"; text: string }
  | { kind: "die-after-first"; text: string }
  | { kind: "status"; code: number };

export interface FakeWorker {
  url: string;
  status: { model_names: string[]; speed: number; queue_length: number };
  behaviour: StreamBehaviour;
  /** the bodies of the generation requests it received */
  requests: Array<Record<string, unknown>>;
  /** resolves when a generation request's connection closed before the worker finished answering */
  aborted: Promise<void>;
  close(): Promise<void>;
}

/** The reference worker's chunk: json.dumps({"text": ..., "error_code": 0}) + NUL. */
export const workerChunk = (text: string) => streamChunk({ text, error_code: 0 }).toString("utf8");

export async function startFakeWorker(modelNames: string[], behaviour: StreamBehaviour = { kind: "stream", texts: ["Hi", "Hi there"] }, speed = 1): Promise<FakeWorker> {
  let onAbort!: () => void;
  const aborted = new Promise<void>((resolve) => (onAbort = resolve));
  const worker: FakeWorker = {
    url: "",
    status: { model_names: modelNames, speed, queue_length: 0 },
    behaviour,
    requests: [],
    aborted,
    close: () => server.close(),
  };
  const server = await startLoopbackServer(async (req, body, res) => {
    if (req.url === "/worker_get_status") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(worker.status));
      return;
    }
    if (req.url !== "/worker_generate_stream") {
      res.statusCode = 404;
      res.end();
      return;
    }
    worker.requests.push(JSON.parse(body.toString("utf8")));
    res.on("close", () => {
      if (!res.writableFinished) onAbort();
    });
    const b = worker.behaviour;
    if (b.kind === "status") {
      res.statusCode = b.code;
      res.end("Internal Server Error");
    } else if (b.kind === "stream" || b.kind === "answer") {
      const prompt = String(worker.requests[worker.requests.length - 1].prompt);
      const texts = b.kind === "stream" ? b.texts : b.pieces.map((_, i) => prompt + b.pieces.slice(0, i + 1).join(""));
      for (const [i, text] of texts.entries()) {
        if (i > 0) await b.gate?.();
        if (res.destroyed) return;
        const bytes = Buffer.from(workerChunk(text));
        // split each chunk across two writes: the relay must put it back together
        res.write(bytes.subarray(0, 5));
        res.write(bytes.subarray(5));
      }
      res.end();
    } else if (b.kind === "error-chunk") {
      res.end(streamChunk({ text: b.text, error_code: b.code }));
    } else {
      res.write(workerChunk(b.text));
      if (b.kind === "die-after-first") setTimeout(() => res.socket?.destroy(), 20);
      // hang: never ends, until the controller gives up and closes the connection
    }
  });
  worker.url = server.url;
  return worker;
}

/** POSTs JSON to `url` and returns the status and the parsed JSON answer. */
export async function post(url: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(url, { method: "POST", body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body), headers: body === undefined ? {} : { "content-type": "application/json" }, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, json: await res.json() };
}

/** The raw chunks of a /worker_generate_stream answer, NUL-split (each without its NUL). */
export async function streamChunks(url: string, body: unknown): Promise<string[]> {
  const res = await fetch(url, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" }, signal: AbortSignal.timeout(10_000) });
  const text = Buffer.from(await res.arrayBuffer()).toString("utf8");
  assertEndsWithNul(text);
  return text.slice(0, -1).split("\0");
}

function assertEndsWithNul(text: string): void {
  if (!text.endsWith("\0")) throw new Error(`the stream does not end with NUL: ${JSON.stringify(text)}`);
}
