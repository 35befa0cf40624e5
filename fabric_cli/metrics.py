"""metrics.jsonl (one JSON object per logged step) and the per-layer gradient norms it records.

Records: {"kind": "train", "step", "loss", "lr", "tokens_per_s", "tokens_seen", "grad_norm",
"grad_norm_layers"} and {"kind": "eval", "step", "val_loss", "train_loss"}. `grad_norm_layers`
has one entry for the embeddings, then one per transformer block (LAYER_LABELS below).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import torch

from fabric_cli.files import write_text_atomic

VANISHING = 1e-3  # a layer's grad norm below this fraction of the median is flagged
EXPLODING = 100.0  # and above this multiple


class MetricsLog:
    """Appends records to metrics.jsonl; a no-op on ranks other than 0."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def keep_until(self, step: int) -> None:
        """Drop records after `step`: a resumed run redoes those steps and logs them again."""
        if self.enabled and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Every well-formed record; a line cut short by a kill, or garbled, is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and _well_formed(rec):
            records.append(rec)
    return records


def _well_formed(rec: dict) -> bool:
    """The fields fabric reads back have the types it wrote (a hand edit may say "step": "x")."""
    number = lambda v: type(v) in (int, float)  # noqa: E731 (bool is not a number here)
    layers = rec.get("grad_norm_layers", [])
    return (type(rec.get("step", 0)) is int and isinstance(rec.get("kind", ""), str)
            and all(number(rec[k]) for k in ("loss", "train_loss", "val_loss", "lr", "tokens_per_s", "grad_norm") if k in rec)
            and isinstance(layers, list) and all(number(v) for v in layers))


def layer_labels(n_layer: int) -> list[str]:
    """Names of `grad_norm_layers`' entries. The first holds wte and wpe; wte is also the LM head
    (tied), so its gradient comes from the top of the network as well as the bottom: "emb+head"."""
    return ["emb+head"] + [str(i) for i in range(n_layer)]


class LayerGroups:
    """Which entry of `grad_norm_layers` each parameter belongs to: embeddings, then each block.

    The final LayerNorm belongs to no block; it counts in the total norm only. A frozen parameter
    (requires_grad False) gets no gradient and is left out, as clip_grad_norm_ leaves it out.
    """

    def __init__(self, model: torch.nn.Module, n_layer: int):
        self.params, index = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            parts = name.split(".")
            if parts[1] in ("wte", "wpe"):
                group = 0
            elif parts[1] == "h":
                group = 1 + int(parts[2])
            else:
                group = n_layer + 1  # ln_f: dropped below
            self.params.append(p)
            index.append(group)
        if not self.params:
            raise ValueError("every parameter is frozen (requires_grad False): there is nothing to train")
        self.n = n_layer + 1
        # made where the parameters are: copying it there at each log step would make the host wait
        # for the GPU (a pageable host-to-device copy synchronises the stream)
        self.index = torch.tensor(index, device=self.params[0].device)

    def norms(self, grads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(total norm, per-group norms (n,)) as tensors: no host sync here."""
        # one fused kernel for every parameter's norm (what clip_grad_norm_ uses inside)
        per_param = torch.stack(torch._foreach_norm(grads)).float()  # (P,)
        sq = per_param.square()
        groups = torch.zeros(self.n + 1, device=sq.device).index_add_(0, self.index, sq)
        return sq.sum().sqrt(), groups[: self.n].sqrt()


def gradient_flow(records: list[dict], n_points: int = 3) -> dict | None:
    """Per-layer grad norms at a few logged steps (first, middle, last) with flagged layers.

    Example:
        >>> recs = [{"kind": "train", "step": s, "grad_norm_layers": [1.0, 1.0, 1e-6]} for s in (1, 2, 3)]
        >>> gradient_flow(recs)["flags"][0]["flag"]
        'vanishing'
        >>> gradient_flow([{**r, "grad_norm_layers": [1.0, 0.0, 1.0]} for r in recs])["flags"][0]["flag"]
        'frozen'
        >>> gradient_flow([{**r, "grad_norm_layers": [1.0, float("nan"), 1.0]} for r in recs])["flags"][0]["flag"]
        'not finite'
    """
    train = [r for r in records if r.get("kind") == "train" and r.get("grad_norm_layers")]
    if not train:
        return None
    picks = sorted({0, len(train) // 2, len(train) - 1})[:n_points]
    steps, columns, flags = [], [], []
    labels = layer_labels(len(train[-1]["grad_norm_layers"]) - 1)
    for i in picks:
        rec = train[i]
        norms = rec["grad_norm_layers"]
        steps.append(rec["step"])
        columns.append(norms)
        finite = [v for v in norms if math.isfinite(v) and v >= 0]
        med = statistics.median(finite) if finite else 0.0
        for label, value in zip(labels, norms):
            if not math.isfinite(value) or value < 0:  # a NaN or inf gradient (the run diverged), or not a norm at all
                flags.append({"step": rec["step"], "layer": label, "norm": value,
                              "flag": "not a norm" if value < 0 else "not finite"})
            elif value == 0:  # no gradient at all: a frozen block (fine-tuning), not a signal that faded
                flags.append({"step": rec["step"], "layer": label, "norm": value, "flag": "frozen"})
            elif med > 0 and value < VANISHING * med:
                flags.append({"step": rec["step"], "layer": label, "norm": value, "flag": "vanishing"})
            elif med > 0 and value > EXPLODING * med:
                flags.append({"step": rec["step"], "layer": label, "norm": value, "flag": "exploding"})
    return {"layers": labels, "steps": steps, "norms": columns, "flags": flags}
