"""One command at a time writes a run directory: `fabric train`, `fabric demo`, `fabric tokenize`.

Two trainers in one run would interleave metrics.jsonl and overwrite each other's checkpoints; a
tokenize --force or a demo --restart under a running trainer would delete the checkpoint it is
about to save. `holding(root, who)` takes an advisory lock (flock) on RUN/.fabric-train.lock for
the block: another holder is an InputError naming it. The kernel releases the lock however the
process ends; the file stays, emptied when the block ends. A run folder (and parents) made for the
block and left holding only the lock file is removed again. The lock is reentrant within a
process (the demo holds it around the train() that takes it too). Readers do not lock; `holder(root)`
lets one say that what it reads may be replaced (fabric probe of a run being trained). Without flock
(Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from fabric_cli.errors import InputError

LOCK_NAME = ".fabric-train.lock"
_held: set[str] = set()  # roots this process holds


@contextlib.contextmanager
def holding(root: str | os.PathLike, who: str) -> Iterator[None]:
    """Hold `root`'s lock for the block as `who` (e.g. "fabric train"); see the module doc."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    root = Path(root)
    key = os.path.realpath(root)
    if key in _held:
        yield
        return
    made = [p for p in [root, *root.absolute().parents] if not p.exists()]  # deepest first
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK_NAME
    try:
        with open(lock, "a+") as f:
            if not _take(f, fcntl):
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise InputError(f"{root} is in use by {holder}; wait for it to finish (or stop it), "
                                 f"or give another --run") from None
            f.seek(0)
            f.truncate()
            f.write(f"{who} (pid {os.getpid()})\n")
            f.flush()
            _held.add(key)
            try:
                yield
            finally:
                _held.discard(key)
                f.truncate(0)  # done: no holder to name (a killed process leaves its pid, and no lock)
    finally:
        if made and [p.name for p in root.iterdir()] in ([LOCK_NAME], []):  # nothing else was written
            lock.unlink(missing_ok=True)
            for folder in made:  # the run folder, then any parent made for it
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _take(f, fcntl, tries: int = 20, wait: float = 0.01) -> bool:
    """The exclusive lock on `f`, waiting up to tries x wait seconds: a reader's holder() holds a
    shared lock for an instant, which must not turn a writer away."""
    for attempt in range(tries):
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(wait)
    return False


def holder(root: str | os.PathLike) -> str | None:
    """Who holds `root`'s lock now ("fabric train (pid 123)"), or None: free, never taken, held by this
    process, or no flock. For readers (probe) to say that what they read is still being written."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    lock = Path(root) / LOCK_NAME
    if os.path.realpath(root) in _held:
        return None
    try:
        f = open(lock)
    except OSError:  # no lock file: never trained here (or unreadable: nothing to say)
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        except OSError:
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
    return None
