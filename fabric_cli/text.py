"""Small helpers for the words fabric prints."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 story', '2 stories': a count and its noun in agreement.

    Example:
        >>> plural(1, "story", "stories"), plural(1_000, "item")
        ('1 story', '1,000 items')
    """
    return f"{n:,} {word if n == 1 else many or word + 's'}"
