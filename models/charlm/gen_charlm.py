#!/usr/bin/python3
"""Train the charlm demo model and its adapters; export them for shira-ort.

A small character-level transformer (GPT-style, pre-LayerNorm, 3 layers,
d=128, context 128, ~0.64 M parameters) is trained on text that Debian
packages ship, then four SHiRA adapters (PEFT random mask, r=1: 1-1.6 % of
each adapted nn.Linear weight) are trained by gradient masking, each on one
clearly different style of text:

  legal     /usr/share/common-licenses/*                    (package base-files)
  bofh      /usr/share/games/fortunes/bofh-excuses           (fortunes-bofh-excuses)
  fortunes  quotations from /usr/share/games/fortunes/*      (fortunes)
  manpages  rendered coreutils/grep/sed/tar/... man pages    (man-db, coreutils, ...)

plus LoRA adapters (r=1, the same parameter count) on the styles named in
LORA_STYLES, for the fusion comparison. Everything is seeded; it runs on
the CPU with one thread (two OpenMP threads were 5x slower on a shared 2-core
machine) in about 16 minutes (973 s for the committed files, on a machine
shared with other jobs).

Outputs (beside this file, unless --out):
  model.onnx                       base model: tokens int64 [B, T] -> logits float32 [B, T, V]
  vocab.json                       {"chars": [...], "unk": i, "context": 128}
  shira/<style>/adapter_model.safetensors + adapter_config.json   (PEFT SHiRA layout)
  lora/<style>/adapter_model.safetensors + adapter_config.json    (PEFT LoRA layout)
  reference.json                   torch logits for a fixed prompt (base and each SHiRA), for Go tests
  losses.json, ../../docs/charlm.md  validation losses: single adapters and fused pairs, SHiRA vs LoRA
                                   (the doc keeps whatever follows its "end of the generated part" marker)

Usage:  apt-get install -y python3-torch python3-onnx libopenblas0-pthread \\
            fortunes fortunes-bofh-excuses
        /usr/bin/python3 models/charlm/gen_charlm.py [--quick] [--doc-only]

safetensors is written by hand (8-byte little-endian header length, JSON
header, raw little-endian data) because the safetensors/peft Python
packages are not available from Debian.
"""

import argparse
import glob
import itertools
import json
import math
import os
import struct
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.stateless import functional_call

HERE = os.path.dirname(os.path.abspath(__file__))

STYLES = ["legal", "bofh", "fortunes", "manpages"]
LORA_STYLES = ["legal", "bofh", "fortunes", "manpages"]
TARGETS = ["qkv", "proj", "fc", "lm_head"]  # PEFT target_modules: every nn.Linear of the model
SEEDS = {"legal": 101, "bofh": 102, "fortunes": 103, "manpages": 104}

CTX = 128
D = 128
LAYERS = 3
HEADS = 4

MAN_PAGES = [
    "ls", "cp", "mv", "rm", "cat", "sort", "uniq", "head", "tail", "wc", "cut", "tr", "date", "chmod",
    "chown", "du", "df", "ln", "mkdir", "touch", "tee", "grep", "sed", "find", "tar", "split", "stat",
    "dd", "od", "install", "env", "nice", "timeout", "paste", "join", "comm", "seq", "printf", "basename",
    "dirname", "readlink", "realpath", "md5sum", "sha256sum", "base64", "shuf", "fold", "fmt", "nl", "pr",
    "xargs", "gzip", "diff", "cmp", "less", "man", "ps", "kill", "mount", "bash",
]
FORTUNE_FILES = ["fortunes", "wisdom", "literature", "people", "humorists", "platitudes", "science",
                 "love", "politics", "work", "education", "miscellaneous", "men-women", "pets"]
DOC_MARKER = "<!-- end of the generated part -->"
STYLE_CAP = 300_000  # characters per style


# ---------------------------------------------------------------- data

def ascii_clean(s):
    s = s.replace("\t", "    ").replace("\r", "")
    repl = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2010": "-", "\u2013": "-",
            "\u2014": "--", "\u2212": "-", "\u00a0": " ", "\u2022": "*", "\u00b7": "*", "\u2026": "..."}
    out = []
    for c in s:
        c = repl.get(c, c)
        if c == "\n" or (" " <= c <= "~"):
            out.append(c)
        elif len(c) > 1:
            out.append(c)
    return "".join(out)


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def fortune_entries(path):
    return [e.strip("\n") for e in read(path).split("\n%\n") if e.strip()]


def load_styles():
    texts = {}
    seen, parts = set(), []
    for p in sorted(glob.glob("/usr/share/common-licenses/*")):
        rp = os.path.realpath(p)
        if rp in seen or not os.path.isfile(rp):
            continue
        seen.add(rp)
        parts.append(read(rp))
    texts["legal"] = "\n\n".join(parts)

    texts["bofh"] = "\n\n".join(fortune_entries("/usr/share/games/fortunes/bofh-excuses")) + "\n"

    parts = []
    for name in FORTUNE_FILES:
        p = "/usr/share/games/fortunes/" + name
        if os.path.isfile(p):
            parts.extend(fortune_entries(p))
    texts["fortunes"] = "\n\n".join(parts)

    parts = []
    env = dict(os.environ, MANWIDTH="72", LANG="C.UTF-8", MAN_KEEP_FORMATTING="0")
    for cmd in MAN_PAGES:
        try:
            r = subprocess.run(["man", "-P", "cat", cmd], capture_output=True, env=env, timeout=30)
            if r.returncode != 0:
                continue
            col = subprocess.run(["col", "-bx"], input=r.stdout, capture_output=True, timeout=30)
            parts.append(col.stdout.decode("utf-8", "replace"))
        except (OSError, subprocess.TimeoutExpired):
            continue
    texts["manpages"] = "\n\n".join(parts)

    for k in texts:
        texts[k] = ascii_clean(texts[k])[:STYLE_CAP]
        if len(texts[k]) < 20_000:
            sys.exit(f"style {k}: only {len(texts[k])} characters of text; are the packages installed?")
    return texts


def make_vocab(texts):
    chars = sorted(set("".join(texts.values())) | set(chr(c) for c in range(32, 127)) | {"\n"})
    return chars


def encode(s, stoi, unk):
    return torch.tensor([stoi.get(c, unk) for c in s], dtype=torch.long)


# ---------------------------------------------------------------- model

class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D)
        self.proj = nn.Linear(D, D)
        self.register_buffer("mask", torch.tril(torch.ones(CTX, CTX, dtype=torch.bool)), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        hd = D // HEADS
        q = q.view(B, T, HEADS, hd).transpose(1, 2)
        k = k.view(B, T, HEADS, hd).transpose(1, 2)
        v = v.view(B, T, HEADS, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, 4 * D)
        self.proj = nn.Linear(4 * D, D)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(D)
        self.attn = Attention()
        self.ln2 = nn.LayerNorm(D)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharLM(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.tok = nn.Embedding(vocab, D)
        self.pos = nn.Parameter(torch.zeros(CTX, D))
        self.blocks = nn.ModuleList([Block() for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, vocab)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, tokens):
        T = tokens.shape[1]
        x = self.tok(tokens) + self.pos[:T]
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def target_linears(model):
    """(module path, nn.Linear) for every PEFT target, in a fixed order."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name.split(".")[-1] in TARGETS:
            out.append((name, m))
    return out


# ---------------------------------------------------------------- adapters (functional: W_eff = W + delta)

class AdaptedForward:
    """Runs the model with W + sum_k alpha_k * delta_k for every target weight (torch.func-style functional call)."""

    def __init__(self, model, adapters):
        self.model, self.adapters = model, adapters

    def __call__(self, x):
        params = {}
        for name, m in target_linears(self.model):
            d = sum(a.delta(name, al) for a, al in self.adapters)
            params[name + ".weight"] = m.weight + d
        return functional_call(self.model, params, (x,))


def peft_random_mask(out_f, in_f, r, seed):
    """Exactly PEFT's shira random_mask: randperm over out*in, first r*(out+in), indices via torch.where."""
    g = torch.Generator()
    g.manual_seed(seed)
    n = r * (out_f + in_f)
    idx = torch.randperm(out_f * in_f, generator=g)[:n]
    mask = torch.zeros(out_f * in_f, dtype=torch.bool)
    mask[idx] = True
    rows, cols = torch.where(mask.view(out_f, in_f))
    return torch.stack([rows, cols]).to(torch.int32)


class Shira:
    def __init__(self, model, r, seed):
        self.r, self.seed = r, seed
        self.idx, self.val, self.shape = {}, {}, {}
        for name, m in target_linears(model):
            o, i = m.weight.shape
            self.idx[name] = peft_random_mask(o, i, r, seed)
            self.val[name] = torch.zeros(self.idx[name].shape[1], requires_grad=True)
            self.shape[name] = (o, i)

    def params(self):
        return list(self.val.values())

    def delta(self, name, scale=1.0):
        o, i = self.shape[name]
        ix = self.idx[name].long()
        return torch.zeros(o, i).index_put((ix[0], ix[1]), self.val[name] * scale)

    def nparams(self):
        return sum(v.numel() for v in self.val.values())


class Lora:
    def __init__(self, model, r, alpha, seed):
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        g = torch.Generator()
        g.manual_seed(seed)
        self.A, self.B = {}, {}
        for name, m in target_linears(model):
            o, i = m.weight.shape
            a = torch.empty(r, i)
            bound = 1.0 / math.sqrt(i)  # PEFT: kaiming_uniform_(a=sqrt(5)) on lora_A
            a.uniform_(-bound, bound, generator=g)
            self.A[name] = a.requires_grad_(True)
            self.B[name] = torch.zeros(o, r, requires_grad=True)

    def params(self):
        return list(self.A.values()) + list(self.B.values())

    def delta(self, name, scale=1.0):
        return (self.B[name] @ self.A[name]) * (self.scale * scale)

    def nparams(self):
        return sum(p.numel() for p in self.params())


def forward_fn(model, adapters):
    """The model's forward with the given (adapter, alpha) list fused in (the plain model when empty)."""
    return AdaptedForward(model, list(adapters)) if adapters else model


# ---------------------------------------------------------------- training / eval

def batches(data, batch, gen):
    while True:
        ix = torch.randint(0, len(data) - CTX - 1, (batch,), generator=gen)
        x = torch.stack([data[i:i + CTX] for i in ix])
        y = torch.stack([data[i + 1:i + CTX + 1] for i in ix])
        yield x, y


def mixed_batches(datas, batch, gen):
    its = [batches(d, batch // len(datas), gen) for d in datas]
    while True:
        xs, ys = zip(*(next(it) for it in its))
        yield torch.cat(xs), torch.cat(ys)


def cosine_lr(step, total, peak, warm):
    if step < warm:
        return peak * (step + 1) / warm
    p = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train(model, params, it, steps, lr, label, adapters=None, wd=0.0):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=(0.9, 0.98))
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, lr, max(1, steps // 20))
        x, y = next(it)
        logits = forward_fn(model, adapters or [])(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  {label} step {step:4d}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)


@torch.no_grad()
def val_loss(model, data, adapters=(), n=48):
    starts = torch.linspace(0, len(data) - CTX - 2, n).long()
    x = torch.stack([data[i:i + CTX] for i in starts])
    y = torch.stack([data[i + 1:i + CTX + 1] for i in starts])
    logits = forward_fn(model, adapters)(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()


@torch.no_grad()
def sample(model, stoi, itos, prompt, n, adapters=(), temp=0.8, seed=1):
    g = torch.Generator()
    g.manual_seed(seed)
    toks = [stoi.get(c, 0) for c in prompt]
    fwd = forward_fn(model, adapters)
    for _ in range(n):
        x = torch.tensor([toks[-CTX:]])
        p = F.softmax(fwd(x)[0, -1] / temp, dim=-1)
        toks.append(torch.multinomial(p, 1, generator=g).item())
    return "".join(itos[t] for t in toks)


# ---------------------------------------------------------------- files

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        dt = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def save_shira(dirname, a, style):
    os.makedirs(dirname, exist_ok=True)
    ts = {}
    for name in a.idx:
        ts[f"base_model.model.{name}.shira_weight"] = a.val[name].detach().float()
        ts[f"base_model.model.{name}.shira_indices"] = a.idx[name].to(torch.int32)
    write_safetensors(os.path.join(dirname, "adapter_model.safetensors"), ts)
    cfg = {"base_model_name_or_path": "shira-ort/charlm", "fan_in_fan_out": False, "inference_mode": True,
           "init_weights": True, "mask_type": "random", "modules_to_save": None, "peft_type": "SHIRA",
           "r": a.r, "random_seed": a.seed, "revision": None, "target_modules": TARGETS, "task_type": None}
    with open(os.path.join(dirname, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def save_lora(dirname, a):
    os.makedirs(dirname, exist_ok=True)
    ts = {}
    for name in a.A:
        ts[f"base_model.model.{name}.lora_A.weight"] = a.A[name].detach().float()
        ts[f"base_model.model.{name}.lora_B.weight"] = a.B[name].detach().float()
    write_safetensors(os.path.join(dirname, "adapter_model.safetensors"), ts)
    cfg = {"alpha_pattern": {}, "base_model_name_or_path": "shira-ort/charlm", "bias": "none",
           "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "lora_alpha": a.alpha,
           "lora_dropout": 0.0, "modules_to_save": None, "peft_type": "LORA", "r": a.r, "rank_pattern": {},
           "revision": None, "target_modules": TARGETS, "task_type": None, "use_rslora": False}
    with open(os.path.join(dirname, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def export_onnx(model, path):
    model.eval()
    x = torch.zeros(1, 16, dtype=torch.long)
    torch.onnx.export(model, (x,), path, input_names=["tokens"], output_names=["logits"],
                      dynamic_axes={"tokens": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
                      opset_version=14, do_constant_folding=True)
    import onnx
    m = onnx.load(path)
    onnx.checker.check_model(m)
    m.doc_string = "shira-ort charlm: character-level transformer, see models/charlm/gen_charlm.py"
    onnx.save(m, path)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--docs", default=os.path.join(HERE, "..", "..", "docs", "charlm.md"))
    ap.add_argument("--quick", action="store_true", help="a few steps of everything (smoke test)")
    ap.add_argument("--base-steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--doc-only", action="store_true", help="only rewrite the docs from OUT/losses.json")
    ap.add_argument("--base-checkpoint", default="",
                    help="reuse the base weights saved in this file if it exists, else save them there")
    ap.add_argument("--adapter-steps", type=int, default=100)
    args = ap.parse_args()
    if args.doc_only:
        with open(os.path.join(args.out, "losses.json")) as f:
            write_doc(args.docs, json.load(f))
        return
    # One thread by default: on a shared 2-core machine two OpenMP threads were 5x slower (spinning).
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quick:
        args.base_steps, args.adapter_steps = 4, 2
    t_start = time.time()

    texts = load_styles()
    chars = make_vocab(texts)
    stoi = {c: i for i, c in enumerate(chars)}
    unk = stoi["?"]
    train_d, val_d = {}, {}
    for k in STYLES:
        d = encode(texts[k], stoi, unk)
        cut = int(len(d) * 0.9)
        train_d[k], val_d[k] = d[:cut], d[cut:]
        print(f"style {k:9s} {len(d):7d} chars (train {cut}, val {len(d) - cut})", flush=True)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vocab.json"), "w") as f:
        json.dump({"chars": chars, "unk": unk, "context": CTX}, f, indent=1)
        f.write("\n")

    model = CharLM(len(chars))
    print(f"model: {sum(p.numel() for p in model.parameters())} parameters, vocab {len(chars)}", flush=True)
    gen = torch.Generator()
    gen.manual_seed(1)
    if args.base_checkpoint and os.path.exists(args.base_checkpoint):
        model.load_state_dict(torch.load(args.base_checkpoint))
        print(f"base weights from {args.base_checkpoint}", flush=True)
    else:
        model.train()
        train(model, list(model.parameters()), mixed_batches([train_d[k] for k in STYLES], 32, gen),
              args.base_steps, 3e-3, "base", wd=0.01)
        if args.base_checkpoint:
            torch.save(model.state_dict(), args.base_checkpoint)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    export_onnx(model, os.path.join(args.out, "model.onnx"))

    shiras, loras = {}, {}
    for k in STYLES:
        a = Shira(model, r=1, seed=SEEDS[k])
        g = torch.Generator()
        g.manual_seed(SEEDS[k])
        train(model, a.params(), batches(train_d[k], 16, g), args.adapter_steps, 2e-2, f"shira/{k}", adapters=[(a, 1.0)])
        save_shira(os.path.join(args.out, "shira", k), a, k)
        shiras[k] = a
    for k in LORA_STYLES:
        a = Lora(model, r=1, alpha=2, seed=SEEDS[k])
        g = torch.Generator()
        g.manual_seed(SEEDS[k])
        train(model, a.params(), batches(train_d[k], 16, g), args.adapter_steps, 1e-2, f"lora/{k}", adapters=[(a, 1.0)])
        save_lora(os.path.join(args.out, "lora", k), a)
        loras[k] = a
    print(f"params per adapter: shira {shiras[STYLES[0]].nparams()}, lora {loras[LORA_STYLES[0]].nparams()}")

    # reference logits for Go tests
    prompt = "The "
    x = torch.tensor([[stoi[c] for c in prompt]])
    ref = {"prompt": prompt, "base": model(x)[0, -1].tolist()}
    for k in STYLES:
        ref[k] = forward_fn(model, [(shiras[k], 1.0)])(x)[0, -1].tolist()
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(ref, f)
        f.write("\n")

    # losses
    L = {"base": {k: val_loss(model, val_d[k]) for k in STYLES}, "shira": {}, "lora": {},
         "shira_fused": {}, "lora_fused": {}}
    for k in STYLES:
        L["shira"][k] = {s: val_loss(model, val_d[s], [(shiras[k], 1.0)]) for s in STYLES}
    for k in LORA_STYLES:
        L["lora"][k] = {s: val_loss(model, val_d[s], [(loras[k], 1.0)]) for s in STYLES}
    for a, b in itertools.combinations(STYLES, 2):
        L["shira_fused"][f"{a}+{b}"] = {s: val_loss(model, val_d[s], [(shiras[a], 1.0), (shiras[b], 1.0)]) for s in (a, b)}
    for a, b in itertools.combinations(LORA_STYLES, 2):
        L["lora_fused"][f"{a}+{b}"] = {s: val_loss(model, val_d[s], [(loras[a], 1.0), (loras[b], 1.0)]) for s in (a, b)}
    samples = {"base": sample(model, stoi, chars, "\n", 160)}
    for k in STYLES:
        samples[k] = sample(model, stoi, chars, "\n", 160, [(shiras[k], 1.0)])
    for k, v in samples.items():
        print(f"--- sample {k}:\n{v}\n", flush=True)
    L["meta"] = {"base_steps": args.base_steps, "adapter_steps": args.adapter_steps, "vocab": len(chars),
                 "params": sum(p.numel() for p in model.parameters()),
                 "shira_params": shiras[STYLES[0]].nparams(), "lora_params": loras[LORA_STYLES[0]].nparams(),
                 "chars": {k: len(texts[k]) for k in STYLES}, "seconds": round(time.time() - t_start),
                 "threads": torch.get_num_threads(), "samples": samples}
    with open(os.path.join(args.out, "losses.json"), "w") as f:
        json.dump(L, f, indent=1, sort_keys=True)
        f.write("\n")
    write_doc(args.docs, L)
    print(f"done in {time.time() - t_start:.0f}s", flush=True)


def write_doc(path, L):
    """docs/charlm.md from losses.json's contents."""
    M = L["meta"]
    f = lambda v: f"{v:.3f}"
    lines = []
    w = lines.append
    w("# charlm: the demo text generator and the concept-loss measurement")
    w("")
    w("The part up to the marker below is written by `models/charlm/gen_charlm.py` (fixed seeds) from")
    w("`models/charlm/losses.json`; `--doc-only` rewrites it without training.")
    w("")
    w(f"Model: character-level GPT-style transformer, {LAYERS} layers, d={D}, {HEADS} heads, context {CTX},")
    w(f"{M['params']} parameters, vocabulary {M['vocab']} characters; trained {M['base_steps']} steps "
      f"(batch 32 x {CTX}, AdamW, cosine schedule)")
    w("on an equal mix of four styles of text shipped by Debian packages (last 10 % of each held out):")
    w("")
    w("| style | source | characters |")
    w("|---|---|---|")
    src = {"legal": "/usr/share/common-licenses/* (base-files)",
           "bofh": "fortunes-bofh-excuses",
           "fortunes": "quotations from the fortunes package",
           "manpages": "rendered man pages of coreutils, grep, sed, tar, ..."}
    for k in STYLES:
        w(f"| {k} | {src[k]} | {M['chars'][k]} |")
    w("")
    w(f"Adapters, one per style, on every nn.Linear ({', '.join(TARGETS)}; 13 weights), "
      f"{M['adapter_steps']} steps (batch 16) each:")
    w(f"* SHiRA: PEFT random mask, r=1, i.e. r·(in+out) trained entries per weight "
      f"({M['shira_params']} values, 1.0-1.8 % of each weight), delta semantics, fused with α=1.")
    w(f"* LoRA: r=1, lora_alpha=2 ({M['lora_params']} values: the same parameter count).")
    w("")
    w("Validation loss: cross-entropy in nats per character on 48 windows of 128 characters of each style's")
    w("held-out text; lower is better.")
    w("")
    w("## Single adapters")
    w("")
    w("| adapter | " + " | ".join(STYLES) + " |")
    w("|---|" + "---|" * len(STYLES))
    w("| base | " + " | ".join(f(L["base"][s]) for s in STYLES) + " |")
    for kind in ("shira", "lora"):
        for k in L[kind]:
            w(f"| {kind} {k} | " + " | ".join(("**" + f(L[kind][k][s]) + "**") if s == k else f(L[kind][k][s])
                                            for s in STYLES) + " |")
    w("")
    w("## Fused pairs: concept loss, SHiRA vs LoRA")
    w("")
    w("Each pair A+B is fused with α=1 each (W + δA + δB). For each of the two styles, *alone* is the loss")
    w("of that style's own adapter, *fused* the loss of the pair on that style, and *concept loss* =")
    w("fused − alone: how much of what the adapter learned the fusion loses (0 = nothing lost).")
    w("")
    w("| pair | style | SHiRA alone | SHiRA fused | SHiRA concept loss | LoRA alone | LoRA fused | LoRA concept loss |")
    w("|---|---|---|---|---|---|---|---|")
    cl = {"shira": [], "lora": []}
    wins = total = 0
    for pair in L["shira_fused"]:
        if pair not in L["lora_fused"]:
            continue
        for s in pair.split("+"):
            sa, sf = L["shira"][s][s], L["shira_fused"][pair][s]
            la, lf = L["lora"][s][s], L["lora_fused"][pair][s]
            cl["shira"].append(sf - sa)
            cl["lora"].append(lf - la)
            total += 1
            wins += (sf - sa) < (lf - la)
            w(f"| {pair} | {s} | {f(sa)} | {f(sf)} | {f(sf - sa)} | {f(la)} | {f(lf)} | {f(lf - la)} |")
    w("")
    if total:
        ms = sum(cl["shira"]) / total
        ml = sum(cl["lora"]) / total
        w(f"Mean concept loss: SHiRA {f(ms)}, LoRA {f(ml)} nats/char; SHiRA loses less in {wins} of {total} cases.")
        w("")
    w(f"Generation took {M['seconds']} s on the project machine ({M['threads']} thread, shared with other jobs).")
    w("")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = "\n".join(lines)
    if os.path.exists(path):  # keep the hand-written part after the marker
        old = read(path)
        if DOC_MARKER in old:
            text += old[old.index(DOC_MARKER):]
    with open(path, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
