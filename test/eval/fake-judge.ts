/**
 * A fake OpenAI-compatible judge on 127.0.0.1 for the review commands' tests: it answers each
 * chat completion with the reply listed for the question found in the prompt, after the faults
 * scripted for that question (HTTP errors, a body that is not a completion, a hang).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { spawn } from "node:child_process";
import { CLI, type CliResult } from "../helpers/cli.js";

/** an HTTP status to answer with, a 200 whose body is not a completion, or no answer at all */
export type Fault = number | "garbage" | "hang";

export interface FakeJudge {
  apiBase: string;
  /** the JSON bodies of the requests answered with a reply, in order */
  answered: unknown[];
  /** every request's Authorization header */
  authorizations: Array<string | undefined>;
  close(): Promise<void>;
}

/**
 * `questions` are the question texts, `replies` the judge's reply to each; `faults[i]` are
 * answered, one per request, before question i gets its reply ("always" repeats the last).
 */
export async function startFakeJudge(questions: string[], replies: string[], faults: Record<number, Fault[] | { always: Fault }> = {}): Promise<FakeJudge> {
  const answered: unknown[] = [];
  const authorizations: Array<string | undefined> = [];
  const pending = new Map(Object.entries(faults).map(([k, v]) => [Number(k), Array.isArray(v) ? [...v] : v]));
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      authorizations.push(req.headers.authorization);
      if (req.method !== "POST" || req.url !== "/v1/chat/completions") return void res.writeHead(404).end("no such route");
      const request = JSON.parse(body) as { messages: Array<{ content: string }> };
      const i = questions.findIndex((q) => request.messages[1].content.includes(`[Question]\n${q}\n\n`));
      const plan = pending.get(i);
      const fault = Array.isArray(plan) ? plan.shift() : plan?.always;
      if (fault === "hang") return; // never answers; the client's time limit ends the request
      if (fault === "garbage") return void res.writeHead(200, { "content-type": "text/html" }).end("<html>gateway</html>");
      if (fault !== undefined) return void res.writeHead(fault, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: `fault ${fault}` } }));
      answered.push(JSON.parse(body));
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: "x", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: replies[i] }, finish_reason: "stop" }] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    apiBase: `http://127.0.0.1:${port}/v1`,
    answered,
    authorizations,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Runs `llava ...args` without blocking this process (the fake judge answers meanwhile). */
export function llavaAsync(args: string[], cwd: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.OPENAI_API_KEY;
    delete env.OPENAI_API_BASE;
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill(), 60_000);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}
