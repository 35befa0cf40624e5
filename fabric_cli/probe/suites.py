"""Probe suites: finding the bundled ones (data/probes/*.jsonl) and reading a prompts file of either
form (formats.py: a JSONL line, or the hand-written markup) into ProbeItems (item.py), each with
where it came from for messages.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from fabric_cli.errors import InputError
from fabric_cli.probe.formats import _LineError, parse_jsonl_line, parse_markup_line, to_json
from fabric_cli.probe.item import ProbeItem, Span
from fabric_cli.rundir import probes_dir

__all__ = ["ProbeItem", "Span", "available_suites", "load_suites", "load_file", "prompt_files", "parse_jsonl_line",
           "parse_markup_line", "to_json"]


# --------------------------------------------------------------------------- finding suites


def available_suites() -> dict[str, Path]:
    """name -> path of every bundled suite (data/probes/*.jsonl)."""
    folder = probes_dir()
    return {p.stem: p for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def load_suites(names: tuple[str, ...] | list[str] = (), prompts: tuple | list | str | Path | None = None) -> list[ProbeItem]:
    """The items of the named bundled suites and/or a user's prompts: files, folders, `-`.

    With neither, every bundled suite. Unknown names are an InputError listing the suites there are.
    A name or a file given twice is read once: its prompts counted twice would narrow every
    interval. A folder stands for its .jsonl suites (what `fabric corpus --suites DIR` writes). Two
    suites of one name (gender.jsonl from two folders, or beside --suite gender) are refused: the
    report counts by suite name, and would pool them.
    """
    prompts = [prompts] if isinstance(prompts, (str, Path)) else list(prompts or ())
    bundled = available_suites()
    if not names and not prompts:
        if not bundled:
            raise InputError(f"no probe suites in {probes_dir()}; pass --prompts FILE or run `fabric corpus`")
        names = list(bundled)
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in bundled:
            have = ", ".join(bundled) or "none"
            raise InputError(f"--suite {name!r}: no such suite in {probes_dir()} (there are: {have}); "
                             f"pass a file of your own with --prompts")
    files = _once([bundled[name] for name in names] + prompt_files(prompts))  # --suite gender and its file: once
    items: list[ProbeItem] = []
    came_from: dict[str, str] = {}  # suite name -> the file it was read from
    id_from: dict[str, str] = {}  # prompt id -> the file it was read from
    for path in files:
        read = load_file(path)
        suite, shown = read[0].suite, "--suite " + path.stem if path in bundled.values() else str(path)
        if suite in came_from:
            raise InputError(f"{came_from[suite]} and {shown} are both suite {suite!r}, which the report would "
                             f"pool into one; rename one of the files")
        if again := next((it.id for it in read if it.id in id_from), None):  # a copy under another name, say
            raise InputError(f"{id_from[again]} and {shown} both hold a prompt of id {again!r}: the same prompts "
                             f"counted twice would narrow every interval; give each prompt an id of its own")
        came_from[suite] = shown
        id_from.update((it.id, shown) for it in read)
        items += read
    return items


def prompt_files(given: list) -> list[Path]:
    """--prompts as files to read, in order, each once: a folder stands for its .jsonl suites, sorted.

    Example:
        >>> prompt_files(["-", "-"])
        [PosixPath('-')]
    """
    files: list[Path] = []
    for p in map(Path, given):
        if str(p) != "-" and p.is_dir():
            suites = sorted(q for q in p.glob("*.jsonl") if q.is_file())
            if not suites:
                raise InputError(f"--prompts {p} is a folder without .jsonl suites; pass a folder that "
                                 f"`fabric corpus --suites` wrote, or a suite or markup file")
            files += suites
        else:
            files.append(p)
    return _once(files)


def _once(files: list[Path]) -> list[Path]:
    """`files` in order, each file once, however it was named."""
    seen, unique = set(), []
    for p in files:
        key = str(p) if str(p) == "-" else os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_file(path: str | Path) -> list[ProbeItem]:
    """A .jsonl suite, or any other file as markup, one prompt a line. `-` is standard input, and a
    pipe (`<(...)`) or /dev/stdin is read too; having no name to tell them by, they are JSONL when
    their first prompt line starts with `{`, else markup. A UTF-8 byte-order mark is dropped."""
    stdin = str(path) == "-"
    # /dev/stdin and /dev/fd/N redirected from a file have no name to go by either; devices stay refused
    named_fd = str(path) == "/dev/stdin" or str(path).startswith(("/dev/fd/", "/proc/self/fd/"))
    stream = stdin or _is_pipe(path) or (named_fd and Path(path).is_file())
    path = Path(path)
    label = "stdin" if stdin else str(path)  # where each item came from: "stdin:3", "mine.txt:3"
    shown = "standard input" if stdin else f"probe file {path}"
    if not stdin and path.is_dir():
        raise InputError(f"probe file {path} is a folder; pass one .jsonl suite or one markup file")
    if not stream and not path.exists():
        raise InputError(f"probe file {path} does not exist")
    if not stream and not path.is_file():
        raise InputError(f"probe file {path} is not a regular file (a device); give a .jsonl suite or a markup file")
    if stdin and (sys.stdin is None or sys.stdin.isatty()):
        raise InputError("--prompts - reads the prompts from standard input, which is a terminal or closed; "
                         "pipe them in (echo '[Ann] met <Bo> before {she} left.' | fabric probe --prompts -)")
    try:
        raw = (sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin).read() if stdin else path.read_bytes()
        lines = (raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw.removeprefix("\ufeff")).splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{shown} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"cannot read the {shown}: {e.strerror or e}") from None
    if stream:  # a markup line cannot start with "{": a pronoun before its referent is refused
        parse = parse_jsonl_line if next((ln for ln in lines if ln.strip()), "").lstrip().startswith("{") else parse_markup_line
    else:
        parse = parse_jsonl_line if path.suffix.lower() == ".jsonl" else parse_markup_line
    # a pipe's name is its descriptor's: two <(...) are two suites, pipe63 and pipe62
    suite = "stdin" if stdin else f"pipe{path.name}" if stream and str(path).startswith(("/dev/", "/proc/")) else path.stem
    items, line_of = [], {}  # item id -> its line
    for n, line in enumerate(lines, start=1):
        if not line.strip() or (parse is parse_markup_line and line.lstrip().startswith("#")):
            continue
        try:
            items.append(parse(line, suite=suite, default_id=f"{suite}:{n}", where=f"{label}:{n}"))
        except _LineError as e:
            hint = ""
            if parse is parse_markup_line and not stream and _is_json_object(line):
                hint = "; the line is JSON: a JSONL suite's file name must end in .jsonl"
            raise InputError(f"{'standard input' if stdin else path}, line {n}: {e}{hint}") from None
        if items[-1].id in line_of:  # --head rows and --scores name prompts by id
            raise InputError(f"{'standard input' if stdin else path}, line {n}: id {items[-1].id!r} is line "
                             f"{line_of[items[-1].id]}'s too; give each prompt an id of its own")
        line_of[items[-1].id] = n
    if not items:
        raise InputError(f"{shown} holds no prompts")
    return items


def _is_pipe(path: str | Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False
