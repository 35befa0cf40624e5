"""The `fabric` command line: parse, call one library function, render. No ML logic here.

Results go to stdout; progress and logs to stderr. Library errors (FabricError) become one
line on stderr and exit code 1. torch is imported inside commands so `fabric --help` is instant.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Literal, NoReturn, Optional

import click
import typer
import typer.core

from fabric_cli import __version__
from fabric_cli.config import DEFAULT_RUN, PRESETS, DemoConfig, ProbeConfig, RunPaths, SampleConfig, TokenizeConfig, TrainConfig
from fabric_cli.errors import FabricError, InputError
from fabric_cli.text import check_unicode, plural


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, as Ctrl-C is: files being written are cleaned up."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


try:  # typer 0.29 parses with its own copy of click; earlier versions with click itself
    from typer._click import exceptions as _parsing
except ImportError:
    _parsing = click.exceptions
_USAGE_ERRORS = tuple({click.UsageError, _parsing.UsageError})
_HELP_ASKED = tuple({getattr(m, "NoArgsIsHelpError", None) for m in (click.exceptions, _parsing)} - {None})


def _usage_error(e: click.UsageError) -> None:
    """A mistyped option or value: one line and exit 2, not rich's boxed usage message."""
    if isinstance(e, _HELP_ASKED):
        raise e  # plain `fabric`: the help is what was asked for
    where = e.ctx.command_path if e.ctx is not None else "fabric"
    message = " ".join(e.format_message().split())
    click.echo(f"fabric: error: {message} (see {where} --help)", err=True)
    sys.exit(e.exit_code)


class _FabricGroup(typer.core.TyperGroup):
    """Turns a FabricError, a usage mistake, or an OSError of a path the user named, into one line on stderr."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        # lifecycle order, not alphabetical: corpus makes what tokenize reads; demo runs them all
        order = ["corpus", "tokenize", "train", "inspect", "probe", "generate", "demo"]
        return sorted(self.commands, key=lambda name: order.index(name) if name in order else len(order))

    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except _USAGE_ERRORS as e:  # the global options (--threads abc, FABRIC_THREADS=abc)
            _usage_error(e)

    def invoke(self, ctx: click.Context):
        # SIGTERM (kill, a batch system's time limit) unwinds like Ctrl-C, so a half-written output's
        # temporary file is removed; training has its own handler, which saves a checkpoint first.
        installed = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and threading.current_thread() is threading.main_thread()
        if installed:
            signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().invoke(ctx)
        except _USAGE_ERRORS as e:  # a subcommand's options
            _usage_error(e)
        except FabricError as e:
            click.echo(f"fabric: error: {e}", err=True)
            ctx.exit(1)
        except Terminated:
            click.echo("fabric: terminated (SIGTERM)", err=True)
            ctx.exit(143)
        except KeyboardInterrupt:  # Ctrl-C outside training, which saves and says how to resume itself
            click.echo("fabric: interrupted (Ctrl-C)", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # `fabric ... | head` closed stdout: not an error of ours to report
            sys.stdout = open(os.devnull, "w")  # nothing more can be written, not even at exit
            ctx.exit(141)
        except OSError as e:  # a run folder under a file, a read-only disk, a full disk, ...
            where = f" ({e.filename})" if e.filename else ""
            click.echo(f"fabric: error: {e.strerror or e}{where}; check the path (--run, the files named), "
                       f"its permissions and the free space", err=True)
            ctx.exit(1)
        finally:
            if installed:  # the work is done: a SIGTERM while the interpreter shuts down kills as usual
                signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _type_column(self, ctx: click.Context) -> str | None:
    """An on/off flag takes no value: its help row shows none (typer prints <bool>)."""
    return None if self.is_flag else _typer_type_column(self, ctx)


_typer_type_column = getattr(typer.core.TyperOption, "display_type_rich", None)  # typer 0.29 and later
if _typer_type_column is not None:
    typer.core.TyperOption.display_type_rich = _type_column


app = typer.Typer(
    cls=_FabricGroup,
    help="Neural Fabric: a small GPT's whole life: tokenize, train, probe its pronoun heads, generate.",
    epilog="Start here: fabric demo (the whole life on the bundled Chronicles, 4 minutes on 2 CPU cores). "
           "Or step by step: fabric tokenize FILES, fabric train, fabric probe, fabric generate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fabric {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    run: Annotated[
        Optional[Path],
        typer.Option("--run", envvar="FABRIC_RUN", help="Run directory (default ./fabric-run).", show_default=False),
    ] = None,
    threads: Annotated[
        Optional[int],
        typer.Option("--threads", envvar="FABRIC_THREADS", show_default=False,
                     help="CPU threads for torch (default: one per core). On a busy machine fewer can be much faster: "
                          "a thread waiting for a taken core stalls every kernel."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if threads is not None:
        if not 1 <= threads <= 4096:
            raise InputError(f"--threads must be between 1 and 4096 (one per core is the default), got {threads}")
        import torch

        torch.set_num_threads(threads)
    ctx.obj = {"run": run, "threads": threads}


# Shared options, defined once. A subcommand's --run wins over the global one.
RunOpt = Annotated[
    Optional[Path],
    typer.Option("--run", help="Run directory (default: the global --run, $FABRIC_RUN, or ./fabric-run).", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _threads_chosen(ctx: typer.Context) -> bool:
    """Whether the user set the CPU thread count (--threads, FABRIC_THREADS or OMP_NUM_THREADS)."""
    return (ctx.obj or {}).get("threads") is not None or bool(os.environ.get("OMP_NUM_THREADS"))


def run_paths(ctx: typer.Context, run: Optional[Path]) -> RunPaths:
    return RunPaths.resolve(run or (ctx.obj or {}).get("run"))


def tokenizer_file(path: Optional[Path]) -> Optional[Path]:
    """--tokenizer as given, or the tokenizer.json in it when it names a folder (a run directory)."""
    return path / "tokenizer.json" if path is not None and path.is_dir() else path


def _check_writable(path: Path, what: str, instead: str) -> None:
    """Refuse at once an output whose folder (or the nearest one that exists) cannot be written."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {what} {path}: {folder} is a file, not a folder; {instead}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {path}: {folder} is not writable; {instead}")


def _resume_command(paths: RunPaths, data: Optional[Path]) -> str:
    """The command that resumes this run, as typed: the run named unless it is ./fabric-run (a
    FABRIC_RUN set for one command is gone by the next), the tokens it trains on, and under torchrun
    the same launch (its own parser takes --run, so the run goes in FABRIC_RUN there)."""
    data_words = ["--data", str(data)] if data else []  # or --resume looks in the run's own tokens/
    ranks = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if ranks > 1:
        return f"FABRIC_RUN={shlex.quote(str(paths.root))} " + shlex.join(
            ["torchrun", f"--nproc_per_node={ranks}", "-m", "fabric_cli", "train", "--resume", *data_words])
    named = [] if paths.root == Path(DEFAULT_RUN) else ["--run", str(paths.root)]
    return shlex.join(["fabric", "train", "--resume", *named, *data_words])


def _stamp(paths: RunPaths) -> int | None:
    """The run's latest checkpoint as it is now (its modification time), None when it has none."""
    return paths.latest.stat().st_mtime_ns if paths.latest.is_file() else None


def _interrupted(e: KeyboardInterrupt, paths: RunPaths, before: int | None, restart: bool, go_on: str,
                 why: str = "") -> NoReturn:
    """A Ctrl-C or SIGTERM that training did not handle itself (a second Ctrl-C, or one outside the
    loop): say what the run holds and the command that goes on. A run with no checkpoint re-raises."""
    if not paths.latest.is_file():
        raise e
    what, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted (Ctrl-C)", 130)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        raise typer.Exit(code) from None  # under torchrun rank 0 speaks for the run (torchrun stops the others)
    if restart and _stamp(paths) == before:  # stopped while --restart was still checking: nothing deleted
        err(f"fabric: {what} before --restart deleted anything: the run is as it was; the same command starts over")
    else:
        from fabric_cli.checkpoint import read_info

        err(f"fabric: {what}; the run's checkpoint (step {read_info(paths.latest).step:,}) is kept, nothing "
            f"after it was saved. Go on with `{go_on}`{why}.")
    raise typer.Exit(code) from None


def echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2))


def err(msg: str = "") -> None:
    """A line for the person at the terminal (stderr)."""
    typer.echo(msg, err=True)


# ----------------------------------------------------------------------- commands
# Each command: build the config, call one library function, render. Lifecycle order.

_TOK = TokenizeConfig()


@app.command(epilog='Examples:\n\n  fabric tokenize corpus.txt\n\n  fabric tokenize --vocab-size 8192 a.txt b.txt\n\n  cat notes.txt | fabric --run notes tokenize -')
def tokenize(
    ctx: typer.Context,
    files: Annotated[Optional[list[str]], typer.Argument(
        help="Text files, folders (their .txt files), pipes such as <(zcat a.gz), or - for standard input; none: the bundled corpus.",
        show_default=False)] = None,
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Tokens in the vocabulary (256 bytes + specials + merges); a multiple of 64 keeps the LM head's shapes aligned for GPU kernels.")] = _TOK.vocab_size,
    min_frequency: Annotated[int, typer.Option("--min-frequency", help="Merge only pairs seen at least this often.")] = _TOK.min_frequency,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of documents held out in val.bin.")] = _TOK.val_fraction,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Reuse this tokenizer.json (or a run directory's) instead of training one.", show_default=False)] = None,
    errors: Annotated[Literal["strict", "replace"], typer.Option("--errors", help="Non-UTF-8 input: refuse it (strict) or use U+FFFD (replace).")] = _TOK.errors,
    show: Annotated[Optional[str], typer.Option("--show", help="Only show how TEXT splits into tokens (the run's tokenizer, or --tokenizer); - reads it from standard input.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-tokenize a run that has a trained checkpoint; a new tokenizer starts the run over (deletes its checkpoints, snapshots, metrics.jsonl, and the probe report and demo summary made from them).")] = False,
    run: RunOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a byte-level BPE tokenizer and write the corpus as token ids (train.bin, val.bin).

    Documents end at a blank line (a story, a paragraph) and at the end of each file; each is followed by <|endoftext|>, and val.bin holds whole documents (the last tokens when there are too few).
    """
    from fabric_cli import encode, tokenizer as tk

    paths = run_paths(ctx, run)
    tokenizer = tokenizer_file(tokenizer)  # a run directory stands for its tokenizer.json, as in probe and generate
    if show is not None:
        if files:
            raise InputError("--show only displays how a text splits and takes no FILES; tokenize first, then --show")
        typed = [f"--{k.replace('_', '-')}" for k in ("vocab_size", "min_frequency", "val_fraction", "errors", "force")
                 if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"]
        if typed:
            raise InputError(f"--show splits the text with the tokenizer there is and trains none: {', '.join(typed)} "
                             f"would change nothing; leave {'it' if len(typed) == 1 else 'them'} out")
        path = tokenizer or paths.tokenizer
        text = _read_stdin("--show -", "give the text as --show TEXT") if show == "-" else show
        split = tk.show_split(tk.check_byte_level(tk.load_tokenizer(path), path), text)
        if json_out:
            return echo_json(split)
        return typer.echo(f"{split['display']}\n{plural(split['count'], 'token')}: {' '.join(map(str, split['ids']))}")
    cfg = TokenizeConfig(vocab_size=vocab_size, min_frequency=min_frequency, val_fraction=val_fraction, errors=errors)
    summary = encode.tokenize_corpus(files or [], paths, cfg, tokenizer=tokenizer, force=force)
    if json_out:
        return echo_json(summary.to_dict())
    typer.echo("\n".join(summary.lines()))


from fabric_cli.corpus import CorpusConfig  # noqa: E402  (no torch; its defaults are the options' defaults)

_CORPUS = CorpusConfig()


def _head_list(text: str | None) -> tuple[str, ...]:
    """--with-heads "0.5, 0.7" -> ("0.5", "0.7"); given but naming none is an error."""
    if text is None:
        return ()
    heads = tuple(h.strip() for h in text.split(",") if h.strip())
    if not heads:
        raise InputError(f"--with-heads {text!r} names no head; give heads such as 0.5,0.7")
    return heads


def _flags(names: set[str]) -> str:
    """Option names as typed, in a fixed order: {"seed", "suite_size"} -> "--seed and --suite-size"."""
    flags = [f"--{n.replace('_', '-')}" for n in sorted(names)]
    return " and ".join(flags) if len(flags) < 3 else ", ".join(flags[:-1]) + " and " + flags[-1]


@app.command(epilog='Examples:\n\n  fabric corpus stories.txt --size 200KB --seed 7 --suites suites')
def corpus(
    ctx: typer.Context,
    out: Annotated[Optional[Path], typer.Argument(
        metavar="[OUT]", help="Corpus file to write: one story a paragraph, a blank line between stories.", show_default=False)] = None,
    size: Annotated[str, typer.Option("--size", help="Characters to write: 4MB, 500KB, 20000 (KB/MB/GB decimal, KiB/MiB binary).")] = _CORPUS.size,
    stories: Annotated[Optional[int], typer.Option("--stories", help="Write exactly this many stories (not with --size).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same corpus.")] = _CORPUS.seed,
    suites: Annotated[Optional[Path], typer.Option("--suites", help="Also write the probe suites (gender, number, long_distance, referent_first, referent_second) as DIR/<suite>.jsonl.", show_default=False)] = None,
    suite_size: Annotated[int, typer.Option("--suite-size", help="Items per probe suite.")] = _CORPUS.suite_size,
    suite_seed: Annotated[int, typer.Option("--suite-seed", help="Random seed of the probe suites.")] = _CORPUS.suite_seed,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing corpus file or suite files.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Generate the Chronicles: short stories whose pronouns a model must resolve, and probe suites with ground truth."""
    from fabric_cli import corpus as cp

    typed = {name for name in ("size", "stories", "seed", "suite_size", "suite_seed")
             if ctx.get_parameter_source(name).name == "COMMANDLINE"}  # typed, not the default
    if out is None and (given := typed & {"size", "stories", "seed"}):
        raise InputError(f"{_flags(given)} {'is' if len(given) == 1 else 'are'} for the corpus file, and no OUT is "
                         f"given; name it: fabric corpus OUT ...")
    if suites is None and (given := typed & {"suite_size", "suite_seed"}):
        raise InputError(f"{_flags(given)} {'is' if len(given) == 1 else 'are'} for the probe suites, and --suites "
                         f"is not given; add --suites DIR")
    n_stories, n_chars = cp.corpus_length(stories, size if "size" in typed else None)
    big = out is not None and ((n_chars or 0) >= 1_000_000 or (n_stories or 0) >= 2_000)
    summary, suite_rows = cp.write_all(out, suites, n_stories=n_stories, n_chars=n_chars, seed=seed, suite_size=suite_size,
                                       suite_seed=suite_seed, force=force, progress=big)
    result = {k: v for k, v in (("corpus", summary and summary.to_dict()), ("suites", suite_rows)) if v is not None}
    if json_out:
        return echo_json(result)
    if summary is not None:
        typer.echo(summary.lines()[0])
    for s in suite_rows or []:
        typer.echo(f"wrote {s['path']}: {plural(s['items'], 'item')} (referent is the nearest candidate in "
                   f"{s['nearest']:.0%}, the first in {s['first']:.0%})")


_TRAIN = TrainConfig()
_PRESET_HELP = "Model size: " + "; ".join(
    f"{name} ({c.n_layer} layers x {c.n_head} heads, width {c.n_embd}, context {c.block_size})" for name, c in PRESETS.items()
) + "."
_SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


@app.command(epilog='Examples:\n\n  fabric train\n\n  fabric train --preset small --steps 5000 --snapshot-every 250\n\n  fabric train --resume --steps 8000\n\n  FABRIC_RUN=big torchrun --nproc_per_node=4 -m fabric_cli train --preset gpt2 --batch-size 8 --grad-accum 8')
def train(
    ctx: typer.Context,
    preset: Annotated[str, typer.Option("--preset", help=_PRESET_HELP)] = _TRAIN.preset,
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
    before = _stamp(paths)
    try:
        result = train_model(paths, TrainConfig(**fields), data_dir=data, resume=resume, restart=restart,
                             explicit=given, stop_at=stop_at, auto_threads=not _threads_chosen(ctx))
    except KeyboardInterrupt as e:  # Ctrl-C twice, or before the loop took over signals: no save
        _interrupted(e, paths, before, restart, again)
    if not result.is_main:
        return  # under torchrun only rank 0 reports
    echo_json(result.to_dict()) if json_out else typer.echo(result.summary())
    if result.stopped_by:
        err(f"fabric: stopped by {result.stop_reason()} at step {result.step}; checkpoint saved. "
            f"Continue with `{again}`.")
        if result.stopped_by in _SIGNAL_EXIT:
            raise typer.Exit(_SIGNAL_EXIT[result.stopped_by])

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

_PROBE = ProbeConfig()


@app.command(epilog='Examples:\n\n  fabric probe\n\n  fabric probe --head 0.1 --ablate\n\n  fabric probe --head 0.1 --over-checkpoints --suite gender --plot')
def probe(
    ctx: typer.Context,
    head: Annotated[Optional[str], typer.Option("--head", help="Show this head (4.7 or L4H7) prompt by prompt; also the head --ablate and --over-checkpoints study (default: the top-ranked head).", show_default=False)] = None,
    suite: Annotated[Optional[list[str]], typer.Option("--suite", help="A suite in data/probes by name (repeatable); default: every suite there, or none when --prompts is given.", show_default=False)] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Your own prompts: a .jsonl suite, or a text file in the \\[referent] {pronoun} <distractor> markup; - reads them from standard input.", show_default=False)] = None,
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

    cfg = ProbeConfig(suites=tuple(suite or ()), prompts=str(prompts) if prompts else None, head=head, limit=limit,
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
    _check_writable(target, "the probe report", "pass another --run or --report")  # before minutes of work, not after
    if scores is not None:
        if scores.is_dir():
            raise InputError(f"--scores {scores} is a folder; give a file name, such as {scores / 'scores.safetensors'}")
        if os.path.abspath(scores) == os.path.abspath(target):
            raise InputError(f"--scores {scores} is where the report goes; give the scores a file of their own")
        pr.check_scores_target(scores)  # never over a checkpoint, or any file that is not earlier scores
        _check_writable(scores, "the scores", "give --scores another path")
    if (checkpoint is None or os.path.abspath(checkpoint) == os.path.abspath(owner.latest)) and (who := holder(owner.root)):
        err(f"note: {owner.root} is in use by {who}: this probes the checkpoint saved last; probe again when it ends")
    result = pr.run_probe(cfg, paths, checkpoint=checkpoint, tokenizer=tokenizer_file(tokenizer))
    pictures = pr.picture_paths(result, target.parent, pr.picture_prefix(target, result.run)) if plot else None
    saved = pr.save_report(result.report, target, pictures, lambda tmps: pr.write_plots(result, tmps))
    echo_json(result.report) if json_out else typer.echo(pr.render_text(result.report, top=top))
    err(f"report: {saved}" + "".join(f"\nplot: {p}" for p in result.report.get("plots", [])))
    if scores is not None:
        err(f"scores: {pr.save_scores(result, scores)}")
    if plot and (a := result.report.get("ablation")) and a["n"] and "grid" not in a:
        shape = result.report["shape"]
        err(f"note: no ablation map: it needs every head ablated, --random-heads {shape['n_layer'] * shape['n_head'] - 1}")

# [generate]
_SAMPLE = SampleConfig()


@app.command(epilog='Examples:\n\n  fabric generate "Once upon a time, the queen" --seed 1\n\n  echo "The sailors" | fabric generate - -t 0 -n 40\n\n  fabric generate --interactive --top-p 0.9')
def generate(
    ctx: typer.Context,
    prompt: Annotated[Optional[str], typer.Argument(help="Text to continue, read as the start of a new document (after an end-of-text token, as in training); - reads it from standard input (less one final newline); none starts from end-of-text alone.", show_default=False)] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Most tokens to make per sample.")] = _SAMPLE.max_new_tokens,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Randomness; 0 is greedy and deterministic.")] = _SAMPLE.temperature,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample only from the k most likely tokens; 0 is off.")] = _SAMPLE.top_k,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus: sample from the fewest tokens holding this much probability; 1 is off.")] = _SAMPLE.top_p,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Same seed, same text (default: a fresh seed each run).", show_default=False)] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", help="Completions of the prompt, made as one batch.")] = _SAMPLE.num_samples,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="End a completion before this text (repeatable).", show_default=False)] = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Key/value cache; --no-cache recomputes the whole window each token.")] = _SAMPLE.use_cache,
    slide: Annotated[int, typer.Option("--slide", help="Tokens kept when the context fills; 0 is half the context.")] = _SAMPLE.slide,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="A prompt loop: each line is a prompt; Ctrl-D leaves.")] = False,
    echo: Annotated[bool, typer.Option("--echo/--no-echo", help="Print the prompt before its completion (with --interactive only when given).")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No speed figures on stderr.")] = False,
    as_json: JsonOpt = False,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="Weights file, or a run directory for its latest (default: latest.safetensors in the run's checkpoints folder).", show_default=False)] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="tokenizer.json, or a run directory for its own (default: the run's).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    run: RunOpt = None,
) -> None:
    """Continue a prompt with the trained model, streaming the text as it is made."""
    from fabric_cli.checkpoint import resolve_checkpoint
    from fabric_cli.generate import check_memory, load_engine

    cfg = SampleConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                       num_samples=num_samples, stop=tuple(stop or ()), use_cache=cache, slide=slide)
    if interactive and (as_json or prompt is not None):
        raise InputError("--interactive reads its prompts line by line; give no PROMPT and no --json with it")
    paths = run_paths(ctx, run)
    ckpt = resolve_checkpoint(checkpoint) if checkpoint else paths.latest
    engine = load_engine(ckpt, tokenizer_file(tokenizer), device, run_tokenizer=paths.tokenizer)
    cfg.slide_for(engine.model.config.block_size)  # a bad --slide is refused before any output
    check_memory(engine.model.config, cfg, engine.device)  # and a batch too big, before --interactive's first prompt
    if interactive:
        echo_given = ctx.get_parameter_source("echo").name == "COMMANDLINE"  # typing the prompt already shows it
        return _generate_interactive(engine, cfg, quiet, echo=echo_given and echo)
    text = _read_stdin() if prompt == "-" else prompt or ""
    result = _generate_once(engine, text, cfg, stream=not as_json, echo=echo, quiet=quiet)
    if as_json:
        echo_json({**result.to_dict(), "checkpoint": str(ckpt), "step": engine.info.step})


# C0 control characters but newline and tab, and DEL, shown as their Unicode pictures (ESC as ␛);
# C1 controls as U+FFFD. A model can emit any byte: on a terminal an ESC or CSI would be obeyed.
_CONTROL_PICTURES = {**{c: 0x2400 + c for c in range(0x20) if chr(c) not in "\n\t"}, 0x7F: 0x2421,
                     **{c: 0xFFFD for c in range(0x80, 0xA0)}}


def terminal_safe(text: str) -> str:
    r"""Generated text as a terminal may show it: control characters made visible, not obeyed.

    Example:
        >>> terminal_safe("a\x1b[2Jb\tc\n")
        'a␛[2Jb\tc\n'
    """
    return text.translate(_CONTROL_PICTURES)


def _show(text: str, nl: bool = True) -> None:
    """Generated text on stdout: made terminal-safe on a terminal, byte for byte into a pipe or file."""
    typer.echo(terminal_safe(text) if sys.stdout.isatty() else text, nl=nl)


def _generate_once(engine, text: str, cfg: SampleConfig, stream: bool, echo: bool, quiet: bool):
    """One prompt: stream one sample to stdout, or print several under headers; speed on stderr."""
    from fabric_cli.generate import complete

    live = stream and cfg.num_samples == 1
    check_unicode(text, "the prompt")  # before it is echoed (complete() would refuse it after)
    if live and echo:
        _show(text, nl=False)
    try:
        result = complete(engine, text, cfg, on_text=(lambda _row, piece: _show(piece, nl=False)) if live else None,
                          on_notice=err)
    except KeyboardInterrupt:
        if live:
            typer.echo()  # end the streamed line, so what comes next (a message, a prompt) starts its own
        raise
    if live:
        typer.echo()
    elif stream:
        for i, completion in enumerate(result.completions, 1):
            _show(f"--- sample {i} ---\n{text if echo else ''}{completion}")
    if not quiet:
        err(f"{result.new_tokens} tokens in {result.seconds:.2f} s: first after {result.time_to_first_token_s * 1000:.0f} ms, "
            f"{result.tokens_per_s:.1f} tokens/s ({'kv cache' if cfg.use_cache else 'no cache'}, {result.device}, {'greedy' if result.seed is None else f'seed {result.seed}'})")
    return result


def _read_stdin(what: str = "PROMPT '-'", instead: str = "give the prompt as an argument") -> str:
    """All of standard input as text, less one final line end; a closed stream or bytes that are not
    UTF-8 are one line."""
    if sys.stdin is None:
        raise InputError(f"standard input is closed, so {what} has nothing to read; {instead}")
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError as e:
        raise InputError(f"standard input is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    # the line end `echo` (or a Windows file, \r\n) puts after the text is not part of it
    return text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")


def _generate_interactive(engine, cfg: SampleConfig, quiet: bool, echo: bool) -> None:
    if sys.stdin is None:
        raise InputError("standard input is closed, so --interactive has no prompts to read; give a PROMPT instead")
    err("fabric generate: one prompt a line; Ctrl-C stops a completion, Ctrl-D leaves.")
    while True:
        typer.echo("> ", err=True, nl=False)
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError as e:  # the rest of that line is lost; the loop goes on
            err(f"fabric: error: that line is not UTF-8 text ({e.reason}); type it again")
            continue
        if not line:  # end of input: Ctrl-D
            err()  # end the "> " line
            return
        if not line.strip():
            continue  # a blank line asks again rather than starting 200 tokens from nothing
        try:
            _generate_once(engine, line.rstrip("\r\n"), cfg, stream=True, echo=echo, quiet=quiet)
        except Terminated:
            raise  # SIGTERM ends the session; Ctrl-C only the completion
        except KeyboardInterrupt:
            pass  # the completion stopped (its line is ended); the next prompt
        except InputError as e:  # one prompt's problem (not UTF-8, ...): say so and ask for the next
            err(f"fabric: error: {e}")


# [demo]
_DEMO = DemoConfig()


@app.command(epilog='Examples:\n\n  fabric demo\n\n  fabric demo --run /tmp/demo --steps 600')
def demo(
    ctx: typer.Context,
    steps: Annotated[int, typer.Option("--steps", help="Training steps; fewer is faster but the head may not emerge.")] = _DEMO.steps,
    preset: Annotated[str, typer.Option("--preset", help=_PRESET_HELP)] = _DEMO.preset,
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
    before = _stamp(paths)
    try:
        summary = run_demo(paths, cfg, say=err if json_out else typer.echo, restart=restart, given=given,
                           auto_threads=not _threads_chosen(ctx))
    except DemoStopped as e:
        err(f"fabric: {e}")
        raise typer.Exit(_SIGNAL_EXIT.get(e.stopped_by, 1))
    except KeyboardInterrupt as e:  # after training (probing, generating), or a second Ctrl-C within it
        _interrupted(e, paths, before, restart, resume_command(paths, cfg, given),
                     ": it reuses the tokens and the checkpoint")
    if json_out:
        echo_json(summary)



def main() -> None:
    app()
