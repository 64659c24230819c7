/**
 * `llava convert to-original`: an HF llava-hf / llava_next checkpoint back to the original
 * LLaVA format: original tensor names, embeddings cut back to the vocabulary before `<image>`,
 * a config with the mm_* keys, the tokenizer without `<image>`/`<pad>`, and the vision tower
 * both in the checkpoint (`unfreeze_mm_vision_tower`, as v1.6 stores it) and as a plain CLIP
 * folder `vision_tower/` that `mm_vision_tower` names.
 */
import path from "node:path";
import { isFile, readJsonFile } from "../io/files.js";
import type { WeightReader } from "../io/weights.js";
import { type Part, partOf, PREFIX, storedName } from "../llava/keys.js";
import { readModelSpec } from "../llava/spec.js";
import { openCheckpointWeights } from "../llava/weights.js";
import { LlavaError } from "../util/errors.js";
import { checkShardSize, type ConvertOptions, type ConvertResult, copyIfPresent, listFiles, sortPlan, writeJson, writeWeightGroups } from "./common.js";
import { checkOriginalCanHold, hfVisionDict, originalConfig, towerFolderConfigs } from "./configs.js";
import { checkOutsideInputs, writeOutputFolder } from "../io/output.js";
import type { PlannedTensor } from "./shard-writer.js";
import { writeTokenizerWithoutImageToken } from "./tokenizer-files.js";
import { firstRows } from "./vocab.js";

export interface ToOriginalOptions extends ConvertOptions {
  modelPath: string;
}

/** The folder name of the CLIP tower inside the output, as mm_vision_tower names it. */
export const TOWER_FOLDER = "vision_tower";

const EMBEDDING = `${PREFIX.llm}embed_tokens.weight`;
const CUT = new Set([EMBEDDING, `${PREFIX.head}weight`]);

/** The original checkpoint's tensors (canonical names), and the tower's again for the CLIP folder. */
function planTensors(weights: WeightReader, vocab: number, next: boolean) {
  const main: Array<PlannedTensor & { part: Part }> = [];
  const tower: Array<PlannedTensor & { part: Part }> = [];
  for (const name of weights.names()) {
    const part = partOf(name);
    const { dtype, shape } = weights.info(name);
    if (part === "newline" && !next) continue;
    const read = CUT.has(name) ? () => firstRows(weights, name, vocab) : () => weights.readRaw(name).bytes;
    const outShape = CUT.has(name) ? [vocab, shape[1]] : shape;
    main.push({ name, part, dtype, shape: outShape, bytes: read });
    if (part === "vision") tower.push({ name: storedName(name, "clip")!, part, dtype, shape, bytes: read });
  }
  const names = new Set(main.map((t) => t.name));
  for (const r of [EMBEDDING, `${PREFIX.projector}0.bias`, `${PREFIX.projector}2.bias`, `${PREFIX.tower}vision_model.pre_layrnorm.weight`, ...(next ? [PREFIX.newline] : [])]) {
    if (!names.has(r)) throw new LlavaError(`${weights.source}: the checkpoint lacks the tensor that becomes "${r}"`);
  }
  return { main: sortPlan(main), tower: sortPlan(tower) };
}

/** The context the original code truncates to: the tokenizer's model_max_length when sane, else the LLM's positions. */
function tokenizerMaxLength(dir: string, maxPositions: number): number {
  const file = path.join(dir, "tokenizer_config.json");
  const config = isFile(file) ? (readJsonFile(file, "tokenizer config") as Record<string, unknown>) : {};
  const m = config.model_max_length;
  return typeof m === "number" && Number.isInteger(m) && m > 0 && m <= 1e7 ? m : maxPositions;
}

export async function convertToOriginal(opts: ToOriginalOptions): Promise<ConvertResult> {
  checkShardSize(opts);
  const spec = readModelSpec(opts.modelPath);
  const { dir, format, configFile } = spec;
  if (format === "original") throw new LlavaError(`${dir} is already in the original LLaVA format; to-original converts HF llava checkpoints`);
  const next = format === "hf-llava-next";
  checkOriginalCanHold(spec);
  const vision = hfVisionDict(spec);
  checkOutsideInputs(opts.out, [dir]);
  const weights = openCheckpointWeights(spec);
  try {
    const { reader } = weights;
    if (!reader.has(EMBEDDING)) throw new LlavaError(`${reader.source}: no embed_tokens weight`);
    const rows = reader.info(EMBEDDING).shape[0];
    const vocab = spec.settings.imageTokenId;
    if (vocab <= 0 || vocab > rows) {
      throw new LlavaError(`${configFile}: image_token_index ${vocab} does not lie inside the ${rows} embedding rows; cannot tell the original vocabulary size`);
    }
    const plan = planTensors(reader, vocab, next);
    const hfProcessorFile = path.join(dir, "preprocessor_config.json");
    const hfProcessor = isFile(hfProcessorFile) ? (readJsonFile(hfProcessorFile, "image processor config") as Record<string, unknown>) : null;
    const written = await writeOutputFolder(opts.out, opts.force ?? false, async (tmp, interrupt) => {
      writeTokenizerWithoutImageToken(dir, tmp, vocab);
      writeJson(path.join(tmp, "config.json"), originalConfig({
        spec, vision: vision.parsed, vocabSize: vocab, towerName: TOWER_FOLDER, tokenizerModelMaxLength: tokenizerMaxLength(dir, spec.text.maxPositionEmbeddings),
      }));
      copyIfPresent(dir, tmp, ["generation_config.json"]);
      const towerDir = path.join(tmp, TOWER_FOLDER);
      const tower = towerFolderConfigs(vision, hfProcessor);
      const result = await writeWeightGroups([{ dir: tmp, tensors: plan.main }, { dir: towerDir, tensors: plan.tower }], opts, interrupt);
      writeJson(path.join(towerDir, "config.json"), tower.config);
      writeJson(path.join(towerDir, "preprocessor_config.json"), tower.preprocessor);
      return { ...result, files: listFiles(tmp) };
    });
    const notes = [
      `embeddings cut from ${rows} to ${vocab} rows (the rows of <image> and <pad> are dropped)`,
      `the vision tower is stored in the checkpoint and as the CLIP folder ${TOWER_FOLDER}/ (mm_vision_tower "${TOWER_FOLDER}", resolved inside the model folder; the Python reference resolves it against the working directory)`,
    ];
    if (!next) notes.push(`image_aspect_ratio is "pad" as in LLaVA-1.5; the HF processor center-cropped, so non-square images give different answers`);
    return { out: path.resolve(opts.out), ...written, notes };
  } finally {
    weights.close();
  }
}
