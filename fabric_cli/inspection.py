"""`fabric inspect`: what a checkpoint holds, and how the gradient flowed while it was trained.

Reads only the safetensors header (config, step, tensor shapes), never the tensors, so it is
instant even for a large model; the gradient-flow table comes from the run's metrics.jsonl.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors import safe_open

from fabric_cli.checkpoint import read_info
from fabric_cli.metrics import EXPLODING, VANISHING, gradient_flow, read_metrics

COMPONENTS = ("embeddings", "attention", "feed_forward", "norms")


def component(name: str) -> str:
    """Which part of the GPT a parameter belongs to, from its GPT-2 style name."""
    if ".wte." in name or ".wpe." in name:
        return "embeddings"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "feed_forward"
    if ".ln_" in name:
        return "norms"
    return "other"


def parameter_counts(path: str | os.PathLike) -> dict[str, int]:
    """Parameters per component (the LM head is tied to the token embedding: counted once)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            n = 1
            for d in f.get_slice(name).get_shape():
                n *= d
            key = component(name)
            counts[key] = counts.get(key, 0) + n
    counts["total"] = sum(counts.values())
    return counts


def inspect_checkpoint(path: str | os.PathLike, metrics: str | os.PathLike | None = None) -> dict:
    """A report on one weights file.

    Args:
        path: a checkpoint (latest or a snapshot).
        metrics: the metrics.jsonl to read gradient norms from; by default the one of the run
            directory the checkpoint lives in (`RUN/checkpoints/x.safetensors` -> `RUN/metrics.jsonl`).
    Returns:
        a dict with config, step, tokens_seen, losses, parameters and gradient_flow (None when
        there is no metrics file with gradient norms).
    """
    path = Path(path)
    info = read_info(path)
    metrics_path = Path(metrics) if metrics else path.parent.parent / "metrics.jsonl"
    records = [r for r in read_metrics(metrics_path) if r.get("step", 0) <= info.step]
    evals = [r for r in records if r.get("kind") == "eval"]
    return {
        "checkpoint": str(path),
        "config": info.config.to_dict(),
        "step": info.step,
        "tokens_seen": info.tokens_seen,
        "tokenizer_sha256": info.tokenizer_sha256,
        "losses": {
            "train_loss": info.extra.get("train_loss"),
            "val_loss": info.extra.get("val_loss", evals[-1]["val_loss"] if evals else None),
        },
        "parameters": parameter_counts(path),
        "metrics": str(metrics_path) if records else None,
        "gradient_flow": gradient_flow(records),
    }


def format_report(report: dict) -> str:
    """The report as a few aligned lines and the layers-by-steps gradient table."""
    c = report["config"]
    losses = report["losses"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        f"checkpoint    {report['checkpoint']}",
        f"model         {c['n_layer']} layers x {c['n_head']} heads, width {c['n_embd']} (head {c['n_embd'] // c['n_head']}), "
        f"feed-forward {c['n_ff']}, context {c['block_size']}, vocab {c['vocab_size']}, dropout {c['dropout']}",
        f"trained       step {report['step']:,}, {report['tokens_seen']:,} tokens seen",
        f"last loss     train {fmt(losses['train_loss'])}, val {fmt(losses['val_loss'])}",
        f"tokenizer     sha256 {(report['tokenizer_sha256'] or '-')[:16]}",
        "parameters",
    ]
    for key, n in report["parameters"].items():
        if n or key in COMPONENTS:
            lines.append(f"  {key.replace('_', '-'):<13}{n:>12,}")
    flow = report["gradient_flow"]
    if flow is None:
        lines.append("gradient flow: no gradient norms logged (metrics.jsonl not found beside the checkpoint)")
        return "\n".join(lines)
    lines.append(f"gradient flow (grad norm per layer before clipping, from {report['metrics']})")
    lines.append("  layer " + "".join(f"{'step ' + str(s):>14}" for s in flow["steps"]))
    for i, label in enumerate(flow["layers"]):
        lines.append(f"  {label:<6}" + "".join(f"{col[i]:>14.3e}" for col in flow["norms"]))
    if flow["flags"]:
        for fl in flow["flags"]:
            lines.append(f"  ! layer {fl['layer']} at step {fl['step']}: {fl['flag']} ({fl['norm']:.2e})")
    else:
        lines.append(f"  no layer below {VANISHING:g}x or above {EXPLODING:g}x the median norm: gradients flow")
    return "\n".join(lines)
