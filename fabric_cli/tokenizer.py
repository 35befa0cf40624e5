"""Byte-level BPE: train, load, show a split, and encode a corpus into token files.

A corpus is read in chunks, split into documents at blank lines, trained on through an iterator
and encoded in batches written as they come, so peak memory does not grow with the corpus.
No torch here: ids are written with numpy.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm

from fabric_cli.config import EOT, PRESETS, RunPaths, TokenizeConfig, TrainConfig, bundled_corpus
from fabric_cli.errors import InputError
from fabric_cli.files import atomic_paths, file_sha256, json_text, tokens_identity, undo_new_folders
from fabric_cli.runlock import holding
from fabric_cli.text import check_unicode, plural

FORMAT, VERSION = "fabric-tokens", 1
BYTE_ALPHABET = 256
# Token files hold uint32 above 65,535 tokens, so the dtype is no limit; memory is. The BPE trainer
# allocates about 70 bytes per vocabulary slot up front (a billion aborts the process), and a model's
# embedding grows with the vocabulary too. 2**20 is four times the largest vocabularies in use
# (about 256k), so it refuses only typos and absurd values.
MAX_VOCAB = 2**20
CHUNK_BYTES = 1 << 20  # read size
BATCH_CHARS = 1 << 18  # characters per encode_batch call: keeps the cores busy, memory small
MAX_PIECE_CHARS = 4 << 20  # a longer document is encoded in pieces, so memory stays flat
# `fabric train` refuses a split shorter than one window (context + 1 tokens); under two windows it
# would evaluate on overlapping windows of the same few tokens. Tokenize warns below two windows of
# the default preset's context, so a user learns it now rather than when training fails.
SMALL_SPLIT_TOKENS = 2 * PRESETS[TrainConfig.preset].block_size

# The newline ending a line, then one or more blank (whitespace-only) lines: a document boundary.
_SEP = re.compile(r"\r?\n(?:[^\S\n]*\n)+")
_VISIBLE = str.maketrans({" ": "·", "\n": "↵", "\t": "→", "\r": "␍"})
CONTINUATION = "◦"  # --show: a token holding more bytes of a character already shown


# --------------------------------------------------------------------------- the tokenizer


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE: every byte is a token, so no text is ever unknown."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable, vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE with the <|endoftext|> special token.

    Args:
        texts: an iterator of strings, or of lists of strings (batches are faster).
        vocab_size: at most this many tokens: 256 bytes + 1 special + merges.
        min_frequency: a pair seen fewer times than this is never merged.
    Returns:
        a tokenizers.Tokenizer; any UTF-8 text encodes and decodes back unchanged.
    Example:
        >>> tok = train_tokenizer(["the cat sat on the mat"] * 3, vocab_size=300)
        >>> tok.decode(tok.encode("Zürich 🦊").ids)
        'Zürich 🦊'
    """
    check_vocab_size(vocab_size)
    check_min_frequency(min_frequency)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # our own bar counts bytes read
    )
    tok = new_tokenizer()
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def check_min_frequency(min_frequency: int) -> None:
    """Refuse a --min-frequency below 1 (the BPE trainer never merges a pair it has not seen, so 0
    would act as 1) or past what the trainer counts in (a 64-bit count: 2**64 overflowed inside it)."""
    if not 1 <= min_frequency < 2**63:
        raise InputError(f"--min-frequency must be between 1 and 2**63 - 1, got {min_frequency} (how often a pair "
                         f"must be seen to be merged; 1 allows every pair)")


def check_vocab_size(vocab_size: int) -> None:
    need = BYTE_ALPHABET + 1
    if vocab_size > MAX_VOCAB:
        raise InputError(
            f"--vocab-size {vocab_size:,} is too large: at most {MAX_VOCAB:,} (2**20) tokens; real vocabularies "
            f"are 4,096 to 262,144 (the default is {TokenizeConfig.vocab_size})"
        )
    if vocab_size < need:
        raise InputError(
            f"--vocab-size {vocab_size} is too small: the byte alphabet ({BYTE_ALPHABET}) plus {EOT} "
            f"need {need}; use {need} or more (the default is {TokenizeConfig.vocab_size})"
        )


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer.json (fabric's, GPT-2's, any Hugging Face `tokenizers` file).

    Raises InputError when the file is missing or is not a tokenizer.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"tokenizer file {p} does not exist; run `fabric tokenize FILES` to train one")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises a bare Exception for every parse failure
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(
            f"{p} is not a Hugging Face tokenizer.json ({why}); pass a file saved by `tokenizers`"
        ) from None


# Every kind of character a corpus may hold: ASCII, accents, CJK, emoji, a ligature and a circled
# digit (which a normalizer would rewrite), control bytes, and a leading space.
_ROUND_TRIP = " Zürich, 東京 🦊 ﬁ ①\t~\x00"


def check_byte_level(tok: Tokenizer, path: str | os.PathLike) -> Tokenizer:
    """Refuse a tokenizer that is not byte-level, or that changes text: fabric promises that any
    UTF-8 survives encode then decode (a word-level or WordPiece tokenizer maps what it does not
    know to an unknown token; a normalizer rewrites characters; a Metaspace decoder drops spaces).

    Example:
        >>> tok = check_byte_level(train_tokenizer(["the cat sat"], vocab_size=270), "t.json")  # fabric's own kind
    """
    decoder = (json.loads(tok.to_str()).get("decoder") or {}).get("type")
    if decoder != "ByteLevel":
        raise InputError(
            f"tokenizer {path} is not byte-level (its decoder is {decoder or 'missing'}); fabric needs a byte-level "
            f"BPE, as GPT-2's, that gives any text back unchanged (leave out --tokenizer to train one)"
        )
    back = tok.decode(tok.encode(_ROUND_TRIP, add_special_tokens=False).ids, skip_special_tokens=False)
    if back != _ROUND_TRIP:
        raise InputError(
            f"tokenizer {path} does not give text back unchanged: {_ROUND_TRIP!r} comes back as {back!r} (a "
            f"normalizer, or a space put in front); fabric needs a byte-level BPE without them, as GPT-2's"
        )
    return tok


def tokenizer_path_for(checkpoint: str | os.PathLike, given: str | os.PathLike | None,
                       run_default: str | os.PathLike | None) -> Path:
    """The tokenizer to read `checkpoint` with: `given` (--tokenizer), else the tokenizer.json of
    the run the checkpoint lies in (RUN/checkpoints/...), else `run_default` (the --run's), else a
    tokenizer.json beside the checkpoint."""
    if given:
        return Path(given)
    owner = RunPaths.of_checkpoint(checkpoint)
    if owner and (owner.tokenizer.is_file() or run_default is None):
        return owner.tokenizer
    return Path(run_default) if run_default is not None else Path(checkpoint).with_name("tokenizer.json")


def load_tokenizer_for(path: str | os.PathLike, checkpoint: str | os.PathLike, sha256: str | None) -> Tokenizer:
    """load_tokenizer for reading a checkpoint: when the file is missing, ask for the one the
    checkpoint was trained with (its hash is in the checkpoint), not for a new one."""
    if not Path(path).is_file():
        known = f" (sha256 {sha256[:12]}...)" if sha256 else ""
        raise InputError(
            f"tokenizer file {path} does not exist; pass --tokenizer with the tokenizer.json that "
            f"{checkpoint} was trained with{known}"
        )
    return load_tokenizer(path)


def eot_id(tok: Tokenizer) -> int | None:
    """The id of <|endoftext|>, or None when the tokenizer has no such token."""
    return tok.token_to_id(EOT)


def token_dtype(vocab_size: int) -> str:
    """The numpy dtype of token files: uint16, or uint32 when the vocabulary exceeds 65535."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def tokenizer_sha256(path: str | os.PathLike) -> str:
    """A tokenizer.json's identity: checkpoints record it to detect a changed tokenizer."""
    return file_sha256(path)


def show_split(tok: Tokenizer, text: str) -> dict:
    """How `text` splits into tokens, with the boundaries visible.

    Each token shows the characters its offsets cover; a token that only continues a character
    split across tokens (an emoji is 4 bytes) shows as ◦. Spaces show as ·, newlines as ↵.
    Example:
        >>> tok = train_tokenizer(["the cat sat on the mat"] * 3, vocab_size=300)
        >>> show_split(tok, "the cat")["display"]
        'the|·cat'
    """
    enc = tok.encode(check_unicode(text, "the --show text"), add_special_tokens=False)
    pieces, seen = [], 0
    for start, end in enc.offsets:
        pieces.append(text[max(start, seen) : end])
        seen = max(seen, end)
    return {
        "text": text,
        "display": "|".join(p.translate(_VISIBLE) if p else CONTINUATION for p in pieces),
        "tokens": pieces,
        "ids": list(enc.ids),
        "count": len(enc.ids),
    }


# --------------------------------------------------------------------------- reading a corpus


@dataclass
class Source:
    name: str  # as the user gave it; "-" is standard input
    path: Path  # where it is read from (a spooled copy for standard input)
    bytes: int = 0
    sha256: str = ""


@dataclass
class _Counts:
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
            raise InputError(f"input file {p} does not exist; check the path (use - for standard input)")
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


def _pieces(src: Source, errors: str, counts: _Counts, bar) -> Iterator[tuple[str, bool, int]]:
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


def _batches(sources: list[Source], errors: str, counts: _Counts, bar) -> Iterator[list[tuple[str, bool, int]]]:
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


def _bar(total: int, desc: str, progress: bool | None):
    """A tqdm bar over bytes on stderr; None: shown only when stderr is a terminal."""
    return tqdm(total=total or None, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, disable=None if progress is None else not progress)


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
            f"characters   {self.characters:,}",
            f"per token    {self.chars_per_token:.2f} characters, {self.tokens_per_word:.2f} tokens per word",
            f"time         {self.seconds:.2f} s ({self.mb_per_s:.2f} MB/s; training {self.train_seconds:.2f} s)",
        ] + ([f"started over {Path(self.tokenizer).parent}: its checkpoints, snapshots and metrics.jsonl, "
              f"trained with the old tokenizer, are deleted, with the probe report and demo summary made "
              f"from them"] if self.started_over else []) + self._kept_lines()

    def _asked(self) -> str:
        """' of 4,096 asked' when training stopped short of --vocab-size (no more pairs frequent enough)."""
        return f" of {self.vocab_asked:,} asked" if self.vocab_asked and self.vocab_size < self.vocab_asked else ""

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
        if self.vocab_asked and self.vocab_size - base < (self.vocab_asked - base) / 2:  # the trainer stops silently
            short = [f"the tokenizer learned {plural(self.vocab_size - base, 'merge')} of the {self.vocab_asked - base:,} "
                     f"--vocab-size {self.vocab_asked:,} asks for: no further pair occurs {self.min_frequency:,} times "
                     f"(--min-frequency) in this text, so most words stay in pieces; lower --min-frequency or "
                     f"tokenize more text"]
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
            counts = _Counts()
            with _bar(total, "training", progress) as bar:
                texts = ([t for t, _, _ in batch] for batch in _batches(sources, cfg.errors, counts, bar))
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
            counts = _Counts()
            with _bar(total, "encoding", progress) as bar:
                batches = _batches(sources, cfg.errors, counts, bar)
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
            f"run {paths.root} already has a trained checkpoint ({paths.latest}) that would no longer "
            f"match its tokens; pass --force to re-tokenize and start the run over (a new tokenizer "
            f"deletes its checkpoints, snapshots, metrics.jsonl, and the probe report and demo summary made from them), or use another --run"
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


def _check_not_empty(counts: _Counts, sources: list[Source]) -> None:
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
