/** The GGUF copies of a model the peers run, written once per model version and file type into the bench's cache folder. */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { readModelSpec } from "../llava/spec.js";
import { convertToGguf, type GgufFileType } from "../zoo/to-gguf.js";

/** Names the model folder's files with their sizes and times: a changed checkpoint gets a new copy. */
function versionKey(dir: string): string {
  const hash = createHash("sha256").update(path.resolve(dir));
  for (const f of fs.readdirSync(dir).sort()) {
    const st = fs.statSync(path.join(dir, f));
    if (st.isFile()) hash.update(`\0${f}\0${st.size}\0${st.mtimeMs}`);
  }
  return hash.digest("hex").slice(0, 12);
}

/** The LLM GGUF file of `modelPath` at `type` under `cacheDir`, written (llava convert to-gguf) when it is not there yet. */
export async function cachedGguf(modelPath: string, type: GgufFileType, cacheDir: string): Promise<string> {
  const { dir } = readModelSpec(modelPath);
  const out = path.join(cacheDir, "gguf", `${path.basename(dir)}-${versionKey(dir)}-${type}`);
  const done = path.join(out, "llm-file");
  if (fs.existsSync(done)) return path.join(out, fs.readFileSync(done, "utf8"));
  process.stderr.write(`writing ${type} GGUF of ${dir} for llama.cpp into ${out} ...\n`);
  const { llmFile } = await convertToGguf({ modelPath, out, type, force: true });
  fs.writeFileSync(done, llmFile);
  return path.join(out, llmFile);
}
