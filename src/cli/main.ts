#!/usr/bin/env node
/**
 * The `llava` command: chat, run and dump, following the reference's llava.serve.cli and
 * llava.eval.run_llava. Errors the user can act on print one line and exit 1.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { runChat } from "./chat.js";
import { runConvert } from "./convert.js";
import { inspectCommand } from "./inspect.js";
import { runDump } from "./dump.js";
import { loadModelFromArgs, modelOptions, samplingFromArgs, type Values } from "./common.js";
import { answerOnce } from "./run.js";
import { LlavaError } from "../util/errors.js";

const USAGE = `usage: llava <command> [options]

commands:
  chat   --model-path DIR [--image-file PATH|URL] [--conv-mode M] [--temperature T] [--max-new-tokens N]
         interactive multi-turn chat in the terminal, answers streamed as they are generated
  run    --model-path DIR --image-file PATH[,PATH...] --query TEXT [--conv-mode M] [--temperature T]
         one answer to one query (like the reference run_llava.py)
  dump   --model-path DIR [--image-file PATH]... [--query TEXT] [--system TEXT] [--answer TEXT]
         [--conv-mode M] [--max-new-tokens N] --out DIR
         write the model's intermediate arrays as .npy files named as in the reference fixtures
  convert <to-hf|to-original|merge-lora|extract-projector> ...
         convert checkpoints between the original LLaVA and HF formats (llava convert --help)
  inspect --model-path DIR [--model-base DIR] [--json]
         shapes, settings, parameter counts and memory needs, read from configs and headers only

common options:
  --model-base DIR     base LLM under a LoRA (adapter_config.json) or projector-only (mm_projector.bin) checkpoint
  --dtype f32|bf16|f16 precision of the Linear weights in memory (default f32; bf16/f16 as stored, no f32 copy)
  --load-8bit          quantize the language model's Linear weights to 8 bits (q8_0) at load time
  --load-4bit          the same with 4 bits (q4_0; lm_head 8 bits); the tower runs in f16, the projector in f32
  --backend native|ref|auto  compute backend (default auto: the native addon when built, else TypeScript)
  --threads N          native kernel threads (default: one per core)
  --vision-tower DIR   CLIP folder for original-format checkpoints (default: resolved from mm_vision_tower)
  --top-p P            nucleus sampling (default 1)
  --seed N             seed of the sampling random numbers
  -h, --help           this help
`;

const commands: Record<string, { options: ParseArgsConfig["options"]; run: (v: Values) => Promise<void> }> = {
  inspect: inspectCommand,
  chat: {
    options: { ...modelOptions, "image-file": { type: "string" }, debug: { type: "boolean" } },
    run: async (v) => runChat(await loadModelFromArgs(v), v),
  },
  run: {
    options: { ...modelOptions, "image-file": { type: "string" }, query: { type: "string" }, sep: { type: "string" } },
    run: async (v) => answerOnce(await loadModelFromArgs(v), v),
  },
  dump: {
    options: {
      ...modelOptions,
      "image-file": { type: "string", multiple: true },
      query: { type: "string" },
      system: { type: "string" },
      answer: { type: "string" },
      out: { type: "string" },
    },
    run: async (v) => {
      if (typeof v.out !== "string") throw new LlavaError("dump needs --out DIR");
      const loaded = await loadModelFromArgs(v);
      const written = await runDump(loaded, {
        images: (v["image-file"] as string[] | undefined) ?? [],
        query: (v.query as string | undefined) ?? "What is shown?",
        system: v.system as string | undefined,
        answer: v.answer as string | undefined,
        convMode: (v["conv-mode"] as string | undefined) ?? "llava_v1",
        maxNewTokens: samplingFromArgs(v, 20).maxNewTokens,
        out: v.out,
      });
      process.stderr.write(`wrote ${written.length} arrays to ${v.out}: ${written.join(", ")}\n`);
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
  const command = commands[name];
  if (!command) throw new LlavaError(`unknown command "${name}"\n${USAGE}`);
  let values: Values;
  try {
    values = parseArgs({ args: rest, options: { ...command.options, help: { type: "boolean", short: "h" } }, strict: true }).values;
  } catch (err) {
    throw new LlavaError(`${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  await command.run(values);
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    const known = err instanceof LlavaError;
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`llava: ${known ? "" : "internal error: "}${message}\n`);
    if (!known && process.env.LLAVA_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  },
);
