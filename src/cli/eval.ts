/** `llava eval <script> [options]`: the reference's evaluation scripts as drop-in commands (src/eval). */
import { parseArgs, usage } from "../eval/args.js";
import { EVAL_COMMANDS } from "../eval/commands.js";
import { LlavaError } from "../util/errors.js";

function listing(): string {
  const width = Math.max(0, ...EVAL_COMMANDS.map((c) => c.name.length));
  return EVAL_COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n");
}

export async function runEval(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === "-h" || name === "--help") {
    process.stdout.write(`usage: llava eval <script> [options]\n\nscripts (the reference's, with the same options, inputs and outputs):\n${listing()}\n`);
    return;
  }
  const command = EVAL_COMMANDS.find((c) => c.name === name);
  if (!command) throw new LlavaError(`eval: unknown script "${name}" (see llava eval --help)`);
  if (rest.includes("-h") || rest.includes("--help")) {
    process.stdout.write(usage(name, command.options));
    return;
  }
  await command.run(parseArgs(name, rest, command.options));
}
