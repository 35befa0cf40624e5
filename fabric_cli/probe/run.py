"""`fabric probe` as one function: load, encode, score every head, and optionally ablate and scan snapshots."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from fabric_cli.checkpoint import load_model, load_model_for, read_info
from fabric_cli.config import Head, ModelConfig, ProbeConfig, parse_head
from fabric_cli.device import choose_device, use_device
from fabric_cli.errors import CheckpointError, InputError
from fabric_cli.files import atomic_paths, file_sha256, json_text, undo_new_folders
from fabric_cli.probe.ablate import ablation_study
from fabric_cli.probe.attribution import attribution_study
from fabric_cli.probe.emergence import emergence_table, snapshot_steps, unreadable_snapshot
from fabric_cli.probe.encode import Encoded, Skipped, count_kinds, encode_items, encode_twins
from fabric_cli.probe.report import FORMAT as REPORT_FORMAT, build_report
from fabric_cli.probe.score import HeadScores, ItemScores, Twins, head_scores, make_batches, score_items
from fabric_cli.probe.suites import ProbeItem, load_suites
from fabric_cli.rundir import RunPaths
from fabric_cli.tokenizer import eot_id, load_tokenizer_for, tokenizer_path_for


@dataclass
class ProbeResult:
    """Everything `fabric probe` found; `report` is what report.json holds."""

    report: dict
    encoded: list[Encoded]
    items: ItemScores
    heads: HeadScores
    chosen: Head  # --head, else the best-ranked head
    run: RunPaths  # the checkpoint's run: its snapshots were scanned, its probe/ folder takes the report
    twins: Twins | None = None  # the pronoun-swap twins, scored


def check_head(text: str, config: ModelConfig) -> Head:
    """Parse a head and check that the model has it; the error states the model's shape."""
    h = parse_head(text)
    if not (h.layer < config.n_layer and h.head < config.n_head):
        raise InputError(
            f"head {h} does not exist: the model has {config.n_layer} layers (0-{config.n_layer - 1}) "
            f"and {config.n_head} heads (0-{config.n_head - 1})"
        )
    return h


def probe_run(paths: RunPaths, checkpoint: Path | None) -> RunPaths:
    """The run a probe belongs to: the one `checkpoint` lies in (RUN/checkpoints/...), else `paths` (--run).

    Any RUN/checkpoints/ folder counts, even with nothing else beside it (RunPaths.of_checkpoint
    asks for more, before reading metrics): its snapshots are the checkpoint's own, and its report
    must not overwrite another run's.

    Example:
        >>> probe_run(RunPaths(Path("demo")), Path("other/checkpoints/latest.safetensors")).root.as_posix()
        'other'
        >>> probe_run(RunPaths(Path("demo")), Path("exports/ck.safetensors")).root.as_posix()
        'demo'
    """
    if checkpoint is not None and Path(checkpoint).parent.name == "checkpoints":
        return RunPaths(Path(checkpoint).parent.parent)
    return paths


def run_probe(cfg: ProbeConfig, paths: RunPaths, checkpoint: Path | None = None,
              tokenizer: Path | None = None, progress: bool | None = None,
              on_scored: Callable[[dict], None] | None = None) -> ProbeResult:
    """Score every head of a checkpoint on the suites; see fabric_cli/probe/__init__.py.

    `on_scored` is given the report as the scoring leaves it, before the attribution, ablation and
    emergence studies (minutes, some of them) run: the CLI prints the ranking then.

    `checkpoint` defaults to the latest of `paths`; --over-checkpoints scans the snapshots of the
    checkpoint's own run (`probe_run`), never those of another, and `result.run` names that run.
    """
    ckpt = Path(checkpoint or paths.latest)
    owner = probe_run(paths, checkpoint)
    # what a user can get wrong is checked before the minutes of scoring and ablation, not after
    items = load_suites(cfg.suites, cfg.prompts)
    tok_path = tokenizer_path_for(ckpt, tokenizer, paths.tokenizer)
    meta = read_info(ckpt)  # the header alone: enough to check the tokenizer and --head before loading
    tok = load_tokenizer_for(tok_path, ckpt, meta.tokenizer_sha256)
    chosen = check_head(cfg.head, meta.config) if cfg.head is not None else None  # --head '' is refused, not ignored
    together = [check_head(h, meta.config) for h in cfg.with_heads]  # checked now, used by the ablation
    if chosen is not None and together and all(h == chosen for h in together):  # else found once the top is known
        raise InputError(f"--with-heads names only the studied head {chosen}; name other heads to remove with it")
    if cfg.over_checkpoints and not owner.snapshots():
        raise _no_snapshots(owner)
    bos = eot_id(tok)
    encoded, skipped = encode_items(items, tok, meta.config.block_size, bos)
    _check_scorable(items, encoded, skipped, head_shown=chosen is not None)
    unambiguous = [e for e in encoded if not e.item.ambiguous]
    wanted = " and ".join(flag for flag, on in (("--ablate", cfg.ablate), ("--attribution", cfg.attribution)) if on)
    if wanted and unambiguous and not any(e.item.continuations for e in unambiguous):
        raise InputError(f"{wanted} {'measure' if ' and ' in wanted else 'measures'} the model's preference for what "
                         f"follows the pronoun, and none of the {len(unambiguous):,} unambiguous prompts probed says "
                         f"what does: end each markup line with ' || referent's word | distractor's word' (in a "
                         f".jsonl suite, \"continuations\"), or leave out {wanted}")
    if wanted and unambiguous and not any(e.continuations for e in unambiguous):  # all begin alike
        first = next(e for e in unambiguous if e.same_first_token)
        raise InputError(f"{wanted}: in none of the {len(unambiguous):,} unambiguous prompts probed do the two "
                         f"continuations differ in their first token, which is all the preference compares (the "
                         f"first, {first.item.where or first.item.id}: {first.same_first_token}); give them different "
                         f"first words, or leave out {wanted}")
    twin_rows, twin_encoded, twins_skipped = encode_twins(encoded, tok, meta.config.block_size, bos)
    device = use_device(choose_device(cfg.device).device)
    model, info, tok_sha = load_model_for(ckpt, tok, tok_path, device)
    batches = make_batches(encoded, cfg.batch_size, device)
    twin_batches = make_batches(twin_encoded, cfg.batch_size, device)

    def score(m) -> tuple[ItemScores, Twins | None]:
        """Every prompt, and every pronoun-swap twin, through model m."""
        if not (twin_rows or twins_skipped):
            return score_items(m, batches, len(encoded)), None
        scored = score_items(m, twin_batches, len(twin_encoded))
        twins = Twins(twin_rows, twin_encoded, scored.correct, twins_skipped, scored.rows)
        return score_items(m, batches, len(encoded)), twins

    scores, twins = score(model)
    heads = head_scores(scores, encoded, cfg.alpha, twins=twins)
    chosen = chosen or heads.ranking[0]
    source = {"path": str(ckpt), "sha256": file_sha256(ckpt), "step": info.step,
              "config": info.config.to_dict(), "tokenizer": str(tok_path), "tokenizer_sha256": tok_sha}
    report = build_report(cfg, source, items, encoded, skipped, scores, heads, chosen, bos is not None, twins)
    report["settings"]["device_used"] = device  # settings.device is as asked: "auto" says nothing of where it ran
    if on_scored is not None:
        on_scored(report)
    if cfg.attribution:
        usable, left_out = _with_continuations(encoded)
        report["attribution"] = {**attribution_study(model, make_batches(usable, cfg.batch_size, device)), **left_out}
    if cfg.ablate:
        report["ablation"] = _ablation(model, encoded, chosen, cfg, device, progress, together)
    if cfg.over_checkpoints:
        def snapshot(m) -> HeadScores:
            s, t = score(m)
            return head_scores(s, encoded, cfg.alpha, twins=t)

        current = (info.step, str(ckpt), source["sha256"], heads)
        snaps = _snapshot_scores(owner, ckpt, current, snapshot, device, tok_sha, info.config, progress)
        # which prompts the figures come from: a report may carry an emergence section from another probe
        report["emergence"] = {**emergence_table(snaps, chosen, cfg.threshold),
                               "suites": list(dict.fromkeys(it.suite for it in items))}
    return ProbeResult(report, encoded, scores, heads, chosen, owner, twins)


def _check_scorable(items: list[ProbeItem], encoded: list[Encoded], skipped: list[Skipped], head_shown: bool) -> None:
    """Refuse prompts that cannot score a head: none can be probed, or none has a distractor before its
    pronoun (with the referent alone before it there is nothing to choose between). Prompts marked
    ambiguous count here: where a head looks on them is shown even though they are not scored. With
    --head (`head_shown`) prompts without a distractor still show where that head looks, so they stand."""
    if not encoded:
        first = skipped[0]
        raise InputError(f"no prompt of the {len(items):,} given can be probed ({count_kinds(s.kind for s in skipped)}); "
                         f"the first, {first.where or first.id}: {first.reason}")
    if not head_shown and not any(len(e.candidates) > 1 for e in encoded):
        also = f" ({len(skipped)} skipped: {count_kinds(s.kind for s in skipped)})" if skipped else ""
        raise InputError(f"no prompt of the {len(items):,} given{also} has a distractor before the pronoun, so no head "
                         f"can be scored; add a <distractor> before the {{pronoun}} (in a .jsonl suite, a "
                         f"\"distractors\" span that ends before the pronoun's)")


def _ablation(model, encoded: list[Encoded], head: Head, cfg: ProbeConfig, device, progress,
              together: list[Head] = ()) -> dict:
    """The ablation study on the unambiguous prompts whose two continuations differ in their first token,
    with the others counted: those without continuations, and those whose continuations begin alike.
    `together`: heads removed at once with `head` (the studied head itself, or a repeat, is dropped)."""
    usable, left_out = _with_continuations(encoded)
    if together and not (together := list(dict.fromkeys(h for h in together if h != head))):
        raise InputError(f"--with-heads names only the studied head {head}; name other heads to remove with it")
    study = ablation_study(model, make_batches(usable, cfg.batch_size, device), head, cfg.random_heads, cfg.seed,
                           progress, together)
    each = study.pop("each", {})
    # every prompt's preferences as columns (2,000 prompts in ~200 KB), the first --limit of them
    # also as rows the terminal can show
    items = {"id": [e.item.id for e in usable], **{k: [round(x, 4) for x in v] for k, v in each.items()}}
    shown = [{"where": e.item.where or e.item.id, "pronoun": e.item.show(e.item.pronoun),
              "referent": e.item.show(e.item.referent), **{k: v[i] for k, v in items.items() if k != "id"}}
             for i, e in enumerate(usable[: cfg.limit])]
    return {**study, **left_out, "items": items, "items_shown": shown}


def _with_continuations(encoded: list[Encoded]) -> tuple[list[Encoded], dict]:
    """The unambiguous prompts whose two continuations differ in their first token (what the preference
    compares), and the others counted: those without continuations, those whose continuations begin alike."""
    unambiguous = [e for e in encoded if not e.item.ambiguous]
    usable = [e for e in unambiguous if e.continuations]
    same = [{"id": e.item.id, "where": e.item.where, "reason": e.same_first_token}
            for e in unambiguous if e.same_first_token]
    return usable, {"without_continuations": len(unambiguous) - len(usable) - len(same), "same_first_token": same}


def _snapshot_scores(paths, ckpt, current, score, device, tok_sha, config, progress) -> list[tuple]:
    """(step, path, sha256, HeadScores) for every snapshot and the probed checkpoint, by step."""
    snaps = snapshot_steps(paths.snapshots())
    if not snaps:
        raise _no_snapshots(paths)
    rows = []
    for s, path in tqdm(snaps, desc="snapshots", file=sys.stderr, disable=None if progress is None else not progress):
        if path.resolve() == ckpt.resolve():
            rows.append(current)
            continue
        with unreadable_snapshot(path):
            model, info = load_model(path, device, tok_sha)
        shape = (info.config.n_layer, info.config.n_head, info.config.block_size)
        if shape != (config.n_layer, config.n_head, config.block_size):
            raise CheckpointError(f"snapshot {path} has layers, heads, context {shape}; the probed checkpoint "
                                  f"{(config.n_layer, config.n_head, config.block_size)}: they are not one run")
        rows.append((s, str(path), file_sha256(path), score(model)))
    if current[0] not in [r[0] for r in rows]:
        rows.append(current)  # the probed checkpoint, when it is not one of the snapshots
    return sorted(rows, key=lambda r: r[0])


def _no_snapshots(paths: RunPaths) -> InputError:
    return InputError(f"--over-checkpoints: no snapshots (step-*.safetensors) in {paths.checkpoints}; "
                      f"train with --snapshot-every N to keep them")


def save_report(report: dict, path: Path, pictures: dict[str, Path] | None = None,
                draw: Callable[[dict[str, Path]], None] | None = None) -> Path:
    """The report as JSON at `path` (a run's probe/report.json unless --report) and, with
    `pictures`, the pictures `draw` makes into the temporary files it is given: all written in full,
    then moved into place together (files.atomic_paths), so an interruption leaves the old report
    with its old pictures. The pictures the replaced report listed as its own ("plots") and this one
    does not make (another head's, an emergence plot) go with it; no other file is touched. A folder
    that cannot take them is an InputError."""
    path, pictures = Path(path), pictures or {}
    before = listed_plots(read_report(path))
    try:
        with undo_new_folders(path.parent, *(p.parent for p in pictures.values())), \
                atomic_paths(path, *pictures.values()) as (tmp, *pic_tmps):
            if pictures:
                draw(dict(zip(pictures, pic_tmps)))
                report["plots"] = [str(p) for p in pictures.values()]
            tmp.write_text(json_text(report), encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write the probe report {path}: {e.strerror or e}; "
                         f"make {path.parent} a writable folder, or pass another --run or --report") from None
    kept = {os.path.abspath(p) for p in pictures.values()}
    for old in before:
        if os.path.abspath(old) not in kept and os.path.abspath(Path(old).parent) == os.path.abspath(path.parent):
            Path(old).unlink(missing_ok=True)  # a link itself, not what it points to
    return path


SCORES_FORMAT = "fabric-probe-scores"


def read_report(path: str | os.PathLike) -> dict | None:
    """The JSON object at `path`, or None when it is missing, unreadable or not an object."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def replaced_study(old: dict | None, new: dict) -> str:
    """What the report `old` (read_report of the file `new` is written over) holds that `new` does
    not: its other suites, and its ablation, attribution or emergence study, or one of another head
    ("" when nothing, or no report was there). The run's report.json is replaced by each probe of its
    latest checkpoint, a snapshot's report by each probe of that snapshot; a --report keeps a study."""
    if old is None or old.get("format") != new.get("format"):
        return ""

    def names(r: dict) -> list:
        return [s.get("suite") for s in r.get("suites") or [] if isinstance(s, dict)]

    def head(study) -> str | None:
        return study.get("head") if isinstance(study, dict) else None

    lost = [s for s in names(old) if s not in names(new)]
    parts = [f"{'the suite' if len(lost) == 1 else 'the suites'} {', '.join(lost)}"] if lost else []
    for key, study in (("ablation", "the ablation"), ("attribution", "the attribution"), ("emergence", "the emergence study")):
        was, now = old.get(key), new.get(key)
        if was and (not now or head(was) != head(now)):  # gone, or of another head now
            parts.append(study + (f" of head {head(was)}" if head(was) else ""))
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + (parts[-1] if parts else "")


def check_report_target(path: str | os.PathLike) -> None:
    """--report replaces only a probe report (or an empty file): a checkpoint, a tokenizer or anything
    else already there is refused, before the work."""
    path = Path(path)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    try:
        with open(path, "rb") as f:  # a report is JSON, "{" first: a checkpoint of gigabytes is not read whole
            found = json.loads(b"{" + f.read()).get("format") if f.read(1) == b"{" else None
    except (OSError, ValueError, AttributeError):  # not JSON (a picture, a tokenizer cut short), or unreadable
        found = None
    if found != REPORT_FORMAT:
        what = f"a {found} file" if isinstance(found, str) else "a file that is not a probe report"
        raise InputError(f"--report {path} already holds {what}; give the report a new file name")


def check_scores_target(path: str | os.PathLike) -> None:
    """--scores replaces only a scores file: a checkpoint (also .safetensors) or anything else there is
    refused, before the work."""
    path = Path(path)
    if not path.exists():
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            found = (f.metadata() or {}).get("format")
    except (OSError, SafetensorError):  # not safetensors at all, or unreadable
        found = None
    if found != SCORES_FORMAT:
        what = f"a {found} file" if found else "a file that is not probe scores"
        raise InputError(f"--scores {path} already holds {what}; give the scores a new file name")


def save_scores(result: ProbeResult, path: str | os.PathLike) -> Path:
    """Every probed prompt's score for every head, as safetensors (N prompts, in report order):
    correct (N, L, nh) uint8, the referent beat every other earlier candidate (accuracy counts the
    prompts with candidates > 1 that are not ambiguous); argmax_hit (N, L, nh) uint8; mass (N, L, nh)
    float32, the attention on the referent; preference (N,) float32, the model's log p of the referent's
    continuation minus the distractor's (NaN without them); candidates (N,) int32; ambiguous (N,) uint8;
    twin (N,) uint8, the prompt's pronoun-swap twin was scored, and twin_correct (N, L, nh) uint8, the head was
    right on that twin (0 where there is none). The metadata
    holds the prompts' ids and where they came from (JSON lists), and the checkpoint's path and step."""
    import torch
    from safetensors.torch import save_file

    path, s, enc = Path(path), result.items, result.encoded
    tensors = {
        "correct": s.correct.to(torch.uint8).contiguous(), "argmax_hit": s.argmax_hit.to(torch.uint8).contiguous(),
        "mass": s.mass.float().contiguous(),
        "preference": s.preference.float().contiguous(),  # NaN for a prompt without two continuations
        "candidates": torch.tensor([len(e.candidates) for e in enc], dtype=torch.int32),
        "ambiguous": torch.tensor([e.item.ambiguous for e in enc], dtype=torch.uint8),
        "twin": torch.zeros(len(enc), dtype=torch.uint8), "twin_correct": torch.zeros_like(s.correct, dtype=torch.uint8),
    }
    if result.twins is not None and result.twins.rows:  # none when every twin was left out
        rows = torch.tensor(result.twins.rows, dtype=torch.long)
        tensors["twin"][rows] = 1
        tensors["twin_correct"][rows] = result.twins.correct.to(torch.uint8)
    c = result.report["checkpoint"]
    meta = {"format": SCORES_FORMAT, "version": "1", "checkpoint": os.path.abspath(c["path"]),
            "checkpoint_sha256": c["sha256"], "step": str(c["step"]),
            "ids": json.dumps([e.item.id for e in enc]), "where": json.dumps([e.item.where for e in enc])}
    try:
        with atomic_paths(path) as (tmp,):
            save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    except OSError as e:
        raise InputError(f"cannot write the scores {path}: {e.strerror or e}; give --scores a writable path") from None
    return path


def listed_plots(report: dict | None) -> list[str]:
    """The pictures a report (read_report's) lists as its own (none for no report)."""
    plots = (report or {}).get("plots", [])
    return [p for p in plots if isinstance(p, str) and p.endswith(".png")] if isinstance(plots, list) else []


def picture_prefix(path: Path, run: RunPaths) -> str:
    """Pictures beside a report are named after it: heads.png beside the run's own probe/report.json,
    mine-heads.png beside mine.json (report-step-000200-heads.png beside a snapshot's), and
    report-heads.png beside a report.json elsewhere, whose folder may hold the user's own heads.png."""
    return "" if os.path.abspath(path) == os.path.abspath(run.probe_report) else f"{Path(path).stem}-"
