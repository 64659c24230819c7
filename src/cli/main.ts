#!/usr/bin/env node
/**
 * The `llava` command: chat, run and dump, following the reference's llava.serve.cli and
 * llava.eval.run_llava. Errors the user can act on print one line and exit 1.
 */
import type { ParseArgsConfig } from "node:util";
import { chatRequestFromArgs, runChat } from "./chat.js";
import { runConvert } from "./convert.js";
import { runData } from "./data.js";
import { runEval } from "./eval.js";
import { runServe } from "./serve.js";
import { runTrain } from "./train.js";
import { runBenchCommand } from "./bench.js";
import { inspectCommand } from "./inspect.js";
import { dumpOptionsFromArgs, runDump } from "./dump.js";
import { generationOptions, loadModelFromArgs, loadOptions, parseCommandArgs, samplingOptions, type Values } from "./common.js";
import { answerOnce, runRequestFromArgs } from "./run.js";
import { loadImages } from "../image/decode.js";
import { describeFsError } from "../io/files.js";
import { LlavaError, UsageError } from "../util/errors.js";

const USAGE = `usage: llava <command> [options]

commands:
  chat   [--model-path DIR] [--image-file PATH|URL] [--conv-mode M] [--temperature T] [--max-new-tokens N]
         interactive multi-turn chat in the terminal, answers streamed as they are generated
  run    [--model-path DIR] --image-file PATH[,PATH...] --query TEXT [--conv-mode M] [--temperature T]
         one answer to one query (like the reference run_llava.py)
  dump   --model-path DIR [--image-file PATH]... [--query TEXT] [--system TEXT] [--answer TEXT]
         [--conv-mode M] [--max-new-tokens N] --out DIR [--force]
         write the model's intermediate arrays as .npy files named as in the reference fixtures
         (greedy ids only: no sampling options; --force replaces a non-empty --out)
  convert <to-hf|to-original|merge-lora|to-gguf|quantize|extract-projector> ...
         convert checkpoints between the original LLaVA, HF and GGUF formats, or store one quantized (llava convert --help)
  inspect --model-path DIR|FILE.gguf [--mmproj FILE.gguf] [--model-base DIR] [--json]
         shapes, settings, parameter counts and memory needs, read from configs and headers only
  data check --data-path FILE --model-path DIR [--image-folder DIR] [--version V] [--model-max-length N] [--json]
         validate a training dataset before training: images, <image> markers, turn order, label masks, lengths
  data synth --out DIR [--seed S] [--train N] [--test M] [--image-size PX] [--overwrite]
         write a procedural world of coloured shapes as stage-1/stage-2 training data and a held-out test
  eval <script> [options]
         the reference's evaluation scripts (scorers, converters, reviews) with their own options (llava eval --help)
  train --stage pretrain|finetune|vision --model-name-or-path DIR --data-path FILE --output-dir DIR [...]
         LLaVA's two-stage training recipe with the reference's options (llava train --help);
         --print-reference-command prints the reference trainer's equivalent deepspeed command
  bench  (--model-path DIR | --model bench-small|bench-1b) [--precision P] [--threads N] [--phases LIST] [--runs N] [--json]
         speed by one documented protocol, with rooflines measured in the same run and llama.cpp alongside (llava bench --help)
  serve controller [--host H] [--port 21001] [--dispatch-method shortest_queue|lottery]
         the reference's serving controller, which model workers register with (llava serve --help)
  serve worker --model-path DIR [--controller-address URL] [--port 21002] [--worker-address URL]
         the reference's model worker: registers with the controller and streams answers
  serve openai-worker --api-base URL --model NAME [--api-key K] [--controller-address URL] [--port 21002]
         a worker whose answers come from an OpenAI-compatible server

common options:
  --model-path DIR     the model folder (default for chat, run and serve: the shipped models/llava-v1.5-world-tiny)
  --model-base DIR     base LLM under a LoRA (adapter_config.json) or projector-only (mm_projector.bin) checkpoint,
                       or the model a PEFT adapter folder without config.json was trained on
  --dtype f32|bf16|f16 precision of the Linear weights in memory (default f32; bf16/f16 as stored, no f32 copy)
  --load-8bit          quantize the language model's Linear weights to 8 bits (q8_0) at load time
  --load-4bit          the same with 4 bits (q4_0; lm_head 8 bits); the tower runs in f16, the projector in f32
  --quant T            quantize the language model's Linear weights with llama.cpp's type or mix T: q4_k_m, q5_k_m,
                       q6_k, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k (lm_head q6_k unless q8_0); the tower in f16
  --backend native|ref|auto  compute backend (default auto: the native addon when built, else TypeScript)
  --threads N          native kernel threads, one pool for the process (default: the CPU's hardware threads)
  --vision-tower DIR   CLIP folder for original-format checkpoints (default: resolved from mm_vision_tower)
  --mmproj FILE        the vision (mmproj) GGUF of a GGUF language model given as --model-path FILE.gguf
                       (default: the one *mmproj*.gguf beside it; a folder of such a pair needs neither)
  --strict             refuse a checkpoint holding tensors the model does not use (default: one warning)
  -h, --help           this help

generation options (chat, run):
  --temperature T      0 = greedy (default 0.2)
  --top-p P            nucleus sampling (default 1)
  --seed N             seed of the sampling random numbers (default: random)
  --max-new-tokens N   most tokens in an answer (default 512; dump 20); capped by the room the prompt
                       leaves in the context, and the answer then ends there
  --context-length N   positions prompt + answer may use (default: the model's max_position_embeddings);
                       a prompt that fills it is refused
`;

/** Each command checks its options (and reads its images) before the model loads: a typo costs no load. */
const commands: Record<string, { options: ParseArgsConfig["options"]; run: (v: Values) => Promise<void> }> = {
  inspect: inspectCommand,
  chat: {
    options: { ...loadOptions, ...generationOptions, ...samplingOptions, "image-file": { type: "string" }, debug: { type: "boolean" } },
    run: async (v) => {
      const request = chatRequestFromArgs(v);
      const images = await loadImages(request.imageFile === undefined ? [] : [request.imageFile]);
      await runChat(await loadModelFromArgs(v), request, images);
    },
  },
  run: {
    options: { ...loadOptions, ...generationOptions, ...samplingOptions, "image-file": { type: "string" }, query: { type: "string" }, sep: { type: "string" } },
    run: async (v) => {
      const request = runRequestFromArgs(v);
      const images = await loadImages(request.imageFiles);
      await answerOnce(await loadModelFromArgs(v), request, images);
    },
  },
  dump: {
    options: {
      ...loadOptions,
      ...samplingOptions, // known only to be refused with a clear line
      "conv-mode": { type: "string" },
      "max-new-tokens": { type: "string" },
      "image-file": { type: "string", multiple: true },
      query: { type: "string" },
      system: { type: "string" },
      answer: { type: "string" },
      out: { type: "string" },
      force: { type: "boolean" },
    },
    run: async (v) => {
      const options = dumpOptionsFromArgs(v);
      const written = await runDump(await loadModelFromArgs(v), options);
      process.stderr.write(`wrote ${written.length} arrays to ${options.out}: ${written.join(", ")}\n`);
    },
  },
};

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === "-h" || name === "--help" || name === "help") {
    process.stdout.write(USAGE);
    return;
  }
  if (name === "convert") return runConvert(rest); // has its own sub-commands and options
  if (name === "eval") return runEval(rest); // the reference scripts' own options
  if (name === "serve") return runServe(rest); // has its own parts and options
  if (name === "data") return runData(rest); // has its own sub-commands and options
  if (name === "train") return runTrain(rest); // the reference trainer's option names
  if (name === "bench") return runBenchCommand(rest); // has its own help
  const command = commands[name];
  if (!command) throw new LlavaError(`unknown command "${name}" (commands: chat, run, dump, convert, inspect, data, eval, serve, train, bench; see llava --help)`);
  const values = parseCommandArgs(name, rest, command.options);
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  await command.run(values);
}

/** The one way the command ends on an error: one line on stderr (newlines collapsed), exit status 1. */
function fail(err: unknown): never {
  const known = err instanceof LlavaError;
  const status = err instanceof UsageError ? err.exitCode : 1;
  const message = (err instanceof Error ? err.message : String(err)).trim().replace(/\s*\n\s*/g, " ");
  process.stderr.write(`llava: ${known ? "" : "internal error: "}${message}\n`);
  if (!known && process.env.LLAVA_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  process.exit(status);
}

// A reader that stops reading (`llava run ... | head`) ends the command quietly, as for other
// tools; any other failure to write the output (a full disk) is an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  fail(new LlavaError(`cannot write to standard output: ${describeFsError(err)}`));
});

main(process.argv.slice(2)).then(
  // a failed last write reports its error event first
  () => setImmediate(() => process.exit(0)),
  fail,
);
