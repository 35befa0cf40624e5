"""Reading a corpus: files, folders or standard input, in chunks, split into documents at blank lines.

Documents come out in batches as they are read, so peak memory does not grow with the corpus.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from fabric_cli.errors import InputError
from fabric_cli.rundir import bundled_corpus


CHUNK_BYTES = 1 << 20  # read size
BATCH_CHARS = 1 << 18  # characters per encode_batch call: keeps the cores busy, memory small
MAX_PIECE_CHARS = 4 << 20  # a longer document is encoded in pieces, so memory stays flat

# The newline ending a line, then one or more blank (whitespace-only) lines: a document boundary.
_SEP = re.compile(r"\r?\n(?:[^\S\n]*\n)+")


# --------------------------------------------------------------------------- reading a corpus


@dataclass
class Source:
    name: str  # as the user gave it; "-" is standard input
    path: Path  # where it is read from (a spooled copy for standard input)
    bytes: int = 0
    sha256: str = ""


@dataclass
class Counts:
    """What document_batches has read so far, summed over every source."""

    documents: int = 0
    characters: int = 0
    words: int = 0


def resolve_sources(inputs: Sequence[str | os.PathLike], stack: contextlib.ExitStack) -> list[Source]:
    """Files as given, folders as their .txt files (recursive, sorted), "-" as standard input.

    No inputs means the bundled Chronicles corpus. Standard input and pipes (`<(command)`) are
    copied to a temporary file (removed when `stack` closes): training and encoding read twice.
    """
    if not inputs:
        corpus = bundled_corpus()
        if not corpus.is_file():
            raise InputError(
                f"no FILES given and the bundled Chronicles corpus {corpus} is missing; "
                f"pass FILES to tokenize your own text"
            )
        inputs = [corpus]
    sources: list[Source] = []
    for given in inputs:
        if str(given) == "-":
            if any(s.name == "-" for s in sources):
                raise InputError("'-' (standard input) is given twice; give it once")
            if sys.stdin is None:
                raise InputError("standard input is closed, so '-' has nothing to read; give files instead")
            sources.append(Source("-", _spool(getattr(sys.stdin, "buffer", sys.stdin), stack)))
            continue
        p = Path(given)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.txt") if f.is_file())
            if not found:
                raise InputError(f"folder {p} has no .txt files; give text files or a folder that holds some")
            sources += [Source(str(f), f) for f in found]
        elif p.is_file():
            sources.append(Source(str(p), p))
        elif p.is_fifo():  # a pipe, as `<(command)` gives: read once, like standard input
            if any(s.name == str(p) for s in sources):
                raise InputError(f"pipe {p} is given twice, and a pipe can be read only once; give it once")
            with open(p, "rb") as pipe:
                sources.append(Source(str(p), _spool(pipe, stack)))
        elif p.exists():
            raise InputError(f"input {p} is not a text file (a device or socket); give a file, a folder, a pipe, "
                             f"or - for standard input")
        else:
            raise InputError(f"input {p} does not exist; check the path (use - for standard input)")
    for s in sources:
        s.bytes = s.path.stat().st_size
    return sources


def _spool(stream, stack: contextlib.ExitStack) -> Path:
    """Copy a stream that can be read only once (standard input, a pipe) to a temporary file."""
    fd, tmp = tempfile.mkstemp(prefix="fabric-input-", suffix=".txt")
    stack.callback(os.unlink, tmp)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(stream, out, CHUNK_BYTES)
    return Path(tmp)


def _strip_leading_blank(s: str) -> str:
    """Drop whitespace-only lines before a document's first line."""
    start = len(s) - len(s.lstrip())
    return s[s.rfind("\n", 0, start) + 1 :]


def _strip_trailing_blank(s: str) -> str:
    """Drop the final newline and any whitespace-only lines at the end of a file."""
    nl = s.find("\n", len(s.rstrip()))
    return s if nl < 0 else s[:nl].rstrip("\r")


def _pieces(src: Source, errors: str, counts: Counts, bar) -> Iterator[tuple[str, bool, int]]:
    """(text, ends_document, document_index) for one source; a long document comes in pieces.

    Checks UTF-8 as it reads (naming the byte offset of the first bad byte) and hashes the bytes.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    digest = hashlib.sha256()
    offset, carry, open_doc = 0, "", False
    with open(src.path, "rb") as f:
        while True:
            chunk = f.read(CHUNK_BYTES)
            final = not chunk
            if errors == "strict" and (nul := chunk.find(b"\0")) >= 0:
                raise InputError(
                    f"{src.name} looks like a binary file: a NUL byte at byte offset {offset + nul}; "
                    f"give a text file, or pass --errors replace to read it anyway"
                )
            pending = decoder.getstate()[0]  # bytes of a character cut by the previous chunk
            try:
                text = carry + decoder.decode(chunk, final)
            except UnicodeDecodeError as e:
                at = offset - len(pending) + e.start
                raise InputError(
                    f"{src.name} is not UTF-8 text: byte 0x{e.object[e.start]:02x} at byte offset {at} "
                    f"cannot be decoded; convert it to UTF-8, or pass --errors replace to substitute U+FFFD"
                ) from None
            digest.update(chunk)
            offset += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
            parts, start = [], 0
            for m in _SEP.finditer(text):
                if m.end() == len(text) and not final:
                    break  # more blank lines may follow in the next chunk
                parts.append((text[start : m.start()], True))
                start = m.end()
            carry = text[start:]
            if final:
                parts.append((_strip_trailing_blank(carry), True))
            elif len(carry) > MAX_PIECE_CHARS:  # a huge document: cut it at a line end
                cut = carry.rfind("\n", 0, MAX_PIECE_CHARS) + 1 or MAX_PIECE_CHARS
                parts.append((carry[:cut], False))
                carry = carry[cut:]
            for text_, ends in parts:
                if not open_doc:  # blank lines at the start of a file, or cut by a chunk boundary
                    text_ = _strip_leading_blank(text_)
                    if not text_ or text_.isspace():
                        continue  # nothing between two documents
                yield text_, ends, counts.documents
                counts.characters += len(text_)
                counts.words += len(text_.split())
                counts.documents += ends
                open_doc = not ends
            if final:
                break
    src.sha256 = digest.hexdigest()


def document_batches(sources: list[Source], errors: str, counts: Counts, bar) -> Iterator[list[tuple[str, bool, int]]]:
    """Every source's (text, ends_document, document_index) pieces, in lists of about BATCH_CHARS
    characters: one encode_batch call each. `counts` and the tqdm `bar` advance as bytes are read;
    `errors` is the UTF-8 decoder's ("strict", or "replace" to keep going past bad bytes)."""
    batch, size = [], 0
    for src in sources:
        for item in _pieces(src, errors, counts, bar):
            batch.append(item)
            size += len(item[0])
            if size >= BATCH_CHARS:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def byte_bar(total: int, desc: str, progress: bool | None):
    """A tqdm bar over bytes on stderr; None: shown only when stderr is a terminal."""
    return tqdm(total=total or None, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=None if progress is None else not progress)
