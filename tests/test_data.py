"""fabric_cli.data: the token reader's messages and the one-window minimum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fabric_cli.cli import app
from fabric_cli.data import TokenData, load_tokens
from fabric_cli.errors import InputError


def write_tokens(folder: Path, n_train: int = 300, n_val: int = 60) -> Path:
    """A tokens folder as `fabric tokenize` writes it: train.bin, val.bin (uint16) and meta.json."""
    folder.mkdir(parents=True)
    (np.arange(n_train) % 200).astype("<u2").tofile(folder / "train.bin")
    (np.arange(n_val) % 200).astype("<u2").tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"dtype": "uint16", "vocab_size": 256, "eot_id": 0}))
    return folder


def test_a_split_needs_one_window_and_its_count_reads_with_separators():
    data = TokenData(Path("t"), {"vocab_size": 10}, np.zeros(60_993, np.uint16), np.zeros(17, np.uint16))
    data.check_context(16)  # 17 tokens: 16 inputs and the target after the last, one whole window
    x, y = data.batch("val", step=0, micro=0, batch_size=2, block_size=16, seed=0)
    assert tuple(x.shape) == tuple(y.shape) == (2, 16)
    with pytest.raises(InputError, match=r"val\.bin holds 17 tokens, fewer than one window of context 17 \+ 1; tokenize "
                                         r"a bigger corpus or pass --context 16 or less \(or tokenize with a larger --val-fraction\)"):
        data.check_context(17)
    with pytest.raises(InputError, match=r"train\.bin holds 60,993 tokens, fewer than one window of context 100,000 \+ 1; "
                                         r"tokenize a bigger corpus or pass --context 16 or less \(or tokenize with a larger "
                                         r"--val-fraction\)$"):
        data.check_context(100_000)  # 16: what val.bin's 17 tokens hold, so the advice is not refused next
    one = TokenData(Path("t"), {"vocab_size": 10}, np.zeros(500, np.uint16), np.zeros(1, np.uint16))
    with pytest.raises(InputError, match=r"val\.bin holds 1 token, fewer than one window of context 16 \+ 1; tokenize a "
                                         r"bigger corpus \(or tokenize with a larger --val-fraction\)$"):
        one.check_context(16)  # no context fits one token: not suggested
    short_val = TokenData(Path("t"), {"vocab_size": 10}, np.zeros(506, np.uint16), np.zeros(26, np.uint16))
    with pytest.raises(InputError, match=r"train\.bin holds 506 tokens, .*; tokenize a bigger corpus or pass --context 25 "
                                         r"or less \(or tokenize with a larger --val-fraction\)$"):
        short_val.check_context(600)  # the context both splits hold, not one refused by val.bin next


def test_a_file_or_a_run_directory_is_not_a_tokens_folder(tmp_path):
    write_tokens(tmp_path / "run/tokens")
    (tmp_path / "mine.txt").write_text("Some text.\n")
    with pytest.raises(InputError, match=r"mine\.txt is a file, not a tokens folder: --data must be the folder "
                                         r"`fabric tokenize` wrote \(RUN/tokens.*run `fabric tokenize .*mine\.txt` first"):
        load_tokens(tmp_path / "mine.txt")
    with pytest.raises(InputError, match=r"run is a run directory, not its tokens folder: pass --data .*run/tokens$"):
        load_tokens(tmp_path / "run")
    assert len(load_tokens(tmp_path / "run/tokens").val) == 60


def test_train_data_given_a_text_file_says_to_tokenize_it(tmp_path, runner):
    (tmp_path / "mine.txt").write_text("Some text.\n")
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "mine.txt"), "--run", str(tmp_path / "run"), "--preset", "tiny"])
    assert r.exit_code == 1 and r.stdout == "", r.output
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("fabric: error: "), r.stderr
    assert "--data must be the folder `fabric tokenize` wrote (RUN/tokens" in r.stderr
    assert not (tmp_path / "run").exists()


def test_byte_and_vocabulary_counts_read_with_separators(tmp_path):
    folder = write_tokens(tmp_path / "t", n_train=1_500)
    with open(folder / "train.bin", "ab") as f:
        f.write(b"\0")  # half a token
    with pytest.raises(InputError, match=r"train\.bin has 3,001 bytes, not a whole number of uint16 tokens"):
        load_tokens(folder)
    (folder / "train.bin").unlink()
    np.full(10, 2_000, "<u2").tofile(folder / "train.bin")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "vocab_size": 1_024}))
    with pytest.raises(InputError, match=r"holds token id 2000, but meta\.json says the vocabulary has 1,024 tokens"):
        load_tokens(folder)
