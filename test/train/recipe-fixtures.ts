/** Tiny starting points of a training run, cut from the reference fixtures (never copied into the project). */
import fs from "node:fs";
import path from "node:path";
import { MODELS } from "../helpers/paths.js";
import { openWeights } from "../../src/io/weights.js";
import { type TensorToWrite, writeSafetensors } from "../../src/io/safetensors.js";

export const FIXTURE_LLAVA = path.join(MODELS, "tiny-llava-1.5-orig");
export const FIXTURE_TOWER = path.join(MODELS, "tiny-clip-vit-56");

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"];

function fixtureTensors(keep: (name: string) => boolean, rename: (name: string) => string = (n) => n): TensorToWrite[] {
  const reader = openWeights(FIXTURE_LLAVA);
  try {
    return reader.names().filter(keep).map((name) => ({ name: rename(name), dtype: "F32" as const, shape: reader.info(name).shape, data: reader.readF32(name) }));
  } finally {
    reader.close();
  }
}

/**
 * The fixture's language model alone, as an HF LlamaForCausalLM folder (config, weights,
 * tokenizer): what stage 1 starts from.
 */
export function writeTinyLlm(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const config = JSON.parse(fs.readFileSync(path.join(FIXTURE_LLAVA, "config.json"), "utf8")) as Record<string, unknown>;
  const llm = Object.fromEntries(Object.entries(config).filter(([k]) => !/^(mm_|use_mm_proj|tune_mm|freeze_mm|image_|tokenizer_)/.test(k)));
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ ...llm, architectures: ["LlamaForCausalLM"], model_type: "llama" }, null, 2));
  for (const f of TOKENIZER_FILES) fs.copyFileSync(path.join(FIXTURE_LLAVA, f), path.join(dir, f));
  writeSafetensors(path.join(dir, "model.safetensors"), fixtureTensors((n) => !n.includes("mm_projector")), { format: "pt" });
  return dir;
}

/** The fixture's projector as a stage-1 output file names it (`model.mm_projector.0.weight`, ...). */
export function writeFixtureProjector(file: string): Map<string, Float32Array> {
  const tensors = fixtureTensors((n) => n.includes("mm_projector"));
  writeSafetensors(file, tensors, { format: "pt" });
  return new Map(tensors.map((t) => [t.name, t.data as Float32Array]));
}
