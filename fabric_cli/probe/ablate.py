"""Causal test: remove a head and measure how much the model's preference for the referent drops.

The preference of one item is log p(continuation 0) - log p(continuation 1) at the pronoun's position
(the first token of each continuation): positive when the model expects what follows the referent.
A head is removed two ways through the model's Probe hook:
- zero ablation: its output is set to 0;
- mean ablation: its output is replaced by its mean output over every position of the suite, which
  keeps the head's average contribution and removes only what depends on the prompt.
The same is done for K other heads drawn at random (seeded) so the drop can be compared; with K at
least the number of other heads, every head is ablated and the drops form a layer-by-head grid.
Heads that share a task hide each other when removed one at a time (the others still carry it);
`together` removes the studied head and others at once, beside as many random sets of the same
size drawn from the remaining heads (up to RANDOM_SETS).
"""

from __future__ import annotations

import itertools
import math
import random
import sys

import torch
from tqdm import tqdm

from fabric_cli.config import Head
from fabric_cli.model import Probe
from fabric_cli.probe.score import Batch


@torch.inference_mode()
def preference(model, batches: list[Batch], ablate: dict | None = None, mean_out: bool = False):
    """Mean preference over the items of `batches` (all must have continuations whose first tokens differ).

    With mean_out, also the mean output of every head over all real positions: (L, nh, hs).
    """
    total, count, out_sum, positions = 0.0, 0, None, 0
    for batch in batches:
        probe = Probe(capture_attention=False, capture_head_outputs=mean_out, ablate=ablate or {})
        logits, _ = model(batch.idx, probe=probe, at=batch.pron)  # (B, 1, vocab): the pronoun's position
        logp = logits[:, 0].float().log_softmax(-1)  # (B, vocab)
        pair = logp.gather(1, batch.conts)  # (B, 2)
        total += float((pair[:, 0] - pair[:, 1]).sum())
        count += batch.idx.size(0)
        if mean_out:
            mask = batch.valid[:, :, None, None].float()  # (B, T, 1, 1)
            sums = torch.stack([(ho.float() * mask).sum((0, 1)) for ho in probe.head_outputs])  # (L, nh, hs)
            out_sum = sums if out_sum is None else out_sum + sums
            positions += int(batch.valid.sum())
    mean = total / max(count, 1)
    return (mean, out_sum / max(positions, 1)) if mean_out else mean


def random_heads(target: Head, n_layer: int, n_head: int, k: int, seed: int) -> list[Head]:
    """k heads other than target, drawn without replacement, the same for the same seed."""
    others = [Head(a, b) for a in range(n_layer) for b in range(n_head) if Head(a, b) != target]
    return sorted(random.Random(seed).sample(others, min(k, len(others))))


RANDOM_SETS = 10  # random sets of heads set beside a `together` set


def random_sets(exclude: list[Head], size: int, n_layer: int, n_head: int, count: int, seed: int) -> list[list[Head]]:
    """`count` different sets of `size` heads outside `exclude`, the same for the same seed; every
    such set when there are no more than `count` of them.

    Example:
        >>> random_sets([Head(0, 0), Head(1, 1)], 2, 2, 2, 10, seed=0)  # only one pair is left
        [[Head(layer=0, head=1), Head(layer=1, head=0)]]
    """
    others = [Head(a, b) for a in range(n_layer) for b in range(n_head) if Head(a, b) not in exclude]
    if math.comb(len(others), size) <= count:
        return [list(c) for c in itertools.combinations(others, size)] if len(others) >= size else []
    rng, sets = random.Random(f"sets:{seed}"), []
    while len(sets) < count:
        drawn = sorted(rng.sample(others, size))
        if drawn not in sets:
            sets.append(drawn)
    return sets


def _summary(rows: list[dict], key: str) -> dict:
    vals = [r[key] for r in rows]
    return {"mean": round(sum(vals) / len(vals), 6), "max": round(max(vals), 6)} if vals else {"mean": None, "max": None}


def ablation_study(model, batches: list[Batch], target: Head, k: int = 10, seed: int = 0,
                   progress: bool | None = False, together: list[Head] | tuple = ()) -> dict:
    """Zero and mean ablation of `target` and of k random heads; drops in the mean preference.
    With `together`, also of `target` and those heads at once, beside random sets of as many heads.

    `progress`: a bar on stderr over the passes (True, False, or None: only on a terminal).
    """
    n = sum(b.idx.size(0) for b in batches)
    if n == 0:
        return {"head": str(target), "n": 0, "note": "no unambiguous prompt has two continuations that differ in "
                                                     "their first token, which is all the preference compares"}
    L, nh = model.config.n_layer, model.config.n_head
    heads = random_heads(target, L, nh, k, seed)
    group = [target, *together]
    sets = random_sets(group, len(group), L, nh, RANDOM_SETS, seed) if together else []
    bar = tqdm(total=1 + 2 * (1 + len(heads) + bool(together) + len(together) + len(sets)), desc="ablation", unit="pass",
               file=sys.stderr, disable=None if progress is None else not progress)

    def measured(ablate: dict | None = None, mean_out: bool = False):
        result = preference(model, batches, ablate, mean_out)
        bar.update(1)
        return result

    with bar:
        clean, means = measured(mean_out=True)

        def drops(removed: list[Head]) -> dict:
            zero = measured({h: None for h in removed})
            mean = measured({h: means[h.layer, h.head] for h in removed})  # each (hs,), broadcast to (B, T, hs)
            return {"head": ",".join(map(str, removed)), "zero": round(zero, 6), "zero_drop": round(clean - zero, 6),
                    "mean": round(mean, 6), "mean_drop": round(clean - mean, 6)}

        target_drops = drops([target])
        others = [drops([h]) for h in heads]
        joint = drops(group) if together else None
        alone = [target_drops, *(drops([h]) for h in together)] if together else []  # beside the joint drop
        joint_random = [drops(heads_) for heads_ in sets]

    result = {
        "head": str(target), "n": n, "clean": round(clean, 6), **{k_: v for k_, v in target_drops.items() if k_ != "head"},
        "random": {"seed": seed, "heads": others, "zero_drop": _summary(others, "zero_drop"),
                   "mean_drop": _summary(others, "mean_drop")},
    }
    if joint is not None:
        result["together"] = {
            "heads": [str(h) for h in group], **{k_: v for k_, v in joint.items() if k_ != "head"},
            "alone": alone, **{f"{key}_alone_sum": round(sum(a[key] for a in alone), 6) for key in ("zero_drop", "mean_drop")},
            "random": {"sets": joint_random, "zero_drop": _summary(joint_random, "zero_drop"),
                       "mean_drop": _summary(joint_random, "mean_drop")},
        }
    if len(others) + 1 == L * nh:  # every head was ablated: a causal map beside the attention one
        by_name = {d["head"]: d for d in [target_drops, *others]}
        result["grid"] = {key: [[by_name[f"{layer}.{h}"][key] for h in range(nh)] for layer in range(L)]
                          for key in ("zero_drop", "mean_drop")}
    return result
