"""Direct logit attribution: what each head writes straight into the model's preference.

The preference of an item (ablate.py) is log p(continuation 0) - log p(continuation 1) at the
pronoun's position: the difference of two logits, d . ln_f(x), with d = wte[c0] - wte[c1] (the LM
head is the tied embedding) and x the residual stream there. x is the sum of what every component
wrote into it: the embeddings, each head (its output z times its slice of c_proj), each attention's
c_proj bias, each feed-forward. Hold the final norm's scale at its value on x (1 / sigma: the usual
approximation, TransformerLens's `apply_ln_to_stack`, exact for the sum) and the norm is linear,
so the preference splits into one term per component, plus the norm's bias:

    pref = sum over components c of DLA_c + ln_f.bias . d,    DLA_c = ((c - mean(c)) / sigma) . (ln_f.weight * d)

the components being each head, each layer's feed-forward, the embeddings (token and position) and
the attention's c_proj biases. A head's term includes what its value bias carries (TransformerLens
by default moves that into the output bias). A direct effect is not the whole effect: what a head
writes may be read and rewritten by later layers, and --ablate measures the whole. A head with a
large direct effect writes the answer; one that carries the referent for a later layer to use may
have almost none.
"""

from __future__ import annotations

import torch

from fabric_cli.config import Head
from fabric_cli.model import GPT, Probe
from fabric_cli.probe.ablate import drop_interval
from fabric_cli.probe.score import Batch

TOP = 5  # heads listed by the size of their mean direct effect


@torch.inference_mode()
def direct_effects(model: GPT, batch: Batch, ablate: dict | None = None) -> dict[str, torch.Tensor]:
    """One batch's terms, each (B, ...): heads (B, L, nh), feed_forward (B, L), embeddings, attention_biases
    and norm_bias (B,), and the preference itself (B,). Every row must have continuations whose first
    tokens differ (batch.conts). `ablate` (Probe's) removes heads first: what the rest then write."""
    tr, cfg = model.transformer, model.config
    L, nh, hs, C = cfg.n_layer, cfg.n_head, cfg.head_size, cfg.n_embd
    seen: dict[str, torch.Tensor] = {}
    hooks = [tr.ln_f.register_forward_hook(lambda module, args, out: seen.__setitem__("x", args[0]))]
    for i, block in enumerate(tr.h):
        hooks.append(block.mlp.register_forward_hook(lambda module, args, out, i=i: seen.__setitem__(f"mlp{i}", out)))
    try:
        probe = Probe(capture_attention=False, capture_head_outputs=True, ablate=dict(ablate or {}))
        logits, _ = model(batch.idx, probe=probe, at=batch.pron)  # (B, 1, vocab): the pronoun's position
    finally:
        for hook in hooks:
            hook.remove()
    rows = torch.arange(batch.idx.size(0), device=batch.idx.device)
    x = seen["x"][:, 0].float()  # (B, C): the residual stream at the pronoun, before the final norm
    z = torch.stack([ho[rows, batch.pron] for ho in probe.head_outputs], dim=1).float()  # (B, L, nh, hs)
    w_o = torch.stack([block.attn.c_proj.weight for block in tr.h]).float().view(L, C, nh, hs)  # (L, C, nh, hs)
    writes = {
        "heads": torch.einsum("blnd,lcnd->blnc", z, w_o),  # (B, L, nh, C): what each head adds to the residual
        "feed_forward": torch.stack([seen[f"mlp{i}"][rows, batch.pron] for i in range(L)], dim=1).float(),  # (B, L, C)
        "embeddings": (tr.wte.weight[batch.idx[rows, batch.pron]] + tr.wpe.weight[batch.pron]).float(),  # (B, C)
        "attention_biases": sum((block.attn.c_proj.bias.float() for block in tr.h if block.attn.c_proj.bias is not None),
                                torch.zeros(C, device=x.device)).expand_as(x),  # (B, C)
    }
    d = (tr.wte.weight[batch.conts[:, 0]] - tr.wte.weight[batch.conts[:, 1]]).float()  # (B, C)
    read = d * tr.ln_f.weight.float()  # (B, C): the direction the final norm's output is read along
    sigma = (x.var(-1, unbiased=False) + tr.ln_f.eps).sqrt()  # (B,): the norm's scale, held

    def direct(v: torch.Tensor) -> torch.Tensor:  # (B, ..., C) -> (B, ...)
        extra = [1] * (v.dim() - 2)
        return ((v - v.mean(-1, keepdim=True)) * read.view(-1, *extra, C)).sum(-1) / sigma.view(-1, *extra)

    terms = {name: direct(v) for name, v in writes.items()}
    terms["norm_bias"] = (tr.ln_f.bias.float() * d).sum(-1) if tr.ln_f.bias is not None else torch.zeros_like(sigma)
    logp = logits[:, 0].float().log_softmax(-1)  # (B, vocab)
    pair = logp.gather(1, batch.conts)  # (B, 2)
    terms["preference"] = pair[:, 0] - pair[:, 1]
    return terms


def attribution_study(model: GPT, batches: list[Batch], ablate: dict | None = None) -> dict:
    """Every component's direct effect on the preference, as means over the items: each head with a 95%
    interval (the largest TOP listed) and as a layer-by-head grid, each layer's feed-forward, the
    embeddings, the attention biases and the final norm's bias; they sum to the preference's mean.
    `sum_error`: the largest gap between the terms' sum and the preference on one item: rounding alone,
    unless the model's blocks hold more than this module knows of (tests hold it). With `ablate` (as
    Probe takes it), the same of the model with those heads removed: where what is left is written.

    Example (where the answer goes when two heads are zeroed; the README's figures):
        >>> attribution_study(model, batches, ablate={Head(0, 1): None, Head(0, 4): None})  # doctest: +SKIP
    """
    parts = [direct_effects(model, b, ablate) for b in batches]
    if not parts:
        return {"n": 0}
    t = {k: torch.cat([p[k].cpu().double() for p in parts]) for k in parts[0]}
    heads = t["heads"]  # (N, L, nh)
    n, L, nh = heads.shape
    total = heads.sum((1, 2)) + t["feed_forward"].sum(1) + sum(t[k] for k in ("embeddings", "attention_biases", "norm_bias"))
    zeros = torch.zeros(n, dtype=torch.float64)
    mean = lambda v: round(float(v.mean()), 6)  # noqa: E731
    ranked = sorted((Head(a, h) for a in range(L) for h in range(nh)), key=lambda h: -abs(float(heads[:, h.layer, h.head].mean())))
    return {
        "n": n,
        "preference": mean(t["preference"]),
        "grid": [[mean(heads[:, a, h]) for h in range(nh)] for a in range(L)],
        "top": [{"head": str(h), "mean": mean(heads[:, h.layer, h.head]),
                 "ci95": drop_interval(heads[:, h.layer, h.head], zeros)} for h in ranked[:TOP]],
        "heads_total": mean(heads.sum((1, 2))),
        "feed_forward": [mean(t["feed_forward"][:, a]) for a in range(L)],
        "embeddings": mean(t["embeddings"]),
        "attention_biases": mean(t["attention_biases"]),
        "norm_bias": mean(t["norm_bias"]),
        "sum_error": float((total - t["preference"]).abs().max()),
    }
