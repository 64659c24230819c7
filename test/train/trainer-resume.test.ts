/**
 * The "kill and resume" promise: a tiny real LLaVA run killed with SIGKILL after a checkpoint or
 * inside a checkpoint write, then rerun with the same command, ends with bit-identical weights,
 * optimizer state and per-step losses to an uninterrupted run.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { readMetrics } from "../../src/train/metrics.js";

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), "trainer-child.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "trainer-resume-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function runToEnd(out: string): void {
  const r = spawnSync(process.execPath, [CHILD, out], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /done/);
}

/** Starts a run that blocks at `where` `at`, waits until it says so, and SIGKILLs it. */
async function runAndKill(out: string, where: "step" | "commit", at: number): Promise<void> {
  const child = spawn(process.execPath, [CHILD, out, where, String(at)], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (d) => (stderr += d));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (d) => {
      stdout += d;
      if (stdout.includes("paused")) resolve();
    });
    child.on("exit", () => reject(new Error(`the run ended before pausing: ${stdout} ${stderr}`)));
  });
  child.removeAllListeners("exit");
  const exited = new Promise((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
  child.kill("SIGKILL");
  assert.equal(await exited, "SIGKILL");
}

const files = (out: string) => ({
  projector: fs.readFileSync(path.join(out, "projector.safetensors")),
  optimizer: fs.readFileSync(path.join(out, "checkpoint-6", "optimizer.safetensors")),
  losses: readMetrics(path.join(out, "metrics.jsonl")).map((m) => [m.step, m.loss, m.learning_rate, m.grad_norm]),
});

let reference: ReturnType<typeof files>;
before(() => {
  const out = path.join(tmp, "uninterrupted");
  runToEnd(out);
  reference = files(out);
  assert.deepEqual(reference.losses.map(([s]) => s), [1, 2, 3, 4, 5, 6]);
});

test("a run killed after checkpoint-2 resumes from it and ends bit-identical to an uninterrupted run", async () => {
  const out = path.join(tmp, "killed-mid-run");
  await runAndKill(out, "step", 3);
  assert.deepEqual(fs.readdirSync(out).filter((n) => n.startsWith("checkpoint-")), ["checkpoint-2"]);
  runToEnd(out);
  assert.deepEqual(files(out), reference);
  // save_total_limit 2 kept the newest two
  assert.deepEqual(fs.readdirSync(out).filter((n) => n.includes("checkpoint-")).sort(), ["checkpoint-4", "checkpoint-6"]);
});

test("a run killed inside the write of checkpoint-4 leaves no checkpoint-4, and the rerun removes the partial one and ends bit-identical", async () => {
  const out = path.join(tmp, "killed-mid-checkpoint");
  await runAndKill(out, "commit", 4);
  const names = fs.readdirSync(out);
  assert.ok(!names.includes("checkpoint-4"), names.join(" "));
  assert.ok(names.some((n) => n.startsWith(".checkpoint-4.partial-")), names.join(" "));
  runToEnd(out);
  assert.deepEqual(files(out), reference);
  assert.ok(!fs.readdirSync(out).some((n) => n.startsWith(".")), "stale temporary folders were removed");
});

test("rerunning a finished run changes nothing", () => {
  const out = path.join(tmp, "uninterrupted");
  runToEnd(out);
  assert.deepEqual(files(out), reference);
});
