"""The probe's report: a JSON-ready dict (probe/report.json) and its rendering for the terminal.

render_text reads only the report, so what the terminal shows and what --json prints agree.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import torch

from fabric_cli.config import Head, ProbeConfig
from fabric_cli.text import plural
from fabric_cli.tokenizer import WHOLE_WORDS
from fabric_cli.probe.emergence import UNPROVEN
from fabric_cli.probe.encode import Encoded, Skipped, count_kinds
from fabric_cli.probe.score import MIN_PAIRS, HeadScores, ItemScores, Twins, head_scores
from fabric_cli.probe.suites import ProbeItem

FORMAT, VERSION = "fabric-probe-report", 1
CRITERION = ("named only if the one-sided {conf:.0%} Wilson lower bound of its accuracy, Bonferroni-corrected "
             "over all {heads} heads, is above the best baseline (nearest candidate, first candidate, chance, uniform attention)")
TOO_FEW = (f"fewer than {MIN_PAIRS} pairs, too few to ask of a head: the rate is shown and naming goes by accuracy; "
           f"give more prompts a swap")
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
        before = row[: len(e.words)]  # the tokens before the pronoun: not its own pieces, as argmax
        w, pos = before.topk(min(3, before.numel()))
        shown.append({
            "id": e.item.id, "text": e.item.text, "pronoun": e.item.show(e.item.pronoun),
            "referent": e.item.show(e.item.referent), "ambiguous": e.item.ambiguous,
            "candidates": len(e.candidates),
            "candidate_mass": _candidates(e, row),  # what `correct` compares: attention summed over each mention
            "correct": bool(scores.correct[i][h]) if len(e.candidates) > 1 else None,
            "argmax_hit": bool(scores.argmax_hit[i][h]), "mass": round(float(scores.mass[i][h]), 6),
            "top": [[e.token_text(p), round(v, 6)] for v, p in zip(w.tolist(), pos.tolist())],
            "twin": {"pronoun": e.item.swap, "correct": bool(twins.correct[twin_of[i]][h])} if i in twin_of else None,
        })
    return {"head": str(h), "shown": len(shown), "of": len(encoded), "prompts": shown, "totals": heads.head(h)}


# --------------------------------------------------------------------------- terminal


def bar(weight: float, width: int = 10) -> str:
    """A unicode bar: 1.0 is `width` full blocks, with eighths at the end.

    Example:
        >>> bar(0.55, 4)
        '██▎'
    """
    eighths = int(round(max(0.0, min(1.0, weight)) * width * 8))
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def signed(x: float) -> str:
    """A log-probability difference to 3 places with its sign; one that rounds to zero is +0.000.

    Example:
        >>> signed(-0.0002), signed(1.23456)
        ('+0.000', '+1.235')
    """
    return f"{x if round(x, 3) else 0.0:+.3f}"


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}%"


BASELINE_NAMES = {"nearest": "nearest candidate", "first": "first candidate", "chance": "chance", "uniform": "uniform attention",
                  "pronoun_order": "each pronoun to the first or the nearest"}


def _suite_text(s: dict) -> str:
    """One suite's accuracy beside its best baseline, named; a suite that a baseline solves outright
    (referent_first: the referent always comes first) is a control of position, not a failure."""
    known = {k: v for k, v in s["baselines"].items() if v is not None}
    if not known:
        return f"{s['suite']} {_pct(s['accuracy']).strip()} of {s['n']}"
    name, best = max(known.items(), key=lambda kv: kv[1])
    control = ": position alone decides it, a control" if best >= 1.0 and name in ("nearest", "first") else ""
    return (f"{s['suite']} {_pct(s['accuracy']).strip()} of {s['n']} "
            f"(best baseline {_pct(best).strip()}, {BASELINE_NAMES.get(name, name)}{control})")


def _controls_text(r: dict) -> list[str]:
    """The two position controls read against each other, not against the 100% that position alone
    scores on each: a head that follows the pronoun scores alike with the referent first or second."""
    by = {s["suite"]: s for s in r["suites"] if s["n"] and s["accuracy"] is not None}
    if not {"referent_first", "referent_second"} <= set(by):
        return []
    a, b = by["referent_first"], by["referent_second"]
    diff = a["accuracy"] - b["accuracy"]
    half = 1.96 * math.sqrt(a["accuracy"] * (1 - a["accuracy"]) / a["n"] + b["accuracy"] * (1 - b["accuracy"]) / b["n"])
    return [f"Controls, head {r['chosen_head']}: {_pct(a['accuracy']).strip()} with the referent first, "
            f"{_pct(b['accuracy']).strip()} with it second, {100 * diff:+.1f} points (95% CI {100 * (diff - half):+.1f} to "
            f"{100 * (diff + half):+.1f}); a head that follows the pronoun, not the order, scores both alike"]


def _swap_text(r: dict, heads: dict) -> list[str]:
    """The chosen head on the pronoun-swap pairs: right on both versions, overall and by suite."""
    t = r.get("twins")
    if not t:
        return []
    if not t["pairs"]:
        if not t["skipped"]:
            return []
        which = "the one twin" if t["skipped"] == 1 else f"none of the {t['skipped']:,} twins"
        return [f"Pronoun swapped: {which} could {'not ' if t['skipped'] == 1 else ''}be scored ({_twin_skips(t)}), so "
                f"naming goes by accuracy alone"]
    h = heads[r["chosen_head"]]
    lo, hi = h["both_ci95"]
    suites = [f"{s['suite']} {_pct(s['both']).strip()} of {s['pairs']}" for s in r["suites"] if s.get("pairs")]
    by = f"; {', '.join(suites)}" if len(suites) > 1 else ""
    best = t["best_baseline"]
    skipped = f" ({plural(t['skipped'], 'twin')} left out: {_twin_skips(t)})" if t["skipped"] else ""
    return [f"Pronoun swapped, head {h['head']}: right on both versions of {_pct(h['both']).strip()} of "
            f"{plural(t['pairs'], 'pair')} (95% CI {100 * lo:.1f}-{100 * hi:.1f}{by}){skipped}; a head that ignores the "
            f"pronoun is right on one version of each, the best baseline ({BASELINE_NAMES[best['name']]}) on both of "
            f"{_pct(best['both']).strip()}"]


def _twin_skips(t: dict) -> str:
    """Why twins were left out: '2 whose swapped pronoun does not line up with the tokens, 1 past the context'."""
    why = {"alignment": "whose swapped pronoun does not line up with the tokens", "length": "past the model's context"}
    kinds = t.get("skipped_kinds")
    if kinds is None:  # reports of this version's first days: one count, no reasons
        return f"{t['skipped']} whose reason the report does not keep"
    return ", ".join(f"{n} {why.get(k, k)}" for k, n in kinds.items())


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


def _repeated_lines(p: dict) -> list[str]:
    rep = p.get("referent_repeated") or {}  # absent from reports of earlier versions
    if not rep.get("n"):
        return []
    f = rep["first"]
    verb = "mentions its" if rep["n"] == 1 else "mention their"
    return [f"  note: {plural(rep['n'], 'prompt')} {verb} referent again, unmarked, before the pronoun (the "
            f"first, {f['where'] or f['id']}: {f['word']!r} at character {f['at']}); a head that looks at that mention "
            f"counts as looking at no candidate: mark as [referent] the mention the pronoun should tie to"]


def _unseen_words(r: dict) -> str:
    tpw = r.get("prompts", {}).get("tokens_per_word")  # absent from reports of earlier versions
    if tpw is None or tpw <= WHOLE_WORDS:  # over it: a weak or missing head says more about the prompts
        return ""
    return (f"this model's tokenizer splits these prompts' words into {tpw:.1f} tokens each, so it rarely saw them in "
            f"training: probe it with prompts in its own corpus's words (--prompts)")


def render_text(r: dict, top: int = 10) -> str:
    """The report as the terminal shows it."""
    c, p, out = r["checkpoint"], r["prompts"], []
    shape = r["shape"]
    out.append(f"checkpoint {c['path']} (step {c['step']}; {shape['n_layer']} layers x {shape['n_head']} heads)")
    line = (f"prompts: {p['total']} from {', '.join(s['suite'] for s in r['suites'])}; {p['scored']} scored "
            f"({p['scored_accuracy']} with a distractor before the pronoun), {p['ambiguous']} ambiguous (set apart, not scored)")
    if p["skipped"]:
        line += f", {p['skipped']} skipped ({count_kinds(s['kind'] for s in r['skipped'])}; listed below)"
    out += [line, *_repeated_lines(p), *_skipped_lines(r["skipped"]), ""]
    heads = {h["head"]: h for h in r["heads"]}
    n = p["scored_accuracy"]
    out.append(f"Top heads by accuracy: the pronoun attends more to the referent than to any other earlier candidate (n={n})")
    pairs = (r.get("twins") or {}).get("pairs")  # absent from reports of earlier versions
    out.append("  rank  head  accuracy   95% CI          argmax    mass" + ("    both" if pairs else ""))
    for rank, name in enumerate(r["ranking"][:top], start=1):
        h = heads[name]
        lo, hi = h["accuracy_ci95"]
        ci = "" if h["accuracy"] is None else f"{100 * lo:5.1f}-{100 * hi:5.1f}"
        mass = "n/a" if h["mass"] is None else f"{h['mass']:.2f}"
        both = f"  {_pct(h['both'])}" if pairs else ""
        out.append(f"  {rank:>4}  {name:>4}  {_pct(h['accuracy'])}   {ci:<13}  {_pct(h['argmax_accuracy'])}  {mass:>6}"
                   + both + ("  *" if h["significant"] else ""))
    b = r["baselines"]
    out.append(f"  baselines: nearest candidate {_pct(b['nearest']).strip()}, first candidate "
               f"{_pct(b['first']).strip()}, chance {_pct(b['chance']).strip()}, "
               f"uniform attention {_pct(b['uniform']).strip()}")
    if pairs:
        tb = r["twins"]["baselines"]
        out.append(f"  both: right on both versions of a pronoun-swap pair (n={pairs}: the pronoun swapped, as she for he, "
                   f"so the distractor is the referent); baselines nearest candidate "
                   f"{_pct(tb['nearest']).strip()}, first candidate {_pct(tb['first']).strip()}, chance "
                   f"{_pct(tb['chance']).strip()}, uniform attention {_pct(tb['uniform']).strip()}"
                   + (f", each pronoun to the first or the nearest {_pct(tb['pronoun_order']).strip()}"
                      if "pronoun_order" in tb else "")
                   + ("" if r["twins"].get("decides", True) else f"; {TOO_FEW}"))
    out.append(f"  * {r['settings']['criterion']}")
    out += ["", *_grid_lines(r), ""]
    if pairs:
        out += [*_grid_lines(r, "both"), ""]
    out.append(_verdict(r, heads))
    if len(r["suites"]) > 1:
        out.append(f"By suite, head {r['chosen_head']}: " + "; ".join(_suite_text(s) for s in r["suites"]))
        out += _controls_text(r)
    out += _swap_text(r, heads)
    if r["ambiguous"]["n"]:
        a = r["ambiguous"]
        out.append(f"Ambiguous prompts ({a['n']}, not scored), head {a['head']}, of their candidates: "
                   + "; ".join(f"{it['pronoun']} looked most at {it['picked']}" for it in a["items"][:5]))
    ablation = _ablation_lines(r["ablation"], r["settings"]["limit"])
    if ablation and r["settings"]["head"] is None and r["named_head"] is None:
        every = r["shape"]["n_layer"] * r["shape"]["n_head"]
        ablation.insert(0, f"No head was named, so this removes the top-ranked head, {r['chosen_head']}; a model can resolve "
                           f"pronouns with no single head: --random-heads {every} removes each head in turn and maps the drops.")
    for section in (_detail_lines(r["head_detail"]), _attribution_lines(r.get("attribution")), ablation,
                    _emergence_lines(r["emergence"])):
        if section:
            out += ["", *section]
    return "\n".join(out)


SHOWN_SKIPS = 10  # skipped prompts listed on the terminal; report.json lists them all


def _skipped_lines(skipped: list[dict]) -> list[str]:
    """One line per skipped prompt (where it is, and why), so none is dropped silently."""
    lines = [f"  skipped {s['where'] or s['id']} ({s['kind']}): {s['reason']}" for s in skipped[:SHOWN_SKIPS]]
    if len(skipped) > SHOWN_SKIPS:
        lines.append(f"  ... and {len(skipped) - SHOWN_SKIPS} more, every one in report.json")
    return lines


def _grid_lines(r: dict, key: str = "accuracy") -> list[str]:
    """A layer-by-head grid of the accuracy (the best in brackets) or of the rate right on both versions
    of a pronoun-swap pair ("both"), named-worthy heads starred."""
    acc = r["grid"][key]
    sig = {h["head"] for h in r["heads"] if h["significant"]}
    best = r["ranking"][0] if key == "accuracy" else None
    title = ("Accuracy (%) by layer (rows) and head (columns); [best], * named-worthy:" if key == "accuracy" else
             "Right on both versions of a pronoun-swap pair (%), by layer and head; * named-worthy:")
    lines = [title, "      " + "".join(f"{h:>6}" for h in range(len(acc[0])))]
    for layer, row in enumerate(acc):
        cells = []
        for h, v in enumerate(row):
            name, text = f"{layer}.{h}", "  -" if v is None else f"{100 * v:3.0f}"
            text = f"[{text.strip()}]" if name == best and v is not None else text
            cells.append(f"{text + ('*' if name in sig else ''):>6}")
        lines.append(f"  L{layer:<3}" + "".join(cells))
    return lines


# A named head less than this far above the best baseline is called weak: significant on many
# prompts, yet far from a head that resolves pronouns (the demo's reaches 95% against 50%).
WEAK_MARGIN = 0.15


def _against_next(r: dict, heads: dict) -> str:
    """The named head against the next-ranked one: told apart, or not, on the prompts only one gets right."""
    u = r.get("runner_up")
    if not u or r["ranking"][0] != r["named_head"] or u["only_top"] + u["only_other"] == 0:
        return ""
    other, split = heads[u["head"]], f"{u['only_top']} against {u['only_other']}"
    if u["p"] >= 0.05:
        return (f"; but not told apart from the next, {u['head']} at {_pct(other['accuracy']).strip()}: on the prompts "
                f"only one of them gets right, {split} (exact McNemar p = {u['p']:.2f}), so they may share the task")
    return f"; ahead of the next, {u['head']}, on the prompts only one of them gets right, {split} (McNemar p = {u['p']:.2g})"


def _verdict(r: dict, heads: dict) -> str:
    bb = r["best_baseline"]
    base = f"{_pct(bb['accuracy']).strip()} ({bb['name']})" if bb["accuracy"] is not None else "n/a"
    if r["named_head"]:
        h = heads[r["named_head"]]
        margin = h["accuracy"] - bb["accuracy"] if bb["accuracy"] is not None else None
        if margin is not None and margin < WEAK_MARGIN:
            return (f"Pronoun head (weak): {h['head']} ({r['example']}), {_pct(h['accuracy']).strip()} of "
                    f"{plural(h['n'], 'prompt')}, {100 * margin:.1f} points above the best baseline {base}; its lower bound "
                    f"{_pct(h['lower_bound']).strip()} clears the baseline{_on_both(r, h)}, but a head that has learned the "
                    f"task scores far higher: {_unseen_words(r) or 'train longer'}")
        return (f"Pronoun head: {h['head']} ({r['example']}), {_pct(h['accuracy']).strip()} of {plural(h['n'], 'prompt')}; "
                f"lower bound {_pct(h['lower_bound']).strip()} > best baseline {base}" + _on_both(r, h)
                + _against_next(r, heads))
    top = heads[r["ranking"][0]]
    if top["accuracy"] is None:
        if not r["prompts"]["scored"]:
            return "No pronoun head found: every prompt probed is marked ambiguous, and ambiguous prompts are not scored."
        return ("No pronoun head found: no unambiguous prompt has a distractor before its pronoun, so there is nothing "
                "to choose between.")
    twins = r.get("twins") or {}
    if twins.get("pairs") and twins.get("decides", True) and bb["accuracy"] is not None and top["lower_bound"] > bb["accuracy"]:
        tb = twins["best_baseline"]
        return (f"No pronoun head found: the best, {top['head']} at {_pct(top['accuracy']).strip()} of "
                f"{plural(top['n'], 'prompt')}, clears the baselines (lower bound {_pct(top['lower_bound']).strip()} > "
                f"{base}), but is right on both versions of only {_pct(top['both']).strip()} of "
                f"{plural(twins['pairs'], 'pronoun-swap pair')} (lower bound {_pct(top['both_lower_bound']).strip()}, not "
                f"above {_pct(tb['both']).strip()}, {BASELINE_NAMES[tb['name']]}): it does not reliably follow the "
                f"pronoun to its referent, and no head passes both tests.")
    return (f"No pronoun head found: the best, {top['head']} at {_pct(top['accuracy']).strip()} of {plural(top['n'], 'prompt')}, "
            f"has a lower bound of {_pct(top['lower_bound']).strip()}, not above the best baseline {base}"
            + (f"; {unseen}" if (unseen := _unseen_words(r)) else "") + ".")


def _on_both(r: dict, h: dict) -> str:
    """The named head on the pronoun-swap pairs, beside the best baseline there ("" without pairs)."""
    twins = r.get("twins") or {}
    if not twins.get("pairs"):
        return ""
    tb = twins["best_baseline"]
    if not twins.get("decides", True):
        return f"; right on both versions of {_pct(h['both']).strip()} of {plural(twins['pairs'], 'pronoun-swap pair')} ({TOO_FEW})"
    return (f"; right on both versions of {_pct(h['both']).strip()} of {plural(twins['pairs'], 'pronoun-swap pair')}, "
            f"lower bound {_pct(h['both_lower_bound']).strip()} > {_pct(tb['both']).strip()} ({BASELINE_NAMES[tb['name']]})")


def _detail_lines(d: dict | None) -> list[str]:
    if not d:
        return []
    lines = [f"Head {d['head']}, prompt by prompt (first {d['shown']} of {d['of']}):"]
    marks = {True: "✓", False: "✗", None: "·"}
    paired = any(it.get("twin") for it in d["prompts"])  # absent from reports of earlier versions
    for it in d["prompts"]:
        mark = "?" if it["ambiguous"] else marks[it["correct"]]
        if paired:
            mark += marks[it["twin"]["correct"]] if it.get("twin") else " "
        lines.append(f"  {mark} {it['id']:<14} {it['pronoun']} -> {it['referent']:<16} looked at: {looked_at(it['top'])}")
    t = d["totals"]
    lo, hi = t["accuracy_ci95"]
    lines.append(f"  totals: accuracy {_pct(t['accuracy']).strip()} of {t['n']} (95% CI {_pct(lo).strip()}-"
                 f"{_pct(hi).strip()}), argmax {_pct(t['argmax_accuracy']).strip()} of {t['n_all']}, "
                 f"mass {t['mass'] if t['mass'] is None else round(t['mass'], 2)}")
    lines.append("  (✓ right, ✗ wrong, · only the referent came before the pronoun, ? ambiguous: not scored"
                 + ("; the second mark: on the prompt with its pronoun swapped, where the distractor is the referent)"
                    if paired else ")"))
    return lines


def looked_at(top: list) -> str:
    """The tokens a head attended to most from the pronoun (head_detail's "top"), each with a bar and its weight.

    Example:
        >>> looked_at([[" queen", 0.56], [" she", 0.06]])
        'queen ████▌ 0.56  she ▌ 0.06'
    """
    return "  ".join(f"{tok.strip() or repr(tok)} {bar(w, 8)} {w:.2f}" for tok, w in top)


def _ablation_lines(a: dict | None, limit: int = 20) -> list[str]:
    if not a:
        return []
    if not a["n"]:
        return [f"Ablation of {a['head']}: {a['note']}", *_same_first_token_lines(a)]
    rz, rm = a["random"]["zero_drop"], a["random"]["mean_drop"]
    k = len(a["random"]["heads"])
    return [
        f"Ablation of head {a['head']} {_on(a)}: preference = log p of the first token of the referent's "
        f"continuation minus the distractor's, at the pronoun",
        f"  intact {signed(a['clean'])}{_preferred(a, 'clean')}",
        f"  zero ablation {signed(a['zero'])} (drop {signed(a['zero_drop'])}{_interval(a, 'zero')}){_preferred(a, 'zero')}",
        f"  mean ablation {signed(a['mean'])} (drop {signed(a['mean_drop'])}{_interval(a, 'mean')}){_preferred(a, 'mean')}",
        *_ablation_item_lines(a, limit),
        (f"  {'all ' + str(k) + ' other heads' if 'grid' in a else str(k) + ' random other heads'}: zero drop mean {signed(rz['mean'])}, max {signed(rz['max'])}; "
         f"mean drop mean {signed(rm['mean'])}, max {signed(rm['max'])}") if k
        else "  no random head to compare with (--random-heads 0, or the model has no other head)",
        *_together_lines(a),
        *_same_first_token_lines(a),
        *_ablation_grid_lines(a),
    ]


def _ablation_item_lines(a: dict, limit: int) -> list[str]:
    """Prompt by prompt, when there are few (a class's own sentences): which one the head's removal moved."""
    shown = a.get("items_shown") or []  # absent from reports of earlier versions
    if not shown or a["n"] > limit:
        return []
    width = max(len("prompt"), *(len(it["where"]) for it in shown))
    return [f"  head {a['head']} alone, prompt by prompt:", f"    {'prompt':<{width}}  {'intact':>7} {'zeroed':>7} {'mean-ablated':>12}"] + [
        f"    {it['where']:<{width}}  {signed(it['clean']):>7} {signed(it['zero']):>7} {signed(it['mean']):>12}  "
        f"{it['pronoun']} -> {it['referent']}" for it in shown]


def _best_baseline(em: dict) -> str:
    """'the best baseline, nearest candidate 52.0%' (the bare words for a report without it)."""
    b = em.get("best_baseline") or {}
    if b.get("accuracy") is None:
        return "the best baseline"
    return f"the best baseline, {BASELINE_NAMES.get(b['name'], b['name'])} {_pct(b['accuracy']).strip()}"


def _interval(a: dict, name: str) -> str:
    """', 95% CI +1.38 to +1.54' for a drop (nothing in a report written before intervals were)."""
    ci = _ci_words(a.get(f"{name}_drop_ci95"))
    return f", {ci}" if ci else ""


def _ci_words(ci: list | None) -> str:
    """'95% CI +1.38 to +1.54', or '' where there is none (under two prompts, or an earlier report)."""
    lo, hi = ci or (None, None)
    return "" if lo is None or math.isnan(lo) else f"95% CI {signed(lo)} to {signed(hi)}"


def _preferred(a: dict, name: str) -> str:
    share = a.get(f"{name}_preferred")
    return "" if share is None else f"; the referent's continuation the more likely on {_pct(share).strip()} of prompts"


def _together_lines(a: dict) -> list[str]:
    """The studied head removed at once with --with-heads, beside random sets of as many heads."""
    t = a.get("together")
    if not t:
        return []
    rz, rm, sets = t["random"]["zero_drop"], t["random"]["mean_drop"], t["random"]["sets"]
    lines = [f"  together, heads {', '.join(t['heads'])}: zero ablation {signed(t['zero'])} (drop {signed(t['zero_drop'])}"
             f"{_interval(t, 'zero')}){_preferred(t, 'zero')}",
             f"  together, mean ablation {signed(t['mean'])} (drop {signed(t['mean_drop'])}{_interval(t, 'mean')})"
             f"{_preferred(t, 'mean')}",
             f"  each alone: zero drop {', '.join(signed(a['zero_drop']) for a in t['alone'])} (sum "
             f"{signed(t['zero_drop_alone_sum'])}); mean drop {', '.join(signed(a['mean_drop']) for a in t['alone'])} "
             f"(sum {signed(t['mean_drop_alone_sum'])})"]
    if sets:
        lines.append(f"  {plural(len(sets), 'random set')} of {len(t['heads'])} other heads: zero drop mean {signed(rz['mean'])}, "
                     f"max {signed(rz['max'])}; mean drop mean {signed(rm['mean'])}, max {signed(rm['max'])}")
    else:
        lines.append(f"  no random set of {len(t['heads'])} other heads to compare with: the model has too few heads")
    return lines


def _attribution_lines(a: dict | None) -> list[str]:
    """Direct logit attribution: the heads with the largest mean direct effects, every head's as a grid,
    and the terms that sum to the preference."""
    if not a:
        return []
    if not a["n"]:
        return ["Direct logit attribution: no unambiguous prompt has two continuations that differ in their first "
                "token, which is all the preference compares", *_same_first_token_lines(a)]
    grid = a["grid"]
    top = "; ".join(f"{t['head']} {signed(t['mean'])}{_ci(t['ci95'])}" for t in a["top"])
    return [
        f"Direct logit attribution {_on(a)}: what each head writes straight into the preference "
        f"(log p of the referent's continuation minus the distractor's, {signed(a['preference'])}"
        f"{' on average' if a['n'] > 1 else ''}), through the final norm with its scale held",
        f"  largest either way: {top}",
        "  every head (nats), by layer (rows) and head (columns):",
        "      " + "".join(f"{h:>9}" for h in range(len(grid[0]))),
        *(f"  L{layer:<3}" + "".join(f"{signed(v):>9}" for v in row) for layer, row in enumerate(grid)),
        "  feed-forwards by layer: " + ", ".join(f"L{layer} {signed(v)}" for layer, v in enumerate(a["feed_forward"])),
        f"  the sum: heads {signed(a['heads_total'])}, feed-forwards {signed(sum(a['feed_forward']))}, embeddings "
        f"{signed(a['embeddings'])}, attention biases {signed(a['attention_biases'])}, final norm's bias "
        f"{signed(a['norm_bias'])}: the preference {signed(a['preference'])}",
        "  a head's direct effect leaves out what later layers make of what it writes; its whole effect is what "
        "--ablate measures",
        *_same_first_token_lines(a),
        *([f"  warning: on one prompt the terms miss the preference by {a['sum_error']:.2g}: the model holds something "
           f"this attribution does not know of (fabric_cli/probe/attribution.py)"]
          if a["sum_error"] > SUM_TOLERANCE * max(1.0, abs(a["preference"])) else []),
    ]


SUM_TOLERANCE = 1e-3  # the terms' sum may miss the preference by rounding; more says they are incomplete


def _on(a: dict) -> str:
    """'on 2,009 prompts (16 without continuations left out)': the prompts a preference study used."""
    k = a.get("without_continuations") or 0  # absent from reports of earlier versions
    return f"on {plural(a['n'], 'prompt')}" + (f" ({k:,} without continuations left out)" if k else "")


def _ci(ci: list) -> str:
    return f" ({words})" if (words := _ci_words(ci)) else ""


def _ablation_grid_lines(a: dict) -> list[str]:
    """Every head's zero-ablation drop as a layer-by-head grid, when every head was ablated."""
    if "grid" not in a:
        return []
    grid = a["grid"]["zero_drop"]
    lines = [f"  Zero-ablation drop (nats) of every head, by layer (rows) and head (columns); [{a['head']}] studied:",
             "      " + "".join(f"{h:>9}" for h in range(len(grid[0])))]
    for layer, row in enumerate(grid):
        cells = [f"[{signed(v)}]" if f"{layer}.{h}" == a["head"] else signed(v) for h, v in enumerate(row)]
        lines.append(f"  L{layer:<3}" + "".join(f"{c:>9}" for c in cells))
    return lines


def _same_first_token_lines(a: dict) -> list[str]:
    """The prompts left out because their two continuations begin with the same token: how many, and
    the first of them with that token (prompts with no continuations are only counted, in the JSON)."""
    same = a["same_first_token"]
    if not same:
        return []
    first = same[0]
    return [f"  left out: {plural(len(same), 'prompt')} whose two continuations begin with the same token; they must differ "
            f"in their first token (the first, {first['where'] or first['id']}: {first['reason']})"]


def _has_preference(em: dict) -> bool:
    return any(row.get("preference") is not None for row in em["rows"])  # absent from reports of earlier versions


def _emergence_lines(em: dict | None) -> list[str]:
    if not em:
        return []
    on = f" on {', '.join(em['suites'])}" if em.get("suites") else ""
    n = em["rows"][-1]["n"] if em["rows"] else 0
    lines = [f"Head {em['head']} over training ({em['metric']}{on}, {plural(n, 'prompt')} with a distractor; "
             f"threshold {100 * em['threshold']:g}%):",
             "      step  accuracy    95% CI    argmax    mass"
             + ("    both" if (paired := any(r.get("both") is not None for r in em["rows"])) else "")
             + ("  preference" if _has_preference(em) else "") + "  best head"]
    for row in em["rows"]:
        mass = "n/a" if row["mass"] is None else f"{row['mass']:.2f}"
        both_cell = f"  {_pct(row.get('both'))}" if paired else ""
        lo, hi = row["accuracy_ci95"]
        ci = "    n/a    " if lo is None else f"{100 * lo:5.1f}-{100 * hi:5.1f}"
        pref = "" if not _has_preference(em) else f"  {'n/a' if row.get('preference') is None else signed(row['preference']):>10}"
        lines.append(f"  {row['step']:>8}  {_pct(row['accuracy'])}{' *' if row['significant'] else '  '} {ci}  "
                     f"{_pct(row['argmax_accuracy'])}  {mass:>6}{both_cell}{pref}  {row['best_head']} ({_pct(row['best_accuracy']).strip()})")
    if all(row["accuracy"] is None for row in em["rows"]):
        lines.append("  no accuracy to follow: no unambiguous prompt has a distractor before its pronoun "
                     "(the argmax and mass columns still do)")
        return lines
    lines.append(f"  * above every baseline with confidence, the rule that names a head: its lower bound, "
                 f"Bonferroni-corrected over all heads (not the 95% CI shown), above {_best_baseline(em)}"
                 + (f"; and its bound right on both versions of a pronoun-swap pair (both) above "
                    f"{_pct(both['both']).strip()} ({BASELINE_NAMES[both['name']]})" if (both := em.get("best_both_baseline")) else ""))
    if _has_preference(em):
        lines.append("  preference: the model's own choice at that step, log p of the referent's continuation minus "
                     "the distractor's (nats; over the unambiguous prompts with continuations), beside where its head looks")
    if em["emerged_at"] is not None:
        last = UNPROVEN if em.get("at_last_snapshot") else ""
        steps = [row["step"] for row in em["rows"]]
        at = steps.index(em["emerged_at"])
        before = em["rows"][at - 1] if at else None  # snapshots are points: the crossing lies between two
        between = (f"; at step {before['step']} it was at {_pct(before['accuracy']).strip()}, so it crossed between the two "
                   f"snapshots" if before and before["accuracy"] is not None else "")
        lines.append(f"  head {em['head']} stays at or above {100 * em['threshold']:g}% from step {em['emerged_at']} on "
                     f"(first reached at step {em['first_reached']}{between}){last}")
    elif em["first_reached"] is not None:
        lines.append(f"  head {em['head']} reached {100 * em['threshold']:g}% at step {em['first_reached']} but fell back below it")
    else:
        lines.append(f"  head {em['head']} never reached {100 * em['threshold']:g}%")
    if em.get("significant_from") is not None:
        last = UNPROVEN if em.get("significant_at_last_snapshot") else ""
        lines.append(f"  head {em['head']} beats every baseline with confidence from step {em['significant_from']} on{last}")
    elif em.get("significant_first") is not None:
        lines.append(f"  head {em['head']} beat every baseline with confidence at step {em['significant_first']} "
                     f"but not at every later snapshot")
    return lines
