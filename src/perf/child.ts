/**
 * One bench job (jobs.ts) in a process of its own: `node child.js JOB` prints the job's result,
 * with the process's peak RSS, as one JSON line. An error the user can act on is one line on
 * stderr and exit status EXIT_KNOWN_ERROR.
 */
import { LlavaError } from "../util/errors.js";
import { importLlamaCpp, measureLlamaCpp } from "./llama-cpp.js";
import { measureInference, measureTraining } from "./measure.js";
import { loadAtPrecision, llmWorkPerToken, encodeFlops } from "./precisions.js";
import { type ChildJob, EXIT_KNOWN_ERROR } from "./jobs.js";
import { writeTorchInputs } from "./torch-peer.js";

async function run(job: ChildJob): Promise<Record<string, unknown>> {
  if (job.kind === "llama.cpp") {
    const lib = await importLlamaCpp();
    if (!lib) throw new LlavaError("llama.cpp not installed");
    return { ...(await measureLlamaCpp(lib, job.gguf, job.ids, job.threads, job.runs)) };
  }
  const started = performance.now();
  const loaded = await loadAtPrecision(job.modelPath, job.precision, job.threads);
  const loadMs = performance.now() - started;
  if (job.kind === "infer") {
    return { loadMs, ...llmWorkPerToken(loaded, job.precision), encodeFlops: encodeFlops(loaded), ...(await measureInference(loaded, job.phases, job.runs)) };
  }
  if (job.torchInputs) writeTorchInputs(loaded, job.torchInputs);
  return { loadMs, ...(await measureTraining(loaded, job.phase, job.runs)) };
}

run(JSON.parse(process.argv[2]) as ChildJob).then(
  (result) => process.stdout.write(`${JSON.stringify({ ...result, peakRssBytes: process.resourceUsage().maxRSS * 1024 })}\n`),
  (err: unknown) => {
    const known = err instanceof LlavaError;
    process.stderr.write(`${known ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(known ? EXIT_KNOWN_ERROR : 1);
  },
);
