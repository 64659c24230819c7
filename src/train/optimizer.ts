/**
 * The trainer's optimizer: torch.optim.AdamW (HF `adamw_torch`) over the parameter groups that
 * LLaVATrainer.create_optimizer builds, plus gradient clipping by global L2 norm as
 * torch.nn.utils.clip_grad_norm_ does it. The state (per-parameter step, m, v) is plain arrays
 * keyed by parameter name, so a checkpoint saves and restores it exactly. The arithmetic runs on
 * each parameter's backend (adamw, sumSquares, scale, zero), natively where the addon is built.
 */
import type { NamedParameters } from "../nn/layers.js";
import type { AdamWStep } from "../tensor/backend.js";
import { rowRanges, type Tensor } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";

export interface ParamGroup {
  params: NamedParameters;
  /** the group's base learning rate, before the schedule's factor */
  lr: number;
  weightDecay: number;
}

export interface GroupOptions {
  learningRate: number;
  weightDecay: number;
  /** a learning rate of its own for the projector (`--mm_projector_lr`) */
  mmProjectorLr?: number | null;
}

/** transformers' ALL_LAYERNORM_LAYERS (LayerNorm, LlamaRMSNorm): in canonical names the module's own name says "norm". */
function insideNorm(name: string): boolean {
  const parts = name.split(".");
  return parts.length > 1 && parts[parts.length - 2].includes("norm");
}

/** Decays everything but norms and biases (the reference tests the name for "bias"). */
export const decays = (name: string): boolean => !insideNorm(name) && !name.includes("bias");

const isProjector = (name: string): boolean => name.includes("mm_projector");

/**
 * LLaVATrainer.create_optimizer's groups, empty ones dropped: [decay, no decay], or with
 * `mmProjectorLr` [decay, no decay] outside the projector then [decay, no decay] of the projector.
 */
export function parameterGroups(params: NamedParameters, opts: GroupOptions): ParamGroup[] {
  const split = (ps: NamedParameters, lr: number): ParamGroup[] => [
    { params: ps.filter(([n]) => decays(n)), lr, weightDecay: opts.weightDecay },
    { params: ps.filter(([n]) => !decays(n)), lr, weightDecay: 0 },
  ];
  const groups = opts.mmProjectorLr == null
    ? split(params, opts.learningRate)
    : [...split(params.filter(([n]) => !isProjector(n)), opts.learningRate), ...split(params.filter(([n]) => isProjector(n)), opts.mmProjectorLr)];
  return groups.filter((g) => g.params.length > 0);
}

/** One parameter's Adam moments; `step` counts the updates it took part in (torch keeps it per parameter). */
export interface ParamState {
  step: number;
  expAvg: Float32Array;
  expAvgSq: Float32Array;
}

export const ADAM_BETAS: [number, number] = [0.9, 0.999];
export const ADAM_EPS = 1e-8;

export class AdamW {
  /** by parameter name, created on a parameter's first update as torch does */
  readonly state = new Map<string, ParamState>();
  /**
   * By parameter name, for parameters that took row-sparse gradients: the rows whose moments
   * may be nonzero (a superset; derived from the moments after a restore).
   */
  private readonly movingRows = new Map<string, Set<number>>();

  constructor(readonly groups: ParamGroup[], readonly betas: [number, number] = ADAM_BETAS, readonly eps = ADAM_EPS) {}

  /** Every parameter, in group order. */
  parameters(): Tensor[] {
    return this.groups.flatMap((g) => g.params.map(([, t]) => t));
  }

  /** One update with each group's learning rate times `lrFactor`; parameters without a gradient are skipped. */
  step(lrFactor: number): void {
    const [beta1, beta2] = this.betas;
    for (const group of this.groups) {
      const lr = group.lr * lrFactor;
      for (const [name, p] of group.params) {
        const g = p.grad;
        if (!g) continue;
        let s = this.state.get(name);
        if (!s) this.state.set(name, (s = { step: 0, expAvg: new Float32Array(p.size), expAvgSq: new Float32Array(p.size) }));
        s.step++;
        const h: AdamWStep = {
          decay: 1 - lr * group.weightDecay,
          beta1,
          beta2,
          stepSize: lr / (1 - beta1 ** s.step),
          biasCorrection2Sqrt: Math.sqrt(1 - beta2 ** s.step),
          eps: this.eps,
        };
        const rows = this.rowsToUpdate(name, p, s, h.decay);
        if (!rows) {
          p.backend.adamw(p.data, g, s.expAvg, s.expAvgSq, h);
          continue;
        }
        for (const [a, b] of rowRanges(rows, p.size / p.shape[0])) {
          p.backend.adamw(p.data.subarray(a, b), g.subarray(a, b), s.expAvg.subarray(a, b), s.expAvgSq.subarray(a, b), h);
        }
      }
    }
  }

  /**
   * The rows a step must update, or null for all of them. With a row-sparse gradient and no
   * weight decay, a row whose gradient and moments are all zero stays exactly as it is (m and v
   * stay zero, the parameter moves by 0 / eps), so only the gradient's rows and those with
   * moments are updated: the same numbers as the dense update. Otherwise every row is.
   */
  private rowsToUpdate(name: string, p: Tensor, s: ParamState, decay: number): Set<number> | null {
    if (!p.gradRows || decay !== 1) {
      this.movingRows.delete(name); // a dense step may give any row moments
      return null;
    }
    let moving = this.movingRows.get(name);
    if (!moving) this.movingRows.set(name, (moving = rowsWithMoments(s, p.size / p.shape[0])));
    for (const r of p.gradRows) moving.add(r);
    return moving;
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.releaseGrad();
  }

  /** Replaces the state with a saved one, checking it fits these parameters. */
  loadState(saved: Map<string, ParamState>): void {
    const byName = new Map(this.groups.flatMap((g) => g.params));
    for (const [name, s] of saved) {
      const p = byName.get(name);
      if (!p) throw new LlavaError(`the optimizer state has a parameter ${name} that is not trained in this run`);
      if (s.expAvg.length !== p.size || s.expAvgSq.length !== p.size) {
        throw new LlavaError(`the optimizer state of ${name} has ${s.expAvg.length} values, the parameter has ${p.size}`);
      }
    }
    this.state.clear();
    this.movingRows.clear();
    for (const [name, s] of saved) this.state.set(name, s);
  }
}

/** The rows of a parameter's state with a nonzero moment. */
function rowsWithMoments(s: ParamState, rowLength: number): Set<number> {
  const rows = new Set<number>();
  const { expAvg: m, expAvgSq: v } = s;
  for (let r = 0, a = 0; a < m.length; r++, a += rowLength) {
    for (let j = a; j < a + rowLength; j++) {
      if (m[j] !== 0 || v[j] !== 0) {
        rows.add(r);
        break;
      }
    }
  }
  return rows;
}

/** The parts of a gradient that may be nonzero: all of it, or the ranges of its rows. */
function gradParts(p: Tensor): Float32Array[] {
  const g = p.grad!;
  return p.gradRows ? rowRanges(p.gradRows, p.size / p.shape[0]).map(([a, b]) => g.subarray(a, b)) : [g];
}

/** The global L2 norm of the parameters' gradients (torch: the norm of the per-tensor norms). */
export function gradNorm(params: Tensor[]): number {
  let sq = 0;
  for (const p of params) {
    if (!p.grad) continue;
    const s = gradParts(p).reduce((acc, part) => acc + p.backend.sumSquares(part), 0);
    sq += Math.fround(Math.sqrt(s)) ** 2;
  }
  return Math.fround(Math.sqrt(sq));
}

/**
 * torch.nn.utils.clip_grad_norm_: scales every gradient by max/(norm + 1e-6) when that is below 1.
 * Returns the norm before clipping. `maxNorm` <= 0 leaves the gradients alone (HF skips clipping).
 */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  const norm = gradNorm(params);
  const coef = maxNorm / (norm + 1e-6);
  if (maxNorm > 0 && coef < 1) {
    // g * float32(coef), rounded once: torch's float32 multiply
    const c = Math.fround(coef);
    for (const p of params) if (p.grad) for (const part of gradParts(p)) p.backend.scale(part, c, part);
  }
  return norm;
}
