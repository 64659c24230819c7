/**
 * `npm run bench`: `llava bench --json` on the two bench shapes, bench-small and bench-1b, at
 * f32, bf16, q8_0 and q4_0 on 1 and 2 threads (see `llava bench --help`). Options after `--`
 * replace these defaults, e.g. `npm run bench -- --precision q4_0 --threads 1`.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { MODEL_NAMES } from "../src/perf/checkpoints.js";
import { NODE_FLAGS } from "../src/util/node-flags.js";

const LLAVA = fileURLToPath(new URL("../../bin/llava.js", import.meta.url));
const DEFAULTS = ["--precision", "f32,bf16,q8_0,q4_0", "--threads", "1,2"];

const args = process.argv.slice(2);
const given = new Set(args.filter((a) => a.startsWith("--")));
const defaults = DEFAULTS.flatMap((a, i) => (i % 2 === 0 && !given.has(a) ? [a, DEFAULTS[i + 1]] : []));
for (const model of MODEL_NAMES) {
  const run = spawnSync(process.execPath, [...NODE_FLAGS, LLAVA, "bench", "--model", model, "--json", ...defaults, ...args], { stdio: "inherit" });
  if (run.status !== 0) process.exit(run.status ?? 1);
}
