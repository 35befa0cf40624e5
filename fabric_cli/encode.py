"""`fabric tokenize`'s work: train or reuse a tokenizer, encode a corpus into train/val token files.

Trained on through an iterator and encoded in batches written as they come (fabric_cli.sources),
so peak memory does not grow with the corpus. No torch here: ids are written with numpy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from fabric_cli.config import EOT, PRESETS, TokenizeConfig, TrainConfig
from fabric_cli.errors import InputError
from fabric_cli.files import atomic_paths, json_text, tokens_identity, undo_new_folders
from fabric_cli.rundir import RunPaths
from fabric_cli.runlock import holding
from fabric_cli.sources import CHUNK_BYTES, Counts, Source, byte_bar, document_batches, resolve_sources
from fabric_cli.text import plural
from fabric_cli.tokenizer import (
    WHOLE_WORDS, check_byte_level, check_min_frequency, check_vocab_size, eot_id, load_tokenizer, token_dtype,
    tokenizer_sha256, train_tokenizer,
)


FORMAT, VERSION = "fabric-tokens", 1
# `fabric train` refuses a split shorter than one window (context + 1 tokens); under two windows it
# would evaluate on overlapping windows of the same few tokens. Tokenize warns below two windows of
# the default preset's context, so a user learns it now rather than when training fails.
SMALL_SPLIT_TOKENS = 2 * PRESETS[TrainConfig.preset].block_size


# --------------------------------------------------------------------------- tokenize a corpus


@dataclass
class TokenizeSummary:
    """What tokenize_corpus did; to_dict() is the --json output, lines() the text output."""

    tokenizer: str
    tokens_dir: str
    trained: bool
    vocab_size: int
    eot_id: int
    dtype: str
    documents: int
    characters: int
    words: int
    bytes: int
    train_tokens: int
    val_tokens: int
    tokens: int
    val_split: str  # "documents", or "tail" when there were too few documents
    val_fraction: float  # --val-fraction: the share of documents (or, split by tail, of tokens) in val.bin
    val_documents: int  # whole documents in val.bin (0 when split by tail)
    chars_per_token: float  # text tokens only: the end-of-text markers are not text
    tokens_per_word: float
    seconds: float
    train_seconds: float
    mb_per_s: float
    tokenizer_sha256: str
    sources: list[dict]
    started_over: bool = False  # --force on a trained run with a new tokenizer: its training outputs were deleted
    # --force on a trained run with the same tokenizer keeps its checkpoints: "same" when they were
    # trained on these very tokens, "changed" when not, "unknown" when they do not record it
    kept: str | None = None
    vocab_asked: int | None = None  # --vocab-size when the tokenizer was trained here
    min_frequency: int | None = None  # --min-frequency then

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "warnings": self.warnings()}

    def lines(self) -> list[str]:
        how = "trained" if self.trained else "reused"
        return [
            f"tokenizer    {self.tokenizer} ({how}, vocab {self.vocab_size:,}{self._asked()}, {EOT} = {self.eot_id})",
            f"tokens       {self.tokens_dir}/ train.bin {self.train_tokens:,} + val.bin {self.val_tokens:,}"
            f" = {self.tokens:,} ({self.dtype}; val: {self._val_held_out()})",
        ] + [f"warning      {w}" for w in self.warnings()] + [
            f"documents    {self.documents:,} from {len(self.sources)} file{'' if len(self.sources) == 1 else 's'}, "
            f"{self.bytes / 1e6:,.2f} MB",
            f"characters   {self.characters:,} in the documents (the blank lines between them not counted)",
            f"per token    {self.chars_per_token:.2f} characters, {self.tokens_per_word:.2f} tokens per word",
            f"time         {self.seconds:.2f} s ({self.mb_per_s:.2f} MB/s; training {self.train_seconds:.2f} s)",
        ] + ([f"started over {Path(self.tokenizer).parent}: its checkpoints, snapshots and metrics.jsonl, "
              f"trained with the old tokenizer, are deleted, with the probe report and demo summary made "
              f"from them"] if self.started_over else []) + self._kept_lines()

    def _words_whole(self) -> bool:
        """Whether nearly every word is one token already: BPE merges only within words, so a text of
        few distinct words runs out of pairs to merge whatever its length."""
        return self.tokens_per_word <= WHOLE_WORDS

    def _asked(self) -> str:
        """' of 4,096 asked' when training stopped short of --vocab-size (no more pairs frequent enough)."""
        if not (self.vocab_asked and self.vocab_size < self.vocab_asked):
            return ""
        return f" of {self.vocab_asked:,} asked" + (": this text's words are whole tokens already" if self._words_whole() else "")

    def _kept_lines(self) -> list[str]:
        run = Path(self.tokenizer).parent
        if self.kept == "same":
            return [f"kept         {run / 'checkpoints'}: trained with this tokenizer on these very tokens"]
        if self.kept in ("changed", "unknown"):
            differ = "differ from" if self.kept == "changed" else "may differ from"
            return [f"kept         {run / 'checkpoints'}: same tokenizer, but these tokens {differ} the ones they "
                    f"were trained on; `fabric train --resume` goes on with them (no longer an exact resume, val "
                    f"loss on another split), `--restart` trains afresh"]
        return []

    def _val_held_out(self) -> str:
        """What val.bin holds, in words: whole documents, or the tail of the token stream."""
        if self.val_split == "documents":
            return f"{self.val_documents:,} of the {self.documents:,} documents, spread evenly"
        return f"the last {self.val_fraction * 100:g}% of the tokens, too few documents to hold whole ones out"

    def warnings(self) -> list[str]:
        """What `fabric train` will make of a split under SMALL_SPLIT_TOKENS (two windows of its default
        context): under one window it refuses it, under two it evaluates on the same few windows."""
        short = []
        base = 256 + 1  # the bytes and the end-of-text token: what a tokenizer with no merges holds
        if (self.vocab_asked and self.vocab_size - base < (self.vocab_asked - base) / 2  # the trainer stops silently
                and not self._words_whole()):
            fix = "lower --min-frequency or tokenize more text" if self.min_frequency > 1 else "tokenize more text"
            short = [f"the tokenizer learned {plural(self.vocab_size - base, 'merge')} of the {self.vocab_asked - base:,} "
                     f"--vocab-size {self.vocab_asked:,} asks for: no further pair occurs "
                     f"{plural(self.min_frequency, 'time')} (--min-frequency) in this text, so most words stay in "
                     f"pieces; {fix}"]
        small = [(name, n) for name, n in (("train.bin", self.train_tokens), ("val.bin", self.val_tokens))
                 if n < SMALL_SPLIT_TOKENS]
        if not small:
            return short
        names, counts = " and ".join(name for name, _ in small), " and ".join(f"{n:,}" for _, n in small)
        context = SMALL_SPLIT_TOKENS // 2
        effect = (f"fewer than one window of fabric train's default context ({context}) + 1, which it refuses"
                  if min(n for _, n in small) <= context else f"under two windows of fabric train's default context ({context})")
        now = f"--val-fraction (now {self.val_fraction:g})"
        fix = {"val.bin": f" or raise {now}", "train.bin": f" or lower {now}"}.get(names, "")
        return short + [f"{names} {'holds' if len(small) == 1 else 'hold'} only {counts} tokens, {effect}; "
                        f"tokenize a bigger corpus{fix}"]


def _is_val(i: int, f: float) -> bool:
    """Document i is held out when floor((i+1)f) > floor(if): an even, deterministic spread."""
    return math.floor((i + 1) * f) > math.floor(i * f)


def _val_documents(documents: int, f: float, split: str) -> int:
    """Documents _is_val holds out of `documents`: its steps telescope to floor(documents * f)."""
    return math.floor(documents * f) if split == "documents" else 0


def tokenize_corpus(
    inputs: Sequence[str | os.PathLike],
    paths: RunPaths,
    cfg: TokenizeConfig | None = None,
    tokenizer: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool | None = None,
) -> TokenizeSummary:
    """Train (or reuse) a tokenizer; write tokenizer.json and tokens/{train,val}.bin, meta.json.

    Args:
        inputs: files, folders (their .txt files) and "-" (standard input); none: the bundled corpus.
        paths: the run directory.
        cfg: vocab size, min frequency, validation fraction, UTF-8 error handling.
        tokenizer: an existing tokenizer.json to reuse instead of training one.
        force: re-tokenize even though the run has a trained checkpoint. When the tokenizer
            changes, that starts the run over: its checkpoints, snapshots and metrics.jsonl are
            deleted once the new files are in place (a reused identical tokenizer keeps them).
        progress: tqdm bars on stderr (None: only when stderr is a terminal).
    Returns:
        a TokenizeSummary. Everything is checked before anything is moved into place; on an
        error the run directory is left as it was.
    """
    with holding(paths.root, "fabric tokenize"):  # never under a trainer, whose checkpoint --force deletes
        return _tokenize_corpus(inputs, paths, cfg, tokenizer, force, progress)


def _tokenize_corpus(inputs, paths: RunPaths, cfg: TokenizeConfig | None, tokenizer, force: bool,
                     progress: bool | None) -> TokenizeSummary:
    cfg, t0 = cfg or TokenizeConfig(), time.perf_counter()
    _check_settings(cfg, paths, tokenizer, force)
    trained_with, trained_on = _checkpoint_record(paths) if paths.latest.exists() else (None, None)
    with contextlib.ExitStack() as stack:
        sources = resolve_sources(inputs, stack)
        total = sum(s.bytes for s in sources)
        if tokenizer is None:
            counts = Counts()
            with byte_bar(total, "training", progress) as bar:
                texts = ([t for t, _, _ in batch] for batch in document_batches(sources, cfg.errors, counts, bar))
                tok = train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency)
            _check_not_empty(counts, sources)
        else:
            tok = check_byte_level(load_tokenizer(tokenizer), tokenizer)
        train_seconds = time.perf_counter() - t0 if tokenizer is None else 0.0
        eot = eot_id(tok)
        if eot is None:
            raise InputError(f"tokenizer {tokenizer} has no {EOT} token, which fabric writes between "
                             f"documents; let fabric train a tokenizer instead (leave out --tokenizer)")
        vocab = tok.get_vocab_size(with_added_tokens=True)
        dtype = np.dtype(token_dtype(vocab)).newbyteorder("<")
        in_place = tokenizer is not None and paths.tokenizer.exists() and os.path.samefile(tokenizer, paths.tokenizer)
        # every file moves into place together when the block ends without an error, meta.json too
        outputs = [paths.train_bin, paths.val_bin, paths.meta] + ([] if in_place else [paths.tokenizer])
        with undo_new_folders(paths.tokens), atomic_paths(*outputs) as (train_tmp, val_tmp, meta_tmp, *tok_tmp):
            tok_tmp = Path(tokenizer) if in_place else tok_tmp[0]
            counts = Counts()
            with byte_bar(total, "encoding", progress) as bar:
                batches = document_batches(sources, cfg.errors, counts, bar)
                _encode(tok, batches, eot, dtype, cfg.val_fraction, train_tmp, val_tmp)
            _check_not_empty(counts, sources)
            split = "documents"
            if val_tmp.stat().st_size == 0:  # too few documents for one to go to val
                n = train_tmp.stat().st_size // dtype.itemsize
                _move_tail(train_tmp, val_tmp, max(1, int(n * cfg.val_fraction)) * dtype.itemsize)
                split = "tail"
            if tokenizer is None:
                tok.save(str(tok_tmp))
            elif not in_place:
                shutil.copyfile(tokenizer, tok_tmp)
            meta = {
                "format": FORMAT, "version": VERSION, "dtype": dtype.name, "byte_order": "little",
                "train_tokens": train_tmp.stat().st_size // dtype.itemsize,
                "val_tokens": val_tmp.stat().st_size // dtype.itemsize, "val_split": split,
                "documents": counts.documents, "characters": counts.characters, "bytes": total,
                "vocab_size": vocab, "eot_id": eot, "tokenizer_sha256": tokenizer_sha256(tok_tmp),
                "sources": [{"path": s.name, "bytes": s.bytes, "sha256": s.sha256} for s in sources],
            }
            meta_tmp.write_text(json_text(meta), encoding="utf-8")
    started_over = paths.latest.exists() and meta["tokenizer_sha256"] != trained_with
    if started_over:  # the checkpoints cannot read the new tokens; --force said to start over
        paths.remove_training_outputs()
    kept = None  # the same tokenizer keeps the checkpoints: say whether they were trained on these tokens
    if paths.latest.exists():
        now = tokens_identity(meta["train_tokens"], meta["val_tokens"], meta["sources"])
        kept = "unknown" if trained_on is None else "same" if trained_on == now else "changed"
    tokens, seconds = meta["train_tokens"] + meta["val_tokens"], time.perf_counter() - t0
    return TokenizeSummary(
        tokenizer=str(paths.tokenizer), tokens_dir=str(paths.tokens), trained=tokenizer is None,
        **{k: v for k, v in meta.items() if k not in ("format", "version", "byte_order")}, words=counts.words,
        val_fraction=cfg.val_fraction, val_documents=_val_documents(counts.documents, cfg.val_fraction, meta["val_split"]),
        tokens=tokens, chars_per_token=round(counts.characters / max(1, tokens - counts.documents), 4),
        tokens_per_word=round((tokens - counts.documents) / max(1, counts.words), 4), seconds=round(seconds, 3),
        train_seconds=round(train_seconds, 3), mb_per_s=round(total / 1e6 / max(seconds, 1e-9), 3),
        started_over=started_over, kept=kept, vocab_asked=cfg.vocab_size if tokenizer is None else None,
        min_frequency=cfg.min_frequency if tokenizer is None else None,
    )


def _check_settings(cfg: TokenizeConfig, paths: RunPaths, tokenizer, force: bool) -> None:
    if cfg.errors not in ("strict", "replace"):
        raise InputError(f"--errors must be strict or replace, got {cfg.errors!r}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise InputError(f"--val-fraction must be between 0 and 1 (exclusive), got {cfg.val_fraction}")
    if tokenizer is None:
        check_vocab_size(cfg.vocab_size)
        check_min_frequency(cfg.min_frequency)
    if paths.latest.exists() and not force:
        raise InputError(
            f"run {paths.root} already has a trained checkpoint ({paths.latest}); pass --force to re-tokenize "
            f"it: a tokenizer that comes out different starts the run over (it deletes the checkpoints, snapshots, "
            f"metrics.jsonl, and the probe report and demo summary made from them, which cannot read the new "
            f"tokens), the same tokenizer keeps them; or use another --run"
        )


def _checkpoint_record(paths: RunPaths) -> tuple[str | None, dict | None]:
    """What the run's checkpoint was trained on, from its header: the tokenizer's sha256 (else the
    run's tokenizer.json as it is now; None when neither can be read) and the tokens_identity of
    its tokens (None for a checkpoint that does not record it)."""
    from safetensors import safe_open  # reads the header only; no torch

    meta = {}
    with contextlib.suppress(Exception):  # safetensors raises its own errors for a malformed file
        with safe_open(str(paths.latest), framework="numpy") as f:
            meta = f.metadata() or {}
    tokens = None
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        tokens = json.loads(meta.get("extra") or "{}").get("tokens")
    sha = meta.get("tokenizer_sha256") or (tokenizer_sha256(paths.tokenizer) if paths.tokenizer.is_file() else None)
    return sha, tokens if isinstance(tokens, dict) else None


def _encode(tok: Tokenizer, batches, eot: int, dtype: np.dtype, val_fraction: float,
            train_path: Path, val_path: Path) -> None:
    """Encode batch by batch, appending ids (and EOT after each document) to train or val."""
    with open(train_path, "wb") as train_f, open(val_path, "wb") as val_f:
        for batch in batches:
            # encode_batch_fast: no offsets needed here, and it is the faster call
            encs = tok.encode_batch_fast([t for t, _, _ in batch], add_special_tokens=False)
            ids: tuple[list[int], list[int]] = ([], [])  # (train, val)
            for (_, ends, i), enc in zip(batch, encs):
                part = ids[_is_val(i, val_fraction)]
                part += enc.ids
                if ends:
                    part.append(eot)
            np.asarray(ids[0], dtype=dtype).tofile(train_f)
            np.asarray(ids[1], dtype=dtype).tofile(val_f)


def _check_not_empty(counts: Counts, sources: list[Source]) -> None:
    if counts.documents == 0:
        if len(sources) == 1:
            raise InputError(f"the corpus is empty: {_shown(sources[0])} holds no text; give a file with some text in it")
        more = len(sources) - 3
        names = [_shown(s) for s in sources[:3]] + ([f"{more:,} more file{'s' if more > 1 else ''}"] if more > 0 else [])
        raise InputError(f"the corpus is empty: {', '.join(names[:-1])} and {names[-1]} hold no text; "
                         f"give files with some text in them")


def _shown(src: Source) -> str:
    """A source's name in a message: standard input says so."""
    return "- (standard input)" if src.name == "-" else src.name


def _move_tail(train: Path, val: Path, nbytes: int) -> None:
    """Move the last `nbytes` of train to val, in chunks (memory stays flat)."""
    cut = train.stat().st_size - nbytes
    with open(train, "r+b") as src, open(val, "ab") as dst:
        src.seek(cut)
        shutil.copyfileobj(src, dst, CHUNK_BYTES)
        src.truncate(cut)
