"""Byte-level BPE: train, load, save and check a tokenizer, and show how it splits a text.

Encoding a whole corpus into token files is fabric_cli.encode; reading it, fabric_cli.sources.
No torch here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fabric_cli.config import EOT, TokenizeConfig
from fabric_cli.errors import InputError
from fabric_cli.files import file_sha256
from fabric_cli.rundir import RunPaths
from fabric_cli.text import check_unicode

BYTE_ALPHABET = 256
# Token files hold uint32 above 65,535 tokens, so the dtype is no limit; memory is. The BPE trainer
# allocates about 70 bytes per vocabulary slot up front (a billion aborts the process), and a model's
# embedding grows with the vocabulary too. 2**20 is four times the largest vocabularies in use
# (about 256k), so it refuses only typos and absurd values.
MAX_VOCAB = 2**20
# Tokens per word at or under which a tokenizer holds a text's words whole (a leading space and the
# word make one token). BPE never merges across words, so a tokenizer trained on a text of few
# distinct words stops short of --vocab-size with nothing left to merge (tokenize says so rather
# than warn); and prompts above it are in words the tokenizer, so its model, rarely saw (probe
# says so). The Chronicles run at 1.18 under their own tokenizer and the probe suites at 1.00;
# the suites under a tokenizer trained on 800 other stories at 2.76, on a larger other corpus 1.88.
WHOLE_WORDS = 1.5

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
        raise InputError(f"tokenizer file {p} {'is not a file' if p.exists() else 'does not exist'}; "
                         f"run `fabric tokenize FILES` to train one")
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
            f"tokenizer file {path} {'is not a file' if Path(path).exists() else 'does not exist'}; pass --tokenizer "
            f"with the tokenizer.json that {checkpoint} was trained with{known}"
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
