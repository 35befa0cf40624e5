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


def bar(weight: float, width: int = 10) -> str:
    """A unicode bar: 1.0 is `width` full blocks, with eighths at the end.

    Example:
        >>> bar(0.55, 4)
        '██▎'
    """
    eighths = int(round(max(0.0, min(1.0, weight)) * width * 8))
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def signed(x: float) -> str:
    """A log-probability difference to 3 places with its sign; one that rounds to zero is +0.000.

    Example:
        >>> signed(-0.0002), signed(1.23456)
        ('+0.000', '+1.235')
    """
    return f"{x if round(x, 3) else 0.0:+.3f}"


def pct(x: float | None) -> str:
    """A share as a percentage, padded to line up in a column; None is n/a.

    Example:
        >>> pct(0.8712), pct(None)
        (' 87.1%', '  n/a')
    """
    return "  n/a" if x is None else f"{100 * x:5.1f}%"
