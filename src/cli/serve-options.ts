/** The command-line options the `llava serve` parts share, each checked once the same way. */
import type { ApiOptions } from "../serve/api-common.js";
import type { BatchEngineOptions } from "../serve/batch-engine.js";
import { LlavaError } from "../util/errors.js";
import type { Values } from "./common.js";

/** A server's log: one line on stderr each, after its name. */
export function serverLog(name: string): (line: string) => void {
  return (line) => process.stderr.write(`${name}: ${line}\n`);
}

export function portFrom(v: Values, fallback: string): number {
  const raw = v.port ?? fallback;
  const port = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || port > 65535) throw new LlavaError(`--port must be a whole number from 0 to 65535, got "${String(raw)}"`);
  return port;
}

export function hostFrom(v: Values, fallback: string): string {
  return typeof v.host === "string" ? v.host : fallback;
}

export function choiceFrom<T extends string>(v: Values, option: string, choices: readonly T[], fallback: T): T {
  const value = v[option] ?? fallback;
  if (!choices.includes(value as T)) throw new LlavaError(`--${option} must be ${choices.join(" or ")}, got "${String(value)}"`);
  return value as T;
}

/** An http(s) URL without its trailing slashes; undefined when neither given nor defaulted. */
export function httpUrlFrom(v: Values, option: string, fallback: string): string;
export function httpUrlFrom(v: Values, option: string): string | undefined;
export function httpUrlFrom(v: Values, option: string, fallback?: string): string | undefined {
  const raw = v[option] ?? fallback;
  if (raw === undefined) return undefined;
  if (typeof raw !== "string" || !/^https?:\/\/[^/]/i.test(raw) || !URL.canParse(raw)) throw new LlavaError(`--${option} must be an http(s) URL, got "${String(raw)}"`);
  return raw.replace(/\/+$/, "");
}

/** The reference's --limit-model-concurrency (default 5). */
export function concurrencyFrom(v: Values): number {
  const raw = v["limit-model-concurrency"] ?? "5";
  const n = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || n < 1) throw new LlavaError(`--limit-model-concurrency must be a whole number >= 1, got "${String(raw)}"`);
  return n;
}

export function megabytesFrom(v: Values, option: string, fallbackBytes: number): number {
  const raw = v[option];
  if (raw === undefined) return fallbackBytes;
  const mb = Number(raw);
  if (typeof raw !== "string" || !(mb > 0) || !Number.isFinite(mb)) throw new LlavaError(`--${option} must be a positive number of megabytes, got "${String(raw)}"`);
  return Math.round(mb * 2 ** 20);
}

/** The OpenAI / Ollama API options of every server that mounts them. */
export const apiArgs = {
  "no-api": { type: "boolean" },
  "api-key": { type: "string" },
  "cors-origin": { type: "string", multiple: true },
  "allow-private-urls": { type: "boolean" },
} as const;

export const API_USAGE = `  The OpenAI-compatible API (/v1) and Ollama's API (/api) are served unless --no-api: --api-key makes
  them require "Authorization: Bearer KEY"; --cors-origin lets browser pages from ORIGIN ("*": any;
  repeatable) call them; --allow-private-urls lets image URLs point at private and loopback addresses.`;

/** The API options the command line asks for; undefined with --no-api. */
export function apiOptionsFrom(v: Values, log: (line: string) => void): ApiOptions | undefined {
  if (v["no-api"]) return undefined;
  const apiKey = v["api-key"] as string | undefined;
  if (apiKey !== undefined && apiKey.trim() === "") throw new LlavaError("--api-key must not be empty");
  return { apiKey, corsOrigins: v["cors-origin"] as string[] | undefined, allowPrivateUrls: v["allow-private-urls"] === true, log };
}

/** The batching engine's options of the servers that run a local model. */
export const engineArgs = {
  "max-batch": { type: "string" },
  "prefix-cache-mb": { type: "string" },
} as const;

export const ENGINE_USAGE = `  Up to --max-batch requests (default 8) are decoded together. --prefix-cache-mb (default 1024; 0: off)
  keeps finished requests' KV caches so a request that starts the same way (a chat's next turn) runs
  only its new tokens; that sums in another order than a whole prompt, so a greedy answer can differ
  in a near tie from the one computed without it.`;

export function engineOptionsFrom(v: Values): BatchEngineOptions {
  const raw = v["max-batch"] ?? "8";
  const maxBatch = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || maxBatch < 1) throw new LlavaError(`--max-batch must be a whole number >= 1, got "${String(raw)}"`);
  const prefixCacheBytes = v["prefix-cache-mb"] === "0" ? 0 : megabytesFrom(v, "prefix-cache-mb", 2 ** 30);
  return { maxBatch, prefixCacheBytes };
}
