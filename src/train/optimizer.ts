/**
 * The trainer's optimizer: torch.optim.AdamW (HF `adamw_torch`) over the parameter groups that
 * LLaVATrainer.create_optimizer builds, plus gradient clipping by global L2 norm as
 * torch.nn.utils.clip_grad_norm_ does it. The state (per-parameter step, m, v) is plain arrays
 * keyed by parameter name, so a checkpoint saves and restores it exactly.
 */
import type { NamedParameters } from "../nn/layers.js";
import type { Tensor } from "../tensor/tensor.js";
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

  constructor(readonly groups: ParamGroup[], readonly betas: [number, number] = ADAM_BETAS, readonly eps = ADAM_EPS) {}

  /** Every parameter, in group order. */
  parameters(): Tensor[] {
    return this.groups.flatMap((g) => g.params.map(([, t]) => t));
  }

  /** One update with each group's learning rate times `lrFactor`; parameters without a gradient are skipped. */
  step(lrFactor: number): void {
    const [b1, b2] = this.betas;
    for (const group of this.groups) {
      const lr = group.lr * lrFactor;
      for (const [name, p] of group.params) {
        const g = p.grad;
        if (!g) continue;
        let s = this.state.get(name);
        if (!s) this.state.set(name, (s = { step: 0, expAvg: new Float32Array(p.size), expAvgSq: new Float32Array(p.size) }));
        s.step++;
        const stepSize = lr / (1 - b1 ** s.step);
        const c2Sqrt = Math.sqrt(1 - b2 ** s.step);
        const decay = 1 - lr * group.weightDecay;
        const { expAvg: m, expAvgSq: v } = s;
        const w = p.data;
        for (let j = 0; j < w.length; j++) {
          w[j] *= decay;
          m[j] += (g[j] - m[j]) * (1 - b1);
          v[j] = v[j] * b2 + (1 - b2) * g[j] * g[j];
          w[j] -= (stepSize * m[j]) / (Math.sqrt(v[j]) / c2Sqrt + this.eps);
        }
      }
    }
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
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
    for (const [name, s] of saved) this.state.set(name, s);
  }
}

/** The global L2 norm of the parameters' gradients (torch: the norm of the per-tensor norms). */
export function gradNorm(params: Tensor[]): number {
  let sq = 0;
  for (const p of params) {
    if (!p.grad) continue;
    const g = p.grad;
    let s = 0;
    for (let j = 0; j < g.length; j++) s += g[j] * g[j];
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
    const c = Math.fround(coef);
    for (const p of params) if (p.grad) for (let j = 0; j < p.grad.length; j++) p.grad[j] *= c;
  }
  return norm;
}
