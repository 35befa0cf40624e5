"""Atomic file writes: a crash or kill at any moment leaves the previous file whole."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from fabric_cli.errors import InputError


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read a megabyte at a time: what checkpoints record of their
    tokenizer, probe reports of their checkpoints, and `fabric demo` of the bundled corpus."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tokens_identity(train_tokens: int, val_tokens: int, sources: list[dict] | None) -> dict:
    """Which tokens a run trains on, as its checkpoints record it: the two splits' lengths and a
    digest of the source files' sha256 (from meta.json; None when it names none). With the
    tokenizer's hash this tells apart a corpus tokenized again with another --val-fraction or
    other files, without reading the token files.

    Example:
        >>> tokens_identity(900, 100, [{"path": "a.txt", "sha256": "ab" * 32}])["sources"]
        '271a413bd339c570'
    """
    digests = [s.get("sha256") for s in sources or [] if isinstance(s, dict)]
    joined = hashlib.sha256("\n".join(map(str, digests)).encode()).hexdigest()[:16] if digests else None
    return {"train": int(train_tokens), "val": int(val_tokens), "sources": joined}


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
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """atomic_path for files that belong together (a checkpoint's weights and training state; a
    run's tokens, tokenizer and meta.json): yield a temporary path for each; when the block ends
    without an error, every file is complete and on disk (fsync) before the first is moved into
    place, and the moves follow one another with SIGINT and SIGTERM held back until the last is
    done. A Ctrl-C or a failure in the block leaves every old file as it was; only a kill -9 or
    a power cut in the microseconds between two renames can mix old and new.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_paths(d / "a.txt", d / "b.txt") as (a, b):
        ...     _ = a.write_text("one"), b.write_text("two")
        >>> (d / "a.txt").read_text(), (d / "b.txt").read_text()
        ('one', 'two')
    """
    targets = [Path(p) for p in paths]
    for path in targets:  # a device, a pipe or a link to one would be replaced by a plain file
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise InputError(f"{path} is not a plain file (a folder, a device, a pipe, or a link to one): "
                             f"it is not replaced by one; give the path of a file to write")
    tmps: list[Path] = []
    try:
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        for tmp, path in zip(tmps, targets):
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            # after the writer: mkstemp makes the file private (0600), and so may a writer that replaces it
            os.chmod(tmp, _mode_for(path))
        with _signals_held():
            for tmp, path in zip(tmps, targets):
                os.replace(tmp, path)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for folder in dict.fromkeys(path.parent for path in targets):
        _fsync_dir(folder)


def nearest_existing(folder: str | os.PathLike) -> Path:
    """`folder` if it exists, else its nearest ancestor that does: where a folder to be made will go."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(path: Path, what: str, instead: str) -> None:
    """Refuse at once an output whose folder (or the nearest one that exists) cannot be written."""
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        raise InputError(f"cannot write {what} {path}: {folder} is a file, not a folder; {instead}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {path}: {folder} is not writable; {instead}")
    if why := refuses_files(folder):
        raise InputError(f"cannot write {what} {path}: {folder} takes no new files ({why}); {instead}")


def refuses_files(folder: Path) -> str | None:
    """Why a file cannot be made in `folder`, or None: a temporary file is made and removed. Permission
    bits are not the whole story: to root, access() says yes to /proc and to a read-only mount."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as e:
        return str(e.strerror or e)


def check_room(path: Path, nbytes: int, what: str, instead: str) -> None:
    """Refuse to start writing `nbytes` at `path` when its disk has less free, before any is written."""
    folder = nearest_existing(Path(path).absolute().parent)
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise InputError(f"{what} of {nbytes:,} bytes needs about {nbytes / 1e9:.1f} GB, and {folder} has "
                         f"{free / 1e9:.1f} GB free; {instead}")


def failed_target(error: OSError, paths: list[Path]) -> int | None:
    """Which of `paths` (being written by atomic_paths) an OSError concerns: the index of the one
    it names, of the one whose temporary file it names, or of the first under a folder it names.

    Example:
        >>> failed_target(FileNotFoundError(2, "No such file", "/x/b"), [Path("/y/a"), Path("/x/b/c")])
        1
    """
    if not error.filename:
        return None
    failed = Path(error.filename).absolute()
    for i, path in enumerate(Path(p).absolute() for p in paths):
        if failed == path or failed in path.parents or (failed.parent == path.parent and failed.name.startswith(f".{path.name}.")):
            return i
    return None


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block: they are recorded, and raised again once it ends,
    to the handlers in place before it. (Masking would not do: a signal sent to the process goes
    to any thread that does not mask it, torch's among them, and Python then runs the handler in
    the main thread at once.) Outside the main thread, which alone may set handlers, the block
    runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    held = {sig: handler for sig, handler in held.items() if handler is not None}  # None: set outside Python
    for sig in held:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for sig in caught:
            signal.raise_signal(sig)


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


def json_text(obj) -> str:
    """How fabric writes JSON, a file or --json: indented, keys in their order, a final newline, and
    strict: a NaN or an infinity (a diverged run's gradient norm) is null, as JSON has no such number.

    Example:
        >>> json.loads(json_text({"norm": float("nan"), "ok": [1.5, float("inf")]}))
        {'norm': None, 'ok': [1.5, None]}
    """
    return json.dumps(_finite(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def _finite(obj):
    """`obj` with every float that is not finite replaced by None (tuples become lists, as JSON has them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json_text(obj))


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
