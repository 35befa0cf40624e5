"""--plot: PNG pictures of a probe (matplotlib, the `plot` extra; no display needed).

heads.png: the layers-by-heads accuracy grid as a heatmap; head-L.H.png: the chosen head's attention
from the pronoun on a few prompts; emergence.png: the chosen head's accuracy by training step, marking
the steps it emerged at and beat every baseline from;
attribution.png (--attribution): every head's direct effect on the preference, and each layer's
feed-forward's beside them; ablation.png (--ablate of every head): every head's zero-ablation drop.
"""

from __future__ import annotations

from pathlib import Path

from fabric_cli.errors import InputError
from fabric_cli.rundir import PROBE_PICTURES
from fabric_cli.text import plural

INSTALL = "pip install 'neural-fabric[plot]'"


def require_matplotlib() -> None:
    """Fail before any work is done when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(f"--plot needs matplotlib, which is not installed; install it with: {INSTALL}") from None


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    return path


def picture_paths(result, folder: Path, prefix: str = "") -> dict[str, Path]:
    """Where the pictures of `result` go: each kind's file in `folder`, its name after `prefix`
    (emergence, attribution and ablation only when the report has that section)."""
    r = result.report
    shown = {"emergence": bool(r.get("emergence")), "attribution": bool((r.get("attribution") or {}).get("n")),
             "ablation": "grid" in (r.get("ablation") or {})}  # the pictures of sections the report holds
    kinds = [k for k in PROBE_PICTURES if shown.get(k, True)]
    return {k: Path(folder) / (prefix + PROBE_PICTURES[k].format(head=result.chosen)) for k in kinds}


def write_plots(result, paths: dict[str, Path], examples: int = 4) -> None:
    """Draw each picture of `picture_paths` into the file given for it (save_report hands temporary
    files, which it moves into place together with the report)."""
    require_matplotlib()
    from matplotlib.figure import Figure  # the Figure API draws with Agg, no pyplot state

    r = result.report
    _heads(Figure, r, paths["heads"])
    _attention(Figure, result, paths["attention"], examples)
    if "emergence" in paths:
        _emergence(Figure, r["emergence"], paths["emergence"])
    step = r["checkpoint"]["step"]
    if "attribution" in paths:
        a = r["attribution"]
        _signed_grid(Figure, a["grid"], paths["attribution"], side=a["feed_forward"], side_label="feed-\nforward",
                     boxed=r["chosen_head"],
                     title=f"direct effect: what each part writes into the preference (total {a['preference']:+.2f} nats)"
                           f"\nstep {step}, {plural(a['n'], 'prompt')}")
    if "ablation" in paths:
        a = r["ablation"]
        _signed_grid(Figure, a["grid"]["zero_drop"], paths["ablation"], boxed=a["head"],
                     title=f"whole effect: drop in the preference when a head is zeroed (intact {a['clean']:+.2f} nats)"
                           f"\nstep {step}, {plural(a['n'], 'prompt')}")


def _heads(Figure, r: dict, path: Path) -> Path:
    """The accuracy grid and, where the prompts had pronoun-swap twins, the rate right on both versions
    beside it, on the same 0-100 scale; heads above every baseline starred, the best boxed."""
    import numpy as np

    keys = ["accuracy"] + (["both"] if "both" in r["grid"] else [])
    grids = [np.array([[np.nan if v is None else 100 * v for v in row] for row in r["grid"][k]]) for k in keys]
    L, nh = grids[0].shape
    fig = Figure(figsize=(1.0 + 0.6 * nh * len(keys), 1.0 + 0.5 * L))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    sig = {h["head"] for h in r["heads"] if h["significant"]}
    best = r["ranking"][0].split(".")
    for ax, key, grid in zip(axes, keys, grids):
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for layer in range(L):
            for h in range(nh):
                if not np.isnan(grid[layer, h]):
                    mark = "*" if f"{layer}.{h}" in sig else ""
                    ax.text(h, layer, f"{grid[layer, h]:.0f}{mark}", ha="center", va="center", fontsize=7,
                            color="black" if grid[layer, h] > 60 else "white")
        if key == "accuracy":  # the best is ranked by accuracy
            ax.add_patch(_box(int(best[1]), int(best[0])))
        ax.set_xticks(range(nh))
        ax.set_yticks(range(L))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title("accuracy (%)" if key == "accuracy" else "right on both versions of a pronoun swap (%)", fontsize=8)
    fig.colorbar(im, ax=list(axes), label="%")
    named = r["named_head"] or "none"
    fig.suptitle(f"pronoun -> referent, step {r['checkpoint']['step']} (named: {named})", fontsize=9)
    return _save(fig, path)


def _signed_grid(Figure, grid: list[list[float]], path: Path, title: str, side: list[float] | None = None,
                 side_label: str = "", boxed: str | None = None) -> Path:
    """A layers-by-heads grid of signed nats, red up and blue down, centred on 0; `side`, one value per
    layer (the feed-forwards), drawn beside it on a scale of its own: a feed-forward writing +3 nats
    would otherwise leave every head's cell white."""
    import numpy as np

    values = np.array(grid, dtype=float)  # (L, nh)
    L, nh = values.shape
    panels_cells = [(values, list(range(nh)), "heads (nats)")]
    if side is not None:
        panels_cells.append((np.array(side, dtype=float)[:, None], [side_label], "nats"))
    fig = Figure(figsize=(2.4 + 0.75 * nh + (1.6 if side is not None else 0), 1.2 + 0.5 * L))
    panels = fig.subplots(1, 2, width_ratios=[nh, 1.2], squeeze=True) if side is not None else [fig.add_subplot()]
    scales = []
    for ax, (cells, labels, unit) in zip(panels, panels_cells):
        scale = max(float(np.abs(cells).max()), 1e-6)
        scales.append(scale)
        im = ax.imshow(cells, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
        digits = 2 if scale >= 0.1 else 3  # heads writing hundredths of a nat are not all "+0.00"
        for layer in range(L):
            for h in range(cells.shape[1]):
                v = cells[layer, h] if round(cells[layer, h], digits) else 0.0  # no "-0.00"
                ax.text(h, layer, f"{v:+.{digits}f}", ha="center", va="center", fontsize=8 if digits == 2 else 7,
                        color="white" if abs(cells[layer, h]) > 0.6 * scale else "black")
        ax.set_xticks(range(cells.shape[1]), labels=labels)
        ax.set_yticks(range(L))
        fig.colorbar(im, ax=ax, label=unit, fraction=0.15 if cells is values else 0.5)
    if boxed:
        layer, head = (int(x) for x in boxed.split("."))
        dark = abs(values[layer, head]) > 0.6 * scales[0]  # a box that shows on its cell: red would vanish on red
        panels[0].add_patch(_box(head, layer, "white" if dark else "black"))
    panels[0].set_xlabel("head")
    panels[0].set_ylabel("layer")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _box(x: int, y: int, color: str = "red"):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor=color, linewidth=2)


def _attention(Figure, result, path: Path, examples: int) -> Path:
    h = result.chosen
    picks = [i for i, e in enumerate(result.encoded) if not e.item.ambiguous][:examples] or [0]
    fig = Figure(figsize=(8, 1.9 * len(picks)))
    for k, i in enumerate(picks):
        e, row = result.encoded[i], result.items.rows[i][h].tolist()  # (T_i,)
        ax = fig.add_subplot(len(picks), 1, k + 1)
        colors = ["lightgray"] * len(row)
        for c, positions in enumerate(e.candidates):
            for p in positions:
                colors[p] = "tab:green" if c == 0 else "tab:red"
        colors[e.pronoun] = "tab:blue"
        ax.bar(range(len(row)), row, color=colors)
        ax.set_xticks(range(len(row)))
        ax.set_xticklabels([e.token_text(p).strip() or "␣" for p in range(len(row))], rotation=45, fontsize=7, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("attention", fontsize=7)
        ax.set_title(f"{e.item.id}: {e.item.show(e.item.pronoun)} (blue) -> referent (green), distractors (red)",
                     fontsize=8)
    fig.suptitle(f"head {h}: attention from the pronoun", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def emergence_marks(em: dict) -> list[tuple[int, str, dict]]:
    """The steps emergence.png marks, each (step, legend label, line style): where the head emerged
    (the threshold's step), and the step from which it beats every baseline, which the text leads with.

    Example:
        >>> [label for _, label, _ in emergence_marks({"emerged_at": 1200, "significant_from": 1100})]
        ['emerged at step 1200', 'above every baseline from step 1100']
    """
    marks = []
    if em.get("emerged_at") is not None:
        marks.append((em["emerged_at"], f"emerged at step {em['emerged_at']}", {"color": "red", "alpha": 0.5}))
    if em.get("significant_from") is not None:
        marks.append((em["significant_from"], f"above every baseline from step {em['significant_from']}",
                      {"color": "purple", "linestyle": "-.", "alpha": 0.6}))
    return marks


def _emergence(Figure, em: dict, path: Path) -> Path:
    steps = [row["step"] for row in em["rows"]]
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    ax.plot(steps, [row["accuracy"] for row in em["rows"]], marker="o", label=f"head {em['head']}")
    ax.plot(steps, [row["best_accuracy"] for row in em["rows"]], linestyle=":", label="best head at that step")
    ax.axhline(em["threshold"], color="gray", linestyle="--", label=f"threshold {100 * em['threshold']:g}%")
    for step, label, style in emergence_marks(em):
        ax.axvline(step, label=label, **style)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    handles, labels = ax.get_legend_handles_labels()
    prefs = [row.get("preference") for row in em["rows"]]
    if any(p is not None for p in prefs):  # the model's own choice, beside where its head looks
        ax2 = ax.twinx()
        ax2.plot(steps, [float("nan") if p is None else p for p in prefs], color="tab:green", marker=".",
                 label="preference (nats, right axis)")
        ax2.set_ylabel("preference (nats)")
        shown = [p for p in prefs if p is not None]
        lo, hi = min(0.0, *shown), max(0.0, *shown)  # zero on the axis: noise near it is not drawn as a plunge
        ax2.set_ylim(lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1))
        ax2.axhline(0.0, color="tab:green", linewidth=0.6, alpha=0.5)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=7, loc="upper left", framealpha=0.9)
    return _save(fig, path)
