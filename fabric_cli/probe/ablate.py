"""Causal test: remove a head and measure how much the model's preference for the referent drops.

The preference of one item is log p(continuation 0) - log p(continuation 1) at the pronoun's position
(the first token of each continuation): positive when the model expects what follows the referent.
A head is removed two ways through the model's Probe hook:
- zero ablation: its output is set to 0;
- mean ablation: its output is replaced by its mean output over every position of the suite, which
  keeps the head's average contribution and removes only what depends on the prompt.
Each drop comes with its 95% confidence interval over the items (paired: the same prompts intact and
ablated; Student's t), and each condition with how often the referent's continuation is the more likely
(`*_preferred`, the preference above 0): the effect read as a share of prompts.
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
    """Each item's preference (N,), in the order of `batches` (all must have continuations whose first
    tokens differ).

    With mean_out, also the mean output of every head over all real positions: (L, nh, hs).
    """
    prefs, out_sum, positions = [], None, 0
    for batch in batches:
        probe = Probe(capture_attention=False, capture_head_outputs=mean_out, ablate=ablate or {})
        logits, _ = model(batch.idx, probe=probe, at=batch.pron)  # (B, 1, vocab): the pronoun's position
        logp = logits[:, 0].float().log_softmax(-1)  # (B, vocab)
        pair = logp.gather(1, batch.conts)  # (B, 2)
        prefs.append((pair[:, 0] - pair[:, 1]).cpu())
        if mean_out:
            mask = batch.valid[:, :, None, None].float()  # (B, T, 1, 1)
            sums = torch.stack([(ho.float() * mask).sum((0, 1)) for ho in probe.head_outputs])  # (L, nh, hs)
            out_sum = sums if out_sum is None else out_sum + sums
            positions += int(batch.valid.sum())
    each = torch.cat(prefs) if prefs else torch.zeros(0)
    return (each, out_sum / max(positions, 1)) if mean_out else each


# Student's t at 0.975 for 1..30 degrees of freedom; above 30 the Cornish-Fisher expansion
# (t_student_975) is within 0.001 of it.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_student_975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (a two-sided 95% interval).

    Example:
        >>> t_student_975(4), round(t_student_975(40), 3), round(t_student_975(10**6), 3)
        (2.776, 2.021, 1.96)
    """
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def drop_interval(clean: torch.Tensor, ablated: torch.Tensor) -> list[float | None]:
    """The 95% confidence interval of the mean drop (clean - ablated), paired over the same items:
    mean +- t x standard error of the per-item drops, Student's t for the few-prompt suites users
    bring. [None, None] under two items, where there is no spread to measure.

    Example:
        >>> clean = torch.tensor([3.0, 2.0, 4.0, 3.0])  # the same drop, 2, on every prompt:
        >>> drop_interval(clean, clean - 2)  # paired, no doubt at all (unpaired, it would be wide)
        [2.0, 2.0]
        >>> lo, hi = drop_interval(torch.tensor([0.9, 1.4, 0.2, 1.1, 0.6]), torch.zeros(5))
        >>> round(lo, 3), round(hi, 3)  # mean 0.84, standard error 0.206, t(4) = 2.776
        (0.267, 1.413)
    """
    d = (clean - ablated).double()
    n = d.numel()
    if n < 2:
        return [None, None]
    half = t_student_975(n - 1) * float(d.std()) / math.sqrt(n)
    return [round(float(d.mean()) - half, 6), round(float(d.mean()) + half, 6)]


def preferred(each: torch.Tensor) -> float:
    """How often the referent's continuation is the more likely: the share of positive preferences."""
    return round(float((each > 0).double().mean()), 6)


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


def _in_item_order(values: torch.Tensor, batches: list[Batch]) -> torch.Tensor:
    """Per-item values in batch order (N,) -> in the order of the items make_batches was given."""
    rows = [r for b in batches for r in b.rows]
    if sorted(rows) != list(range(len(values))):  # batches of several make_batches calls: no one order
        raise ValueError("per-item values need the batches of one make_batches call")
    out = torch.empty_like(values)
    out[torch.tensor(rows, dtype=torch.long)] = values
    return out


def _summary(rows: list[dict], key: str) -> dict:
    vals = [r[key] for r in rows]
    return {"mean": round(sum(vals) / len(vals), 6), "max": round(max(vals), 6)} if vals else {"mean": None, "max": None}


def ablation_study(model, batches: list[Batch], target: Head, k: int = 10, seed: int = 0,
                   progress: bool | None = False, together: list[Head] | tuple = ()) -> dict:
    """Zero and mean ablation of `target` and of k random heads; drops in the mean preference.
    With `together`, also of `target` and those heads at once, beside random sets of as many heads.

    `progress`: a bar on stderr over the passes (True, False, or None: only on a terminal).
    `each`: the studied head's preferences prompt by prompt (clean, zero, mean), in the order of the
    items the batches were made from (make_batches groups them by length).
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
        clean_each, means = measured(mean_out=True)
        clean = float(clean_each.double().mean())

        per_item = {"clean": clean_each}  # the studied head's, prompt by prompt

        def drops(removed: list[Head]) -> dict:
            out = {"head": ",".join(map(str, removed))}
            for name, ablate in (("zero", {h: None for h in removed}),
                                 ("mean", {h: means[h.layer, h.head] for h in removed})):  # each (hs,), broadcast to (B, T, hs)
                each = measured(ablate)
                if removed == [target]:
                    per_item[name] = each
                value = float(each.double().mean())
                out |= {name: round(value, 6), f"{name}_drop": round(clean - value, 6),
                        f"{name}_drop_ci95": drop_interval(clean_each, each), f"{name}_preferred": preferred(each)}
            return out

        target_drops = drops([target])
        others = [drops([h]) for h in heads]
        joint = drops(group) if together else None
        alone = [target_drops, *(drops([h]) for h in together)] if together else []  # beside the joint drop
        joint_random = [drops(heads_) for heads_ in sets]

    result = {
        "head": str(target), "n": n, "clean": round(clean, 6), "clean_preferred": preferred(clean_each),
        **{k_: v for k_, v in target_drops.items() if k_ != "head"},
        "each": {k_: [round(float(v), 6) for v in _in_item_order(t, batches)] for k_, t in per_item.items()},
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
