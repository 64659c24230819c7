/**
 * The V8 flags the `llava` command runs Node with (the first line of bin/llava.js, which cannot
 * import this, says the same): garbage collection on the main thread only. Otherwise V8's
 * concurrent marking runs helper threads beside the kernel pool, which by default already has a
 * thread per core, and a kernel job waits for whichever pool thread lost its core. Measured
 * (bench-small, f32, 2 vCPUs, 2 kernel threads, `llava bench` alternated three times): encode
 * 102-122 -> 100-101 ms, a projector training step 537-542 -> 477-483 ms; with 1 kernel thread
 * (a core left for the helpers) encode, prefill and decode 2-4% slower. Processes the project
 * spawns to run or measure the model take the same flags.
 */
export const NODE_FLAGS: readonly string[] = ["--single-threaded-gc"];
