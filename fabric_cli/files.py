"""Atomic file writes: a crash or kill at any moment leaves the previous file whole."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read a megabyte at a time: what checkpoints record of their
    tokenizer, probe reports of their checkpoints, and `fabric demo` of the bundled corpus."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success fsync it and move it over `path`.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(d / "x.txt") as tmp:
        ...     _ = tmp.write_text("hello")
        >>> (d / "x.txt").read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        # after the writer: mkstemp makes the file private (0600), and so may a writer that replaces it
        os.chmod(tmp_path, _mode_for(path))
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_umask() -> int:
    """The process's umask. Reading it means setting it, so this runs once, at import."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _mode_for(path: Path) -> int:
    """The permissions `path` should end with: its own if it exists, else what open() would give
    a new file under the process's umask (0644 under the usual 022)."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def undo_new_folders(*folders: str | os.PathLike) -> Iterator[None]:
    """If the block fails, remove the folders (of `folders` and their parents) that did not exist
    before it, deepest first and only while empty: a failed write leaves no folders behind."""
    new: list[Path] = []
    for folder in folders:
        p = Path(folder).absolute()
        while not p.exists() and p != p.parent and p not in new:
            new.append(p)
            p = p.parent
    try:
        yield
    except BaseException:
        for d in sorted(new, key=lambda d: len(d.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
