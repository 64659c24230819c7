"""The PyTorch peer of `llava bench`'s training phases (src/perf/torch-peer.ts runs it).

The same LLaVA-1.5 as llava-ts trains, written in plain PyTorch (transformers is not needed):
a CLIP vision tower, the mlp2x_gelu projector and a LLaMA decoder, read from the checkpoint's
safetensors in f32, with the configuration llava-ts resolved (inputs.json). One step is the
bench protocol's: zero grad, forward with the frozen tower, loss on the answer tokens, backward,
AdamW. The example (ids, labels, preprocessed pixels) is the one llava-ts trained on, so the
first step's loss must equal llava-ts's: that is the check that both compute the same thing.

  python3 torch_peer.py INPUTS_DIR PHASE THREADS RUNS
prints one JSON line: torch version, ms per timed step, the first step's loss, trainable
parameters, peak RSS.
"""

import json
import math
import os
import resource
import struct
import sys
import time

# Debian's torch calls the system BLAS (OpenBLAS) without setting its threads, and OpenBLAS
# starts one per core: at 1 thread it used both cores. And torch's OpenMP threads spin after each
# parallel region, taking the cores OpenBLAS's threads need: at 2 threads a projector step took
# 1.9-2.7 s, with passive waiting 0.78-0.87 s. Both libraries read these at load: set them first.
if __name__ == "__main__":
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = sys.argv[3]
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

IGNORE_INDEX = -100
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(folder):
    """Every tensor of the folder's *.safetensors files, as f32."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        for key, info in header.items():
            if key == "__metadata__":
                continue
            a, b = info["data_offsets"]
            t = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[info["dtype"]]) if b > a else torch.empty(0, dtype=DTYPES[info["dtype"]])
            out[key] = t.reshape(info["shape"]).float()
    return out


def act(name):
    return {"quick_gelu": lambda x: x * torch.sigmoid(1.702 * x), "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
            "silu": F.silu, "relu": F.relu}[name]


class LoraLinear(torch.nn.Module):
    """A frozen weight plus PEFT's adapter: W x + B A dropout(x) · alpha / r (B starts at zero)."""

    def __init__(self, weight, r, alpha, dropout):
        super().__init__()
        self.weight = weight
        self.a = torch.nn.Parameter(torch.empty(r, weight.shape[1]))
        torch.nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))
        self.b = torch.nn.Parameter(torch.zeros(weight.shape[0], r))
        self.scale = alpha / r
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, x):
        return F.linear(x, self.weight) + F.linear(F.linear(self.dropout(x), self.a), self.b) * self.scale


class Llava(torch.nn.Module):
    def __init__(self, w, cfg, lora):
        super().__init__()
        self.cfg = cfg
        self.p = torch.nn.ParameterDict({k.replace(".", "/"): torch.nn.Parameter(v, requires_grad=False) for k, v in w.items()})
        # adapters on the Linear layers llava-ts puts them on (inputs.json names them)
        self.lora = torch.nn.ModuleDict({key.replace(".", "/"): LoraLinear(self.w(key + ".weight"), lora["r"], lora["alpha"], lora["dropout"])
                                         for key in (lora["linears"] if lora else [])})

    def w(self, key):
        return self.p[key.replace(".", "/")]

    def linear(self, x, key, bias=False):
        k = key.replace(".", "/")
        if k in self.lora:
            return self.lora[k](x)
        return F.linear(x, self.w(key + ".weight"), self.w(key + ".bias") if bias else None)

    def tower(self, pixels):
        v = self.cfg["vision"]
        pre = "vision_tower.vision_model."
        d, heads = v["hiddenSize"], v["numAttentionHeads"]
        x = F.conv2d(pixels, self.w(pre + "embeddings.patch_embedding.weight"), stride=v["patchSize"]).flatten(2).transpose(1, 2)
        x = torch.cat([self.w(pre + "embeddings.class_embedding").expand(x.shape[0], 1, d), x], 1) + self.w(pre + "embeddings.position_embedding.weight")
        ln = lambda x, key: F.layer_norm(x, (d,), self.w(key + ".weight"), self.w(key + ".bias"), v["layerNormEps"])
        x = ln(x, pre + "pre_layrnorm")
        states = [x]
        n, t = x.shape[:2]
        select = self.cfg["settings"]["visionSelectLayer"]
        for i in range(select if select >= 0 else v["numHiddenLayers"] + 1 + select):
            L = f"{pre}encoder.layers.{i}."
            h = ln(x, L + "layer_norm1")
            split = lambda y: y.view(n, t, heads, d // heads).transpose(1, 2)
            q, k, vv = (split(self.linear(h, L + f"self_attn.{p}_proj", True)) for p in "qkv")
            a = torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, -1) @ vv
            x = x + self.linear(a.transpose(1, 2).reshape(n, t, d), L + "self_attn.out_proj", True)
            x = x + self.linear(act(v["hiddenAct"])(self.linear(ln(x, L + "layer_norm2"), L + "mlp.fc1", True)), L + "mlp.fc2", True)
            states.append(x)
        return states

    def decoder(self, embeds):
        c = self.cfg["text"]
        pre = "language_model.model."
        heads, kvh, hd = c["numAttentionHeads"], c["numKeyValueHeads"], c["headDim"]
        n, t, d = embeds.shape
        inv = 1.0 / (c["ropeTheta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        ang = torch.outer(torch.arange(t, dtype=torch.float32), inv)
        cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
        rot = lambda x: torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1)
        rope = lambda x: x * cos + rot(x) * sin
        norm = lambda x, key: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["rmsNormEps"]) * self.w(key + ".weight")
        mask = torch.full((t, t), float("-inf")).triu(1)
        x = embeds
        for i in range(c["numHiddenLayers"]):
            L = f"{pre}layers.{i}."
            h = norm(x, L + "input_layernorm")
            q = rope(self.linear(h, L + "self_attn.q_proj").view(n, t, heads, hd).transpose(1, 2))
            k = rope(self.linear(h, L + "self_attn.k_proj").view(n, t, kvh, hd).transpose(1, 2)).repeat_interleave(heads // kvh, 1)
            v = self.linear(h, L + "self_attn.v_proj").view(n, t, kvh, hd).transpose(1, 2).repeat_interleave(heads // kvh, 1)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
            x = x + self.linear(a.transpose(1, 2).reshape(n, t, heads * hd), L + "self_attn.o_proj")
            h = norm(x, L + "post_attention_layernorm")
            x = x + self.linear(act(c["hiddenAct"])(self.linear(h, L + "mlp.gate_proj")) * self.linear(h, L + "mlp.up_proj"), L + "mlp.down_proj")
        return F.linear(norm(x, pre + "norm"), self.w("language_model.lm_head.weight"))

    def loss(self, ids, labels, pixels):
        s = self.cfg["settings"]
        with torch.no_grad():  # the frozen tower, run up to the selected state
            feats = self.tower(pixels)[-1]
        if s["visionSelectFeature"] == "patch":
            feats = feats[:, 1:]
        proj = self.linear(act(self.cfg["projector"]["activation"])(self.linear(feats, "multi_modal_projector.linear_1", True)), "multi_modal_projector.linear_2", True)[0]
        table = self.w("language_model.model.embed_tokens.weight")
        # the prompt's one image marker becomes the feature rows, unsupervised (as llava-ts splices it)
        at = ids.index(s["imageTokenId"])
        rows = torch.cat([table[torch.tensor(ids[:at])], proj, table[torch.tensor(ids[at + 1:])]])
        labs = labels[:at] + [IGNORE_INDEX] * proj.shape[0] + labels[at + 1:]
        logits = self.decoder(rows[None])[0]
        return F.cross_entropy(logits[:-1], torch.tensor(labs[1:]), ignore_index=IGNORE_INDEX)


def main():
    folder, phase, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    inp = json.load(open(os.path.join(folder, "inputs.json")))
    pixels = torch.frombuffer(bytearray(open(os.path.join(folder, "pixels.f32"), "rb").read()), dtype=torch.float32).reshape(inp["pixelShape"])
    model = Llava(read_safetensors(inp["modelPath"]), inp["config"], inp["lora"] if phase == "train_lora" else None)
    model.train()
    trainable = []
    for key, p in model.p.items():
        part = key.split("/")[0]
        p.requires_grad = part == "multi_modal_projector" or (phase == "train_full" and part == "language_model")
        if p.requires_grad:
            trainable.append(p)
    trainable += [p for m in model.lora.values() for p in (m.a, m.b)]
    o = inp["optimizer"]
    opt = torch.optim.AdamW(trainable, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=0.0)
    losses, ms = [], []

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(inp["ids"], inp["labels"], pixels)
        loss.backward()
        opt.step()
        return loss.item()

    losses.append(step())  # warm-up: its loss is the untrained model's
    for _ in range(runs):
        t = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"torch": torch.__version__, "values": ms, "firstLoss": losses[0], "trainableParams": sum(p.numel() for p in trainable),
                      "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()
