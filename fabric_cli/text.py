"""Small helpers for the words fabric prints and the text it is given."""

from __future__ import annotations

from fabric_cli.errors import InputError


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 story', '2 stories': a count and its noun in agreement.

    Example:
        >>> plural(1, "story", "stories"), plural(1_000, "item")
        ('1 story', '1,000 items')
    """
    return f"{n:,} {word if n == 1 else many or word + 's'}"



def unicode_error(text: str) -> str | None:
    """None if `text` can be written as UTF-8; else where it cannot.

    A lone surrogate is what Python makes of bytes that are not UTF-8 in a command-line argument or
    in a stream read with surrogateescape (the C locale), and what JSON's "\\ud800" gives. Tokenizers
    refuse it with a TypeError deep inside; callers say which input it was instead.

    Example:
        >>> unicode_error("Zürich"), unicode_error("a\\udcff")
        (None, 'a stray byte or lone surrogate at character 1')
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a stray byte or lone surrogate at character {e.start}"
    return None


def check_unicode(text: str, what: str) -> str:
    """`text` itself if it can be written as UTF-8, else an InputError naming `what` (unicode_error)."""
    if problem := unicode_error(text):
        raise InputError(f"{what} is not valid UTF-8 text ({problem}); convert it to UTF-8")
    return text
