"""The sections of the probe's terminal report that its studies add: --ablate (the drops, the heads
removed together, the map of every head), --attribution and --over-checkpoints (emergence)."""

from __future__ import annotations

import math

from fabric_cli.probe.emergence import UNPROVEN
from fabric_cli.probe.score import BASELINE_NAMES
from fabric_cli.text import pct, plural, signed


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
    return f"the best baseline, {BASELINE_NAMES.get(b['name'], b['name'])} {pct(b['accuracy']).strip()}"


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
    return "" if share is None else f"; the referent's continuation the more likely on {pct(share).strip()} of prompts"


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
        both_cell = f"  {pct(row.get('both'))}" if paired else ""
        lo, hi = row["accuracy_ci95"]
        ci = "    n/a    " if lo is None else f"{100 * lo:5.1f}-{100 * hi:5.1f}"
        pref = "" if not _has_preference(em) else f"  {'n/a' if row.get('preference') is None else signed(row['preference']):>10}"
        lines.append(f"  {row['step']:>8}  {pct(row['accuracy'])}{' *' if row['significant'] else '  '} {ci}  "
                     f"{pct(row['argmax_accuracy'])}  {mass:>6}{both_cell}{pref}  {row['best_head']} ({pct(row['best_accuracy']).strip()})")
    if all(row["accuracy"] is None for row in em["rows"]):
        lines.append("  no accuracy to follow: no unambiguous prompt has a distractor before its pronoun "
                     "(the argmax and mass columns still do)")
        return lines
    lines.append(f"  * above every baseline with confidence, the rule that names a head: its lower bound, "
                 f"Bonferroni-corrected over all heads (not the 95% CI shown), above {_best_baseline(em)}"
                 + (f"; and its bound right on both versions of a pronoun-swap pair (both) above "
                    f"{pct(both['both']).strip()} ({BASELINE_NAMES[both['name']]})" if (both := em.get("best_both_baseline")) else ""))
    if _has_preference(em):
        lines.append("  preference: the model's own choice at that step, log p of the referent's continuation minus "
                     "the distractor's (nats; over the unambiguous prompts with continuations), beside where its head looks")
    if em["emerged_at"] is not None:
        last = UNPROVEN if em.get("at_last_snapshot") else ""
        steps = [row["step"] for row in em["rows"]]
        at = steps.index(em["emerged_at"])
        before = em["rows"][at - 1] if at else None  # snapshots are points: the crossing lies between two
        between = (f"; at step {before['step']} it was at {pct(before['accuracy']).strip()}, so it crossed between the two "
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
