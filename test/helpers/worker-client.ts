/** Clients and engines for the model workers' tests. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import type { Engine, EngineOutput, EngineRequest } from "../../src/serve/engine.js";
import type { StreamChunk } from "../../src/serve/protocol.js";
import { CLI } from "./cli.js";
import { streamChunks } from "./fake-worker.js";

/** The parsed chunks of a /worker_generate_stream answer. */
export async function streamJson(url: string, body: unknown): Promise<StreamChunk[]> {
  return (await streamChunks(url, body)).map((c) => JSON.parse(c) as StreamChunk);
}

/** Asserts the reference's cumulative stream: every chunk error-free and extending the one before, starting with the prompt. */
export function assertCumulative(chunks: StreamChunk[], prompt: string): string {
  assert.ok(chunks.length > 0);
  let before = prompt;
  for (const c of chunks) {
    assert.equal(c.error_code, 0, c.text);
    assert.ok(c.text.startsWith(before), `${JSON.stringify(c.text)} does not extend ${JSON.stringify(before)}`);
    before = c.text;
  }
  return before;
}

/** Polls `condition` every 20 ms until it holds; fails after `ms`. */
export async function waitFor(what: string, condition: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** `inner` with its pieces passed through `pieces`; the counts and the finish reason are read from `inner` as they change. */
export function throughPieces(inner: EngineOutput, pieces: (inner: EngineOutput) => AsyncGenerator<string>): EngineOutput {
  return Object.assign(Object.create(inner) as EngineOutput, { [Symbol.asyncIterator]: () => pieces(inner) });
}

/**
 * A real engine whose pieces come out `delayMs` apart (so a test can act mid-stream), counting
 * the requests it got and keeping their outputs.
 */
export function pacedEngine(engine: Engine, delayMs: number): Engine & { outputs: EngineOutput[] } {
  const outputs: EngineOutput[] = [];
  return {
    outputs,
    get queueLength() {
      return engine.queueLength;
    },
    close: () => engine.close(),
    generate(request: EngineRequest): EngineOutput {
      const out = throughPieces(engine.generate(request), async function* (inner) {
        for await (const piece of inner) {
          yield piece;
          await sleep(delayMs);
        }
      });
      outputs.push(out);
      return out;
    },
  };
}

export interface ServerProcess {
  /** the address it said it serves on */
  url: string;
  /** everything it wrote to stderr so far */
  stderr(): string;
  exited: Promise<number | null>;
  kill(signal: NodeJS.Signals): void;
}

/** The address in a server's "... on URL" line (a controller's, a worker's, llava serve's). */
const LISTENING = / on (https?:\/\/[^\s;)]+)/;

/** Starts `llava ...args` and waits (up to 20 s) for its "... on URL" line. */
export async function spawnServer(args: string[]): Promise<ServerProcess> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  let done = false;
  void exited.then(() => (done = true));
  await waitFor("the server to listen", () => done || LISTENING.test(stderr), 20_000);
  if (done) assert.fail(`the server exited: ${stderr}`);
  return { url: LISTENING.exec(stderr)![1], stderr: () => stderr, exited, kill: (signal) => child.kill(signal) };
}
