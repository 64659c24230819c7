/**
 * An independent float64 LLaVA forward pass, written from the reference's equations with plain
 * loops and no code shared with src/tensor or src/llava. Tests use it as an oracle for model
 * shapes the fixtures do not cover (GQA, rope_theta, eps, cls_patch, several images...).
 * It is itself checked against the fixtures.
 */
import { WeightStore } from "../../src/io/safetensors.js";

type Vec = Float64Array;
type Mat = Float64Array[]; // rows

export interface OracleConfig {
  vision: { hidden: number; heads: number; layers: number; patch: number; image: number; eps: number; act: string };
  text: { hidden: number; heads: number; kvHeads: number; headDim: number; layers: number; eps: number; theta: number; vocab: number; window?: number };
  selectLayer: number;
  keepCls: boolean;
  projectorDepth: number;
}

export interface OracleNames {
  vision: string;
  projector: (i: number) => string;
  llm: string;
  head: string;
}

// Abramowitz & Stegun 7.1.26 refined by one Newton-free series term is not needed: this is an
// independent erf (|error| < 1.2e-7), enough for the tolerances the tests use.
function erf(x: number): number {
  const s = Math.sign(x);
  const a = Math.abs(x);
  const t = 1 / (1 + 0.5 * a);
  const y = 1 - t * Math.exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return s * y;
}

const act = (kind: string, x: number) =>
  kind === "quick_gelu" ? x / (1 + Math.exp(-1.702 * x))
  : kind === "silu" ? x / (1 + Math.exp(-x))
  : 0.5 * x * (1 + erf(x / Math.SQRT2));

export class Oracle {
  constructor(private readonly store: WeightStore, private readonly towerStore: WeightStore, readonly cfg: OracleConfig, readonly names: OracleNames) {}

  private readonly memo = new Map<string, Vec | Mat>();

  private vec(s: WeightStore, name: string): Vec {
    const key = `${s.source}:${name}`;
    if (!this.memo.has(key)) this.memo.set(key, Float64Array.from(s.readF32(name)));
    return this.memo.get(key) as Vec;
  }

  private mat(s: WeightStore, name: string): Mat {
    const key = `${s.source}:${name}`;
    if (!this.memo.has(key)) {
      const [rows, ...rest] = s.info(name).shape;
      const cols = rest.reduce((a, b) => a * b, 1);
      const flat = s.readF32(name);
      this.memo.set(key, Array.from({ length: rows }, (_, r) => Float64Array.from(flat.subarray(r * cols, (r + 1) * cols))));
    }
    return this.memo.get(key) as Mat;
  }

  private static lin(x: Vec, w: Mat, b?: Vec): Vec {
    return Float64Array.from(w, (row, o) => row.reduce((s, wv, i) => s + wv * x[i], b ? b[o] : 0));
  }

  private static layerNorm(x: Vec, w: Vec, b: Vec, eps: number): Vec {
    const mean = x.reduce((s, v) => s + v, 0) / x.length;
    const v = x.reduce((s, e) => s + (e - mean) ** 2, 0) / x.length;
    return x.map((e, i) => ((e - mean) / Math.sqrt(v + eps)) * w[i] + b[i]);
  }

  private static rmsNorm(x: Vec, w: Vec, eps: number): Vec {
    const ms = x.reduce((s, v) => s + v * v, 0) / x.length;
    return x.map((e, i) => (e / Math.sqrt(ms + eps)) * w[i]);
  }

  /** softmax(q k^T * scale) v for one head; `visible(i)` = the keys [from, to) query i sees */
  private static attend(q: Vec[], k: Vec[], v: Vec[], visible: (i: number) => [number, number]): Vec[] {
    const scale = 1 / Math.sqrt(q[0].length);
    return q.map((qi, i) => {
      const [from, to] = visible(i);
      const s = k.slice(from, to).map((kj) => kj.reduce((a, e, d) => a + e * qi[d], 0) * scale);
      const m = Math.max(...s);
      const e = s.map((x) => Math.exp(x - m));
      const z = e.reduce((a, b) => a + b, 0);
      const out = new Float64Array(qi.length);
      e.forEach((p, j) => v[from + j].forEach((vv, d) => (out[d] += (p / z) * vv)));
      return out;
    });
  }

  /** Projected features [N, D] of one image given as CHW pixels. */
  imageFeatures(pixels: ArrayLike<number>): Vec[] {
    const c = this.cfg.vision;
    const s = this.towerStore;
    const p = this.names.vision;
    const g = c.image / c.patch;
    const conv = this.mat(s, `${p}embeddings.patch_embedding.weight`);
    const pos = this.mat(s, `${p}embeddings.position_embedding.weight`);
    const tokens: Vec[] = [this.vec(s, `${p}embeddings.class_embedding`)];
    for (let gy = 0; gy < g; gy++) {
      for (let gx = 0; gx < g; gx++) {
        const patch = new Float64Array(3 * c.patch * c.patch);
        let n = 0;
        for (let ch = 0; ch < 3; ch++)
          for (let y = 0; y < c.patch; y++)
            for (let x = 0; x < c.patch; x++) patch[n++] = pixels[(ch * c.image + gy * c.patch + y) * c.image + gx * c.patch + x];
        tokens.push(Oracle.lin(patch, conv));
      }
    }
    let h = tokens.map((t, i) => Oracle.layerNorm(t.map((v, d) => v + pos[i][d]), this.vec(s, `${p}pre_layrnorm.weight`), this.vec(s, `${p}pre_layrnorm.bias`), c.eps));
    const states = [h];
    const hd = c.hidden / c.heads;
    for (let l = 0; l < c.layers; l++) {
      const L = `${p}encoder.layers.${l}.`;
      const W = (n: string) => this.mat(s, `${L}${n}.weight`);
      const B = (n: string) => this.vec(s, `${L}${n}.bias`);
      const x1 = h.map((t) => Oracle.layerNorm(t, this.vec(s, `${L}layer_norm1.weight`), B("layer_norm1"), c.eps));
      const [q, k, v] = ["q_proj", "k_proj", "v_proj"].map((n) => x1.map((t) => Oracle.lin(t, W(`self_attn.${n}`), B(`self_attn.${n}`))));
      const att = h.map(() => new Float64Array(c.hidden));
      for (let head = 0; head < c.heads; head++) {
        const part = (m: Vec[]) => m.map((t) => t.slice(head * hd, (head + 1) * hd));
        Oracle.attend(part(q), part(k), part(v), () => [0, h.length]).forEach((o, i) => att[i].set(o, head * hd));
      }
      h = h.map((t, i) => t.map((e, d) => e + Oracle.lin(att[i], W("self_attn.out_proj"), B("self_attn.out_proj"))[d]));
      h = h.map((t) => {
        const m = Oracle.lin(Oracle.layerNorm(t, this.vec(s, `${L}layer_norm2.weight`), B("layer_norm2"), c.eps), W("mlp.fc1"), B("mlp.fc1")).map((e) => act(c.act, e));
        const o = Oracle.lin(m, W("mlp.fc2"), B("mlp.fc2"));
        return t.map((e, d) => e + o[d]);
      });
      states.push(h);
    }
    const sel = states[this.cfg.selectLayer < 0 ? states.length + this.cfg.selectLayer : this.cfg.selectLayer];
    let f = this.cfg.keepCls ? sel : sel.slice(1);
    for (let i = 0; i < this.cfg.projectorDepth; i++) {
      const n = this.names.projector(i);
      const w = this.mat(this.store, `${n}weight`);
      const b = this.vec(this.store, `${n}bias`);
      f = f.map((t) => Oracle.lin(i > 0 ? t.map((e) => act("gelu", e)) : t, w, b));
    }
    return f;
  }

  /** Logits [T, V] (or of the last position only) over input embeddings, full causal attention, no cache. */
  logits(embeds: Vec[], lastOnly = false): Vec[] {
    const c = this.cfg.text;
    const s = this.store;
    const p = this.names.llm;
    let h = embeds;
    const half = c.headDim / 2;
    const rot = (x: Vec, pos: number) => {
      const out = new Float64Array(x.length);
      for (let i = 0; i < half; i++) {
        const a = pos / c.theta ** ((2 * i) / c.headDim);
        out[i] = x[i] * Math.cos(a) - x[i + half] * Math.sin(a);
        out[i + half] = x[i + half] * Math.cos(a) + x[i] * Math.sin(a);
      }
      return out;
    };
    for (let l = 0; l < c.layers; l++) {
      const L = `${p}layers.${l}.`;
      const W = (n: string) => this.mat(s, `${L}${n}.weight`);
      const x1 = h.map((t) => Oracle.rmsNorm(t, this.vec(s, `${L}input_layernorm.weight`), c.eps));
      const [q, k, v] = ["q_proj", "k_proj", "v_proj"].map((n) => x1.map((t) => Oracle.lin(t, W(`self_attn.${n}`))));
      const att = h.map(() => new Float64Array(c.heads * c.headDim));
      for (let head = 0; head < c.heads; head++) {
        const kvh = Math.floor(head / (c.heads / c.kvHeads));
        const qs = q.map((t, i) => rot(t.slice(head * c.headDim, (head + 1) * c.headDim), i));
        const ks = k.map((t, i) => rot(t.slice(kvh * c.headDim, (kvh + 1) * c.headDim), i));
        const vs = v.map((t) => t.slice(kvh * c.headDim, (kvh + 1) * c.headDim));
        Oracle.attend(qs, ks, vs, (i) => [c.window ? Math.max(0, i - c.window + 1) : 0, i + 1]).forEach((o, i) => att[i].set(o, head * c.headDim));
      }
      h = h.map((t, i) => {
        const o = Oracle.lin(att[i], W("self_attn.o_proj"));
        return t.map((e, d) => e + o[d]);
      });
      h = h.map((t) => {
        const x2 = Oracle.rmsNorm(t, this.vec(s, `${L}post_attention_layernorm.weight`), c.eps);
        const g = Oracle.lin(x2, W("mlp.gate_proj")).map((e) => act("silu", e));
        const u = Oracle.lin(x2, W("mlp.up_proj"));
        const o = Oracle.lin(g.map((e, i) => e * u[i]), W("mlp.down_proj"));
        return t.map((e, d) => e + o[d]);
      });
    }
    const head = this.mat(s, `${this.names.head}weight`);
    return (lastOnly ? h.slice(-1) : h).map((t) => Oracle.lin(Oracle.rmsNorm(t, this.vec(s, `${p}norm.weight`), c.eps), head));
  }

  /** Embeddings of ids with image markers replaced by the image features, in order. */
  embed(ids: number[], marker: number, images: Vec[][]): Vec[] {
    const table = this.store;
    const name = `${this.names.llm}embed_tokens.weight`;
    const [, d] = table.info(name).shape;
    const all = table.readF32(name);
    let next = 0;
    return ids.flatMap((id) => (id === marker ? images[next++] : [Float64Array.from(all.subarray(id * d, (id + 1) * d))]));
  }
}
