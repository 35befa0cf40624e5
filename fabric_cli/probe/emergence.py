"""Emergence: one head's scores on every snapshot, and the step from which it stays above threshold.

"Crossed" is read strictly: a head that reaches the threshold once and falls back has not emerged
yet; `emerged_at` is the first step from which every later snapshot stays at or above it. The first
step at which it was reached at all is reported beside it (`first_reached`). A crossing at the last
snapshot (`at_last_snapshot`, also when it is the only one) has not been seen to hold.

Beside the threshold, the evidence: `significant_from` is the first step from which the head beats
every baseline with confidence at every later snapshot (its lower bound above the best baseline, the
rule that names a head: its Bonferroni-corrected lower bound above `best_baseline`, the same for every
snapshot since the prompts are), which a threshold alone does not say.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from fabric_cli.checkpoint import read_info
from fabric_cli.config import Head
from fabric_cli.errors import CheckpointError
from fabric_cli.probe.score import HeadScores

UNPROVEN = ", the last snapshot: train longer to see it hold"  # said of a step reached only at the last snapshot


def snapshot_steps(paths: list[Path]) -> list[tuple[int, Path]]:
    """(step, path) for each snapshot, the step read from its metadata (not its file name)."""
    steps = []
    for p in paths:
        with unreadable_snapshot(p):
            steps.append((read_info(p).step, p))
    return sorted(steps, key=lambda sp: sp[0])


@contextlib.contextmanager
def unreadable_snapshot(path: Path) -> Iterator[None]:
    """A snapshot that cannot be read stops the study: the error says which, and what to do."""
    try:
        yield
    except CheckpointError as e:
        raise CheckpointError(f"{e}; --over-checkpoints reads every snapshot in {path.parent}: move this one out of "
                              f"the folder (or delete it) and probe again") from None


def crossing(steps: list[int], values: list[float | None], threshold: float) -> tuple[int | None, int | None]:
    """(first step at or above threshold, first step from which it stays there).

    Example:
        >>> crossing([100, 200, 300, 400], [0.2, 0.95, 0.7, 0.92], 0.9)
        (200, 400)
    """
    above = [v is not None and v >= threshold for v in values]
    first = next((s for s, a in zip(steps, above) if a), None)
    stays = None
    for s, a in zip(reversed(steps), reversed(above)):
        if not a:
            break
        stays = s
    return first, stays


def emergence_table(rows: list[tuple[int, str, str, HeadScores]], head: Head, threshold: float) -> dict:
    """rows: (step, checkpoint path, sha256, scores) sorted by step -> the report's emergence section."""
    table = []
    for step, path, sha, scores in rows:
        best = scores.ranking[0]
        table.append({
            "step": step, "checkpoint": path, "sha256": sha, **scores.head(head),
            "best_head": str(best), "best_accuracy": scores.head(best)["accuracy"],
            "named": str(scores.named) if scores.named else None,
            # the model's own choice beside its head's attention (None: no prompt has continuations)
            "preference": None if scores.preference is None else round(scores.preference, 6),
        })
    steps = [r["step"] for r in table]
    first, stays = crossing(steps, [r["accuracy"] for r in table], threshold)
    sig_first, sig_from = crossing(steps, [float(r["significant"]) for r in table], 1.0)
    baselines = {k: v for k, v in rows[-1][3].baselines.items() if v == v} if rows else {}  # the same prompts each row
    best = max(baselines.items(), key=lambda kv: kv[1], default=(None, None))
    both = (rows[-1][3].both_baselines or {}) if rows and rows[-1][3].both_decides else {}
    both_best = max(both.items(), key=lambda kv: kv[1], default=None)
    return {"head": str(head), "metric": "accuracy", "threshold": threshold,
            "first_reached": first, "emerged_at": stays, "at_last_snapshot": stays is not None and stays == steps[-1],
            "significant_first": sig_first, "significant_from": sig_from,
            "significant_at_last_snapshot": sig_from is not None and sig_from == steps[-1],
            "best_baseline": {"name": best[0], "accuracy": None if best[1] is None else round(best[1], 6)},
            "best_both_baseline": {"name": both_best[0], "both": round(both_best[1], 6)} if both_best else None,
            "rows": table}
