/**
 * `llava dump`: writes the model's intermediate arrays for a prompt as .npy files, named as
 * in the reference fixtures, so any output can be compared with the Python implementations.
 */
import fs from "node:fs";
import path from "node:path";
import { getConvTemplate } from "../llava/conversation.js";
import { argmax } from "../llava/generate.js";
import { expandLabels, IGNORE_INDEX, maskTargetsV1 } from "../llava/labels.js";
import type { LoadedLlava } from "../llava/load.js";
import { buildInputs, expandedIds, prepareImages, promptIds } from "../llava/pipeline.js";
import { loadImages, type RgbImage } from "../image/decode.js";
import { clipPreprocess, padPreprocess } from "../image/processor.js";
import { writeNpy } from "../io/npy.js";
import { concat, crossEntropy, reshape, slice } from "../tensor/ops.js";
import type { Tensor } from "../tensor/tensor.js";

export interface DumpOptions {
  images: string[];
  query: string;
  system?: string;
  answer?: string;
  convMode: string;
  maxNewTokens: number;
  out: string;
}

/** The reference's rendering: one `<image>\n` per image before the query, then the answer if any. */
export function dumpPrompt(opts: DumpOptions) {
  const conv = getConvTemplate(opts.convMode);
  if (opts.system !== undefined) conv.system = opts.system;
  conv.appendMessage(conv.roles[0], "<image>\n".repeat(opts.images.length) + opts.query);
  conv.appendMessage(conv.roles[1], opts.answer ?? null);
  return { conv, prompt: conv.getPrompt() };
}

class NpyWriter {
  readonly written: string[] = [];
  constructor(readonly dir: string) {}

  float(name: string, shape: number[], data: Float32Array) {
    this.write(name, { dtype: "<f4", shape, data });
  }

  ints(name: string, values: ArrayLike<number>) {
    this.write(name, { dtype: "<i8", shape: [values.length], data: BigInt64Array.from(Array.from(values), (v) => BigInt(v)) });
  }

  tensor(name: string, t: Tensor) {
    this.float(name, [...t.shape], t.data);
  }

  write(name: string, array: Parameters<typeof writeNpy>[1]) {
    writeNpy(path.join(this.dir, `${name}.npy`), array);
    this.written.push(name);
  }
}

/** Stacks equally shaped tensors along a new first axis. */
function stackTensors(ts: Tensor[]): { shape: number[]; data: Float32Array } {
  const data = new Float32Array(ts.length * ts[0].size);
  ts.forEach((t, i) => data.set(t.data, i * t.size));
  return { shape: [ts.length, ...ts[0].shape], data };
}

/**
 * Pixels: for 1.5 models both the center-crop and the pad preprocessing (the model uses one);
 * for AnyRes models the tiles the model sees and the original sizes (height, width).
 */
function dumpPixels(w: NpyWriter, loaded: LoadedLlava, images: RgbImage[], prepared: ReturnType<typeof prepareImages>) {
  if (loaded.model.settings.imageAspectMode === "anyres") {
    w.tensor("pixel_values", prepared.pixels);
    w.write("image_sizes", { dtype: "<i8", shape: [images.length, 2], data: BigInt64Array.from(images.flatMap((i) => [BigInt(i.height), BigInt(i.width)])) });
    return;
  }
  for (const [name, fn] of [["pixel_values", clipPreprocess], ["pixel_values_pad", padPreprocess]] as const) {
    const ps = images.map((img) => fn(img, loaded.imageProcessor));
    const data = new Float32Array(ps.length * ps[0].data.length);
    ps.forEach((p, i) => data.set(p.data, i * p.data.length));
    w.float(name, [ps.length, ...ps[0].shape], data);
  }
}

/** Per-position logits summaries, as the reference fixtures store them. */
function dumpLogits(w: NpyWriter, logits: Tensor) {
  const [t, v] = [logits.dim(-2), logits.dim(-1)];
  w.float("logits_all", [t, v], logits.data);
  w.float("logits_last", [v], logits.data.slice((t - 1) * v));
  const lse = new Float32Array(t);
  const best: number[] = [];
  for (let i = 0; i < t; i++) {
    const row = logits.data.subarray(i * v, (i + 1) * v);
    const m = row[argmax(row)];
    let s = 0;
    for (const x of row) s += Math.exp(x - m);
    lse[i] = Math.log(s) + m;
    best.push(argmax(row));
  }
  w.float("logits_all_logsumexp", [t], lse);
  w.ints("logits_all_argmax", best);
}

/** Greedy tokens by pure argmax, without stopping at EOS (the fixtures' generated_ids). */
function greedyIds(loaded: LoadedLlava, embeds: Tensor, count: number): number[] {
  const llm = loaded.model.llm;
  const cache = llm.newCache(1, embeds.dim(1) + count);
  let { hidden } = llm.forward(embeds, { cache });
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const logits = llm.logits(slice(hidden, 1, hidden.dim(1) - 1, hidden.dim(1))).data;
    out.push(argmax(logits));
    if (i === count - 1) break;
    const next = llm.embedTokens.forward(Int32Array.of(out[i]));
    hidden = llm.forward(reshape(next, [1, 1, next.dim(-1)]), { cache }).hidden;
  }
  return out;
}

export async function runDump(loaded: LoadedLlava, opts: DumpOptions): Promise<string[]> {
  const images = await loadImages(opts.images);
  fs.mkdirSync(opts.out, { recursive: true });
  const w = new NpyWriter(opts.out);
  const { conv, prompt } = dumpPrompt(opts);
  fs.writeFileSync(path.join(opts.out, "prompt.txt"), prompt);
  const model = loaded.model;
  const hf = model.settings.expandImageTokens;
  const prepared = images.length ? prepareImages(loaded, images) : null;
  if (prepared) dumpPixels(w, loaded, images, prepared);

  if (opts.answer !== undefined) {
    const projectorParams = model.projector.namedParameters().map(([, t]) => t);
    for (const t of projectorParams) t.requiresGrad = true;
    const { ids, embeds, imageFeatures } = buildInputs(loaded, prompt, prepared);
    w.ints("input_ids", ids);
    const labels = maskTargetsV1(conv, prompt, ids, (text) => promptIds(loaded, text));
    w.ints("labels", labels);
    const full = expandLabels(ids, labels, model.settings.imageTokenId, imageFeatures.map((f) => f.dim(0)));
    if (hf) {
      w.ints("input_ids_expanded", expandedIds(loaded, ids, imageFeatures));
      w.ints("labels_expanded", full);
    }
    const { hidden } = model.llm.forward(embeds);
    const logits = model.llm.logits(reshape(hidden, [hidden.dim(1), hidden.dim(2)]));
    const targets = Int32Array.from(full.slice(0, logits.dim(0)), (_, i) => full[i + 1] ?? IGNORE_INDEX);
    const loss = crossEntropy(logits, targets);
    w.float("loss", [], loss.data);
    loss.backward();
    model.projector.linears.forEach((l, i) => {
      for (const [name, t] of l.namedParameters()) w.float(`grad_linear_${i + 1}_${name}`, [...t.shape], t.grad!);
    });
    for (const t of projectorParams) {
      t.requiresGrad = false;
      t.grad = null;
    }
    return w.written;
  }

  const { ids, encoded, imageFeatures, embeds } = buildInputs(loaded, prompt, prepared, true);
  w.ints("input_ids", ids);
  if (hf) w.ints("input_ids_expanded", expandedIds(loaded, ids, imageFeatures));
  if (encoded) {
    const vs = stackTensors(encoded.visionHiddenStates);
    w.float("vision_hidden_states", vs.shape, vs.data);
    w.tensor("image_features", encoded.features);
    w.tensor("projector_output", encoded.projected);
    if (model.settings.anyres) {
      const packed = imageFeatures.length === 1 ? imageFeatures[0] : concat(imageFeatures, 0);
      w.tensor("image_features_packed", packed);
    }
  }
  w.float("inputs_embeds", [embeds.dim(1), embeds.dim(2)], embeds.data);
  const { hidden, hiddenStates } = model.llm.forward(embeds, { collectHidden: true });
  const hs = stackTensors(hiddenStates!.map((h) => reshape(h, [h.dim(1), h.dim(2)])));
  w.float("hidden_states", hs.shape, hs.data);
  dumpLogits(w, model.llm.logits(reshape(hidden, [hidden.dim(1), hidden.dim(2)])));
  w.ints("generated_ids", greedyIds(loaded, embeds, opts.maxNewTokens));
  return w.written;
}

