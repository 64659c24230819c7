/**
 * The model used when none is named: the tiny LLaVA-1.5 trained on the procedural shapes world
 * (`npm run demo:train`) that ships in the package's models/ folder. Its folder name carries
 * "v1" so the reference's name rule picks the llava_v1 template it was trained with.
 */
import fs from "node:fs";
import path from "node:path";
import { packageRoot } from "../tensor/native-backend.js";
import { LlavaError } from "../util/errors.js";

/** The shipped model's folder name under models/. */
export const DEFAULT_MODEL_NAME = "llava-v1.5-world-tiny";

/** The shipped model's folder (whether or not it is there). */
export function defaultModelDir(): string {
  return path.join(packageRoot(), "models", DEFAULT_MODEL_NAME);
}

/** `modelPath` if given, else the shipped model's folder, refused with a clear line when it is missing. */
export function modelPathOrDefault(modelPath: string | undefined): string {
  if (modelPath !== undefined) return modelPath;
  const dir = defaultModelDir();
  if (!fs.existsSync(path.join(dir, "config.json"))) {
    throw new LlavaError(`no --model-path given and no default model at ${dir}: npm run demo:train trains one and puts it there only once it meets its accuracy target`);
  }
  return dir;
}
