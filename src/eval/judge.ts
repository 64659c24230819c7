/**
 * A judge model behind any OpenAI-compatible endpoint (`POST {api-base}/chat/completions`), as
 * the reference's GPT-assisted reviews call it. Where the reference retries forever, a request
 * here is tried a bounded number of times, each with a time limit, backing off exponentially
 * between tries; a request that never succeeds is a `JudgeFailure` the caller counts.
 */
import type { ArgSpec, ArgValues } from "./args.js";
import { LlavaError } from "../util/errors.js";

export interface JudgeSettings {
  /** e.g. "https://api.openai.com/v1" or this project's own server */
  apiBase: string;
  /** sent as a Bearer token; null sends none (a local server may need none) */
  apiKey: string | null;
  model: string;
  /** the longest one request may take */
  timeoutMs: number;
  /** tries per request, the first included */
  maxTries: number;
  /** the wait after the first failed try; doubled after each further one */
  backoffMs: number;
}

export interface JudgeRequest {
  system: string;
  user: string;
  temperature: number;
  maxTokens: number;
}

/** A request that failed every try; `message` says how the last one failed. */
export class JudgeFailure extends Error {}

/** The reference client's default endpoint (openai 0.x reads OPENAI_API_BASE). */
const DEFAULT_API_BASE = "https://api.openai.com/v1";
/** The reference sleeps 0.5 s between tries; here that is the first wait of the backoff. */
const FIRST_BACKOFF_MS = 500;

/** The judge's options, shared by the review commands (the reference scripts have none of them). */
export function judgeOptions(defaultModel: string): Record<string, ArgSpec> {
  return {
    "--api-base": { type: "str", help: `the judge's OpenAI-compatible endpoint (default $OPENAI_API_BASE or ${DEFAULT_API_BASE})` },
    "--api-key": { type: "str", help: "the judge's key (default $OPENAI_API_KEY; none sent when neither is set)" },
    "--judge-model": { type: "str", default: defaultModel, help: "the judge model, as the reference names it" },
    "--max-tries": { type: "int", default: 5, help: "tries per review before it counts as failed" },
    "--request-timeout": { type: "float", default: 120, help: "seconds one try may take" },
  };
}

export function judgeSettings(args: ArgValues): JudgeSettings {
  const maxTries = args.max_tries as number;
  const timeout = args.request_timeout as number;
  if (!(maxTries >= 1)) throw new LlavaError(`--max-tries must be at least 1, got ${maxTries}`);
  if (!(timeout > 0)) throw new LlavaError(`--request-timeout must be a positive number of seconds, got ${timeout}`);
  const apiBase = ((args.api_base as string | null) ?? process.env.OPENAI_API_BASE ?? DEFAULT_API_BASE).replace(/\/+$/, "");
  if (!/^https?:\/\//.test(apiBase)) throw new LlavaError(`--api-base must be an http(s) URL, got "${apiBase}"`);
  return {
    apiBase,
    apiKey: (args.api_key as string | null) ?? process.env.OPENAI_API_KEY ?? null,
    model: args.judge_model as string,
    timeoutMs: timeout * 1000,
    maxTries,
    backoffMs: FIRST_BACKOFF_MS,
  };
}

/** Statuses that no retry can fix: a wrong key, a forbidden model, a wrong URL. They end the run. */
const FATAL_STATUSES = new Set([401, 403, 404]);

/**
 * The judge's reply text to one request. `onRetry` hears each failed try that is retried.
 * Throws JudgeFailure after `maxTries` failed tries, LlavaError at once for a fatal status.
 */
export async function askJudge(judge: JudgeSettings, request: JudgeRequest, onRetry: (problem: string) => void): Promise<string> {
  const url = `${judge.apiBase}/chat/completions`;
  const body = JSON.stringify({
    model: judge.model,
    messages: [
      { role: "system", content: request.system },
      { role: "user", content: request.user },
    ],
    temperature: request.temperature,
    max_tokens: request.maxTokens,
  });
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (judge.apiKey) headers.authorization = `Bearer ${judge.apiKey}`;
  let problem = "";
  for (let attempt = 1; attempt <= judge.maxTries; attempt++) {
    if (attempt > 1) {
      onRetry(problem);
      await new Promise((resolve) => setTimeout(resolve, judge.backoffMs * 2 ** (attempt - 2)));
    }
    try {
      const response = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(judge.timeoutMs) });
      const text = await response.text();
      if (FATAL_STATUSES.has(response.status)) {
        throw new LlavaError(`the judge at ${url} refused the request: HTTP ${response.status} ${oneLine(text)}`);
      }
      if (!response.ok) {
        problem = `HTTP ${response.status} ${oneLine(text)}`;
        continue;
      }
      const content = replyContent(text);
      if (content === null) {
        problem = `a reply without choices[0].message.content: ${oneLine(text)}`;
        continue;
      }
      return content;
    } catch (err) {
      if (err instanceof LlavaError) throw err;
      problem = describeFetchError(err, judge.timeoutMs);
    }
  }
  throw new JudgeFailure(judge.maxTries === 1 ? `the one try failed with ${problem}` : `${judge.maxTries} tries failed, the last with ${problem}`);
}

/** The reply text of a chat completion body, or null when the body is not one. */
function replyContent(text: string): string | null {
  try {
    const content = (JSON.parse(text) as { choices?: Array<{ message?: { content?: unknown } }> })?.choices?.[0]?.message?.content;
    return typeof content === "string" ? content : null;
  } catch {
    return null;
  }
}

function describeFetchError(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError" || e?.name === "AbortError") return `no reply within ${timeoutMs / 1000} s`;
  const cause = e?.cause?.code ?? e?.cause?.message;
  return cause ? `${e.message} (${cause})` : String(e?.message ?? err);
}

/** At most 200 characters of a body, on one line. */
const oneLine = (text: string) => {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 200 ? `${flat.slice(0, 200)}...` : flat;
};
