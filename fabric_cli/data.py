"""Token files and batches.

`fabric tokenize` writes tokens/train.bin and val.bin (little-endian uint16, or uint32 when the
vocabulary passes 65535) and tokens/meta.json. Batches are random windows of context+1 tokens.

The sampler keeps no state: the windows of a step are drawn from a generator seeded by
(seed, split, step, micro-step), so the data cursor of a run is simply its step, and resuming
at step k draws exactly what an unbroken run would have drawn. Under DistributedDataParallel the
step's global batch (batch_size x world_size windows) is drawn once and rank r takes slice r, so
N ranks of B sequences see the same data as one process of N*B sequences.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fabric_cli.errors import InputError
from fabric_cli.files import tokens_identity
from fabric_cli.rundir import DEFAULT_RUN
from fabric_cli.text import plural

_SPLITS = {"train": 0, "val": 1}
_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
EVAL_STREAM = 1 << 30  # keeps evaluation windows apart from training steps' windows
MIN_CONTEXT = 16  # a shorter context is not suggested to fit a small split: the tiny preset's, for tests


@dataclass
class TokenData:
    """The train and validation token arrays (memory-mapped) and their meta.json."""

    folder: Path
    meta: dict
    train: np.ndarray
    val: np.ndarray

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def tokenizer_sha256(self) -> str | None:
        return self.meta.get("tokenizer_sha256") or None

    @property
    def identity(self) -> dict:
        """What these tokens are, as checkpoints record it (tokens_identity)."""
        return tokens_identity(len(self.train), len(self.val), self.meta.get("sources"))

    def check_context(self, block_size: int) -> None:
        """Refuse a split shorter than one window: block_size inputs and the target after the last."""
        fits = min(len(self.train), len(self.val)) - 1  # the longest context one window of each split holds
        for split, arr in (("train", self.train), ("val", self.val)):
            if len(arr) < block_size + 1:
                fix = "tokenize a bigger corpus" + (f" or pass --context {fits:,} or less" if fits >= MIN_CONTEXT else "")
                if len(self.val) < block_size + 1:
                    fix += " (or tokenize with a larger --val-fraction)"
                raise InputError(f"{self.folder / (split + '.bin')} holds {plural(len(arr), 'token')}, fewer than one "
                                 f"window of context {block_size:,} + 1; {fix}")

    def batch(
        self, split: str, step: int, micro: int, batch_size: int, block_size: int,
        seed: int, rank: int = 0, world_size: int = 1, device: str = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, each (batch_size, block_size) int64, for one micro-step.

        Example:
            >>> d = TokenData(Path("."), {"vocab_size": 10}, np.arange(100) % 10, np.arange(50) % 10)
            >>> x, y = d.batch("train", step=0, micro=0, batch_size=2, block_size=4, seed=0)
            >>> bool((y[:, :-1] == x[:, 1:]).all()), tuple(x.shape)
            (True, (2, 4))
        """
        arr = self.train if split == "train" else self.val
        rng = np.random.default_rng([seed, _SPLITS[split], step, micro])
        starts = rng.integers(0, len(arr) - block_size, size=batch_size * world_size)  # the global batch
        starts = starts[rank * batch_size : (rank + 1) * batch_size]  # this rank's slice
        windows = arr[starts[:, None] + np.arange(block_size + 1)]  # (B, T+1)
        xy = torch.from_numpy(windows.astype(np.int64))
        x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()  # (B, T) each: y is x shifted by one
        if device.startswith("cuda"):
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)


def load_tokens(folder: str | os.PathLike) -> TokenData:
    """Open train.bin, val.bin and meta.json of a tokens folder, checking what can go wrong."""
    folder = Path(folder)
    if folder.is_file():
        raise InputError(
            f"{folder} is a file, not a tokens folder: --data must be the folder `fabric tokenize` wrote (RUN/tokens, "
            f"with train.bin, val.bin, meta.json); to train on a text file, run `fabric tokenize {folder}` first"
        )
    meta_path = folder / "meta.json"
    missing = [p.name for p in (meta_path, folder / "train.bin", folder / "val.bin") if not p.is_file()]
    if missing and (folder / "tokens" / "meta.json").is_file():
        raise InputError(f"{folder} is a run directory, not its tokens folder: pass --data {folder / 'tokens'}")
    if missing:
        raise InputError(
            f"no tokens to train on: {folder} {'lacks ' + ', '.join(missing) if folder.exists() else 'does not exist'}; "
            + (f"run `{_tokenize_command(folder)}` first (no files: the bundled corpus), or pass --data DIR with "
               f"train.bin, val.bin, meta.json" if folder.name == "tokens" else
               "--data takes the tokens folder `fabric tokenize` writes (RUN/tokens, with train.bin, val.bin, meta.json)")
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        vocab_size, dtype_name = int(meta["vocab_size"]), str(meta.get("dtype", "uint16"))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{meta_path} is not a token meta file ({e}); run `fabric tokenize` again") from None
    if dtype_name not in _DTYPES:
        raise InputError(f"{meta_path}: dtype {dtype_name!r} is not one of {', '.join(_DTYPES)}")
    dtype = _DTYPES[dtype_name]
    arrays = []
    for split in ("train", "val"):
        path = folder / f"{split}.bin"
        size = path.stat().st_size
        if size % dtype.itemsize:
            raise InputError(f"{path} has {size:,} bytes, not a whole number of {dtype_name} tokens; tokenize again")
        arr = np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)
        counted = meta.get(f"{split}_tokens")
        if isinstance(counted, int) and counted != len(arr):
            raise InputError(
                f"{path} holds {len(arr):,} tokens but {meta_path.name} says {counted:,}: the files come from "
                f"different tokenize runs; run `fabric tokenize` again"
            )
        if len(arr) and int(_max_token(arr)) >= vocab_size:
            raise InputError(
                f"{path} holds token id {int(_max_token(arr))}, but meta.json says the vocabulary has "
                f"{vocab_size:,} tokens; the tokens and meta.json come from different tokenizers, tokenize again"
            )
        arrays.append(arr)
    return TokenData(folder, meta, arrays[0], arrays[1])


def _max_token(arr: np.ndarray, chunk: int = 1 << 24) -> int:
    """The largest id, read in chunks so a large file is not pulled into memory at once."""
    return max(int(arr[i : i + chunk].max()) for i in range(0, len(arr), chunk))


def _tokenize_command(tokens: Path) -> str:
    """The command that writes the tokens folder RUN/tokens: `fabric --run RUN tokenize`."""
    named = "" if tokens.parent == Path(DEFAULT_RUN) else f" --run {shlex.quote(str(tokens.parent))}"
    return f"fabric{named} tokenize [FILES]"
