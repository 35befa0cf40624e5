"""`fabric train` against an independent nanoGPT-style reference, step for step.

The reference below shares no code with fabric_cli: its own GPT (nanoGPT's model.py, attention
written out, an LM head tied to wte), its own AdamW, clipping and nanoGPT's get_lr. It starts from
the weights fabric's train() built and is fed the batches train() drew (both captured by wrapping),
then the two are compared: learning rate, loss and gradient norm at every step, and the weights at
the end. Both run in float64, so rounding cannot hide a difference in the recipe; fabric takes its
cross-entropy on fp32 logits, and so does the reference. A change to the schedule, the weight-decay
groups, AdamW's settings, clipping or how micro-steps are averaged moves the weights by 1e-3 or more;
agreement is ~1e-8.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fabric_cli.train as fabric_train
from fabric_cli.config import TrainConfig
from fabric_cli.data import TokenData
from fabric_cli.metrics import read_metrics
from fabric_cli.rundir import RunPaths
from test_train import write_tokens

STEPS, LR, MIN_LR, WARMUP, DECAY, CLIP = 12, 1e-2, 1e-3, 3, 0.1, 1.0


class Attention(nn.Module):
    def __init__(self, C: int, nh: int):
        super().__init__()
        self.c_attn, self.c_proj, self.nh = nn.Linear(C, 3 * C), nn.Linear(C, C), nh

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.nh)  # (B, nh, T, T)
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).tril().logical_not(), float("-inf")).softmax(-1)
        return self.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, C: int, nh: int):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(C), Attention(C, nh), nn.LayerNorm(C)
        self.mlp = nn.Sequential()
        self.mlp.c_fc, self.mlp.gelu, self.mlp.c_proj = nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ReferenceGPT(nn.Module):
    def __init__(self, V: int, T: int, L: int, nh: int, C: int):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(wte=nn.Embedding(V, C), wpe=nn.Embedding(T, C),
                                              h=nn.ModuleList([Block(C, nh) for _ in range(L)]), ln_f=nn.LayerNorm(C)))

    def forward(self, idx, targets):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.size(1)))
        for block in self.transformer.h:
            x = block(x)
        logits = self.transformer.ln_f(x) @ self.transformer.wte.weight.t()  # the tied LM head
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


def get_lr(it: int) -> float:  # nanoGPT's train.py, lr_decay_iters = the last step
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (STEPS - 1 - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def reference_run(init: dict, config, batches: dict) -> tuple[list[dict], dict]:
    """Train from `init` on the captured batches: per step lr, mean micro-step loss, gradient norm."""
    model = ReferenceGPT(config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd).double()
    model.load_state_dict(init)
    params = dict(model.named_parameters())
    decayed = {n for n in params if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))}  # Linear matrices
    moments = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in params.items()}
    log = []
    for it in range(STEPS):
        lr, micro = get_lr(it), batches[it]
        losses = []
        for x, y in micro:
            loss = model(x, y)
            (loss / len(micro)).backward()
            losses.append(loss.item())
        norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params.values()))
        scale = min(1.0, CLIP / (norm + 1e-6))
        with torch.no_grad():
            for n, p in params.items():
                g, (m, v) = p.grad * scale, moments[n]
                if n in decayed:
                    p.mul_(1 - lr * DECAY)
                m.mul_(0.9).add_(g, alpha=0.1)
                v.mul_(0.95).addcmul_(g, g, value=0.05)
                denom = (v / (1 - 0.95 ** (it + 1))).sqrt().add_(1e-8)
                p.addcdiv_(m, denom, value=-lr / (1 - 0.9 ** (it + 1)))
                p.grad = None
        log.append({"lr": lr, "loss": sum(losses) / len(losses), "grad_norm": norm})
    return log, {n: p.detach() for n, p in params.items()}


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_training_matches_an_independent_nanogpt_reference(tmp_path, monkeypatch, grad_accum):
    torch.manual_seed(0)
    paths = RunPaths(tmp_path / "run")
    write_tokens(paths.tokens)
    captured: dict = {"batches": {}}
    build = fabric_train.build_model

    def build_in_float64(config, seed):
        model = build(config, seed).double()
        captured["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        captured["model"] = model
        return model

    draw = TokenData.batch

    def recording_batch(self, split, step, micro, *args, **kwargs):
        x, y = draw(self, split, step, micro, *args, **kwargs)
        if split == "train" and step < STEPS:
            captured["batches"].setdefault(step, {})[micro] = (x.clone(), y.clone())
        return x, y

    monkeypatch.setattr(fabric_train, "build_model", build_in_float64)
    monkeypatch.setattr(TokenData, "batch", recording_batch)
    cfg = TrainConfig(preset="tiny", steps=STEPS, batch_size=4, grad_accum=grad_accum, lr=LR, min_lr=MIN_LR,
                      warmup=WARMUP, weight_decay=DECAY, grad_clip=CLIP, dropout=0.0, log_interval=1,
                      eval_interval=STEPS, eval_batches=1, seed=3, device="cpu")
    fabric_train.train(paths, cfg, progress=False)
    model = captured["model"]

    batches = {s: [m[i] for i in sorted(m)] for s, m in captured["batches"].items()}
    assert [len(batches[s]) for s in range(STEPS)] == [grad_accum] * STEPS
    log, weights = reference_run(captured["init"], model.config, batches)

    fabric_log = [r for r in read_metrics(paths.metrics) if r["kind"] == "train"]
    assert [r["step"] for r in fabric_log] == list(range(1, STEPS + 1))
    for ours, ref in zip(fabric_log, log):
        assert ours["lr"] == pytest.approx(ref["lr"], rel=1e-12)
        assert ours["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert ours["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-6)
    assert any(r["grad_norm"] > CLIP for r in log)  # so clipping was exercised
    C = model.config.n_embd
    for name, p in model.named_parameters():
        ours, ref = p.detach(), weights[name]
        if name.endswith("attn.c_attn.bias"):
            # the key bias's gradient is exactly zero (softmax ignores a constant added to every
            # score); its rounding noise becomes Adam steps on either side: compare the rest
            ours, ref = torch.cat([ours[:C], ours[2 * C:]]), torch.cat([ref[:C], ref[2 * C:]])
        assert torch.allclose(ours, ref, rtol=0, atol=1e-7), f"{name}: max diff {(ours - ref).abs().max():.2e}"
    assert (weights["transformer.wte.weight"] - captured["init"]["transformer.wte.weight"]).abs().max() > 1e-3  # they moved
