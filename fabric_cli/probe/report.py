"""The probe's report: a JSON-ready dict (probe/report.json), built from the scores.

`render.render_text` shows it on the terminal, reading only the report, so what the terminal shows
and what --json prints agree.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import torch

from fabric_cli.config import Head, ProbeConfig
from fabric_cli.probe.encode import Encoded, Skipped, words_before
from fabric_cli.probe.score import HeadScores, ItemScores, Twins, head_scores
from fabric_cli.probe.item import ProbeItem


FORMAT, VERSION = "fabric-probe-report", 1


CRITERION = ("named only if the one-sided {conf:.0%} Wilson lower bound of its accuracy, Bonferroni-corrected "
             "over all {heads} heads, is above the best baseline (nearest candidate, first candidate, chance, uniform attention)")


CRITERION_PAIRS = ("; and the same bound of its rate right on both versions of a pronoun-swap pair is above the best "
                   "baseline's rate on both (a head that ignores the pronoun is right on one version of each pair)")


def _grid(t: torch.Tensor) -> list[list[float | None]]:
    return [[None if math.isnan(v) else round(v, 6) for v in row] for row in t.tolist()]


def build_report(cfg: ProbeConfig, source: dict, items: list[ProbeItem], encoded: list[Encoded],
                 skipped: list[Skipped], scores: ItemScores, heads: HeadScores, chosen: Head, bos: bool,
                 twins: Twins | None = None) -> dict:
    L, nh = heads.accuracy.shape
    every = [Head(a, b) for a in range(L) for b in range(nh)]
    named = heads.named
    best_name, best_value = heads.best_baseline
    return {
        "format": FORMAT, "version": VERSION,
        "checkpoint": source,
        "settings": {**dataclasses.asdict(cfg), "bos": bos,
                     "criterion": CRITERION.format(conf=1 - cfg.alpha, heads=L * nh) + (CRITERION_PAIRS if heads.both_decides else "")},
        "prompts": {"total": len(items), "probed": len(encoded), "scored": heads.n_all, "scored_accuracy": heads.n,
                    "ambiguous": sum(e.item.ambiguous for e in encoded), "skipped": len(skipped),
                    "tokens_per_word": _tokens_per_word(encoded),
                    "referent_repeated": _repeated(encoded)},
        "shape": {"n_layer": L, "n_head": nh},
        "baselines": {k: (None if math.isnan(v) else round(v, 6)) for k, v in heads.baselines.items()},
        "best_baseline": {"name": best_name, "accuracy": None if math.isnan(best_value) else round(best_value, 6)},
        "named_head": str(named) if named else None,
        "runner_up": heads.runner_up,  # the top-ranked head against the next, paired (McNemar)
        "example": _example(encoded, scores, named) if named else None,
        "significant_heads": [str(h) for h in heads.ranking if heads.significant[h]],
        "ranking": [str(h) for h in heads.ranking],
        "heads": [heads.head(h) for h in every],
        "grid": {k: _grid(getattr(heads, k)) for k in ("accuracy", "argmax_accuracy", "mass", "lower_bound")
                 + (("both",) if heads.pairs else ())},
        "chosen_head": str(chosen),
        "twins": _twins(heads, twins),
        "suites": _suites(cfg, items, encoded, skipped, scores, chosen, twins),
        "by_pronoun": _by_pronoun(encoded, scores, chosen),
        "ambiguous": _ambiguous(encoded, scores, chosen),
        "head_detail": _detail(encoded, scores, heads, chosen, cfg.limit, twins) if cfg.head else None,
        "skipped": [s.to_json() for s in skipped],
        "attribution": None,
        "ablation": None,
        "emergence": None,
    }


def _example(encoded: list[Encoded], scores: ItemScores, h: Head) -> str | None:
    """'her -> professor': the first unambiguous prompt the head got right, among those with a choice
    (with the referent alone before the pronoun, `correct` holds whatever the head looked at)."""
    for i, e in enumerate(encoded):
        if not e.item.ambiguous and len(e.candidates) > 1 and scores.correct[i][h]:
            return f"{e.item.show(e.item.pronoun)} -> {e.item.show(e.item.referent)}"
    return None


def _twins(heads: HeadScores, twins: Twins | None) -> dict | None:
    """The pronoun-swap pairs: how many were scored and skipped, and the baselines' rates right on both."""
    if twins is None:
        return None
    base = heads.both_baselines or {}
    best = max(base, key=base.get) if base else None
    return {"pairs": heads.pairs, "skipped": len(twins.skipped), "skipped_kinds": dict(Counter(twins.skipped)),
            "baselines": {k: round(v, 6) for k, v in base.items()},
            "best_baseline": {"name": best, "both": round(base[best], 6)} if best else None,
            "decides": heads.both_decides}  # False: fewer than MIN_PAIRS pairs, the rate shown and not asked


def _suites(cfg, items, encoded, skipped, scores, chosen, twins: Twins | None = None) -> list[dict]:
    out = []
    for name in dict.fromkeys(it.suite for it in items):
        rows = [i for i, e in enumerate(encoded) if e.item.suite == name and not e.item.ambiguous]
        hs = head_scores(scores, encoded, cfg.alpha, only=rows, twins=twins)
        h = hs.head(chosen)
        out.append({
            "suite": name, "items": sum(it.suite == name for it in items),
            "skipped": sum(s.suite == name for s in skipped),
            "ambiguous": sum(e.item.suite == name and e.item.ambiguous for e in encoded),
            "n": hs.n, "head": str(chosen), "accuracy": h["accuracy"],
            "baselines": {k: (None if math.isnan(v) else round(v, 6)) for k, v in hs.baselines.items()},
            "pairs": hs.pairs, "both": h.get("both"),
        })
    return out


def _by_pronoun(encoded: list[Encoded], scores: ItemScores, h: Head) -> list[dict]:
    """The chosen head's accuracy for each pronoun word (lower-cased), most frequent first: a head may
    resolve "she" and "they" and not "it"."""
    seen: dict[str, list[bool]] = {}
    for i, e in enumerate(encoded):
        if not e.item.ambiguous and len(e.candidates) > 1:
            seen.setdefault(e.item.show(e.item.pronoun).lower(), []).append(bool(scores.correct[i][h]))
    rows = sorted(seen.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [{"pronoun": word, "n": len(hits), "accuracy": round(sum(hits) / len(hits), 6)} for word, hits in rows]


def _candidates(e: Encoded, row: torch.Tensor) -> list[dict]:
    return [{"text": e.item.show_candidate(spans), "mass": round(float(row[pos].sum()), 6)}
            for spans, pos in zip(e.item.candidates, e.candidates)]


def _ambiguous(encoded: list[Encoded], scores: ItemScores, h: Head) -> dict:
    """Ambiguous prompts are not scored; here is where the chosen head looked on each."""
    out = []
    for i, e in enumerate(encoded):
        if e.item.ambiguous:
            cands = _candidates(e, scores.rows[i][h])
            out.append({"id": e.item.id, "text": e.item.text, "pronoun": e.item.show(e.item.pronoun),
                        "candidates": cands, "picked": max(cands, key=lambda c: c["mass"])["text"]})
    return {"n": len(out), "head": str(h), "items": out}


def _detail(encoded, scores: ItemScores, heads: HeadScores, h: Head, limit: int, twins: Twins | None = None) -> dict:
    """The chosen head prompt by prompt: where the pronoun looked, and whether it was right (and on the
    prompt's pronoun-swap twin, when it has one)."""
    twin_of = {i: j for j, i in enumerate(twins.rows)} if twins is not None else {}
    shown = []
    for i, e in enumerate(encoded[:limit]):
        row = scores.rows[i][h]  # (T_i,)
        shown.append({
            "id": e.item.id, "text": e.item.text, "pronoun": e.item.show(e.item.pronoun),
            "referent": e.item.show(e.item.referent), "ambiguous": e.item.ambiguous,
            "candidates": len(e.candidates),
            "candidate_mass": _candidates(e, row),  # what `correct` compares: attention summed over each mention
            "correct": bool(scores.correct[i][h]) if len(e.candidates) > 1 else None,
            "argmax_hit": bool(scores.argmax_hit[i][h]), "mass": round(float(scores.mass[i][h]), 6),
            "top": _top(e, row),
            "twin": _twin_detail(twins, twin_of[i], h) if i in twin_of else None,
        })
    return {"head": str(h), "shown": len(shown), "of": len(encoded), "prompts": shown, "totals": heads.head(h)}


def _top(e: Encoded, row: torch.Tensor) -> list:
    """The three words before the pronoun that took the most attention, a word split into several tokens
    summed over its pieces as argmax counts it (not the end-of-text token in front, nor the pronoun's
    own pieces): "xylophonist", not "ph" and "on"."""
    spans, by_word = words_before(e.item), {}
    for p, w in enumerate(e.words):
        if w >= 0:
            by_word[w] = by_word.get(w, 0.0) + float(row[p])
    top = sorted(by_word.items(), key=lambda kv: -kv[1])[:3]
    return [[e.item.text[slice(*spans[w])], round(v, 6)] for w, v in top]


def _twin_detail(twins: Twins, j: int, h: Head) -> dict:
    """The head on a prompt's pronoun-swap twin: right or not, and where its pronoun looked."""
    t = twins.encoded[j]
    out = {"pronoun": t.item.show(t.item.pronoun), "referent": t.item.show(t.item.referent),
           "correct": bool(twins.correct[j][h])}
    return {**out, "top": _top(t, twins.attention[j][h])} if twins.attention is not None else out


def _tokens_per_word(encoded: list[Encoded]) -> float | None:
    """Tokens per word of the prompts before their pronouns, under the model's tokenizer."""
    words = sum(e.n_words for e in encoded)
    return round(sum(w >= 0 for e in encoded for w in e.words) / words, 3) if words else None


def _repeated(encoded: list[Encoded]) -> dict:
    """The prompts that mention their referent again, unmarked, before the pronoun: how many, and the first."""
    found = [(e.item, span) for e in encoded if (span := e.item.unmarked_mention())]
    first = None
    if found:
        item, (a, b) = found[0]
        first = {"id": item.id, "where": item.where, "word": item.text[a:b], "at": a}
    return {"n": len(found), "first": first}
