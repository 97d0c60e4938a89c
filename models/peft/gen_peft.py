#!/usr/bin/env python3
"""Generate the PEFT-layout fixtures in models/peft/ (fixed seeds, reproducible).

Run with Debian's python3-torch (1.13) and numpy:  /usr/bin/python3 models/peft/gen_peft.py

The peft package is not installable here, so this script trains the adapters
itself the way PEFT's SHiRA and LoRA tuners do and writes their checkpoints in
PEFT's exact key layout (adapter_model.safetensors + adapter_config.json):

  models/peft/base.onnx            torch.onnx.export of a tiny HF-style decoder
                                   (model.layers.N.self_attn.{q,k,v,o}_proj,
                                   mlp.{up,down}_proj as MatMul over transposed
                                   onnx::MatMul_N initializers, lm_head as
                                   Gemm(transB=1) over lm_head.weight)
  models/peft/input.npy            the fixed input x [2, 5, 16]
  models/peft/base_out.npy         the base model's output
  models/peft/shira_a/             SHiRA adapter, r=1, random mask seed 11, trained
                                   on task A with gradient masking
      adapter_model.safetensors    base_model.model.<module>.shira_weight  F32 [nnz]
                                   base_model.model.<module>.shira_indices I32 [2, nnz]
      adapter_config.json
      merged_out.npy               torch output with the adapter merged (W += values)
  models/peft/shira_b/             the same for task B, mask seed 22, indices saved as
                                   F32 (what PEFT writes on Windows)
  models/peft/lora/                LoRA r=4, alpha=8 on q_proj, v_proj, lm_head:
      adapter_model.safetensors    base_model.model.<module>.lora_A.weight [r, in]
                                   base_model.model.<module>.lora_B.weight [out, r]
      adapter_config.json
      merged_out.npy               torch output with W += (alpha/r) B A
  models/peft/tuned_a.onnx         the base model with shira_a merged, exported the
                                   same way (a "full fine-tune" for `extract`)
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
D, F, LAYERS, VOCAB = 16, 32, 2, 10


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, D, bias=False)
        self.o_proj = nn.Linear(D, D, bias=False)

    def forward(self, x):
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        a = torch.softmax(q @ k.transpose(1, 2) / D ** 0.5, dim=-1)
        return self.o_proj(a @ v)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up_proj = nn.Linear(D, F, bias=False)
        self.down_proj = nn.Linear(F, D, bias=False)

    def forward(self, x):
        return self.down_proj(torch.relu(self.up_proj(x)))


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = Attn()
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.self_attn(x)
        return x + self.mlp(x)


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Layer() for _ in range(LAYERS)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Tiny(nn.Module):
    """HF-style naming: model.layers.N.self_attn.q_proj, lm_head."""

    def __init__(self):
        super().__init__()
        self.model = Inner()
        self.lm_head = nn.Linear(D, VOCAB)

    def forward(self, x):
        h = self.model(x)
        return self.lm_head(h.mean(dim=1))  # 2-D input: exported as Gemm(transB=1)


def linears(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def write_safetensors(path, tensors):
    """safetensors: u64 header length, JSON header, raw little-endian data."""
    header, blobs, off = {}, [], 0
    names = {torch.float32: "F32", torch.int32: "I32", torch.float16: "F16"}
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        b = t.numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def random_mask(layer, r, seed):
    """PEFT's shira random_mask: exact r*(in+out) entries via randperm."""
    out_f, in_f = layer.weight.shape
    g = torch.Generator()
    g.manual_seed(seed)
    idx = torch.randperm(out_f * in_f, generator=g)[: r * (in_f + out_f)]
    mask = torch.zeros(out_f * in_f, dtype=torch.bool)
    mask[idx] = True
    return mask.view(out_f, in_f)


def task_data(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    x = torch.randn(64, 5, D, generator=g)
    y = torch.randint(0, VOCAB, (64,), generator=g)
    return x, y


def train_shira(base, r, seed, task_seed, targets):
    """Full-weight training with gradient masking (the paper's hook method)."""
    model = Tiny()
    model.load_state_dict(base.state_dict())
    masks = {}
    for name, lin in linears(model):
        if any(name.endswith(t) for t in targets):
            masks[name] = random_mask(lin, r, seed)
    params = []
    for name, lin in linears(model):
        for p in lin.parameters():
            p.requires_grad_(name in masks and p is lin.weight)
        if name in masks:
            params.append(lin.weight)
            lin.weight.register_hook(lambda g, m=masks[name]: g * m)
    opt = torch.optim.SGD(params, lr=0.5)
    x, y = task_data(task_seed)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    tuned = dict(linears(model))
    base_l = dict(linears(base))
    sd = {}
    for name, m in masks.items():
        delta = (tuned[name].weight - base_l[name].weight).detach()
        rows, cols = torch.where(m)  # row-major, like PEFT's torch.where(mask == 1.0)
        sd[f"base_model.model.{name}.shira_weight"] = delta[rows, cols].float().contiguous()
        sd[f"base_model.model.{name}.shira_indices"] = torch.stack([rows, cols]).to(torch.int32)
    return sd


def merge_shira(base, sd):
    model = Tiny()
    model.load_state_dict(base.state_dict())
    lin = dict(linears(model))
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith(".shira_weight"):
                name = k[len("base_model.model."):-len(".shira_weight")]
                ix = sd[k.replace("shira_weight", "shira_indices")].long()
                w = lin[name].weight
                # PEFT: orig_weight += sparse_coo_tensor(indices, values * scaling)
                w += torch.sparse_coo_tensor(ix, v * 1.0, w.shape)
    return model


def train_lora(base, r, alpha, targets, task_seed):
    torch.manual_seed(5)
    scale = alpha / r
    lin = dict(linears(base))
    A = {n: nn.Parameter(torch.randn(r, lin[n].in_features) * 0.3) for n in targets}
    B = {n: nn.Parameter(torch.zeros(lin[n].out_features, r)) for n in targets}
    model = Tiny()
    model.load_state_dict(base.state_dict())
    for p in model.parameters():
        p.requires_grad_(False)
    mods = dict(linears(model))
    for n in targets:
        m = mods[n]
        orig = m.forward
        m.forward = (lambda x, m=m, n=n: nn.functional.linear(x, m.weight, m.bias) + (x @ A[n].t() @ B[n].t()) * scale)
    opt = torch.optim.SGD(list(A.values()) + list(B.values()), lr=0.2)
    x, y = task_data(99)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    sd = {}
    for n in targets:
        sd[f"base_model.model.{n}.lora_A.weight"] = A[n].detach().contiguous()
        sd[f"base_model.model.{n}.lora_B.weight"] = B[n].detach().contiguous()
    merged = Tiny()
    merged.load_state_dict(base.state_dict())
    with torch.no_grad():
        for n, m in linears(merged):
            if n in targets:
                m.weight += (B[n] @ A[n]) * scale  # PEFT: get_delta_weight = (B @ A) * scaling
    return sd, merged


def export(model, path, x):
    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=14, do_constant_folding=True)
    print(path, os.path.getsize(path), "bytes")


def save_npy(path, t):
    np.save(path, t.detach().numpy().astype(np.float32))


def write_adapter(dirname, sd, config, model, x, index_dtype=torch.int32):
    d = os.path.join(HERE, dirname)
    os.makedirs(d, exist_ok=True)
    sd = {k: (v.to(index_dtype) if k.endswith("shira_indices") else v) for k, v in sd.items()}
    write_safetensors(os.path.join(d, "adapter_model.safetensors"), sd)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    save_npy(os.path.join(d, "merged_out.npy"), model(x))


def main():
    torch.manual_seed(0)
    base = Tiny().eval()
    with torch.no_grad():
        for p in base.parameters():
            p.mul_(2.0)  # larger weights: adapters make a visible difference
    g = torch.Generator()
    g.manual_seed(1234)
    x = torch.randn(2, 5, D, generator=g)
    export(base, os.path.join(HERE, "base.onnx"), x)
    save_npy(os.path.join(HERE, "input.npy"), x)
    save_npy(os.path.join(HERE, "base_out.npy"), base(x))

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"]
    shira_cfg = {"auto_mapping": None, "base_model_name_or_path": None, "fan_in_fan_out": False,
                 "inference_mode": True, "init_weights": True, "mask_type": "random",
                 "modules_to_save": None, "peft_type": "SHIRA", "r": 1, "revision": None,
                 "target_modules": targets, "task_type": None, "peft_version": "0.17.0"}
    for name, seed, task, idt in (("shira_a", 11, 1, torch.int32), ("shira_b", 22, 2, torch.float32)):
        sd = train_shira(base, 1, seed, task, targets)
        merged = merge_shira(base, sd).eval()
        write_adapter(name, sd, dict(shira_cfg, random_seed=seed), merged, x, idt)
        if name == "shira_a":
            export(merged, os.path.join(HERE, "tuned_a.onnx"), x)

    lora_targets = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                    "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj", "lm_head"]
    sd, merged = train_lora(base, 4, 8, lora_targets, 99)
    lora_cfg = {"alpha_pattern": {}, "base_model_name_or_path": None, "bias": "none",
                "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
                "lora_alpha": 8, "lora_dropout": 0.0, "modules_to_save": None, "peft_type": "LORA",
                "r": 4, "rank_pattern": {}, "target_modules": ["q_proj", "v_proj", "lm_head"],
                "task_type": None, "use_rslora": False, "peft_version": "0.17.0"}
    write_adapter("lora", sd, lora_cfg, merged.eval(), x)


if __name__ == "__main__":
    main()
