"""`fabric inspect`: what a checkpoint holds, and how the gradient flowed while it was trained.

Reads the safetensors header (config, step, tensor shapes), then each tensor once, one at a time,
for NaN or infinite values (what generate and probe refuse to load): a fraction of a second for
GPT-2's 124M parameters. The gradient-flow table comes from the run's metrics.jsonl.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from fabric_cli.checkpoint import check_config, nonfinite_in, read_info, resolve_checkpoint, tensor_shapes
from fabric_cli.errors import InputError
from fabric_cli.metrics import EXPLODING, VANISHING, gradient_flow, read_metrics
from fabric_cli.rundir import RunPaths

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


def parameter_counts(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Parameters per component (the LM head is tied to the token embedding: counted once)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, shape in shapes.items():
        key = component(name)
        counts[key] = counts.get(key, 0) + math.prod(shape)
    counts["total"] = sum(counts.values())
    return counts


def read_named_metrics(path: Path) -> list[dict]:
    """The records of a metrics file named with --metrics, which must exist and be metrics.

    Stricter than `read_metrics`, which reads the run's own metrics.jsonl: a file the user names
    must be metrics, so every line must be a JSON object with a "kind" and an integer "step" (as
    `fabric train` writes them); only the last line may be cut short (a kill while writing), and at
    least one must be whole.

    Raises:
        InputError: the file is missing, unreadable, empty, not JSON lines, or JSON lines that are
            not metrics records.
    """
    fix = "pass the run's metrics.jsonl, or leave out --metrics to read the one of the checkpoint's run"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"metrics file {path} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"metrics file {path} cannot be read as text ({e}); {fix}") from None
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise InputError(f"metrics file {path} is empty; {fix}")
    records = []
    for n, line in numbered:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if isinstance(rec, dict):
            step = rec.get("step")
            if "kind" not in rec or not isinstance(step, int) or isinstance(step, bool):
                raise InputError(f"metrics file {path} holds no metrics: line {n} is a JSON object without "
                                 f"a \"kind\" and an integer \"step\" ({line[:40]!r}); {fix}")
            records.append(rec)
        elif n != numbered[-1][0] or not records:
            raise InputError(f"metrics file {path} is not JSON lines: line {n} is not a JSON object ({line[:40]!r}); {fix}")
    return records


def inspect_checkpoint(path: str | os.PathLike, metrics: str | os.PathLike | None = None) -> dict:
    """A report on one weights file.

    Args:
        path: a checkpoint (latest or a snapshot), or a run directory (its latest checkpoint).
        metrics: the metrics.jsonl to read gradient norms and evaluations from; it must exist.
            By default the one of the run the checkpoint lies in (`RUN/checkpoints/x.safetensors`
            -> `RUN/metrics.jsonl`); a missing one, or a checkpoint outside any run's checkpoints/
            folder, is a note, and no metrics are read.
    Returns:
        a dict with config, step, tokens_seen, losses, parameters, nonfinite_tensors (the names of
        those holding a NaN or an infinity), metrics (the file read, None when none was read),
        gradient_flow (None when no gradient norms were logged up to the checkpoint's step, or they
        are another model's) and gradient_flow_note (why not, else None).
    """
    path = resolve_checkpoint(path)
    info = read_info(path)
    shapes = tensor_shapes(path)
    check_config(path, shapes, info.config)  # what generate and probe would refuse to load
    if metrics is not None:
        metrics_path = Path(metrics)
        records = read_named_metrics(metrics_path)
    else:
        owner = RunPaths.of_checkpoint(path)  # None outside RUN/checkpoints/: no foreign metrics.jsonl
        metrics_path = owner.metrics if owner else None
        records = read_metrics(metrics_path) if metrics_path and metrics_path.is_file() else None
    upto = [r for r in records or [] if r.get("step", 0) <= info.step]
    evals = [r for r in upto if r.get("kind") == "eval"]
    last_eval = evals[-1] if evals else None
    flow = gradient_flow(upto)
    note = None if flow else no_flow_note(path, metrics_path, records is not None, info.step)
    if flow and len(flow["layers"]) != info.config.n_layer + 1:  # another model's metrics: its layers are not these
        note = (f"{metrics_path} logs gradient norms of {len(flow['layers']) - 1} layers, and this checkpoint has "
                f"{info.config.n_layer}: they are another model's; name this run's metrics.jsonl with --metrics")
        flow = None
    return {
        "checkpoint": str(path),
        "config": info.config.to_dict(),
        "step": info.step,
        "tokens_seen": info.tokens_seen,
        "tokenizer_sha256": info.tokenizer_sha256,
        "losses": {
            "step_loss": info.extra.get("train_loss"),  # one training batch: the checkpoint's own step
            # these three: one evaluation (means over its batches); the checkpoint's own val loss
            # stands in only when the metrics hold no evaluation up to its step
            "eval_step": last_eval.get("step") if last_eval else None,
            "eval_train_loss": last_eval.get("train_loss") if last_eval else None,
            "val_loss": last_eval.get("val_loss") if last_eval else info.extra.get("val_loss"),
        },
        "parameters": parameter_counts(shapes),
        "nonfinite_tensors": nonfinite_in(path),  # what generate and probe refuse to load
        "metrics": str(metrics_path) if records is not None else None,
        "gradient_flow": flow,
        "gradient_flow_note": note,
    }


def no_flow_note(checkpoint: Path, metrics_path: Path | None, found: bool, step: int) -> str:
    """Why the report has no gradient-flow table, as it is."""
    if metrics_path is None:
        return (f"no gradient norms: {checkpoint} is not inside a run's checkpoints/ folder; "
                f"name its metrics.jsonl with --metrics")
    if not found:
        return f"no gradient norms: {metrics_path} does not exist (name the run's metrics.jsonl with --metrics)"
    if metrics_path.is_file() and metrics_path.stat().st_size and not read_metrics(metrics_path):
        return (f"no gradient norms: {metrics_path} holds no readable record (not fabric's JSON lines: damaged, or "
                f"another file); name the run's metrics.jsonl with --metrics")
    return f"no gradient norms logged at or before step {step:,} in {metrics_path}"


def format_report(report: dict) -> str:
    """The report as a few aligned lines and the layers-by-steps gradient table."""
    c = report["config"]
    losses = report["losses"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        f"checkpoint    {report['checkpoint']}",
        f"model         {c['n_layer']} layers x {c['n_head']} heads, width {c['n_embd']} (head {c['n_embd'] // c['n_head']}), "
        f"feed-forward {c['n_ff']}, context {c['block_size']}, vocab {c['vocab_size']}, dropout {c['dropout']}"
        + ("" if c.get("bias", True) else ", no biases"),
        f"trained       step {report['step']:,}, {report['tokens_seen']:,} tokens seen",
        f"step loss     {fmt(losses['step_loss'])}"
        + ("" if losses["step_loss"] is None else f" (the training batch of step {report['step']:,} alone)"),
        f"eval loss     train {fmt(losses['eval_train_loss'])}, val {fmt(losses['val_loss'])}"
        + (f" (evaluation at step {losses['eval_step']:,}, means over --eval-batches batches)" if losses["eval_step"] is not None
           else " (val: stored in the checkpoint; no evaluation in the metrics)" if losses["val_loss"] is not None else ""),
        f"tokenizer     sha256 {(report['tokenizer_sha256'] or '-')[:16]}",
        "parameters",
    ]
    for key, n in report["parameters"].items():
        if n or key in COMPONENTS:
            lines.append(f"  {key.replace('_', '-'):<13}{n:>12,}")
    if bad := report.get("nonfinite_tensors"):
        lines.append(f"  ! NaN or infinite values in {', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''}: "
                     f"generate and probe refuse this checkpoint; use a snapshot in checkpoints/, or retrain")
    flow = report["gradient_flow"]
    if flow is None:
        lines.append(f"gradient flow: {report['gradient_flow_note']}")
        return "\n".join(lines)
    lines.append(f"gradient flow (grad norm per layer before clipping, from {report['metrics']})")
    lines.append("  layer   " + "".join(f"{'step ' + str(s):>14}" for s in flow["steps"]))
    for i, label in enumerate(flow["layers"]):
        lines.append(f"  {label:<8}" + "".join(f"{col[i]:>14.3e}" for col in flow["norms"]))
    if flow["flags"]:
        for fl in flow["flags"]:
            lines.append(f"  ! layer {fl['layer']} at step {fl['step']}: {fl['flag']} ({fl['norm']:.2e})")
    else:
        lines.append(f"  no layer below {VANISHING:g}x or above {EXPLODING:g}x the median norm: gradients flow")
    return "\n".join(lines)
