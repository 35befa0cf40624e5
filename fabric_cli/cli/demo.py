"""fabric demo: the whole life on the bundled Chronicles in one command."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from fabric_cli.cli.shell import PRESET_HELP, SIGNAL_EXIT, JsonOpt, RunOpt, app, echo_json, err, interrupted, run_paths, stamp, threads_chosen
from fabric_cli.config import DemoConfig

_DEMO = DemoConfig()


@app.command(epilog='Examples:\n\n  fabric demo\n\n  fabric demo --run /tmp/demo --steps 600')
def demo(
    ctx: typer.Context,
    steps: Annotated[int, typer.Option("--steps", help="Training steps; fewer is faster but the head may not emerge.")] = _DEMO.steps,
    preset: Annotated[str, typer.Option("--preset", help=PRESET_HELP)] = _DEMO.preset,
    context: Annotated[Optional[int], typer.Option("--context", help="Context length in tokens (default: the preset's).", show_default=False)] = None,
    snapshot_every: Annotated[int, typer.Option("--snapshot-every", help="Keep a snapshot every N steps for the emergence study.")] = _DEMO.snapshot_every,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights, batches and samples.")] = _DEMO.seed,
    device: Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")] = _DEMO.device,
    restart: Annotated[bool, typer.Option("--restart", help="Tokenize and train again even if the run has tokens and a checkpoint.")] = False,
    run: RunOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The whole life in one command: tokenize the bundled Chronicles, train, find the pronoun head, generate."""
    from fabric_cli.demo import OPTIONS, DemoStopped, resume_command, run_demo

    cfg = DemoConfig(steps=steps, preset=preset, context=context, snapshot_every=min(snapshot_every, steps), seed=seed, device=device)
    given = frozenset(k for k in OPTIONS if getattr(ctx.get_parameter_source(k), 'name', '') == 'COMMANDLINE')  # typed, not defaults
    paths = run_paths(ctx, run)
    before = stamp(paths)
    try:
        summary = run_demo(paths, cfg, say=err if json_out else typer.echo, restart=restart, given=given,
                           auto_threads=not threads_chosen(ctx))
    except DemoStopped as e:
        err(f"fabric: {e}")
        raise typer.Exit(SIGNAL_EXIT.get(e.stopped_by, 1))
    except KeyboardInterrupt as e:  # after training (probing, generating), or a second Ctrl-C within it
        interrupted(e, paths, before, restart, resume_command(paths, cfg, given),
                     ": it reuses the tokens and the checkpoint")
    if json_out:
        echo_json(summary)
