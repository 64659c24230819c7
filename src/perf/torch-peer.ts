/**
 * PyTorch, the training peer: torch_peer.py (beside this module's source) trains the same model
 * on the same example with the same optimizer in plain PyTorch f32, at the same thread count. Our
 * training job writes what it trained on (writeTorchInputs); the peer reads the weights from the
 * checkpoint and that example, and reports its step times and its first loss, which must equal
 * ours. Only the HF `llava` format (the bench's random-weight models) is read by the peer.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { LoadedLlava } from "../llava/load.js";
import type { ModelSpec } from "../llava/spec.js";
import { prepareImages } from "../llava/pipeline.js";
import { isLoraTarget } from "../nn/lora.js";
import { ADAM_BETAS, ADAM_EPS } from "../train/optimizer.js";
import { defaultLoraTargets, loraCandidates } from "../train/trainables.js";
import { TRAIN_LR, TRAINABLES, trainingExample, type TrainPhase } from "./protocol.js";

const SCRIPT = fileURLToPath(new URL("../../../src/perf/torch_peer.py", import.meta.url));

/** The Python interpreters tried, in order: LLAVA_PYTHON, then python3 on the PATH, then Debian's (python3-torch). */
const pythons = () => [process.env.LLAVA_PYTHON, "python3", "/usr/bin/python3"].filter((p): p is string => !!p);

/** The first Python that imports torch, with torch's version, or null. */
export function findTorch(): { python: string; version: string } | null {
  for (const python of pythons()) {
    const r = spawnSync(python, ["-c", "import torch; print(torch.__version__)"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    if (r.status === 0) return { python, version: r.stdout.trim() };
  }
  return null;
}

/** Whether the peer can train this model (it reads the HF `llava` format only). */
export const torchCanRead = (spec: ModelSpec) => spec.format === "hf-llava";

/** Writes the training example and what the peer needs to rebuild the model into `dir`: inputs.json and pixels.f32. */
export function writeTorchInputs(loaded: LoadedLlava, dir: string): void {
  const example = trainingExample(loaded);
  const pixels = prepareImages(loaded, example.images).pixels;
  const { spec } = loaded;
  const targets = defaultLoraTargets(loaded);
  const inputs = {
    modelPath: spec.dir,
    ids: example.ids,
    labels: example.labels,
    pixelShape: pixels.shape,
    config: {
      text: spec.text,
      vision: spec.tower.config,
      projector: spec.projector,
      settings: { visionSelectLayer: spec.settings.visionSelectLayer, visionSelectFeature: spec.settings.visionSelectFeature, imageTokenId: spec.settings.imageTokenId },
    },
    // the LLM's Linear layers that train_lora's adapters go on (setTrainables' choice), by HF name
    lora: {
      ...TRAINABLES.train_lora.lora,
      linears: loraCandidates(loaded).filter(([name]) => isLoraTarget(name, targets)).map(([name]) => `language_model.${name}`),
    },
    optimizer: { lr: TRAIN_LR, betas: ADAM_BETAS, eps: ADAM_EPS },
  };
  fs.writeFileSync(path.join(dir, "inputs.json"), JSON.stringify(inputs));
  fs.writeFileSync(path.join(dir, "pixels.f32"), new Uint8Array(pixels.data.buffer, pixels.data.byteOffset, pixels.data.byteLength));
}

export interface TorchResult {
  torch: string;
  /** ms per timed step */
  values: number[];
  firstLoss: number;
  trainableParams: number;
  peakRssBytes: number;
}

/** The peer's `runs` timed steps of `phase` (after a warm-up) on the inputs in `dir`, at `threads` threads. */
export function runTorchPeer(python: string, dir: string, phase: TrainPhase, threads: number, runs: number): TorchResult {
  const r = spawnSync(python, [SCRIPT, dir, phase, String(threads), String(runs)], { encoding: "utf8", maxBuffer: 1 << 24, stdio: ["ignore", "pipe", "pipe"] });
  if (r.status !== 0) throw new Error(`PyTorch peer failed (${r.signal ?? `exit ${r.status}`}): ${(r.stderr ?? "").trim().split("\n").slice(-3).join(" | ")}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as TorchResult;
}
