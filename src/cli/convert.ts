/**
 * `llava convert <to-hf|to-original|merge-lora|to-gguf|quantize|extract-projector>`: checkpoint
 * conversions between the original LLaVA, Hugging Face and GGUF formats (see src/zoo/).
 */
import type { ParseArgsConfig } from "node:util";
import { parseCommandArgs } from "./common.js";
import { LlavaError, UsageError } from "../util/errors.js";
import type { ConvertResult } from "../zoo/common.js";
import { extractProjector } from "../zoo/extract-projector.js";
import { mergeLora } from "../zoo/merge-lora.js";
import { formatBytes, ProgressBar } from "../zoo/progress.js";
import { convertToHf } from "../zoo/to-hf.js";
import { convertToGguf, GGUF_FILE_TYPES, type GgufFileType } from "../zoo/to-gguf.js";
import { convertToOriginal } from "../zoo/to-original.js";

export const CONVERT_USAGE = `usage: llava convert <conversion> [options]

conversions:
  to-hf              --model-path ORIG_DIR [--vision-tower DIR] --out DIR
                     original LLaVA (v1.5, or v1.6 AnyRes) to HF llava-hf / llava_next
  to-original        --model-path HF_DIR --out DIR
                     HF llava-hf / llava_next back to the original LLaVA format
  merge-lora         --model-path LORA_DIR --model-base BASE_DIR --out DIR
                     a LoRA (or projector-only) checkpoint folded into a full original-format model
  to-gguf            --model-path DIR [--vision-tower DIR] --out DIR [--type TYPE]
                     the LLM as <name>-<TYPE>.gguf and the vision tower with the projector as
                     mmproj-<name>-f16.gguf, the pair llama.cpp's multimodal tools and Ollama load;
                     TYPE: ${Object.keys(GGUF_FILE_TYPES).join(", ")} (default f16)
  quantize           --model-path DIR [--vision-tower DIR] --out DIR --type q8_0|q4_0
                     the model as a GGUF pair holding every weight as --load-8bit (q8_0) or
                     --load-4bit (q4_0) keeps it, so loading the folder reads the packed blocks
                     instead of quantizing again: the same model, loaded faster
  extract-projector  --model-path DIR --out FILE.safetensors
                     the model.mm_projector.* tensors of an original-format checkpoint

options:
  --max-shard-size SIZE  largest weight file, e.g. 5GB (default), 500MB, 2GiB
  --force                replace an existing non-empty output
  -h, --help             this help
`;

type Values = Record<string, string | boolean | undefined>;

const common: ParseArgsConfig["options"] = {
  "model-path": { type: "string" },
  out: { type: "string" },
  force: { type: "boolean" },
};
const sharded: ParseArgsConfig["options"] = { ...common, "max-shard-size": { type: "string" } };

function required(v: Values, name: string): string {
  const x = v[name];
  if (typeof x !== "string" || x === "") throw new LlavaError(`--${name} is required (see llava convert --help)`);
  return x;
}

const conversions: Record<string, { options: ParseArgsConfig["options"]; run: (v: Values, progress: ProgressBar) => Promise<ConvertResult> }> = {
  "to-hf": {
    options: { ...sharded, "vision-tower": { type: "string" } },
    run: (v, progress) => convertToHf({
      modelPath: required(v, "model-path"), visionTower: v["vision-tower"] as string | undefined, out: required(v, "out"),
      force: v.force === true, maxShardSize: v["max-shard-size"] as string | undefined, progress,
    }),
  },
  "to-original": {
    options: sharded,
    run: (v, progress) => convertToOriginal({
      modelPath: required(v, "model-path"), out: required(v, "out"), force: v.force === true, maxShardSize: v["max-shard-size"] as string | undefined, progress,
    }),
  },
  "merge-lora": {
    options: { ...sharded, "model-base": { type: "string" } },
    run: (v, progress) => mergeLora({
      modelPath: required(v, "model-path"), modelBase: required(v, "model-base"), out: required(v, "out"),
      force: v.force === true, maxShardSize: v["max-shard-size"] as string | undefined, progress,
    }),
  },
  "to-gguf": {
    options: { ...common, "vision-tower": { type: "string" }, type: { type: "string" } },
    run: (v, progress) => {
      const type = (v.type as string | undefined) ?? "f16";
      if (!(type in GGUF_FILE_TYPES)) throw new UsageError(`--type ${type}: expected one of ${Object.keys(GGUF_FILE_TYPES).join(", ")}`);
      return convertToGguf({
        modelPath: required(v, "model-path"), visionTower: v["vision-tower"] as string | undefined, out: required(v, "out"),
        type: type as GgufFileType, force: v.force === true, progress,
      });
    },
  },
  quantize: {
    options: { ...common, "vision-tower": { type: "string" }, type: { type: "string" } },
    run: (v, progress) => {
      const type = required(v, "type");
      if (type !== "q8_0" && type !== "q4_0") throw new UsageError(`--type ${type}: expected q8_0 (as --load-8bit) or q4_0 (as --load-4bit)`);
      return convertToGguf({
        modelPath: required(v, "model-path"), visionTower: v["vision-tower"] as string | undefined, out: required(v, "out"),
        type, asLoaded: type, force: v.force === true, progress,
      });
    },
  },
  "extract-projector": {
    options: common,
    run: (v, progress) => extractProjector({ modelPath: required(v, "model-path"), out: required(v, "out"), force: v.force === true, progress }),
  },
};

export async function runConvert(args: string[]): Promise<void> {
  const [name, ...rest] = args;
  if (!name || name === "-h" || name === "--help") {
    process.stdout.write(CONVERT_USAGE);
    return;
  }
  const conversion = conversions[name];
  if (!conversion) throw new LlavaError(`unknown conversion "${name}" (to-hf, to-original, merge-lora, to-gguf, quantize, extract-projector; see llava convert --help)`);
  const values = parseCommandArgs(`convert ${name}`, rest, conversion.options) as Values;
  if (values.help) {
    process.stdout.write(CONVERT_USAGE);
    return;
  }
  const started = Date.now();
  const result = await conversion.run(values, new ProgressBar(process.stderr, name));
  for (const note of result.notes) process.stderr.write(`note: ${note}\n`);
  process.stderr.write(`wrote ${result.tensors} tensors (${formatBytes(result.bytes)}) in ${((Date.now() - started) / 1000).toFixed(1)} s: ${result.files.join(", ")}\n`);
  process.stdout.write(`${result.out}\n`);
}
