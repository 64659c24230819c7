/**
 * `llava train --stage vision`: the patch-to-cell rule, the label file's checks, and a short run
 * on a synthesized world in which the loss falls, only the tower changes and the result loads.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { loadLlava } from "../../src/llava/load.js";
import { writeRandomLlava } from "../../src/llava/random-checkpoint.js";
import { synthesize } from "../../src/synth/dataset.js";
import { readMetrics } from "../../src/train/metrics.js";
import { attributeClasses, patchCells, readCellLabels } from "../../src/train/vision-stage.js";
import { LlavaError } from "../../src/util/errors.js";
import { assertCleanError, llava } from "../helpers/cli.js";
import { MODELS } from "../helpers/paths.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vision-stage-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const writeJson = (name: string, value: unknown) => {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, JSON.stringify(value));
  return file;
};

describe("patch cells", () => {
  it("maps each patch to the grid cell under its centre", () => {
    assert.deepEqual([...patchCells(3, 3)], [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual([...patchCells(6, 3)], [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 6, 6, 7, 7, 8, 8]);
    // 7 patches over 3 cells: centres at 0.5/7 ... 6.5/7 of the side fall in cells 0,0,1,1,1,2,2
    assert.deepEqual([...patchCells(7, 3)].slice(0, 7), [0, 0, 1, 1, 1, 2, 2]);
    assert.deepEqual([...patchCells(2, 1)], [0, 0, 0, 0]);
  });
});

describe("cell labels", () => {
  const cell = { color: "red", shape: "star" };
  it("reads a file and lists each attribute's classes, none first", () => {
    const file = writeJson("ok.json", [
      { id: "a", image: "a.png", grid: 2, cells: [cell, null, null, { color: "blue", shape: "circle" }] },
      { id: "b", image: "b.png", grid: 1, cells: [{ shape: "square", color: "red" }] },
    ]);
    const records = readCellLabels(file);
    assert.equal(records.length, 2);
    assert.deepEqual([...attributeClasses(records)], [["color", ["none", "blue", "red"]], ["shape", ["none", "circle", "square", "star"]]]);
  });
  const cases: Array<[string, unknown, RegExp]> = [
    ["not a list", { id: "a" }, /non-empty JSON list/],
    ["an empty list", [], /non-empty JSON list/],
    ["no id", [{ image: "a.png", grid: 1, cells: [cell] }], /record 0: expected \{id, image, grid, cells\}/],
    ["a bad grid", [{ id: "a", image: "a.png", grid: 0, cells: [] }], /\(a\): grid must be a positive whole number/],
    ["too few cells", [{ id: "a", image: "a.png", grid: 2, cells: [cell] }], /cells must be a list of grid² = 4 entries/],
    ["a value that is not a string", [{ id: "a", image: "a.png", grid: 1, cells: [{ color: 3 }] }], /cell 0 must be null or an object of string values/],
    ["the empty class as a value", [{ id: "a", image: "a.png", grid: 1, cells: [{ color: "none" }] }], /other than "none"/],
    ["other attributes", [{ id: "a", image: "a.png", grid: 1, cells: [cell] }, { id: "b", image: "b.png", grid: 1, cells: [{ color: "red" }] }], /record 1 \(b\): cell 0 has attributes color, the file's first has color,shape/],
  ];
  for (const [what, value, message] of cases) {
    it(`refuses ${what}`, () => {
      const file = writeJson(`bad-${what.replaceAll(" ", "-")}.json`, value);
      assert.throws(() => readCellLabels(file), (err: Error) => err instanceof LlavaError && message.test(err.message));
    });
  }
  it("refuses a file with no filled cell", () => {
    assert.throws(() => attributeClasses(readCellLabels(writeJson("empty.json", [{ id: "a", image: "a.png", grid: 1, cells: [null] }]))), /no filled cell/);
  });
});

describe("llava train --stage vision", () => {
  const data = path.join(tmp, "world");
  const start = path.join(tmp, "start");
  const out = path.join(tmp, "out");
  const common = (output: string) => ["train", "--stage", "vision", "--model-name-or-path", start, "--image-folder", path.join(data, "images"), "--output-dir", output,
    "--image-aspect-ratio", "square", "--per-device-train-batch-size", "8", "--gradient-accumulation-steps", "1", "--learning-rate", "3e-3", "--logging-steps", "1", "--seed", "0"];

  before(async () => {
    await synthesize({ out: data, seed: 3, train: 24, test: 2, imageSize: 64, overwrite: false });
    writeRandomLlava(start, {
      format: "hf", seed: 5, init: "train", tokenizerFrom: path.join(MODELS, "tiny-llava-1.5-mha"),
      text: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, vocab_size: 32001, max_position_embeddings: 256 },
      vision: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, image_size: 64, patch_size: 16, hidden_act: "quick_gelu", layer_norm_eps: 1e-5 },
    });
  });

  it("trains the tower alone: the loss falls, the LLM and projector keep their weights, the model loads", async () => {
    const r = llava([...common(out), "--data-path", path.join(data, "cells.json"), "--max-steps", "12"]);
    assert.equal(r.status, 0, r.stderr);
    const steps = readMetrics(path.join(out, "metrics.jsonl"));
    assert.equal(steps.length, 12);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    assert.ok(mean(steps.slice(-3).map((s) => s.loss)) < mean(steps.slice(0, 3).map((s) => s.loss)), `loss ${steps.map((s) => s.loss.toFixed(3)).join(" ")} does not fall`);
    const [before, after] = await Promise.all([loadLlava(start), loadLlava(out)]);
    const trained = new Map(after.model.namedParameters().map(([n, t]) => [n, t.data]));
    let towerChanged = 0;
    for (const [name, t] of before.model.namedParameters()) {
      const same = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(trained.get(name)!.buffer, trained.get(name)!.byteOffset, trained.get(name)!.byteLength));
      if (name.includes("vision_tower")) towerChanged += same ? 0 : 1;
      else assert.ok(same, `${name} changed`);
    }
    assert.ok(towerChanged > 0, "the tower did not change");
    assert.ok(!fs.readdirSync(out).some((f) => f.includes("head")), "the heads are not saved with the model");
  });

  it("refuses options that do not apply, and non-square images", () => {
    const usage = llava([...common(path.join(tmp, "o2")), "--data-path", path.join(data, "cells.json"), "--lora-enable"]);
    assert.equal(usage.status, 2, usage.stderr);
    assert.match(usage.stderr, /^llava: train: --stage vision trains the tower's own weights: it takes no --lora-enable/);
    const wide = path.join(data, "images", "wide.png");
    fs.copyFileSync(path.join(MODELS, "..", "images", "gradient_640x480.png"), wide);
    const file = writeJson("wide.json", [{ id: "w", image: "wide.png", grid: 3, cells: [{ color: "red" }, null, null, null, null, null, null, null, null] }]);
    assertCleanError(llava([...common(path.join(tmp, "o3")), "--data-path", file, "--max-steps", "1"]), /wide\.png: cell labels need square images, this one is 640x480/);
    const gone = writeJson("gone.json", [{ id: "g", image: "gone.png", grid: 1, cells: [{ color: "red" }] }]);
    assertCleanError(llava([...common(path.join(tmp, "o4")), "--data-path", gone, "--max-steps", "1"]), /1 of 1 images of .*gone\.json are not in .*images: gone\.png/);
  });
});
