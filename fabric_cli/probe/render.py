"""The probe's report on the terminal: the table, the grids, the verdict, the controls and one head
prompt by prompt; the sections of --ablate, --attribution and --over-checkpoints are in sections.py.

render_text reads only the report, so what the terminal shows and what --json prints agree.
"""

from __future__ import annotations

import math
import textwrap

from fabric_cli.probe.encode import count_kinds
from fabric_cli.probe.score import BASELINE_NAMES, EXACT_UP_TO, MIN_PAIRS
from fabric_cli.probe.sections import _ablation_lines, _attribution_lines, _emergence_lines
from fabric_cli.text import bar, pct, plural
from fabric_cli.tokenizer import WHOLE_WORDS


TOO_FEW = (f"fewer than {MIN_PAIRS} pairs, too few to ask of a head: the rate is shown and naming goes by accuracy; "
           f"give more prompts a swap")


def _suite_lines(r: dict) -> list[str]:
    """The chosen head suite by suite, a row each: its accuracy beside the suite's best baseline, named,
    and its rate right on both versions of the suite's pronoun-swap pairs. A suite that a baseline solves
    outright (referent_first: the referent always comes first) is a control of position, not a failure."""
    paired = any(s.get("pairs") for s in r["suites"])
    lines = [f"By suite, head {r['chosen_head']}:",
             f"  {'suite':<18} {'accuracy':<16} {'best baseline':<36} {'both' if paired else ''}".rstrip()]
    for s in r["suites"]:
        known = {k: v for k, v in s["baselines"].items() if v is not None}
        name, best = max(known.items(), key=lambda kv: kv[1]) if known else (None, None)
        control = ", a control" if best is not None and best >= 1.0 and name in ("nearest", "first") else ""
        base = f"{pct(best)} {BASELINE_NAMES.get(name, name)}{control}" if known else "   n/a"
        both = f"{pct(s['both'])} of {s['pairs']:,}" if s.get("pairs") else ""
        lines.append(f"  {s['suite']:<18} {pct(s['accuracy'])} of {s['n']:<6,} {base:<36} {both}".rstrip())  # 6+4+6 = 16
    return lines


def wrapped(text: str, indent: str = "  ") -> list[str]:
    """A long line broken between words to fit WIDTH columns, its later lines indented."""
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


WIDTH = 100  # the terminal's columns that the verdict and the notes are wrapped to


def _controls_text(r: dict) -> list[str]:
    """The two position controls read against each other, not against the 100% that position alone
    scores on each: a head that follows the pronoun scores alike with the referent first or second."""
    by = {s["suite"]: s for s in r["suites"] if s["n"] and s["accuracy"] is not None}
    if not {"referent_first", "referent_second"} <= set(by):
        return []
    a, b = by["referent_first"], by["referent_second"]
    diff = a["accuracy"] - b["accuracy"]
    half = 1.96 * math.sqrt(a["accuracy"] * (1 - a["accuracy"]) / a["n"] + b["accuracy"] * (1 - b["accuracy"]) / b["n"])
    return [f"Controls, head {r['chosen_head']}: {pct(a['accuracy']).strip()} with the referent first, "
            f"{pct(b['accuracy']).strip()} with it second, {100 * diff:+.1f} points (95% CI {100 * (diff - half):+.1f} to "
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
    best = t["best_baseline"]
    skipped = f" ({plural(t['skipped'], 'twin')} left out: {_twin_skips(t)})" if t["skipped"] else ""
    return [f"Pronoun swapped, head {h['head']}: right on both versions of {pct(h['both']).strip()} of "
            f"{plural(t['pairs'], 'pair')} (95% CI {100 * lo:.1f}-{100 * hi:.1f}){skipped}; a head that ignores the "
            f"pronoun is right on one version of each, the best baseline ({BASELINE_NAMES[best['name']]}) on both of "
            f"{pct(best['both']).strip()}"]


def _twin_skips(t: dict) -> str:
    """Why twins were left out: '2 whose swapped pronoun does not line up with the tokens, 1 past the context'."""
    why = {"alignment": "whose swapped pronoun does not line up with the tokens", "length": "past the model's context"}
    kinds = t.get("skipped_kinds")
    if kinds is None:  # reports of this version's first days: one count, no reasons
        return f"{t['skipped']} whose reason the report does not keep"
    return ", ".join(f"{n} {why.get(k, k)}" for k, n in kinds.items())


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
    return (f"this model's tokenizer splits these prompts' words into {tpw:.1f} tokens each: words outside its "
            f"corpus (probe it with prompts in its own corpus's words, --prompts), or a vocabulary too small to "
            f"hold them whole (tokenize with a larger --vocab-size)")


def render_text(r: dict, top: int = 10) -> str:
    """The report as the terminal shows it: the scores, then the studies that ran on them."""
    return "\n".join(scored_lines(r, top) + study_lines(r))


def scored_lines(r: dict, top: int = 10) -> list[str]:
    """The report's first part, which the scoring alone makes: prompts, ranking, grids, verdict, the
    chosen head by suite and prompt by prompt. `fabric probe` prints it before the studies run."""
    c, p, out = r["checkpoint"], r["prompts"], []
    shape = r["shape"]
    out.append(f"checkpoint {c['path']} (step {c['step']}; {shape['n_layer']} layers x {shape['n_head']} heads)")
    line = (f"prompts: {p['total']:,} from {', '.join(s['suite'] for s in r['suites'])}; {p['scored']:,} scored "
            f"({p['scored_accuracy']:,} with a distractor before the pronoun), {p['ambiguous']:,} ambiguous (set apart, "
            f"not scored)")
    if p["skipped"]:
        line += f", {p['skipped']:,} skipped ({count_kinds(s['kind'] for s in r['skipped'])}; listed below)"
    out += [*wrapped(line), *_repeated_lines(p), *_skipped_lines(r["skipped"]), ""]
    heads = {h["head"]: h for h in r["heads"]}
    n = p["scored_accuracy"]
    out += wrapped(f"Top heads by accuracy: the pronoun attends more to the referent than to any other earlier "
                   f"candidate (n={n:,})")
    pairs = (r.get("twins") or {}).get("pairs")  # absent from reports of earlier versions
    out.append("  rank  head  accuracy   95% CI          argmax    mass" + ("    both" if pairs else ""))
    for rank, name in enumerate(r["ranking"][:top], start=1):
        h = heads[name]
        lo, hi = h["accuracy_ci95"]
        ci = "" if h["accuracy"] is None else f"{100 * lo:5.1f}-{100 * hi:5.1f}"
        mass = "n/a" if h["mass"] is None else f"{h['mass']:.2f}"
        both = f"  {pct(h['both'])}" if pairs else ""
        out.append(f"  {rank:>4}  {name:>4}  {pct(h['accuracy'])}   {ci:<13}  {pct(h['argmax_accuracy'])}  {mass:>6}"
                   + both + ("  *" if h["significant"] else ""))
    b = r["baselines"]
    out.append(f"  baselines: nearest candidate {pct(b['nearest']).strip()}, first candidate "
               f"{pct(b['first']).strip()}, chance {pct(b['chance']).strip()}, "
               f"uniform attention {pct(b['uniform']).strip()}")
    if pairs:
        tb = r["twins"]["baselines"]
        out += wrapped(f"  both: right on both versions of a pronoun-swap pair (n={pairs:,}: the pronoun swapped, as she for he, "
                   f"so the distractor is the referent); baselines nearest candidate "
                   f"{pct(tb['nearest']).strip()}, first candidate {pct(tb['first']).strip()}, chance "
                   f"{pct(tb['chance']).strip()}, uniform attention {pct(tb['uniform']).strip()}"
                   + (f", each pronoun to the first or the nearest {pct(tb['pronoun_order']).strip()}"
                      if "pronoun_order" in tb else "")
                   + ("" if r["twins"].get("decides", True) else f"; {TOO_FEW}"), "    ")
    out += wrapped(f"  * {r['settings']['criterion']}", "    ")
    out += ["", *_grid_lines(r), ""]
    if pairs:
        out += [*_grid_lines(r, "both"), ""]
    out += wrapped(_verdict(r, heads))
    if len(r["suites"]) > 1:
        out += _suite_lines(r)
        out += [w for line in _controls_text(r) for w in wrapped(line)]
    out += [w for line in _swap_text(r, heads) for w in wrapped(line)]
    if len(r.get("by_pronoun") or []) > 1:  # absent from reports of earlier versions
        out += wrapped(f"By pronoun, head {r['chosen_head']}: "
                       + ", ".join(f"{p['pronoun']} {pct(p['accuracy']).strip()} of {p['n']:,}" for p in r["by_pronoun"]))
    if r["ambiguous"]["n"]:
        a = r["ambiguous"]
        out += wrapped(f"Ambiguous prompts ({a['n']}, not scored), head {a['head']}, of their candidates: "
                       + "; ".join(f"{it['pronoun']} looked most at {it['picked']}" for it in a["items"][:5]))
    if detail := _detail_lines(r["head_detail"]):
        out += ["", *detail]
    return out


def study_lines(r: dict) -> list[str]:
    """The report's second part: the attribution, ablation and emergence studies that ran, each after
    a blank line ([] when none did)."""
    out = []
    ablation = _ablation_lines(r.get("ablation"), r["settings"]["limit"])
    if ablation and r["settings"]["head"] is None and r["named_head"] is None:
        every = r["shape"]["n_layer"] * r["shape"]["n_head"]
        ablation.insert(0, f"No head was named, so this removes the top-ranked head, {r['chosen_head']}; a model can resolve "
                           f"pronouns with no single head: --random-heads {every} removes each head in turn and maps the drops.")
    for section in (_attribution_lines(r.get("attribution")), ablation, _emergence_lines(r.get("emergence"))):
        if section:
            out += ["", *section]
    return out


SHOWN_SKIPS = 10  # skipped prompts listed on the terminal; report.json lists them all


def _skipped_lines(skipped: list[dict]) -> list[str]:
    """One line per skipped prompt (where it is, and why), so none is dropped silently."""
    lines = [f"  skipped {s['where'] or s['id']} ({s['kind']}): {s['reason']}" for s in skipped[:SHOWN_SKIPS]]
    if len(skipped) > SHOWN_SKIPS:
        lines.append(f"  ... and {len(skipped) - SHOWN_SKIPS} more, every one under \"skipped\" in the JSON report")
    return lines


def _grid_lines(r: dict, key: str = "accuracy") -> list[str]:
    """A layer-by-head grid of the accuracy (the best in brackets) or of the rate right on both versions
    of a pronoun-swap pair ("both"), heads above every baseline starred."""
    acc = r["grid"][key]
    sig = {h["head"] for h in r["heads"] if h["significant"]}
    best = r["ranking"][0] if key == "accuracy" else None
    applied = key == "accuracy" or (r.get("twins") or {}).get("decides", True)
    title = ("Accuracy (%) by layer (rows) and head (columns); [best], * above every baseline:" if key == "accuracy" else
             "Right on both versions of a pronoun-swap pair (%), by layer and head; * above every baseline"
             + ("" if applied else f" (on accuracy alone: fewer than {MIN_PAIRS} pairs)") + ":")
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
    test = "exact McNemar" if u["only_top"] + u["only_other"] <= EXACT_UP_TO else "McNemar, normal approximation,"
    if u["p"] >= 0.05:
        return (f"; but not told apart from the next, {u['head']} at {pct(other['accuracy']).strip()}: on the prompts "
                f"only one of them gets right, {split} ({test} p = {u['p']:.2f}), so they may share the task")
    p = "p < 1e-300" if u["p"] == 0 else f"p = {u['p']:.3g}"  # past ~1,075 split prompts the tail underflows a float
    return f"; ahead of the next, {u['head']}, on the prompts only one of them gets right, {split} ({test} {p})"


def _verdict(r: dict, heads: dict) -> str:
    bb = r["best_baseline"]
    base = f"{pct(bb['accuracy']).strip()} ({bb['name']})" if bb["accuracy"] is not None else "n/a"
    if r["named_head"]:
        h = heads[r["named_head"]]
        margin = h["accuracy"] - bb["accuracy"] if bb["accuracy"] is not None else None
        if margin is not None and margin < WEAK_MARGIN:
            return (f"Pronoun head (weak): {h['head']} ({r['example']}), {pct(h['accuracy']).strip()} of "
                    f"{plural(h['n'], 'prompt')}, {100 * margin:.1f} points above the best baseline {base}; its lower bound "
                    f"{pct(h['lower_bound']).strip()} clears the baseline{_on_both(r, h)}, but a head that has learned the "
                    f"task scores far higher: {_unseen_words(r) or 'train longer'}")
        return (f"Pronoun head: {h['head']} ({r['example']}), {pct(h['accuracy']).strip()} of {plural(h['n'], 'prompt')}; "
                f"lower bound {pct(h['lower_bound']).strip()} > best baseline {base}" + _on_both(r, h)
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
        return (f"No pronoun head found: the best, {top['head']} at {pct(top['accuracy']).strip()} of "
                f"{plural(top['n'], 'prompt')}, clears the baselines (lower bound {pct(top['lower_bound']).strip()} > "
                f"{base}), but is right on both versions of only {pct(top['both']).strip()} of "
                f"{plural(twins['pairs'], 'pronoun-swap pair')} (lower bound {pct(top['both_lower_bound']).strip()}, not "
                f"above {pct(tb['both']).strip()}, {BASELINE_NAMES[tb['name']]}): it does not reliably follow the "
                f"pronoun to its referent, and no head passes both tests.")
    return (f"No pronoun head found: the best, {top['head']} at {pct(top['accuracy']).strip()} of {plural(top['n'], 'prompt')}, "
            f"has a lower bound of {pct(top['lower_bound']).strip()}, not above the best baseline {base}"
            + (f"; {unseen}" if (unseen := _unseen_words(r)) else
               "; a model trained longer may grow one (--head with --over-checkpoints follows a head through the "
               "snapshots)") + ".")


def _on_both(r: dict, h: dict) -> str:
    """The named head on the pronoun-swap pairs, beside the best baseline there ("" without pairs)."""
    twins = r.get("twins") or {}
    if not twins.get("pairs"):
        return ""
    tb = twins["best_baseline"]
    if not twins.get("decides", True):
        return f"; right on both versions of {pct(h['both']).strip()} of {plural(twins['pairs'], 'pronoun-swap pair')} ({TOO_FEW})"
    return (f"; right on both versions of {pct(h['both']).strip()} of {plural(twins['pairs'], 'pronoun-swap pair')}, "
            f"lower bound {pct(h['both_lower_bound']).strip()} > {pct(tb['both']).strip()} ({BASELINE_NAMES[tb['name']]})")


def _detail_lines(d: dict | None) -> list[str]:
    if not d:
        return []
    lines = [f"Head {d['head']}, prompt by prompt (first {d['shown']:,} of {d['of']:,}):"]
    marks = {True: "✓", False: "✗", None: "·"}
    paired = any(it.get("twin") for it in d["prompts"])  # absent from reports of earlier versions
    split = [it["twin"] if it.get("twin") and "top" in it["twin"] and it["twin"]["correct"] != it["correct"] else None
             for it in d["prompts"]]  # where a pair split, a line shows where the swapped pronoun looked
    # "looked at" in one column: as wide as the longest "pronoun -> referent" shown, up to a point
    shown = [f"{r['pronoun']} -> {r['referent']}" for r in d["prompts"]]
    shown += [f"{t['pronoun']} -> {t['referent']}" for t in split if t]
    width = min(36, max(map(len, shown), default=0))
    for it, t in zip(d["prompts"], split):
        mark = "?" if it["ambiguous"] else marks[it["correct"]]
        if paired:
            mark += marks[it["twin"]["correct"]] if it.get("twin") else " "
        who = f"{it['pronoun']} -> {it['referent']}"
        lines.append(f"  {mark} {it['id']:<14} {who:<{width}} looked at: {looked_at(it['top'])}")
        if t:
            who = f"{t['pronoun']} -> {t['referent']}"
            lines.append(f"     {'swapped,':<14} {who:<{width}} looked at: {looked_at(t['top'])}")
    t = d["totals"]
    lo, hi = t["accuracy_ci95"]
    also = " (the · prompts too)" if t["n_all"] != t["n"] else ""
    lines += wrapped(f"  totals: accuracy {pct(t['accuracy']).strip()} of {t['n']:,} (95% CI {pct(lo).strip()}-"
                     f"{pct(hi).strip()}), argmax {pct(t['argmax_accuracy']).strip()} of {t['n_all']:,}{also}, "
                     f"mass {'-' if t['mass'] is None else format(t['mass'], '.2f')}"
                     + (f", right on both versions of {pct(t['both']).strip()} of {t['pairs']:,} pronoun-swap pairs"
                        if t.get("pairs") else ""), "    ")
    lines += wrapped("  (✓ right, ✗ wrong, · only the referent came before the pronoun, ? ambiguous: not scored"
                     + ("; the second mark: on the prompt with its pronoun swapped, where the distractor is the referent)"
                        if paired else ")"), "   ")
    return lines


def looked_at(top: list) -> str:
    """The tokens a head attended to most from the pronoun (head_detail's "top"), each with a bar and its weight.

    Example:
        >>> looked_at([[" queen", 0.56], [" she", 0.06]])
        'queen ████▌ 0.56  she ▌ 0.06'
    """
    return "  ".join(f"{tok.strip() or repr(tok)} {bar(w, 8)} {w:.2f}" for tok, w in top)
