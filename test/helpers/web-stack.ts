/**
 * The web UI's serving stack on loopback for tests: a real controller, a fake worker registered
 * with it (streaming as the reference's worker does), and the web server, with its log in a
 * temporary folder.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { FastifyInstance } from "fastify";
import { buildControllerApp } from "../../src/serve/controller-http.js";
import { listen } from "../../src/serve/http-app.js";
import { buildWebApp, type WebServerOptions } from "../../src/serve/web-server.js";
import { encodePng, type RgbImage } from "../../src/image/decode.js";
import { type FakeWorker, post, startFakeWorker, type StreamBehaviour } from "./fake-worker.js";

export interface WebStack {
  webUrl: string;
  controllerUrl: string;
  controller: FastifyInstance;
  worker: FakeWorker;
  logDir: string;
  /** the lines the web server logged about its own failures */
  serverLog: string[];
  close(): Promise<void>;
}

export async function startWebStack(
  models: string[],
  behaviour: StreamBehaviour,
  web: Partial<WebServerOptions> = {},
): Promise<WebStack> {
  const { app: controller } = buildControllerApp({ workerTimeoutMs: 500 });
  const controllerUrl = await listen(controller, "127.0.0.1", 0);
  const worker = await startFakeWorker(models, behaviour);
  await post(`${controllerUrl}/register_worker`, { worker_name: worker.url, check_heart_beat: false });
  const logDir = await mkdtemp(path.join(tmpdir(), "llava-web-"));
  const serverLog: string[] = [];
  const app = await buildWebApp({ controllerUrl, logDir, log: (line) => serverLog.push(line), ...web });
  const webUrl = await listen(app, "127.0.0.1", 0);
  return {
    webUrl, controllerUrl, controller, worker, logDir, serverLog,
    close: async () => {
      await app.close();
      await controller.close();
      await worker.close();
      await rm(logDir, { recursive: true, force: true });
    },
  };
}

/** A small image with distinct pixels (so a pad, a resize or a crop shows), as a PNG data URL. */
export async function testImage(width = 40, height = 20): Promise<{ image: RgbImage; dataUrl: string }> {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set([(i * 7) % 256, (i * 13) % 256, (i * 29) % 256], i * 3);
  const image = { width, height, data };
  return { image, dataUrl: `data:image/png;base64,${(await encodePng(image)).toString("base64")}` };
}

export interface StreamLine {
  session: string;
  rows: Array<{ user: string | null; image?: string; assistant: string | null }>;
  status: "streaming" | "done" | "error" | "stopped";
  notice?: string;
}

/** POSTs to the web API; a 200 stream comes back as its parsed lines, anything else as the JSON error. */
export async function webPost(url: string, body: unknown): Promise<{ status: number; lines: StreamLine[]; json?: { error?: string } }> {
  const res = await fetch(url, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers: { "content-type": "application/json" },
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (res.headers.get("content-type")?.startsWith("application/x-ndjson")) {
    return { status: res.status, lines: text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as StreamLine) };
  }
  return { status: res.status, lines: [], json: JSON.parse(text) as { error?: string } };
}

/** The settings the page sends by default (the reference's slider defaults). */
export const DEFAULT_SETTINGS = { temperature: 0.2, topP: 0.7, maxNewTokens: 512, imageProcessMode: "Default" };
