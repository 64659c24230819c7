/**
 * `llava train --stage vision`: a stage before the reference's two, for a tower that starts from
 * random weights (the reference starts from a pretrained CLIP, which a machine without a model hub
 * does not have). At every patch the tower learns what the grid cell under the patch's centre
 * holds, one class per attribute ("none" for an empty cell), through linear heads on the very
 * hidden state the projector reads. That gradient reaches the tower directly, instead of through
 * a random LLM's attention, where an object that is one patch of many hardly moves the loss.
 * The heads are training aids and are not saved with the model; the model is saved whole.
 *
 * The data file (`llava data synth` writes one, `cells.json`) is a JSON list of
 *   { "id": "...", "image": "a.png", "grid": 3, "cells": [ {"color": "red", "shape": "star"}, null, ... ] }
 * with grid² cells in reading order, each null (empty) or the same attributes' values. Images are
 * square, so the preprocessed frame is the whole image and a patch's cell follows from its centre.
 */
import { createHash } from "node:crypto";
import path from "node:path";
import { loadImages } from "../image/decode.js";
import { isFile, readJsonFile } from "../io/files.js";
import { partOf } from "../llava/keys.js";
import type { LoadedLlava } from "../llava/load.js";
import { prepareImages } from "../llava/pipeline.js";
import type { NamedParameters } from "../nn/layers.js";
import { add, crossEntropy, linear, reshape, scale } from "../tensor/ops.js";
import { Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import { Rng } from "../util/random.js";
import { initTrainingModel, torchLinearInit } from "./init.js";
import type { TrainOptions } from "./options.js";
import { trainerOptions } from "./recipe.js";
import { saveFullModel } from "./save.js";
import { train, type TrainerHooks, type TrainResult } from "./trainer.js";
import { trainingOrder } from "./sampler.js";

export type Cell = Record<string, string> | null;

export interface CellLabels {
  id: string;
  image: string;
  grid: number;
  cells: Cell[];
}

/** The class index 0 of every attribute: the cell is empty. */
export const EMPTY_CLASS = "none";

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

/** Reads and checks a cell-label file; every record holds the same attributes. */
export function readCellLabels(file: string): CellLabels[] {
  const data = readJsonFile(file, "cell labels");
  if (!Array.isArray(data) || !data.length) throw new LlavaError(`${file}: expected a non-empty JSON list of {id, image, grid, cells}`);
  let attributes: string | null = null;
  return data.map((r, i) => {
    const where = `${file}: record ${i}`;
    if (!isRecord(r) || typeof r.id !== "string" || typeof r.image !== "string") throw new LlavaError(`${where}: expected {id, image, grid, cells} with string id and image`);
    const grid = r.grid;
    if (!Number.isInteger(grid) || (grid as number) < 1) throw new LlavaError(`${where} (${r.id}): grid must be a positive whole number`);
    const n = (grid as number) ** 2;
    if (!Array.isArray(r.cells) || r.cells.length !== n) throw new LlavaError(`${where} (${r.id}): cells must be a list of grid² = ${n} entries`);
    const cells = r.cells.map((c, j): Cell => {
      if (c === null) return null;
      if (!isRecord(c) || !Object.values(c).every((v) => typeof v === "string" && v !== EMPTY_CLASS)) {
        throw new LlavaError(`${where} (${r.id}): cell ${j} must be null or an object of string values other than "${EMPTY_CLASS}"`);
      }
      const keys = Object.keys(c).sort().join(",");
      if (!keys) throw new LlavaError(`${where} (${r.id}): cell ${j} has no attribute`);
      attributes ??= keys;
      if (keys !== attributes) throw new LlavaError(`${where} (${r.id}): cell ${j} has attributes ${keys}, the file's first has ${attributes}`);
      return c as Record<string, string>;
    });
    return { id: r.id, image: r.image, grid: grid as number, cells };
  });
}

/** Each attribute's classes: "none" first, then its values sorted. */
export function attributeClasses(records: CellLabels[]): Map<string, string[]> {
  const values = new Map<string, Set<string>>();
  for (const r of records) {
    for (const c of r.cells) {
      if (!c) continue;
      for (const [k, v] of Object.entries(c)) (values.get(k) ?? values.set(k, new Set()).get(k)!).add(v);
    }
  }
  if (!values.size) throw new LlavaError("the cell labels have no filled cell: nothing to learn");
  return new Map([...values].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, s]) => [k, [EMPTY_CLASS, ...[...s].sort()]]));
}

/** The grid cell under the centre of each of the side × side patches, in reading order. */
export function patchCells(side: number, grid: number): Int32Array {
  const cells = new Int32Array(side * side);
  for (let r = 0; r < side; r++) {
    for (let c = 0; c < side; c++) cells[r * side + c] = Math.floor(((r + 0.5) * grid) / side) * grid + Math.floor(((c + 0.5) * grid) / side);
  }
  return cells;
}

/** One linear head per attribute, initialised as torch's nn.Linear. */
function freshHeads(classes: Map<string, string[]>, hidden: number, loaded: LoadedLlava, seed: number): Map<string, { weight: Tensor; bias: Tensor }> {
  const rng = new Rng(seed);
  const be = loaded.model.backend;
  return new Map([...classes].map(([name, values]) => {
    const { weight, bias } = torchLinearInit(rng, values.length, hidden);
    return [name, { weight: new Tensor(weight, [values.length, hidden], be, true), bias: new Tensor(bias, [values.length], be, true) }];
  }));
}

/** Runs `llava train --stage vision` with checked options; see the file comment. */
export async function runVisionStage(opts: TrainOptions, hooks: TrainerHooks = {}): Promise<TrainResult> {
  const records = readCellLabels(opts.data_path!);
  const { loaded, sourceDir } = await initTrainingModel(opts);
  const model = loaded.model;
  if (model.settings.imageAspectMode === "anyres") throw new LlavaError("--stage vision needs square or pad preprocessing (one tile per image), not anyres");
  const classes = attributeClasses(records);
  const { hiddenSize: hidden, imageSize, patchSize } = model.vision.cfg;
  const side = imageSize / patchSize;
  // the tower alone trains (its weights are f32: --bits needs --lora-enable, which this stage refuses)
  for (const [name, t] of model.namedParameters()) {
    t.requiresGrad = partOf(name) === "vision";
    t.grad = null;
  }
  const towerParams = model.namedParameters().filter(([, t]) => t.requiresGrad);
  const heads = freshHeads(classes, hidden, loaded, opts.seed ^ 0x71e);
  const headParams = [...heads].flatMap(([name, h]): NamedParameters => [[`vision_head.${name}.weight`, h.weight], [`vision_head.${name}.bias`, h.bias]]);
  const parameters: NamedParameters = [...towerParams, ...headParams];
  const patchCell = new Map<number, Int32Array>();
  const cellsOf = (grid: number) => patchCell.get(grid) ?? patchCell.set(grid, patchCells(side, grid)).get(grid)!;
  const folder = opts.image_folder ?? "";
  // a missing image stops the run before step 1, not hundreds of steps in
  const missing = records.filter((r) => !isFile(path.join(folder, r.image)));
  if (missing.length) throw new LlavaError(`${missing.length} of ${records.length} images of ${opts.data_path} are not in ${folder || "."}: ${missing.slice(0, 3).map((r) => r.image).join(", ")}`);
  return train({
    parameters,
    numSamples: records.length,
    order: (epoch) => trainingOrder(records.map(() => 1), { seed: opts.seed, epoch, batchSize: opts.per_device_train_batch_size, worldSize: opts.gradient_accumulation_steps, groupByModalityLength: false }),
    async loss(indices) {
      const batch = indices.map((i) => records[i]);
      const images = await loadImages(batch.map((r) => path.join(folder, r.image)));
      images.forEach((img, i) => {
        if (img.width !== img.height) throw new LlavaError(`${batch[i].image}: cell labels need square images, this one is ${img.width}x${img.height}`);
      });
      const features = model.encodeImages(prepareImages(loaded, images).pixels).features;
      if (features.dim(1) !== side * side) throw new LlavaError(`--stage vision needs mm_vision_select_feature patch (${side * side} patch rows), got ${features.dim(1)} rows`);
      const rows = reshape(features, [batch.length * side * side, hidden]);
      let total: Tensor | null = null;
      for (const [name, values] of classes) {
        const targets = new Int32Array(rows.dim(0));
        batch.forEach((r, b) => cellsOf(r.grid).forEach((cell, p) => {
          const c = r.cells[cell];
          targets[b * side * side + p] = c ? values.indexOf(c[name]) : 0;
        }));
        const { weight, bias } = heads.get(name)!;
        const ce = crossEntropy(linear(rows, weight, bias), targets);
        total = total ? add(total, ce) : ce;
      }
      return { loss: scale(total!, 1 / classes.size), supervisedTokens: rows.dim(0) };
    },
    saveModel: (dir) => saveFullModel(dir, loaded, { filesFrom: sourceDir }),
    sampleId: (i) => records[i].id,
    fingerprint: {
      stage: opts.stage, model_name_or_path: path.resolve(opts.model_name_or_path!), data_path: path.resolve(opts.data_path!),
      samples: createHash("sha256").update(records.map((r) => r.id).join("\n")).digest("hex").slice(0, 16),
      classes: JSON.stringify([...classes]),
    },
  }, trainerOptions(opts), hooks);
}
