/**
 * Optimizers over tensors with gradients. AdamW follows torch.optim.AdamW (decoupled weight
 * decay, bias correction); each optimizer owns its state, no globals.
 */
import type { Tensor } from "./tensor.js";

export interface AdamWOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

export class AdamW {
  private readonly m: Float32Array[];
  private readonly v: Float32Array[];
  step = 0;

  constructor(readonly params: Tensor[], readonly opts: AdamWOptions) {
    this.m = params.map((p) => new Float32Array(p.size));
    this.v = params.map((p) => new Float32Array(p.size));
  }

  /** One update from the parameters' accumulated gradients (parameters without one are skipped). */
  update(lr = this.opts.lr): void {
    const [b1, b2] = this.opts.betas ?? [0.9, 0.999];
    const eps = this.opts.eps ?? 1e-8;
    const wd = this.opts.weightDecay ?? 0;
    this.step++;
    const c1 = 1 - b1 ** this.step;
    const c2 = 1 - b2 ** this.step;
    this.params.forEach((p, i) => {
      const g = p.grad;
      if (!g) return;
      const m = this.m[i];
      const v = this.v[i];
      const w = p.data;
      for (let j = 0; j < w.length; j++) {
        w[j] -= lr * wd * w[j];
        m[j] = b1 * m[j] + (1 - b1) * g[j];
        v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
        w[j] -= (lr * (m[j] / c1)) / (Math.sqrt(v[j] / c2) + eps);
      }
    });
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }
}
