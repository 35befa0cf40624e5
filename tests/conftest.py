"""Shared test fixtures: a CLI runner, a small generated corpus (no downloads), a folder that takes no files."""

from __future__ import annotations

import errno
import random
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

_PEOPLE = ["The professor", "The queen", "The dog", "The scientists", "The janitor", "Mrs Okafor"]
_DEEDS = ["finished her lecture", "walked to the garden", "barked at the moon", "read their notes",
          "arrived before dawn", "thanked him", "smiled at them", "lost its ball"]


def stories(n_docs: int, seed: int = 0, min_sentences: int = 2, max_sentences: int = 6) -> list[str]:
    """n_docs short plain-English stories, one paragraph each; the same seed gives the same text."""
    rng = random.Random(seed)
    return [" ".join(f"{rng.choice(_PEOPLE)} {rng.choice(_DEEDS)}." for _ in range(rng.randint(min_sentences, max_sentences)))
            for _ in range(n_docs)]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    """A 300-story corpus file, one story per paragraph (a blank line between stories)."""
    path = tmp_path / "stories.txt"
    path.write_text("\n\n".join(stories(300)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def read_only_folder(tmp_path: Path, monkeypatch) -> Path:
    """A folder in which no file can be made, as on a read-only mount or /proc, though access() says
    yes (as it does to root): making a temporary file there fails with EROFS."""
    folder, real = tmp_path / "ro", tempfile.TemporaryFile
    folder.mkdir()

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    return folder
