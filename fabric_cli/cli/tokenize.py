"""fabric tokenize and fabric corpus: the text a model learns from, and the tokens it reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from fabric_cli.cli.shell import JsonOpt, RunOpt, app, echo_json, read_stdin, run_paths, tokenizer_file
from fabric_cli.config import TokenizeConfig
from fabric_cli.corpus import CorpusConfig  # no torch; its defaults are the options' defaults
from fabric_cli.errors import InputError
from fabric_cli.text import plural

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
        text = read_stdin("--show -", "give the text as --show TEXT") if show == "-" else show
        split = tk.show_split(tk.check_byte_level(tk.load_tokenizer(path), path), text)
        if json_out:
            return echo_json(split)
        return typer.echo(f"{split['display']}\n{plural(split['count'], 'token')}: {' '.join(map(str, split['ids']))}")
    if tokenizer is not None and (typed := [f"--{k.replace('_', '-')}" for k in ("vocab_size", "min_frequency")
                                            if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"]):
        raise InputError(f"--tokenizer reuses a trained tokenizer and trains none: {' and '.join(typed)} would change "
                         f"nothing; leave {'it' if len(typed) == 1 else 'them'} out, or drop --tokenizer to train one")
    cfg = TokenizeConfig(vocab_size=vocab_size, min_frequency=min_frequency, val_fraction=val_fraction, errors=errors)
    summary = encode.tokenize_corpus(files or [], paths, cfg, tokenizer=tokenizer, force=force)
    if json_out:
        return echo_json(summary.to_dict())
    typer.echo("\n".join(summary.lines()))



_CORPUS = CorpusConfig()


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
    suite_seed: Annotated[int, typer.Option("--suite-seed", help="Random seed of the probe suites (1: the bundled data/probes'); the corpus's --seed does not change them.")] = _CORPUS.suite_seed,
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
                   f"{s['nearest']:.0%}, the first in {s['first']:.0%}; {s['swaps']:,} with a pronoun-swap twin)")
    if suite_rows:  # a researcher's own --seed does not make other suites: its held-out pairs are the same
        same = ", as the bundled data/probes are" if suite_seed == _CORPUS.suite_seed and suite_size == _CORPUS.suite_size else ""
        typer.echo(f"suites from --suite-seed {suite_seed}{same}: the corpus's --seed does not change them, and no "
                   f"story pairs their nouns")
