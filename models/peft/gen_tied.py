#!/usr/bin/env python3
"""Generate the tied-weights PEFT fixtures in models/peft/tied/ (fixed seeds, reproducible).

Run with Debian's python3-torch (1.13) and numpy:  /usr/bin/python3 models/peft/gen_tied.py

A tiny LM whose lm_head weight IS the embedding matrix (lm_head.weight =
embed.weight, one Parameter), with V == D == 16 so that a transposed delta has
the right shape and only a correct layout mapping reproduces torch:

    logits = lm_head(tanh(proj(embed(input_ids))))      (lm_head has a bias)

torch 1.13's torch.onnx.export with do_constant_folding=True unties the weight
(it folds lm_head's Transpose into a separate onnx::MatMul_N initializer), so
the models are exported with do_constant_folding=False, which keeps the tie
the way a tied LLM shows it:

  models/peft/tied/matmul.onnx   logits over [2, 5, V]: embed.weight read by
                                 /embed/Gather and by /lm_head/Transpose
                                 (perm [1, 0]) -> /lm_head/MatMul; export cannot
                                 fold that Transpose (the Gather reads the
                                 weight directly). proj.weight goes through
                                 /proj/Transpose -> /proj/MatMul (folded).
  models/peft/tied/gemm.onnx     the same weights, logits of the mean over the
                                 sequence [2, V]: lm_head (addmm on a 2-D input)
                                 becomes Gemm(transB=1) reading embed.weight
                                 directly.
  models/peft/tied/input.npy     input_ids int64 [2, 5]
  models/peft/tied/{matmul,gemm}_base_out.npy   the base models' logits
  models/peft/tied/shira/        SHiRA r=1 on lm_head and proj (PEFT's random
                                 mask, seed 7; random deltas: the converter only
                                 needs PEFT's layout, indices into nn.Linear's
                                 [out, in] weight)
  models/peft/tied/lora/         LoRA r=4, lora_alpha=6 on lm_head and proj
      adapter_model.safetensors, adapter_config.json
      {matmul,gemm}_merged_out.npy   torch's merged model: the delta added to
                                 the module's weight in place (PEFT's merge adds
                                 to base_layer.weight.data, so with the tie the
                                 embedding changes too).
"""
import json
import os

import numpy as np
import torch
import torch.nn as nn

from gen_peft import random_mask, save_npy, write_safetensors

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tied")
V = D = 16


class TiedLM(nn.Module):
    def __init__(self, pooled):
        super().__init__()
        self.pooled = pooled
        self.embed = nn.Embedding(V, D)
        self.proj = nn.Linear(D, D, bias=False)
        self.lm_head = nn.Linear(D, V)  # with a bias: on 2-D input torch emits Gemm
        self.lm_head.weight = self.embed.weight  # tied, as tie_word_embeddings does

    def forward(self, ids):
        h = torch.tanh(self.proj(self.embed(ids)))
        if self.pooled:
            h = h.mean(dim=1)  # 2-D input: lm_head exported as Gemm(transB=1)
        return self.lm_head(h)


def model(state, pooled):
    m = TiedLM(pooled).eval()
    m.load_state_dict(state)
    assert m.lm_head.weight is m.embed.weight
    return m


def export(m, path, ids):
    torch.onnx.export(m, (ids,), path, input_names=["input_ids"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=14, do_constant_folding=False)
    print(path, os.path.getsize(path), "bytes")


def merged(state, pooled, deltas):
    """The model with every module's delta [out, in] added to its weight."""
    m = model(state, pooled)
    with torch.no_grad():
        for name, d in deltas.items():
            getattr(m, name).weight += d
    return m


def write_adapter(name, sd, config, state, deltas, ids):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "adapter_model.safetensors"), sd)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    for form, pooled in (("matmul", False), ("gemm", True)):
        save_npy(os.path.join(d, form + "_merged_out.npy"), merged(state, pooled, deltas)(ids))


def main():
    os.makedirs(HERE, exist_ok=True)
    torch.manual_seed(0)
    state = TiedLM(False).state_dict()
    g = torch.Generator()
    g.manual_seed(4321)
    ids = torch.randint(0, V, (2, 5), generator=g)
    np.save(os.path.join(HERE, "input.npy"), ids.numpy().astype(np.int64))
    for form, pooled in (("matmul", False), ("gemm", True)):
        m = model(state, pooled)
        export(m, os.path.join(HERE, form + ".onnx"), ids)
        save_npy(os.path.join(HERE, form + "_base_out.npy"), m(ids))

    targets = ["lm_head", "proj"]
    ref = model(state, False)
    g.manual_seed(99)
    sd, deltas = {}, {}
    for n in targets:
        w = getattr(ref, n).weight
        mask = random_mask(getattr(ref, n), 1, 7)
        rows, cols = torch.where(mask)  # row-major, like PEFT's torch.where(mask == 1.0)
        vals = torch.randn(rows.numel(), generator=g) * 0.5
        sd[f"base_model.model.{n}.shira_weight"] = vals
        sd[f"base_model.model.{n}.shira_indices"] = torch.stack([rows, cols]).to(torch.int32)
        deltas[n] = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, w.shape).to_dense()
    shira_cfg = {"base_model_name_or_path": None, "fan_in_fan_out": False, "inference_mode": True,
                 "init_weights": True, "mask_type": "random", "modules_to_save": None,
                 "peft_type": "SHIRA", "r": 1, "random_seed": 7, "revision": None,
                 "target_modules": targets, "task_type": None, "peft_version": "0.17.0"}
    write_adapter("shira", sd, shira_cfg, state, deltas, ids)

    r, alpha = 4, 6
    sd, deltas = {}, {}
    for n in targets:
        A = torch.randn(r, D, generator=g) * 0.4
        B = torch.randn(D, r, generator=g) * 0.4
        sd[f"base_model.model.{n}.lora_A.weight"] = A
        sd[f"base_model.model.{n}.lora_B.weight"] = B
        deltas[n] = (B @ A) * (alpha / r)  # PEFT: get_delta_weight = (B @ A) * scaling
    lora_cfg = {"alpha_pattern": {}, "base_model_name_or_path": None, "bias": "none",
                "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
                "lora_alpha": alpha, "lora_dropout": 0.0, "modules_to_save": None, "peft_type": "LORA",
                "r": r, "rank_pattern": {}, "target_modules": targets, "task_type": None,
                "use_rslora": False, "peft_version": "0.17.0"}
    write_adapter("lora", sd, lora_cfg, state, deltas, ids)


if __name__ == "__main__":
    main()
