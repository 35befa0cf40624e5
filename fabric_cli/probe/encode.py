"""From character spans to token positions, through the tokenizer's offsets.

Rules (the README's probe section states them too):
- a token's leading (and trailing) whitespace belongs to the token but not to any mention: " professor"
  is inside the span of "professor";
- a mention may cover several tokens; a token that sticks out of a mention makes the item unusable
  (skipped, with the reason);
- the pronoun's position is its LAST token (where a causal model has read the whole pronoun);
- the prompt is cut right after the pronoun: nothing later can change what the pronoun attends to;
- <|endoftext|> goes in front when the tokenizer has it, as in training, where every document
  follows one; it is not a word of the prompt.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass

from fabric_cli.probe.item import ProbeItem, Span

_WORD = re.compile(r"\w+|[^\w\s]")  # a word, or one punctuation mark


@dataclass
class Encoded:
    """A probe item as token positions. Positions count from the start of `ids` (BOS included)."""

    item: ProbeItem
    ids: list[int]  # [BOS] + tokens up to and including the pronoun's last
    offsets: list[Span]  # each token's characters in item.text; BOS has (0, 0)
    pronoun: int  # position of the pronoun's last token
    candidates: list[list[int]]  # positions of each candidate before the pronoun; the referent first
    words: list[int]  # per position before the pronoun: its word's index, -1 when none (BOS, spaces)
    referent_words: list[int]  # indices of the words inside the referent
    continuations: tuple[int, int] | None  # first token of each continuation; None unless they differ
    nearest_is_referent: bool  # the candidate closest before the pronoun is the referent
    first_is_referent: bool  # the earliest candidate is the referent
    same_first_token: str = ""  # why the continuations given cannot be compared: both begin with one token

    @property
    def n_words(self) -> int:
        return max(self.words, default=-1) + 1

    @property
    def uniform_hit(self) -> float:
        """How often a head that spreads its attention evenly over the earlier tokens gets this item
        right: 1 when the referent has more tokens than every other candidate, 0 when one has more,
        and 1/k in a tie of k longest (any unevenness at all breaks a tie, each way alike)."""
        ref, *others = (len(c) for c in self.candidates)
        longest = max(ref, *others)
        return 0.0 if ref < longest else 1.0 / (1 + sum(o == longest for o in others))

    def token_text(self, pos: int) -> str:
        s, e = self.offsets[pos]
        return self.item.text[s:e] if e > s else "<|endoftext|>"


@dataclass
class Skipped:
    """An item the probe could not use, and why."""

    id: str
    suite: str
    where: str
    kind: str  # "order" (pronoun before referent), "alignment" (span vs tokens), "length"
    reason: str

    def to_json(self) -> dict:
        return asdict(self)


def count_kinds(kinds) -> str:
    """'2 order, 1 alignment': how many skipped prompts of each kind, in order of first appearance."""
    return ", ".join(f"{n} {k}" for k, n in Counter(kinds).items())


class SpanMismatch(ValueError):
    """A span that does not line up with token boundaries."""


def content_range(text: str, start: int, end: int) -> Span:
    """[start, end) without the whitespace at either end; empty (start == end) if all whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def span_tokens(text: str, offsets: list[Span], span: Span) -> list[int]:
    """Indices of the tokens that make up `span` (character offsets [start, end) into text).

    A token's own whitespace is ignored, so " professor" belongs to the span of "professor"; a token
    that covers characters on both sides of the span's edge raises SpanMismatch.

    Example:
        >>> span_tokens("The professor", [(0, 3), (3, 13)], (4, 13))
        [1]
    """
    s, e = content_range(text, *span)
    found = []
    for i, (ts, te) in enumerate(offsets):
        ts, te = content_range(text, ts, te)
        if ts >= te or te <= s or ts >= e:
            continue
        if ts < s or te > e:
            raise SpanMismatch(
                f"{text[s:e]!r} [{s}, {e}) does not line up with the tokens: token {text[ts:te]!r} covers [{ts}, {te})"
            )
        found.append(i)
    if not found:
        raise SpanMismatch(f"{text[s:e]!r} [{s}, {e}) covers no token")
    return found


def encode_items(items: list[ProbeItem], tokenizer, block_size: int, bos_id: int | None):
    """Encode every item; returns (encoded, skipped), each skip with its reason."""
    encoded, skipped = [], []
    for item in items:
        try:
            encoded.append(encode_item(item, tokenizer, block_size, bos_id))
        except _Skip as e:
            skipped.append(Skipped(item.id, item.suite, item.where, e.kind, str(e)))
    return encoded, skipped


def words_before(item: ProbeItem) -> list[Span]:
    """The words (and punctuation marks) before the pronoun, as character spans: what `Encoded.words`
    indexes.

    Example:
        >>> from fabric_cli.probe.formats import parse_markup_line
        >>> words_before(parse_markup_line("[The queen], then {she}"))
        [(0, 3), (4, 9), (9, 10), (11, 15)]
    """
    return [(m.start(), m.end()) for m in _WORD.finditer(item.text, 0, item.pronoun[0])]


def encode_twins(encoded: list[Encoded], tokenizer, block_size: int, bos_id: int | None):
    """The pronoun-swap twins of the unambiguous encoded prompts that have one (ProbeItem.twin), encoded:
    (rows, twins, skipped), where twins[j] is the twin of encoded[rows[j]] and `skipped` holds the kind of
    each twin that could not be encoded ("alignment": a swapped pronoun whose tokens do not line up with it,
    "length": past the context)."""
    rows, twins, skipped = [], [], []
    for i, e in enumerate(encoded):
        if e.item.swap and not e.item.ambiguous:
            try:
                twins.append(encode_item(e.item.twin(), tokenizer, block_size, bos_id))
                rows.append(i)
            except _Skip as why:
                skipped.append(why.kind)
    return rows, twins, skipped


class _Skip(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def encode_item(item: ProbeItem, tokenizer, block_size: int, bos_id: int | None) -> Encoded:
    text = item.text
    if item.referent[0] >= item.pronoun[0]:
        raise _Skip("order", f"the pronoun {item.show(item.pronoun)!r} comes before its referent "
                    f"{item.show(item.referent)!r}; a causal model cannot look ahead")
    enc = tokenizer.encode(text, add_special_tokens=False)
    offsets = [tuple(o) for o in enc.offsets]

    def positions(span: Span, what: str) -> list[int]:
        try:
            return span_tokens(text, offsets, span)
        except SpanMismatch as e:
            raise _Skip("alignment", f"the {what} {e}") from None

    pron = positions(item.pronoun, "pronoun")
    shift = 1 if bos_id is not None else 0
    last = pron[-1]
    if last + shift >= block_size:
        raise _Skip("length", f"too long: the pronoun is token {last + shift + 1}, the model's context is {block_size} tokens")
    candidates = [sorted(p for span in spans for p in positions(span, "referent" if i == 0 else "distractor"))
                  for i, spans in enumerate(item.candidates)]  # a character named twice: both mentions' tokens

    word_spans = words_before(item)
    words = []
    for ts, te in offsets[: pron[0]]:
        ts, te = content_range(text, ts, te)
        words.append(next((w for w, (ws, we) in enumerate(word_spans) if ws < te <= we), -1) if te > ts else -1)
    rs, re_ = item.referent
    referent_words = [w for w, (ws, we) in enumerate(word_spans) if ws < re_ and rs < we]

    conts, clash = _first_tokens(item.continuations, tokenizer)
    nearest = max(range(len(candidates)), key=lambda c: max(candidates[c]))
    first = min(range(len(candidates)), key=lambda c: min(candidates[c]))
    return Encoded(
        item=item,
        ids=([bos_id] if shift else []) + list(enc.ids[: last + 1]),
        offsets=([(0, 0)] if shift else []) + offsets[: last + 1],
        pronoun=last + shift,
        candidates=[[p + shift for p in c] for c in candidates],
        words=([-1] if shift else []) + words,
        referent_words=referent_words,
        continuations=conts,
        nearest_is_referent=nearest == 0,
        first_is_referent=first == 0,
        same_first_token=clash,
    )


def _first_tokens(continuations: tuple[str, str] | None, tokenizer) -> tuple[tuple[int, int] | None, str]:
    """(first token of each continuation, "") when they differ there, as the ablation compares only first
    tokens; (None, why not) when both begin with the same token, as " sang" and " sangs" may ("' sang' and
    ' sangs' both begin with the token ' sang'"); (None, "") when none are given or one encodes to nothing."""
    if not continuations:
        return None, ""
    firsts = [tokenizer.encode(c, add_special_tokens=False).ids[:1] for c in continuations]
    if not all(firsts):
        return None, ""
    if firsts[0] != firsts[1]:
        return (firsts[0][0], firsts[1][0]), ""
    a, b = continuations
    return None, f"{a!r} and {b!r} both begin with the token {tokenizer.decode(firsts[0])!r}"
