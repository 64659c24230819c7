/**
 * The LLaMA-family decoder (LLaMA, Vicuna, Mistral): RMSNorm, rotary embeddings in the
 * rotate-half layout, grouped-query attention, SwiGLU MLP; with a KV cache preallocated to each
 * sequence's prompt and budget for generation, a decode step of several sequences at once, and a
 * plain causal path for training.
 */
import os from "node:os";
import type { LlamaConfig } from "../io/config.js";
import { activationByName, childParameters, Embedding, type HasLinears, Linear, type LinearForwardOptions, type Module, type NamedParameters, RMSNorm } from "../nn/layers.js";
import type { ParamLoader } from "../nn/params.js";
import type { Activation } from "../tensor/backend.js";
import { activation, add, attention, attentionMany, checkpoint, type HalfKV, mul, reshape, rope, slice } from "../tensor/ops.js";
import { f32ToF16Into } from "../tensor/packed.js";
import { PackedTensor, Scratch, Tensor, withScratch } from "../tensor/tensor.js";
import { LlavaError } from "../util/errors.js";
import type { Rng } from "../util/random.js";
import { halfKVCache } from "./precision.js";

/**
 * Keys and values of every layer, preallocated for `capacity` positions of `batch` rows: f32,
 * or with `half` the f16 bits of each (a 16-bit cache: half the memory, and half the bytes a
 * decode step's attention reads).
 */
export class KVCache {
  readonly keys: Array<Tensor | HalfKV>;
  readonly values: Array<Tensor | HalfKV>;
  /** positions filled so far (the same for every batch row) */
  length = 0;

  constructor(readonly cfg: LlamaConfig, readonly batch: number, readonly capacity: number, private readonly backend: Tensor["backend"], readonly half = false) {
    const shape = [batch, capacity, cfg.numKeyValueHeads, cfg.headDim];
    const size = shape.reduce((a, b) => a * b, 1);
    const bytes = 2 * cfg.numHiddenLayers * size * (half ? 2 : 4);
    if (bytes > 0.9 * os.totalmem()) {
      const gib = (x: number) => `${(x / 2 ** 30).toFixed(1)} GiB`;
      throw new LlavaError(`a KV cache of ${capacity} positions needs ${gib(bytes)} but the machine has ${gib(os.totalmem())}; ask for fewer new tokens or a shorter context`);
    }
    const layer = (): Tensor | HalfKV => (half ? { data: new Uint16Array(size), shape } : Tensor.zeros(shape, backend));
    this.keys = Array.from({ length: cfg.numHiddenLayers }, layer);
    this.values = Array.from({ length: cfg.numHiddenLayers }, layer);
  }

  /** bytes of keys and values held */
  get bytes(): number {
    return 2 * this.keys.length * this.keys[0].data.byteLength;
  }

  /**
   * A one-row cache of `capacity` positions holding this one-row cache's first `length`
   * positions: keys and values at a position depend only on the inputs up to it, so a sequence
   * that shares them continues from there.
   */
  prefix(length: number, capacity: number): KVCache {
    if (this.batch !== 1 || length > this.length || length > capacity) {
      throw new LlavaError(`cannot take ${length} positions of a ${this.batch}-row cache of ${this.length} into ${capacity}`);
    }
    const copy = new KVCache(this.cfg, 1, capacity, this.backend, this.half);
    const n = length * this.cfg.numKeyValueHeads * this.cfg.headDim;
    this.keys.forEach((k, i) => copy.keys[i].data.set(k.data.subarray(0, n)));
    this.values.forEach((v, i) => copy.values[i].data.set(v.data.subarray(0, n)));
    copy.length = length;
    return copy;
  }

  /** Copies k, v [B, T, Hkv, D] of `layer` into the cache at the current length (rounded to f16 in a 16-bit cache). */
  write(layer: number, k: Tensor, v: Tensor): void {
    const [b, t, h, d] = k.shape;
    const n = t * h * d;
    for (let i = 0; i < b; i++) {
      const dst = (i * this.capacity + this.length) * h * d;
      putPositions(this.keys[layer], k.data.subarray(i * n, (i + 1) * n), dst, t);
      putPositions(this.values[layer], v.data.subarray(i * n, (i + 1) * n), dst, t);
    }
  }

  /** Copies row i of k, v [N, 1, Hkv, D] of `layer` into one-row caches[i] at its current length. */
  static writeEach(caches: KVCache[], layer: number, k: Tensor, v: Tensor): void {
    const n = k.shape[2] * k.shape[3];
    caches.forEach((cache, i) => {
      putPositions(cache.keys[layer], k.data.subarray(i * n, (i + 1) * n), cache.length * n);
      putPositions(cache.values[layer], v.data.subarray(i * n, (i + 1) * n), cache.length * n);
    });
  }
}

/** Copies src, `positions` positions, into a cache layer's data from element dst (rounded to f16 in a 16-bit cache). */
function putPositions(cache: Tensor | HalfKV, src: Float32Array, dst: number, positions = 1): void {
  if (cache.data instanceof Uint16Array) f32ToF16Into(src, cache.data.subarray(dst, dst + src.length), positions);
  else cache.data.set(src, dst);
}

/** HF LLaMA inverse frequencies, with the `linear` and `llama3` rope_scaling variants. */
export function ropeInvFreq(cfg: LlamaConfig): Float64Array {
  const half = cfg.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / cfg.ropeTheta ** ((2 * i) / cfg.headDim);
  const s = cfg.ropeScaling;
  if (!s || s.ropeType === "default") return inv;
  const factor = s.factor ?? 1;
  if (s.ropeType === "linear") return inv.map((f) => f / factor);
  if (s.ropeType === "llama3") {
    const low = s.lowFreqFactor ?? 1;
    const high = s.highFreqFactor ?? 4;
    const orig = s.originalMaxPositionEmbeddings ?? 8192;
    const lowWavelen = orig / low;
    const highWavelen = orig / high;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return f;
      if (wavelen > lowWavelen) return f / factor;
      const smooth = (orig / wavelen - low) / (high - low);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  throw new LlavaError(`unsupported rope_scaling type "${s.ropeType}" (supported: linear, llama3)`);
}

/** Most positions (batch x length) a forward with reuseBuffers runs in the reused buffer: decode steps, not prompts. */
const REUSE_MAX_ROWS = 16;

/** A decoder layer's Linear layers by their checkpoint names, with [out, in] shapes and bias flags. */
function layerLinears(cfg: LlamaConfig) {
  const { hiddenSize: d, numAttentionHeads: h, numKeyValueHeads: kvh, headDim: hd, intermediateSize: inter, attentionBias: ab, mlpBias: mb } = cfg;
  return {
    q: ["self_attn.q_proj", h * hd, d, ab], k: ["self_attn.k_proj", kvh * hd, d, ab], v: ["self_attn.v_proj", kvh * hd, d, ab],
    o: ["self_attn.o_proj", d, h * hd, ab], gate: ["mlp.gate_proj", inter, d, mb], up: ["mlp.up_proj", inter, d, mb], down: ["mlp.down_proj", d, inter, mb],
  } as const satisfies Record<string, readonly [string, number, number, boolean]>;
}
type LayerLinear = keyof ReturnType<typeof layerLinears>;
const NORMS = { inputNorm: "input_layernorm", postNorm: "post_attention_layernorm" } as const;

/** A Linear layer read from `p`: `name.weight` [out, in] in the precision policy's format, `name.bias` when it has one. */
export function loadLinear(p: ParamLoader, name: string, out: number, inp: number, bias: boolean): Linear {
  return new Linear(p.matrix(`${name}.weight`, [out, inp]), bias ? p.tensor(`${name}.bias`, [out]) : null);
}

class LlamaLayer implements Module, HasLinears {
  readonly linears: Record<LayerLinear, Linear>;
  readonly inputNorm: RMSNorm;
  readonly postNorm: RMSNorm;

  constructor(p: ParamLoader, readonly cfg: LlamaConfig, private readonly act: Activation) {
    const specs = layerLinears(cfg);
    this.linears = Object.fromEntries(Object.entries(specs).map(([key, [name, out, inp, bias]]) => [key, loadLinear(p, name, out, inp, bias)])) as Record<LayerLinear, Linear>;
    this.inputNorm = new RMSNorm(p.tensor(`${NORMS.inputNorm}.weight`, [cfg.hiddenSize]), cfg.rmsNormEps);
    this.postNorm = new RMSNorm(p.tensor(`${NORMS.postNorm}.weight`, [cfg.hiddenSize]), cfg.rmsNormEps);
  }

  /** `from`: only positions from there on are output (their keys and values still come from every position) */
  forward(x: Tensor, positions: Int32Array, invFreq: Float64Array, cache: KVCache | null, index: number, linear: LinearForwardOptions = {}, from = 0): Tensor {
    const window = this.cfg.slidingWindow;
    return this.run(x, positions, invFreq, linear, (q, k, v) => {
      if (!cache) return attention(q, k, v, { causal: true, window });
      cache.write(index, k, v);
      return attention(q, cache.keys[index], cache.values[index], { causal: true, kvLength: cache.length + q.dim(1), window });
    }, from);
  }

  /** One new position of each of N sequences, x [N, 1, D], row i attending to caches[i] only. */
  decode(x: Tensor, positions: Int32Array, invFreq: Float64Array, caches: KVCache[], index: number): Tensor {
    const window = this.cfg.slidingWindow;
    return this.run(x, positions, invFreq, { rowwise: true }, (q, k, v) => {
      KVCache.writeEach(caches, index, k, v);
      return attentionMany(q, caches.map((c) => ({ k: c.keys[index], v: c.values[index], length: c.length + 1 })), { window });
    });
  }

  /** The layer around `attend` (q [B, T - from, heads, D], k, v [B, T, kv heads, D] → [B, T - from, H, D]). */
  private run(x: Tensor, positions: Int32Array, invFreq: Float64Array, opts: LinearForwardOptions, attend: (q: Tensor, k: Tensor, v: Tensor) => Tensor, from = 0): Tensor {
    const [b, t] = x.shape;
    const { numAttentionHeads: h, numKeyValueHeads: kvh, headDim: hd } = this.cfg;
    const { q: wq, k: wk, v: wv, o: wo, gate, up, down } = this.linears;
    const hn = this.inputNorm.forward(x);
    const tq = t - from;
    const tail = (y: Tensor) => (from ? slice(y, 1, from, t) : y);
    const tailPositions = from ? Int32Array.from({ length: b * tq }, (_, i) => positions[Math.floor(i / tq) * t + from + (i % tq)]) : positions;
    const q = rope(reshape(wq.forward(tail(hn), opts), [b, tq, h, hd]), tailPositions, invFreq);
    const k = rope(reshape(wk.forward(hn, opts), [b, t, kvh, hd]), positions, invFreq);
    const v = reshape(wv.forward(hn, opts), [b, t, kvh, hd]);
    x = add(tail(x), wo.forward(reshape(attend(q, k, v), [b, tq, h * hd]), opts));
    const m = this.postNorm.forward(x);
    return add(x, down.forward(mul(activation(gate.forward(m, opts), this.act), up.forward(m, opts)), opts));
  }

  namedLinears(prefix = ""): Array<[string, Linear]> {
    const specs = layerLinears(this.cfg);
    return (Object.keys(specs) as LayerLinear[]).map((key) => [prefix ? `${prefix}.${specs[key][0]}` : specs[key][0], this.linears[key]]);
  }

  namedParameters(prefix = ""): NamedParameters {
    return childParameters(prefix, [...this.namedLinears(), [NORMS.inputNorm, this.inputNorm], [NORMS.postNorm, this.postNorm]]);
  }
}

/** How a training forward runs: LoRA dropout drawn from `rng`; with `checkpoint`, each layer's activations recomputed in the backward pass. */
export interface TrainingForward {
  rng?: Rng | null;
  checkpoint?: boolean;
}

export interface DecoderOutput {
  /** final hidden state after the last norm [B, T, D] */
  hidden: Tensor;
  /** with `collectHidden`: inputs, each layer's output, and the normed final state (HF convention) */
  hiddenStates?: Tensor[];
}

export class LlamaForCausalLM implements Module, HasLinears {
  readonly embedTokens: Embedding;
  readonly layers: LlamaLayer[];
  readonly norm: RMSNorm;
  readonly lmHead: Linear;
  readonly invFreq: Float64Array;
  /** the layers' intermediates of inference steps (decodeStep, forward with reuseBuffers) */
  private readonly scratch = new Scratch();
  /** the two buffers the layers of a prompt run in by turns (forward with a cache) */
  private readonly promptScratch = [new Scratch(), new Scratch()];

  /** `p` points at the root of a LlamaForCausalLM state dict (`model.*`, `lm_head.*`). */
  constructor(p: ParamLoader, readonly cfg: LlamaConfig) {
    const { vocabSize: vocab, hiddenSize: d } = cfg;
    const model = p.sub("model.");
    this.embedTokens = new Embedding(model.matrix("embed_tokens.weight", [vocab, d]));
    const act = activationByName(cfg.hiddenAct);
    this.layers = Array.from({ length: cfg.numHiddenLayers }, (_, i) => new LlamaLayer(model.sub(`layers.${i}.`), cfg, act));
    this.norm = new RMSNorm(model.tensor("norm.weight", [d]), cfg.rmsNormEps);
    const tied = cfg.tieWordEmbeddings && !p.has("lm_head.weight");
    this.lmHead = tied ? new Linear(this.embedTokens.weight) : loadLinear(p, "lm_head", vocab, d, false);
    this.invFreq = ropeInvFreq(cfg);
  }

  get backend() {
    return this.norm.weight.backend;
  }

  /** A KV cache for `batch` rows of `capacity` positions, 16-bit or f32 by the weights' format (halfKVCache). */
  newCache(batch: number, capacity: number): KVCache {
    const q = this.layers[0]?.linears.q.weight;
    return new KVCache(this.cfg, batch, capacity, this.backend, halfKVCache(q instanceof PackedTensor ? q.matrix.format : null));
  }

  /**
   * Runs the decoder on embeddings [B, T, D]. With a cache, the new positions follow the
   * cached ones and the cache grows by T. `reuseBuffers` (inference that keeps nothing but the
   * result, e.g. a decode step): up to REUSE_MAX_ROWS positions run in a reused buffer. A prompt
   * run into a cache (inference) runs each layer in one of two reused buffers by turns (a layer
   * reads the previous one's output): a few large allocations instead of a dozen per layer, whose
   * garbage collection took CPU from the kernels' threads (prefill at 2 threads 10-13% slower).
   * `outputFrom` (no cache): the hidden states of positions from there on only, [B, T - from, D]:
   * the last layer computes queries, attention output and MLP for those alone (a training loss
   * that looks at an answer after the image skips them for the rest).
   */
  forward(inputsEmbeds: Tensor, opts: { cache?: KVCache | null; positions?: Int32Array; collectHidden?: boolean; training?: TrainingForward; reuseBuffers?: boolean; outputFrom?: number } = {}): DecoderOutput {
    const [b, t] = inputsEmbeds.shape;
    const cache = opts.cache ?? null;
    const from = opts.outputFrom ?? 0;
    if (from && (cache || opts.collectHidden || !(Number.isInteger(from) && from > 0 && from < t))) {
      throw new LlavaError(`outputFrom ${from}: a forward without a cache or collected states outputs from a position in 1..${t - 1}`);
    }
    const start = cache?.length ?? 0;
    if (cache && start + t > cache.capacity) {
      throw new LlavaError(`sequence of ${start + t} positions exceeds the KV cache capacity of ${cache.capacity}`);
    }
    const positions = opts.positions ?? Int32Array.from({ length: b * t }, (_, i) => start + (i % t));
    let x = inputsEmbeds;
    const states = opts.collectHidden ? [x] : undefined;
    const rng = opts.training?.rng ?? null;
    const checkpointed = opts.training?.checkpoint === true && !cache;
    const layers = (byTurns?: Scratch[]) => this.layers.forEach((layer, i) => {
      // the last layer's earlier positions feed nothing that is output
      const run = (input: Tensor) => layer.forward(input, positions, this.invFreq, cache, i, { rng }, i === this.layers.length - 1 ? from : 0);
      const step = () => (checkpointed ? checkpoint(run, [x], { rng }) : run(x));
      x = byTurns ? withScratch(byTurns[i % 2], step) : step();
      states?.push(x);
    });
    // the layers' intermediates in reused buffers (the final norm's output is fresh): a few
    // positions (a decode step) in one buffer, a prompt into a cache in two by turns
    const inference = !states && !opts.training && !inputsEmbeds.requiresGrad;
    if (inference && opts.reuseBuffers && b * t <= REUSE_MAX_ROWS) withScratch(this.scratch, () => layers());
    else if (inference && cache) {
      try {
        layers(this.promptScratch);
      } finally {
        for (const s of this.promptScratch) s.trim();
      }
    } else layers();
    if (cache) cache.length += t;
    const hidden = this.norm.forward(x);
    if (states) states[states.length - 1] = hidden;
    return { hidden, hiddenStates: states };
  }

  /**
   * One decode step of N sequences (inference only: its intermediates live in reused buffers):
   * embeds [N, 1, D] holds each one's next input, caches[i] its keys and values so far. Every Linear reads its weight once for all N rows, computing each row
   * exactly as the step alone would; each row takes its own position and attends to its own
   * cache, which grows by one. Returns the final hidden states [N, 1, D].
   */
  decodeStep(embeds: Tensor, caches: KVCache[]): Tensor {
    const [n, t] = embeds.shape;
    if (t !== 1 || n !== caches.length) throw new LlavaError(`a decode step takes [${caches.length}, 1, D] embeddings, got [${embeds.shape.join(", ")}]`);
    for (const cache of caches) {
      if (cache.batch !== 1 || cache.length + 1 > cache.capacity) throw new LlavaError(`a decode step needs one-row caches with room for a position`);
    }
    const positions = Int32Array.from(caches, (c) => c.length);
    let x = embeds;
    withScratch(this.scratch, () => this.layers.forEach((layer, i) => (x = layer.decode(x, positions, this.invFreq, caches, i))));
    for (const cache of caches) cache.length++;
    return this.norm.forward(x);
  }

  /** `rowwise`: each row exactly as alone (decode steps of several sequences) */
  logits(hidden: Tensor, opts: { rowwise?: boolean } = {}): Tensor {
    return this.lmHead.forward(hidden, opts);
  }

  /** Linear layers by their names in a LlamaForCausalLM (`model.layers.0.self_attn.q_proj`, `lm_head`). */
  namedLinears(prefix = ""): Array<[string, Linear]> {
    const model = prefix ? `${prefix}.model` : "model";
    return [
      ...this.layers.flatMap((l, i) => l.namedLinears(`${model}.layers.${i}`)),
      ...(this.lmHead.weight === this.embedTokens.weight ? [] : [[prefix ? `${prefix}.lm_head` : "lm_head", this.lmHead] as [string, Linear]]),
    ];
  }

  namedParameters(prefix = ""): NamedParameters {
    const model = prefix ? `${prefix}.model` : "model";
    return [
      ...this.embedTokens.namedParameters(`${model}.embed_tokens`),
      ...this.layers.flatMap((l, i) => l.namedParameters(`${model}.layers.${i}`)),
      ...this.norm.namedParameters(`${model}.norm`),
      ...(this.lmHead.weight === this.embedTokens.weight ? [] : this.lmHead.namedParameters(prefix ? `${prefix}.lm_head` : "lm_head")),
    ];
  }
}
