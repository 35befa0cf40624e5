"""fabric train and fabric inspect: train a model, and make a checkpoint legible."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from fabric_cli.cli.shell import (PRESET_HELP, SIGNAL_EXIT, JsonOpt, RunOpt, app, echo_json, err, interrupted,
                                run_paths, stamp, threads_chosen)
from fabric_cli.config import TrainConfig
from fabric_cli.rundir import DEFAULT_RUN, RunPaths

_TRAIN = TrainConfig()


def _resume_command(paths: RunPaths, data: Optional[Path]) -> str:
    """The command that resumes this run, as typed: the run named unless it is ./fabric-run (a
    FABRIC_RUN set for one command is gone by the next), the tokens it trains on, and under torchrun
    the same launch (its own parser takes --run, so the run goes in FABRIC_RUN there)."""
    data_words = ["--data", str(data)] if data else []  # the checkpoint remembers them too; the command says so
    ranks = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if ranks > 1:
        return f"FABRIC_RUN={shlex.quote(str(paths.root))} " + shlex.join(
            ["torchrun", f"--nproc_per_node={ranks}", "-m", "fabric_cli", "train", "--resume", *data_words])
    named = [] if paths.root == Path(DEFAULT_RUN) else ["--run", str(paths.root)]
    return shlex.join(["fabric", "train", "--resume", *named, *data_words])


@app.command(epilog='Examples:\n\n  fabric train\n\n  fabric train --preset small --steps 5000 --snapshot-every 250\n\n  fabric train --resume --steps 8000\n\n  FABRIC_RUN=big torchrun --nproc_per_node=4 -m fabric_cli train --preset gpt2 --batch-size 8 --grad-accum 8')
def train(
    ctx: typer.Context,
    preset: Annotated[str, typer.Option("--preset", help=PRESET_HELP)] = _TRAIN.preset,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Transformer blocks (default: the preset's).", show_default=False)] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", help="Attention heads per block (default: the preset's).", show_default=False)] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Model width n_embd (default: the preset's).", show_default=False)] = None,
    context: Annotated[Optional[int], typer.Option("--context", help="Context length in tokens (default: the preset's).", show_default=False)] = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", help="Dropout rate (default: the preset's).", show_default=False)] = None,
    ff_width: Annotated[Optional[int], typer.Option("--ff-width", help="Feed-forward hidden width (default: 4 x --width).", show_default=False)] = None,
    bias: Annotated[Optional[bool], typer.Option("--bias/--no-bias", help="Biases in the linear layers and LayerNorms, as GPT-2 (default: on).", show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps; the LR schedule spans them.")] = _TRAIN.steps,
    tokens: Annotated[Optional[int], typer.Option("--tokens", help="Budget in tokens instead of --steps.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per micro-step PER RANK (under torchrun the global batch is this x ranks).")] = _TRAIN.batch_size,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Micro-steps accumulated into one optimizer step.")] = _TRAIN.grad_accum,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = _TRAIN.lr,
    min_lr: Annotated[float, typer.Option("--min-lr", help="Learning rate of the last step, where the cosine decay ends (at most --lr).")] = _TRAIN.min_lr,
    warmup: Annotated[int, typer.Option("--warmup", help="Steps of linear warm-up; the peak --lr comes the step after.")] = _TRAIN.warmup,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW decay on weight matrices (not biases, norms, embeddings).")] = _TRAIN.weight_decay,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Clip the gradient norm to this; 0 is off.")] = _TRAIN.grad_clip,
    eval_interval: Annotated[int, typer.Option("--eval-interval", help="Steps between evaluations (each also saves the checkpoint).")] = _TRAIN.eval_interval,
    eval_batches: Annotated[int, typer.Option("--eval-batches", help="Batches per split in each evaluation.")] = _TRAIN.eval_batches,
    log_interval: Annotated[int, typer.Option("--log-interval", help="Steps between metrics.jsonl lines (and bar updates).")] = _TRAIN.log_interval,
    snapshot_every: Annotated[int, typer.Option("--snapshot-every", help="Keep a snapshot every N steps (and at step 0) for emergence studies; 0 is off.")] = _TRAIN.snapshot_every,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initial weights, batches and dropout.")] = _TRAIN.seed,
    device: Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")] = _TRAIN.device,
    dtype: Annotated[str, typer.Option("--dtype", help="auto (bf16 autocast on CUDA GPUs with bf16 tensor cores, fp32 elsewhere), float32 (on CUDA full fp32, TF32 off), or bfloat16: autocast on CUDA or the CPU, where it pays only with AMX (Xeon Sapphire Rapids and later) and for widths of 256 or more.")] = _TRAIN.dtype,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model: a slow first step, then fused kernels (on a 2-core CPU measured no faster than without).")] = _TRAIN.compile,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run's checkpoint exactly where it stopped.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Delete the run's checkpoints, snapshots, metrics.jsonl, and the probe report and demo summary made from them, and start over.")] = False,
    stop_at: Annotated[Optional[int], typer.Option("--stop-at", help="Save and stop at this step (the schedule still spans the budget); continue with --resume.", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Folder with train.bin, val.bin, meta.json (default: the run's tokens/).", show_default=False)] = None,
    run: RunOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train the GPT on the run's tokens; checkpoints, snapshots and metrics.jsonl go to the run directory.

    Under `torchrun --nproc_per_node=N -m fabric_cli train ...` it trains with DistributedDataParallel.
    """
    from fabric_cli.train import train as train_model

    fields = {k: v for k, v in ctx.params.items() if k in _TRAIN.__dataclass_fields__}
    given = {k for k in fields if getattr(ctx.get_parameter_source(k), 'name', '') == 'COMMANDLINE'}  # typed, not defaults
    paths = run_paths(ctx, run)
    again = _resume_command(paths, data)
    before = stamp(paths)
    try:
        result = train_model(paths, TrainConfig(**fields), data_dir=data, resume=resume, restart=restart,
                             explicit=given, stop_at=stop_at, auto_threads=not threads_chosen(ctx))
    except KeyboardInterrupt as e:  # Ctrl-C twice, or before the loop took over signals: no save
        interrupted(e, paths, before, restart, again)
    if not result.is_main:
        return  # under torchrun only rank 0 reports
    echo_json(result.to_dict()) if json_out else typer.echo(result.summary())
    if result.stopped_by:
        err(f"fabric: stopped by {result.stop_reason()} at step {result.step}; checkpoint saved. "
            f"Continue with `{again}`.")
        if result.stopped_by in SIGNAL_EXIT:
            raise typer.Exit(SIGNAL_EXIT[result.stopped_by])


@app.command(epilog='Examples:\n\n  fabric inspect\n\n  fabric inspect fabric-run/checkpoints/step-000800.safetensors --json')
def inspect(
    ctx: typer.Context,
    checkpoint: Annotated[Optional[Path], typer.Argument(help="Weights file, or a run directory for its latest (default: latest.safetensors in the run's checkpoints folder).", show_default=False)] = None,
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="metrics.jsonl with the gradient norms (default: the one of the checkpoint's run, if there is one).", show_default=False)] = None,
    run: RunOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a checkpoint: config, parameters per component, step, losses, and gradient flow per layer."""
    from fabric_cli.inspection import format_report, inspect_checkpoint

    report = inspect_checkpoint(checkpoint or run_paths(ctx, run).latest, metrics)
    echo_json(report) if json_out else typer.echo(format_report(report))
