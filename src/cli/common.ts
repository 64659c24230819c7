/** Options and helpers shared by the commands that load a model. */
import { parseArgs, type ParseArgsConfig } from "node:util";
import {
  convModeForModelName, convTemplateNames, convTemplates, getConvTemplate, modelNameFromPath, type Conversation,
} from "../llava/conversation.js";
import { modelPathOrDefault } from "../llava/default-model.js";
import { ggufConvMode } from "../llava/gguf-load.js";
import { type LoadedLlava, loadLlava } from "../llava/load.js";
import { QUANT_TYPES, type QuantType } from "../llava/precision.js";
import { bf16DotUnavailable, createBackend } from "../tensor/backends.js";
import type { GenerationOptions } from "../llava/generate.js";
import { LlavaError } from "../util/errors.js";

export type Values = Record<string, string | boolean | Array<string | boolean> | undefined>;

/** Options of the commands that load a model: where it is and how it is held in memory. */
export const loadOptions: ParseArgsConfig["options"] = {
  "model-path": { type: "string" },
  "model-base": { type: "string" },
  "vision-tower": { type: "string" },
  mmproj: { type: "string" },
  dtype: { type: "string" },
  backend: { type: "string" },
  threads: { type: "string" },
  "load-8bit": { type: "boolean" },
  "load-4bit": { type: "boolean" },
  quant: { type: "string" },
  strict: { type: "boolean" },
};

/** Options of the commands that generate an answer. */
export const generationOptions: ParseArgsConfig["options"] = {
  "conv-mode": { type: "string" },
  "max-new-tokens": { type: "string" },
  "context-length": { type: "string" },
};

/** How tokens are chosen (run and chat; dump always decodes greedily). */
export const samplingOptions: ParseArgsConfig["options"] = {
  temperature: { type: "string" },
  "top-p": { type: "string" },
  seed: { type: "string" },
};

/** Parses a command's options; a mistake is one line pointing at the help. */
export function parseCommandArgs(command: string, args: string[], options: ParseArgsConfig["options"]): Values {
  try {
    return parseArgs({ args, options: { ...options, help: { type: "boolean", short: "h" } }, strict: true }).values;
  } catch (err) {
    // Node's messages go on with advice about "--" delimiters: keep the first sentence
    const first = (err as Error).message.split(/\.\s/)[0];
    throw new LlavaError(`${command}: ${first} (see llava ${command} --help)`);
  }
}

function numberOption(v: Values, name: string, fallback: number, check: (x: number) => boolean, rule: string): number {
  const raw = v[name];
  if (raw === undefined) return fallback;
  const x = Number(raw);
  if (typeof raw !== "string" || raw.trim() === "" || !Number.isFinite(x) || !check(x)) {
    throw new LlavaError(`--${name} must be ${rule}, got "${String(raw)}"`);
  }
  return x;
}

const wholeNumber = (x: number) => Number.isInteger(x) && x >= 1;

/**
 * The generation settings of run and chat, checked before the model loads. `--max-new-tokens`
 * is capped by the room the prompt leaves in the context (see llava/generate.ts).
 */
export function generationFromArgs(v: Values, defaultMaxNewTokens = 512, defaultTemperature = 0.2): GenerationOptions {
  return {
    temperature: numberOption(v, "temperature", defaultTemperature, (x) => x >= 0, "a number >= 0"),
    topP: numberOption(v, "top-p", 1, (x) => x > 0 && x <= 1, "a number in (0, 1]"),
    seed: v.seed === undefined ? undefined : numberOption(v, "seed", 0, (x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32, "a whole number from 0 to 2^32 - 1"),
    ...budgetFromArgs(v, defaultMaxNewTokens),
  };
}

/** The token budget and the context (every command that generates). */
export function budgetFromArgs(v: Values, defaultMaxNewTokens: number): GenerationOptions {
  return {
    maxNewTokens: numberOption(v, "max-new-tokens", defaultMaxNewTokens, wholeNumber, "a whole number >= 1"),
    contextLength: v["context-length"] === undefined ? undefined : numberOption(v, "context-length", 0, (x) => wholeNumber(x) && x <= 2 ** 24, "a whole number from 1 to 2^24"),
  };
}

/** The template named by --conv-mode, checked before the model loads (undefined: inferred later). */
export function convModeFromArgs(v: Values): string | undefined {
  const name = v["conv-mode"];
  if (typeof name !== "string") return undefined;
  if (!Object.hasOwn(convTemplates, name)) throw new LlavaError(`--conv-mode "${name}" is not a template; valid names: ${convTemplateNames().join(", ")}`);
  return name;
}

export async function loadModelFromArgs(v: Values): Promise<LoadedLlava> {
  const modelPath = modelPathOrDefault(v["model-path"] as string | undefined);
  const started = Date.now();
  const dtype = v.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "bf16" && dtype !== "f16") throw new LlavaError(`--dtype must be f32, bf16 or f16, got "${String(dtype)}"`);
  if (v["load-8bit"] && v["load-4bit"]) throw new LlavaError("--load-8bit and --load-4bit exclude each other");
  const quant = v.quant;
  if (quant !== undefined) {
    if (typeof quant !== "string" || !(QUANT_TYPES as readonly string[]).includes(quant)) {
      throw new LlavaError(`--quant must be one of ${QUANT_TYPES.join(", ")}, got "${String(quant)}"`);
    }
    if (v["load-8bit"] || v["load-4bit"]) throw new LlavaError("--quant excludes --load-8bit and --load-4bit");
  }
  const backendName = v.backend ?? undefined;
  if (backendName !== undefined && backendName !== "native" && backendName !== "ref" && backendName !== "auto") {
    throw new LlavaError(`--backend must be native, ref or auto, got "${String(backendName)}"`);
  }
  const threads = v.threads === undefined ? undefined : numberOption(v, "threads", 0, (x) => Number.isInteger(x) && x >= 1 && x <= 1024, "a whole number from 1 to 1024");
  // bf16 weights multiply bf16-rounded activations, as a bf16 model does in PyTorch
  const backend = createBackend({ name: backendName, threads, bf16Dot: dtype === "bf16" });
  const noBf16Dot = dtype === "bf16" && bf16DotUnavailable(backend);
  if (noBf16Dot) process.stderr.write(`[WARNING] --dtype bf16: ${noBf16Dot}\n`);
  const loaded = await loadLlava(modelPath, {
    backend,
    visionTower: v["vision-tower"] as string | undefined,
    modelBase: v["model-base"] as string | undefined,
    mmproj: v.mmproj as string | undefined,
    dtype,
    quantize: v["load-8bit"] ? "q8_0" : v["load-4bit"] ? "q4_0" : undefined,
    quant: quant as QuantType | undefined,
    strict: v.strict === true,
  });
  process.stderr.write(`loaded ${modelPath} (${loaded.spec.gguf ? "GGUF" : loaded.format}) in ${Date.now() - started} ms\n`);
  return loaded;
}

/**
 * The template the reference CLI would pick from the model folder's name, unless --conv-mode
 * says otherwise (the reference warns when the two differ).
 */
export function conversationFor(loaded: LoadedLlava, chosen: string | undefined): Conversation<unknown> {
  const gguf = loaded.spec.gguf;
  const inferred = gguf ? ggufConvMode(gguf) : convModeForModelName(modelNameFromPath(loaded.dir));
  if (chosen !== undefined && chosen !== inferred) {
    process.stderr.write(`[WARNING] the auto inferred conversation mode is ${inferred}, while --conv-mode is ${chosen}, using ${chosen}\n`);
  }
  return getConvTemplate(chosen ?? inferred);
}
