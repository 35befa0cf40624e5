"""fabric generate: sample text token by token, streamed, once or in a prompt loop."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fabric_cli.cli.shell import JsonOpt, RunOpt, Terminated, app, echo_json, err, read_stdin, run_paths, tokenizer_file
from fabric_cli.config import SampleConfig
from fabric_cli.errors import InputError
from fabric_cli.text import check_unicode

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
    stop: Annotated[Optional[list[str]], typer.Option("--stop", metavar="<text>", help="End a completion before this text (repeatable).", show_default=False)] = None,
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
    if sys.stdout is None:  # `>&-`: the text would have nowhere to go
        raise InputError("standard output is closed, so the text has nowhere to go; send it to a file (> out.txt) instead")
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
    text = read_stdin() if prompt == "-" else prompt or ""
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
