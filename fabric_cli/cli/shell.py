"""The shell every `fabric` command shares: errors and signals to one line and an exit code, the
global options (--run, --threads, --version), and the small helpers the commands call."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import click
import typer
import typer.core

from fabric_cli import __version__
from fabric_cli.config import PRESETS
from fabric_cli.errors import FabricError, FabricWarning, InputError
from fabric_cli.files import json_text
from fabric_cli.rundir import RunPaths


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


def _usage_error(e: click.UsageError, group: click.Context | None = None) -> None:
    """A mistyped option or value: one line and exit 2, not rich's boxed usage message."""
    if isinstance(e, _HELP_ASKED):
        raise e  # plain `fabric`: the help is what was asked for
    where = e.ctx.command_path if e.ctx is not None else "fabric"
    if e.ctx is None and group is not None and group.invoked_subcommand:  # failed making the subcommand's context
        where = f"fabric {group.invoked_subcommand}"
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
            _usage_error(e, ctx)
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


def _plain_type(shown: str | None) -> str | None:
    """A repeatable value shows what one value is: <str>, not typer's Python <list[str]>."""
    return f"<{shown[6:-2]}>" if shown and shown.startswith("<list[") and shown.endswith("]>") else shown


def _option_type_column(self, ctx: click.Context) -> str | None:
    """An on/off flag takes no value: its help row shows none (typer prints <bool>)."""
    return None if self.is_flag else _plain_type(_typer_option_column(self, ctx))


def _argument_type_column(self, ctx: click.Context) -> str | None:
    return _plain_type(_typer_argument_column(self, ctx))


# typer 0.29 and later name the type column of a help row so
_typer_option_column = getattr(typer.core.TyperOption, "display_type_rich", None)
_typer_argument_column = getattr(typer.core.TyperArgument, "display_type_rich", None)
if _typer_option_column is not None:
    typer.core.TyperOption.display_type_rich = _option_type_column
if _typer_argument_column is not None:
    typer.core.TyperArgument.display_type_rich = _argument_type_column


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
        Optional[str],  # a string, not a Path: Path("") would be the current folder
        typer.Option("--run", envvar="FABRIC_RUN", metavar="<path>", help="Run directory (default ./fabric-run).",
                     show_default=False),
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
            raise InputError(f"--threads (or $FABRIC_THREADS) must be between 1 and 4096 (one per core is the "
                             f"default), got {threads}")
        import torch

        torch.set_num_threads(threads)
    ctx.obj = {"run": run, "threads": threads}


# Shared options, defined once. A subcommand's --run wins over the global one.
RunOpt = Annotated[
    Optional[str],  # a string, not a Path: Path("") would be the current folder
    typer.Option("--run", metavar="<path>", help="Run directory (default: the global --run, $FABRIC_RUN, or ./fabric-run).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def threads_chosen(ctx: typer.Context) -> bool:
    """Whether the user set the CPU thread count (--threads, FABRIC_THREADS or OMP_NUM_THREADS)."""
    return (ctx.obj or {}).get("threads") is not None or bool(os.environ.get("OMP_NUM_THREADS"))


def run_paths(ctx: typer.Context, run: Optional[str]) -> RunPaths:
    for given in (run, (ctx.obj or {}).get("run")):
        if given is not None and not given.strip():
            raise InputError("--run is empty; name the run's folder (default ./fabric-run), or leave --run out")
    return RunPaths.resolve(run or (ctx.obj or {}).get("run"))


def tokenizer_file(path: Optional[Path]) -> Optional[Path]:
    """--tokenizer as given, or the tokenizer.json in it when it names a folder (a run directory)."""
    return path / "tokenizer.json" if path is not None and path.is_dir() else path


def stamp(paths: RunPaths) -> int | None:
    """The run's latest checkpoint as it is now (its modification time), None when it has none."""
    return paths.latest.stat().st_mtime_ns if paths.latest.is_file() else None


def interrupted(e: KeyboardInterrupt, paths: RunPaths, before: int | None, restart: bool, go_on: str,
                 why: str = "") -> NoReturn:
    """A Ctrl-C or SIGTERM that training did not handle itself (a second Ctrl-C, or one outside the
    loop): say what the run holds and the command that goes on. A run with no checkpoint re-raises."""
    if not paths.latest.is_file():
        raise e
    what, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted (Ctrl-C)", 130)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        raise typer.Exit(code) from None  # under torchrun rank 0 speaks for the run (torchrun stops the others)
    if restart and stamp(paths) == before:  # stopped while --restart was still checking: nothing deleted
        err(f"fabric: {what} before --restart deleted anything: the run is as it was; the same command starts over")
    else:
        from fabric_cli.checkpoint import read_info

        err(f"fabric: {what}; the run's checkpoint (step {read_info(paths.latest).step:,}) is kept, nothing "
            f"after it was saved. Go on with `{go_on}`{why}.")
    raise typer.Exit(code) from None


def echo_json(obj) -> None:
    typer.echo(json_text(obj), nl=False)  # strict JSON, as the files fabric writes


def err(msg: str = "") -> None:
    """A line for the person at the terminal (stderr)."""
    typer.echo(msg, err=True)


def read_stdin(what: str = "PROMPT '-'", instead: str = "give the prompt as an argument") -> str:
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


PRESET_HELP = "Model size: " + "; ".join(
    f"{name} ({c.n_layer} layers x {c.n_head} heads, width {c.n_embd}, context {c.block_size})" for name, c in PRESETS.items()
) + "."
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


_plain_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """fabric's own warnings (FabricWarning) as one line, as its notes are ('fabric: warning: ...');
    others' (torch's, wherever the stack points) as Python prints them, category, file and line."""
    if isinstance(category, type) and issubclass(category, FabricWarning):
        return f"fabric: warning: {message}\n"
    return _plain_format(message, category, filename, lineno, line)


def main() -> None:
    warnings.formatwarning = _format_warning
    app()
