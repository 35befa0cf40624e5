"""Head scores: one batched forward pass with attention capture, then tensor arithmetic per head.

For every item and head the attention row of the pronoun's token is read (B, L, nh, T), and:
- accuracy: the attention summed over the referent's tokens is larger than over every other earlier
  candidate's (items with one candidate are left out: there is nothing to choose between);
- argmax accuracy: the largest attention over the earlier words (a word split into several tokens
  counts as the sum of its pieces) lands on a word of the referent;
- mass: the attention summed over the referent's tokens.
Scores come back as [n_layer, n_head] tensors. A head is named only when the lower bound of its
accuracy (Wilson score interval, one-sided, Bonferroni-corrected over all heads) beats the best
baseline: nearest earlier candidate, first candidate, chance (mean of 1 / candidates), or uniform
attention (attention spread evenly over the earlier tokens: the mention with the most tokens wins,
so a suite whose referents are longer than their distractors cannot name a head on length alone).

Where prompts carry a pronoun swap (item.ProbeItem.twin), each twin is scored too and a head must
also be right on both versions of a pair more often than any baseline is: the lower bound of that
rate, corrected alike, has to clear it. A head right on one version of most pairs does not reliably
follow the pronoun to its referent. The baselines there: order is right on one version of each pair (0% on both); uniform attention too,
but for ties between mentions of equal length, counted as coin tosses on each version; chance on a
quarter; and the best rule sending each pronoun word to the first or the nearest candidate on more.
With fewer than MIN_PAIRS pairs the rate is shown, not applied: a handful could veto a good head.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

from fabric_cli.config import Head
from fabric_cli.model import Probe
from fabric_cli.probe.encode import Encoded


@dataclass
class Batch:
    """Prompts padded on the right to the batch's longest (padding is never attended: causal)."""

    rows: list[int]  # which encoded items, in order
    idx: torch.Tensor  # (B, T) token ids
    pron: torch.Tensor  # (B,) position of the pronoun
    valid: torch.Tensor  # (B, T) True on real tokens
    cand: torch.Tensor  # (B, M, T) 1.0 on each candidate's tokens; candidate 0 is the referent
    cand_ok: torch.Tensor  # (B, M) the candidate exists
    words: torch.Tensor  # (B, T) word index of each earlier position; W (a spare slot) otherwise
    ref_word: torch.Tensor  # (B, W + 1) the word is inside the referent
    conts: torch.Tensor  # (B, 2) first token of each continuation (0 when none)
    cont_ok: torch.Tensor  # (B,) the item has two continuations that differ in their first token


def make_batches(encoded: list[Encoded], batch_size: int, device="cpu") -> list[Batch]:
    """Group items of similar length (less padding); `rows` maps back to the original order."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    return [_batch([encoded[i] for i in order[s : s + batch_size]], order[s : s + batch_size], device)
            for s in range(0, len(order), batch_size)]


def _batch(items: list[Encoded], rows: list[int], device) -> Batch:
    B, T = len(items), max(len(e.ids) for e in items)
    M, W = max(len(e.candidates) for e in items), max(e.n_words for e in items)
    idx = torch.zeros(B, T, dtype=torch.long)
    valid = torch.zeros(B, T, dtype=torch.bool)
    cand = torch.zeros(B, M, T)
    cand_ok = torch.zeros(B, M, dtype=torch.bool)
    words = torch.full((B, T), W, dtype=torch.long)
    ref_word = torch.zeros(B, W + 1, dtype=torch.bool)
    conts = torch.zeros(B, 2, dtype=torch.long)
    for b, e in enumerate(items):
        n = len(e.ids)
        idx[b, :n] = torch.tensor(e.ids)
        valid[b, :n] = True
        for m, positions in enumerate(e.candidates):
            cand[b, m, positions] = 1.0
            cand_ok[b, m] = True
        w = torch.tensor(e.words, dtype=torch.long)
        words[b, : len(e.words)] = torch.where(w >= 0, w, W)
        ref_word[b, e.referent_words] = True
        if e.continuations:
            conts[b] = torch.tensor(e.continuations)
    cont_ok = torch.tensor([e.continuations is not None for e in items])
    pron = torch.tensor([e.pronoun for e in items])
    return Batch(rows, *(t.to(device) for t in (idx, pron, valid, cand, cand_ok, words, ref_word, conts, cont_ok)))


@dataclass
class ItemScores:
    """Per item and head, in the order of the encoded items."""

    correct: torch.Tensor  # (N, L, nh) bool: referent beats every other earlier candidate
    argmax_hit: torch.Tensor  # (N, L, nh) bool: the most attended earlier word is in the referent
    mass: torch.Tensor  # (N, L, nh) attention on the referent's tokens
    rows: list[torch.Tensor]  # per item (L, nh, T_i): the pronoun's attention row, for --head and plots
    preference: torch.Tensor | None = None  # (N,) log p(continuation 0) - log p(continuation 1) at the pronoun; NaN without


def pronoun_rows(probe: Probe, pron: torch.Tensor) -> torch.Tensor:
    """Every layer's attention row at the pronoun: (B, L, nh, T)."""
    b = torch.arange(pron.numel(), device=pron.device)
    return torch.stack([att[b, :, pron, :] for att in probe.attention], dim=1)  # per layer (B, nh, T)


@torch.inference_mode()
def score_items(model, batches: list[Batch], n_items: int) -> ItemScores:
    """One forward pass per batch with attention capture; no Python loop over heads or prompts."""
    L, nh = model.config.n_layer, model.config.n_head
    correct = torch.zeros(n_items, L, nh, dtype=torch.bool)
    hit = torch.zeros(n_items, L, nh, dtype=torch.bool)
    mass = torch.zeros(n_items, L, nh)
    rows: list[torch.Tensor | None] = [None] * n_items
    preference = torch.full((n_items,), float("nan"))
    for batch in batches:
        probe = Probe(capture_attention=True)
        logits, _ = model(batch.idx, probe=probe, at=batch.pron)  # (B, 1, vocab): the pronoun's position
        pair = logits[:, 0].float().log_softmax(-1).gather(1, batch.conts)  # (B, 2): what ablate.preference reads
        preference[torch.tensor(batch.rows)] = torch.where(batch.cont_ok, pair[:, 0] - pair[:, 1], float("nan")).cpu()
        att = pronoun_rows(probe, batch.pron).float()  # (B, L, nh, T)
        per_cand = torch.einsum("blht,bmt->blhm", att, batch.cand)  # (B, L, nh, M)
        others = per_cand[..., 1:].masked_fill(~batch.cand_ok[:, None, None, 1:], float("-inf"))
        best_other = others.amax(-1) if others.size(-1) else torch.full_like(per_cand[..., 0], float("-inf"))
        B, _, _, T = att.shape
        W1 = batch.ref_word.size(1)
        by_word = att.new_zeros(B, L, nh, W1).scatter_add_(-1, batch.words[:, None, None, :].expand(B, L, nh, T), att)
        top_word = by_word[..., :-1].argmax(-1)  # (B, L, nh); the spare slot W collects non-words
        idx = torch.tensor(batch.rows)
        correct[idx] = (per_cand[..., 0] > best_other).cpu()
        hit[idx] = batch.ref_word[:, None, None, :].expand(B, L, nh, W1).gather(-1, top_word[..., None])[..., 0].cpu()
        mass[idx] = per_cand[..., 0].cpu()
        lengths = batch.valid.sum(1).tolist()
        att = att.cpu()
        for b, i in enumerate(batch.rows):
            rows[i] = att[b, :, :, : lengths[b]]
    return ItemScores(correct, hit, mass, rows, preference)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- statistics


def wilson(k: torch.Tensor, n: int, z: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Wilson score interval for k successes in n trials (works elementwise on a tensor of k)."""
    if n == 0:
        return torch.zeros_like(k, dtype=torch.float), torch.ones_like(k, dtype=torch.float)
    p = k.float() / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * torch.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half).clamp(0, 1), (centre + half).clamp(0, 1)


@dataclass
class Twins:
    """The pronoun-swap twins of some prompts, scored: twin j is encoded[j], the twin of the probed prompt rows[j]."""

    rows: list[int]
    encoded: list[Encoded]
    correct: torch.Tensor  # (P, L, nh), as ItemScores.correct
    skipped: list[str] = dataclasses.field(default_factory=list)  # the kind of each twin left out (encode_twins)
    attention: list[torch.Tensor] | None = None  # per twin (L, nh, T_j): the pronoun's attention, for --head


@dataclass
class HeadScores:
    """Every head's scores as [n_layer, n_head] tensors, the baselines, and the verdict."""

    n: int  # items scored for accuracy (two or more earlier candidates)
    n_all: int  # items scored for argmax accuracy and mass
    accuracy: torch.Tensor
    argmax_accuracy: torch.Tensor
    mass: torch.Tensor
    ci_low: torch.Tensor  # 95% Wilson interval of the accuracy
    ci_high: torch.Tensor
    lower_bound: torch.Tensor  # one-sided, Bonferroni over all heads: what naming compares
    baselines: dict[str, float]  # nearest, first, chance, uniform accuracies over the same n items
    significant: torch.Tensor  # bool: lower_bound beats the best baseline
    ranking: list[Head]  # all heads, best first
    alpha: float
    preference: float | None = None  # the model's mean preference over these items with continuations
    runner_up: dict | None = None  # the top head against the next, on the prompts only one gets right
    pairs: int = 0  # pronoun-swap pairs scored: both versions have two or more candidates
    both: torch.Tensor | None = None  # share of pairs right on both versions
    both_ci_low: torch.Tensor | None = None
    both_ci_high: torch.Tensor | None = None
    both_lower_bound: torch.Tensor | None = None  # one-sided, Bonferroni, as lower_bound
    both_baselines: dict[str, float] | None = None  # the same four baselines, right on both versions
    both_decides: bool = False  # MIN_PAIRS pairs or more: naming asks the rate of a head

    @property
    def best_baseline(self) -> tuple[str, float]:
        name = max(self.baselines, key=lambda k: self.baselines[k])
        return name, self.baselines[name]

    @property
    def named(self) -> Head | None:
        """The best-ranked significant head, or None: a pronoun head is named only on evidence."""
        return next((h for h in self.ranking if self.significant[h]), None)

    def head(self, h: Head) -> dict:
        d = {
            "head": str(h), "layer": h.layer, "index": h.head, "n": self.n, "n_all": self.n_all,
            "accuracy": _num(self.accuracy[h]), "accuracy_ci95": [_num(self.ci_low[h]), _num(self.ci_high[h])],
            "lower_bound": _num(self.lower_bound[h]), "argmax_accuracy": _num(self.argmax_accuracy[h]),
            "mass": _num(self.mass[h]), "significant": bool(self.significant[h]),
        }
        if self.pairs:
            d.update(pairs=self.pairs, both=_num(self.both[h]),
                     both_ci95=[_num(self.both_ci_low[h]), _num(self.both_ci_high[h])],
                     both_lower_bound=_num(self.both_lower_bound[h]))
        return d


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def head_scores(scores: ItemScores, encoded: list[Encoded], alpha: float = 0.05,
                only: list[int] | None = None, twins: Twins | None = None) -> HeadScores:
    """Aggregate per-item results over the unambiguous items (or the `only` rows given); with `twins`,
    a head is significant only when it is also right on both versions of the pairs beyond the baselines."""
    rows = only if only is not None else [i for i, e in enumerate(encoded) if not e.item.ambiguous]
    choice = [i for i in rows if len(encoded[i].candidates) > 1]
    L, nh = scores.correct.shape[1:]
    n, n_all = len(choice), len(rows)
    nan = torch.full((L, nh), float("nan"))
    k = scores.correct[choice].sum(0) if n else torch.zeros(L, nh, dtype=torch.long)
    accuracy = k.float() / n if n else nan
    argmax_acc = scores.argmax_hit[rows].float().mean(0) if n_all else nan
    mass = scores.mass[rows].mean(0) if n_all else nan
    lo, hi = wilson(k, n, NormalDist().inv_cdf(0.975))
    bound, _ = wilson(k, n, NormalDist().inv_cdf(1 - alpha / (L * nh)))
    baselines = {
        "nearest": sum(encoded[i].nearest_is_referent for i in choice) / n if n else float("nan"),
        "first": sum(encoded[i].first_is_referent for i in choice) / n if n else float("nan"),
        "chance": sum(1 / len(encoded[i].candidates) for i in choice) / n if n else float("nan"),
        "uniform": sum(encoded[i].uniform_hit for i in choice) / n if n else float("nan"),
    }
    best = max(baselines.values()) if n else 1.0
    significant = (bound > best) if n else torch.zeros(L, nh, dtype=torch.bool)
    pairs = _pair_scores(scores, encoded, choice, twins, alpha) if twins is not None else {}
    if pairs and pairs["both_decides"]:
        significant &= pairs["both_lower_bound"] > max(pairs["both_baselines"].values())
    keys = torch.stack([torch.nan_to_num(t, nan=-1.0) for t in (accuracy, argmax_acc, mass)], -1).tolist()
    ranking = sorted((Head(a, b) for a in range(L) for b in range(nh)), key=lambda h: [-x for x in keys[h.layer][h.head]])
    pref = None
    if scores.preference is not None and rows:
        known = scores.preference[rows]
        known = known[~known.isnan()]
        pref = float(known.double().mean()) if known.numel() else None
    runner_up = paired(scores.correct[choice], ranking[0], ranking[1]) if n and len(ranking) > 1 else None
    return HeadScores(n, n_all, accuracy, argmax_acc, mass, lo, hi, bound, baselines, significant, ranking, alpha, pref,
                      runner_up, **pairs)


MIN_PAIRS = 20  # fewer pronoun-swap pairs than this: the rate right on both is shown, not asked of a head
# each baseline's name in what fabric prints
BASELINE_NAMES = {"nearest": "nearest candidate", "first": "first candidate", "chance": "chance", "uniform": "uniform attention",
                  "pronoun_order": "each pronoun to the first or the nearest"}


def _pair_scores(scores: ItemScores, encoded: list[Encoded], choice: list[int], twins: Twins, alpha: float) -> dict:
    """Right on both versions of each pronoun-swap pair whose prompt is among `choice` and whose twin has
    two or more candidates too: the rate per head, its intervals, and the baselines' rates ({} for no pair)."""
    chosen = set(choice)
    keep = [j for j, i in enumerate(twins.rows) if i in chosen and len(twins.encoded[j].candidates) > 1]
    if not keep:
        return {}
    rows = [twins.rows[j] for j in keep]
    P, (L, nh) = len(keep), scores.correct.shape[1:]
    k = (scores.correct[rows] & twins.correct[keep]).sum(0)
    lo, hi = wilson(k, P, NormalDist().inv_cdf(0.975))
    bound, _ = wilson(k, P, NormalDist().inv_cdf(1 - alpha / (L * nh)))
    pairs = [(encoded[i], twins.encoded[j]) for i, j in zip(rows, keep)]
    rules = {"nearest": lambda e: float(e.nearest_is_referent), "first": lambda e: float(e.first_is_referent),
             "chance": lambda e: 1 / len(e.candidates), "uniform": lambda e: e.uniform_hit}
    base = {name: sum(rule(a) * rule(b) for a, b in pairs) / P for name, rule in rules.items()}
    base["pronoun_order"] = pronoun_order_rate(pairs)
    return {"pairs": P, "both": k.float() / P, "both_ci_low": lo, "both_ci_high": hi, "both_lower_bound": bound,
            "both_baselines": base, "both_decides": P >= MIN_PAIRS}


def pronoun_order_rate(pairs: list[tuple[Encoded, Encoded]]) -> float:
    """The best rule that sends each pronoun word to the first or the nearest candidate ("she" first, "he"
    nearest, ...), fitted to these pairs: how often it is right on both versions. A head that ignores the
    pronoun is right on both of none (its attention is the same on both, and the roles trade); one that
    keys on the pronoun without resolving it can reach this. Fitted on the same pairs, it errs high.

    A pair ties two words (the prompt's and its twin's), so the words fall into groups that no pair
    crosses; each group's rule is found by trying every one (groups of up to 16 words), else by
    improving one word at a time from the best single-word choices.

    Example:
        >>> from types import SimpleNamespace as E
        >>> item = lambda p, first: E(item=E(text=p, pronoun=(0, len(p))), first_is_referent=first, nearest_is_referent=not first)
        >>> pronoun_order_rate([(item("she", True), item("he", False)), (item("he", True), item("she", False))])
        0.5
    """
    if not pairs:
        return float("nan")
    counts: dict[tuple, int] = {}
    for a, b in pairs:
        key = tuple((e.item.text[slice(*e.item.pronoun)].strip().lower(), e.first_is_referent, e.nearest_is_referent)
                    for e in (a, b))
        counts[key] = counts.get(key, 0) + 1
    group = {form: form for key in counts for form, _, _ in key}  # union-find over the words a pair ties

    def root(f: str) -> str:
        while group[f] != f:
            f = group[f]
        return f

    for (p, _, _), (q, _, _) in counts:
        group[root(p)] = root(q)
    total = 0
    for r in {root(f) for f in group}:
        forms = sorted(f for f in group if root(f) == r)
        mine = {key: n for key, n in counts.items() if root(key[0][0]) == r}

        def right(rule: dict[str, bool]) -> int:  # rule[form]: True sends it to the first candidate
            return sum(n for key, n in mine.items() if all(first if rule[f] else near for f, first, near in key))

        if len(forms) <= 16:
            total += max(right(dict(zip(forms, bits))) for bits in itertools.product((True, False), repeat=len(forms)))
            continue
        rule, best = dict.fromkeys(forms, True), -1
        while (score := right(rule)) > best:
            best = score
            for f in forms:
                rule = max(({**rule, f: v} for v in (True, False)), key=right)
        total += best
    return total / len(pairs)


EXACT_UP_TO = 5000  # discordant prompts up to which McNemar's binomial tail is summed exactly


def paired(correct: torch.Tensor, a: Head, b: Head) -> dict:
    """Head `a` against head `b` on the same prompts (correct: (n, L, nh)): the prompts only `a` gets
    right, only `b`, and the exact two-sided McNemar p-value, the binomial test of those two counts.
    Two heads a point apart may be a coin's toss apart.

    Example:
        >>> c = torch.zeros(30, 1, 2, dtype=torch.bool); c[:20, 0, 0] = True; c[20:, 0, 1] = True
        >>> paired(c, Head(0, 0), Head(0, 1))
        {'head': '0.1', 'only_top': 20, 'only_other': 10, 'p': 0.0987}
    """
    only_a = int((correct[:, a.layer, a.head] & ~correct[:, b.layer, b.head]).sum())
    only_b = int((correct[:, b.layer, b.head] & ~correct[:, a.layer, a.head]).sum())
    m, k = only_a + only_b, min(only_a, only_b)
    if m <= EXACT_UP_TO:
        tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m if m else 1.0
    else:  # big integers grow with m: the normal approximation, continuity-corrected, is as good here
        tail = NormalDist().cdf((k + 0.5 - m / 2) / math.sqrt(m / 4))
    # three significant digits, not decimals: a clear winner's p of 1e-20 is not 0
    return {"head": str(b), "only_top": only_a, "only_other": only_b, "p": float(f"{min(1.0, 2 * tail):.3g}")}
