/** `llava train`: the reference's two-stage recipe (see train/recipe.ts) and its hand-off to the reference trainer. */
import { optionsHelp, parseTrainOptions } from "../train/options.js";
import { referenceCommand } from "../train/reference-command.js";
import { runTraining } from "../train/recipe.js";
import { runVisionStage } from "../train/vision-stage.js";

const TRAIN_USAGE = `usage: llava train --stage pretrain|finetune|vision --model-name-or-path DIR --data-path FILE --output-dir DIR [options]

Trains as the reference's llava/train/train.py does, with its option names (--name or --name_with_underscores;
booleans as --flag or --flag True/False; values may also come from --config FILE.yaml|.json). Stage 1
(pretrain) trains a new projector between a frozen CLIP tower and a frozen LLM and writes config.json +
mm_projector.bin (load with --model-base LLM); stage 2 (finetune) trains the projector and the
LLM, or LoRA adapters with --lora-enable. --stage vision, not the reference's, comes before them when the
tower itself starts from random weights: it trains the tower of a LLaVA checkpoint to tell, at each patch,
what its grid cell holds (a cell-label file as llava data synth writes). Checkpoints go to output_dir/checkpoint-N; --resume continues.

options:
${optionsHelp()}
`;

export async function runTrain(argv: string[]): Promise<void> {
  if (argv.includes("-h") || argv.includes("--help")) {
    process.stdout.write(TRAIN_USAGE);
    return;
  }
  const opts = parseTrainOptions(argv);
  if (opts.print_reference_command) {
    process.stdout.write(referenceCommand(opts));
    return;
  }
  await (opts.stage === "vision" ? runVisionStage(opts) : runTraining(opts));
}
