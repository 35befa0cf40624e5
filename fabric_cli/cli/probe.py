"""fabric probe: which heads tie a pronoun to its referent; ablation, attribution, emergence."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from fabric_cli.cli.shell import JsonOpt, RunOpt, app, echo_json, err, run_paths, tokenizer_file
from fabric_cli.config import ProbeConfig
from fabric_cli.errors import InputError
from fabric_cli.files import check_writable

_PROBE = ProbeConfig()


def _head_list(text: str | None) -> tuple[str, ...]:
    """--with-heads "0.5, 0.7" -> ("0.5", "0.7"); given but naming none is an error."""
    if text is None:
        return ()
    heads = tuple(h.strip() for h in text.split(",") if h.strip())
    if not heads:
        raise InputError(f"--with-heads {text!r} names no head; give heads such as 0.5,0.7")
    return heads


@app.command(epilog='Examples:\n\n  fabric probe\n\n  fabric probe --head 0.1 --ablate\n\n  fabric probe --head 0.1 --over-checkpoints --suite gender --plot')
def probe(
    ctx: typer.Context,
    head: Annotated[Optional[str], typer.Option("--head", help="Show this head (4.7 or L4H7) prompt by prompt; also the head --ablate and --over-checkpoints study (default: the top-ranked head).", show_default=False)] = None,
    suite: Annotated[Optional[list[str]], typer.Option("--suite", metavar="<name>", help="A suite in data/probes by name (repeatable); default: every suite there, or none when --prompts is given.", show_default=False)] = None,
    prompts: Annotated[Optional[list[Path]], typer.Option("--prompts", metavar="<path>", help="Your own prompts (repeatable): a .jsonl suite, a folder of them (as fabric corpus --suites writes), or a text file in the \\[referent] {pronoun} <distractor> markup ({she|he} also scores the twin in which the pronoun, swapped, means the distractor); - reads them from standard input.", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", help="Prompts shown by --head.")] = _PROBE.limit,
    top: Annotated[int, typer.Option("--top", help="Heads in the ranking.")] = _PROBE.top,
    ablate: Annotated[bool, typer.Option("--ablate", help="Remove the head (zero and mean ablation) and measure the drop in the model's preference for the referent's continuation, beside random heads.")] = _PROBE.ablate,
    attribution: Annotated[bool, typer.Option("--attribution", help="Direct logit attribution: what each head writes straight into the preference for the referent's continuation (through the final norm, its scale held), a layer-by-head map; --ablate measures the whole effect.")] = _PROBE.attribution,
    with_heads: Annotated[Optional[str], typer.Option("--with-heads", help="With --ablate, also remove these heads (0.5,0.7) together with the studied one, beside random sets of as many heads: heads that share a task hide each other when removed one at a time.", show_default=False)] = None,
    random_heads: Annotated[int, typer.Option("--random-heads", help="Other heads ablated for comparison; as many as the model has (or more) ablates every head and prints the map of their drops.")] = _PROBE.random_heads,
    seed: Annotated[int, typer.Option("--seed", help="Seed that picks the random heads.")] = _PROBE.seed,
    over_checkpoints: Annotated[bool, typer.Option("--over-checkpoints", help="Score the head on every snapshot (checkpoints/step-*.safetensors) and find when it emerged: the step from which it stays at --threshold, and the step from which it beats every baseline with confidence; on the prompts given (--suite gender: that suite alone).")] = _PROBE.over_checkpoints,
    threshold: Annotated[float, typer.Option("--threshold", help="Accuracy the head must reach and then keep to have emerged.")] = _PROBE.threshold,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per forward pass.")] = _PROBE.batch_size,
    plot: Annotated[bool, typer.Option("--plot", help="Also write PNGs beside the report (needs matplotlib); a report replaced takes the pictures it listed with it.")] = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the JSON report here (default: probe/report.json in the checkpoint's run, replaced by each probe of its latest checkpoint; a snapshot's is probe/report-step-000200.json). With --plot the pictures go beside it, named after it.", show_default=False)] = None,
    scores: Annotated[Optional[Path], typer.Option("--scores", help="Also write every prompt's score for every head (prompts x layers x heads: correct, argmax hit, attention mass) and the model's preference on each to this safetensors file (a new file, or earlier scores), the prompts' ids in its metadata.", show_default=False)] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Weights file, or a run directory for its latest (default: latest.safetensors in the run's checkpoints folder). One inside another run's checkpoints/ folder is probed with that run's snapshots, and its report goes to that run's probe/ folder.", show_default=False)] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="tokenizer.json, or a run directory for its own (default: the run's).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = _PROBE.device,
    run: RunOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find the attention heads that tie a pronoun to its referent; writes probe/report.json."""
    from fabric_cli import probe as pr
    from fabric_cli.checkpoint import resolve_checkpoint
    from fabric_cli.runlock import holder

    cfg = ProbeConfig(suites=tuple(suite or ()), prompts=tuple(map(str, prompts or ())), head=head, limit=limit,
                      top=top, ablate=ablate, attribution=attribution, random_heads=random_heads, seed=seed, over_checkpoints=over_checkpoints,
                      with_heads=_head_list(with_heads),
                      threshold=threshold, batch_size=batch_size, device=device)
    if plot:
        pr.require_matplotlib()  # before the work, not after
    if report is not None and report.is_dir():
        raise InputError(f"--report {report} is a folder; give the report's file name, such as {report / 'report.json'}")
    paths = run_paths(ctx, run)
    checkpoint = resolve_checkpoint(checkpoint) if checkpoint else None
    owner = pr.probe_run(paths, checkpoint)  # the checkpoint's run, not always --run
    target = report or owner.probe_report_for(checkpoint)
    pr.check_report_target(target)  # never over a checkpoint, a tokenizer, or any file that is not a report
    check_writable(target, "the probe report", "pass another --run or --report")  # before minutes of work, not after
    if scores is not None:
        if scores.is_dir():
            raise InputError(f"--scores {scores} is a folder; give a file name, such as {scores / 'scores.safetensors'}")
        if os.path.abspath(scores) == os.path.abspath(target):
            raise InputError(f"--scores {scores} is where the report goes; give the scores a file of their own")
        pr.check_scores_target(scores)  # never over a checkpoint, or any file that is not earlier scores
        check_writable(scores, "the scores", "give --scores another path")
    if (checkpoint is None or os.path.abspath(checkpoint) == os.path.abspath(owner.latest)) and (who := holder(owner.root)):
        err(f"note: {owner.root} is in use by {who}: this probes the checkpoint saved last; probe again when it ends")
    # the ranking is printed as soon as the scoring ends, before the studies' minutes (--json: all at the end)
    shown = None if json_out else lambda rep: typer.echo("\n".join(pr.scored_lines(rep, top=top)))
    result = pr.run_probe(cfg, paths, checkpoint=checkpoint, tokenizer=tokenizer_file(tokenizer), on_scored=shown)
    pictures = pr.picture_paths(result, target.parent, pr.picture_prefix(target, result.run)) if plot else None
    earlier = pr.read_report(target)  # what the save replaces: its studies, and pictures that go with it
    lost = pr.replaced_study(earlier, result.report) if report is None else ""  # --report FILE: the user's choice
    drawn = pr.listed_plots(earlier)
    saved = pr.save_report(result.report, target, pictures, lambda tmps: pr.write_plots(result, tmps))
    if json_out:
        echo_json(result.report)
    elif studies := pr.study_lines(result.report):
        typer.echo("\n".join(studies))
    err(f"report: {saved}" + "".join(f"\nplot: {p}" for p in result.report.get("plots", [])))
    gone = [Path(p).name for p in drawn if not os.path.exists(p)]
    if lost or gone:
        err(f"note: this replaced the earlier {target}" + (f", and with it {lost}" if lost else "")
            + (f"; its {'picture' if len(gone) == 1 else 'pictures'} {', '.join(gone)} went with it" if gone else "")
            + ("; --report FILE keeps a study apart" if report is None else ""))
    if scores is not None:
        err(f"scores: {pr.save_scores(result, scores)}")
    if plot and (a := result.report.get("ablation")) and a["n"] and "grid" not in a:
        shape = result.report["shape"]
        err(f"note: no ablation map: it needs every head ablated, --random-heads {shape['n_layer'] * shape['n_head'] - 1}")
