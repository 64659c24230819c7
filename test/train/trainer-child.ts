/**
 * Runs the tiny projector task in a process of its own so a test can SIGKILL it. Arguments: the
 * output folder, then optionally `step N` (stop, blocked, after optimizer step N) or
 * `commit N` (stop, blocked, inside the write of checkpoint-N just before it is renamed into
 * place). It prints "paused" when it blocks and "done" when the run finished.
 */
import fs from "node:fs";
import { train, type TrainerOptions } from "../../src/train/trainer.js";
import { tinyProjectorTask } from "./trainer-task.js";

const CHILD_OPTIONS: Omit<TrainerOptions, "outputDir"> = {
  numTrainEpochs: 2, perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 2, learningRate: 1e-2, mmProjectorLr: 2e-2,
  weightDecay: 0.1, warmupRatio: 0.2, lrSchedulerType: "cosine", maxGradNorm: 1.0, saveSteps: 2, saveTotalLimit: 2, loggingSteps: 1, seed: 3,
};

/** Blocks the whole process (no event loop) until it is killed. */
function pause(): void {
  fs.writeSync(1, "paused\n");
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 120_000);
}

async function main(): Promise<void> {
  const [outputDir, where, at] = process.argv.slice(2);
  const { task } = await tinyProjectorTask();
  await train(task, { ...CHILD_OPTIONS, outputDir }, {
    progress: null,
    onStep: (m) => (where === "step" && m.step === Number(at) ? pause() : undefined),
    beforeCheckpointCommit: (_dir, step) => (where === "commit" && step === Number(at) ? pause() : undefined),
  });
  fs.writeSync(1, "done\n");
}

if (process.argv[1]?.endsWith("trainer-child.js") && process.argv[2]) {
  main().catch((err) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
