"""A probe prompt with its ground truth: character spans of the pronoun, its referent and the
distractors, optional continuations, and its pronoun-swap twin."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

Span = tuple[int, int]


_DETERMINERS = {"the", "a", "an", "this", "that", "these", "those", "his", "her", "their", "its", "my", "our", "your"}


@dataclass(frozen=True)
class ProbeItem:
    """One prompt with its ground truth. Spans are character offsets [start, end) into text."""

    id: str
    text: str
    pronoun: Span
    referent: Span
    distractors: tuple[Span, ...] = ()
    continuations: tuple[str, str] | None = None
    ambiguous: bool = False
    suite: str = ""
    where: str = ""  # "file:line", for messages
    swap: str = ""  # the pronoun that would mean the one distractor instead ("he" for "she"): see twin()
    entities: tuple[int, ...] = ()  # per distractor, which character it names (distractors of one are one
    # candidate); empty: each distractor its own character

    def show(self, span: Span) -> str:
        return self.text[span[0] : span[1]].strip()

    def twin(self) -> ProbeItem | None:
        """The pronoun-swap twin: the same words with `swap` for the pronoun, so the distractor is now the
        referent and the referent the distractor (continuations swapped too), or None without a swap.
        A head that follows the pronoun is right on both; one that follows order or length, on one.

        Example:
            >>> from fabric_cli.probe.formats import parse_markup_line
            >>> t = parse_markup_line("[The nurse] met <the farmer> before {she|he} left. || bandaged | ploughed").twin()
            >>> t.text, t.show(t.referent), t.show(t.distractors[0]), t.continuations, t.swap
            ('The nurse met the farmer before he left.', 'the farmer', 'The nurse', (' ploughed', ' bandaged'), 'she')
        """
        if not self.swap:
            return None
        s, e = self.pronoun
        s, e = s + len(self.text[s:e]) - len(self.text[s:e].lstrip()), e - len(self.text[s:e]) + len(self.text[s:e].rstrip())
        shift = len(self.swap) - (e - s)  # the words only: a span " she" keeps its space before the swap
        ids = self.entities or tuple(range(len(self.distractors)))
        (who,) = [i for d, i in zip(self.distractors, ids) if d[1] <= s]  # _checked: exactly one mention before
        other = next(d for d, i in zip(self.distractors, ids) if i == who)
        # later mentions, moved by the swap's change of length; the new referent's own are not distractors
        later = tuple((a + shift, b + shift) for (a, b), i in zip(self.distractors, ids) if a >= e and i != who)
        return dataclasses.replace(
            self, id=f"{self.id}~swap", text=self.text[:s] + self.swap + self.text[e:], pronoun=(s, s + len(self.swap)),
            referent=other, distractors=(self.referent, *later), swap=self.text[s:e], entities=(),
            continuations=self.continuations[::-1] if self.continuations else None,
            where=f"{self.where or self.id} (pronoun swapped)")

    def unmarked_mention(self) -> Span | None:
        """The first unmarked mention of the referent's words (after a leading determiner) before the
        pronoun: "George" in "[George] met <Alice>. Later George ... {he}", or None. A head looking
        there counts as looking at none of the candidates.

        Example:
            >>> from fabric_cli.probe.formats import parse_markup_line
            >>> parse_markup_line("[The cook] met <Ann>; the cook said {she} was late.").unmarked_mention()
            (22, 26)
        """
        words = re.findall(r"\w+", self.show(self.referent))
        if words and words[0].lower() in _DETERMINERS:
            words = words[1:]  # "the professor" is mentioned again as "professor"
        if not words:
            return None
        again = re.compile(r"\b" + r"\W+".join(map(re.escape, words)) + r"\b(?!-)", re.IGNORECASE)  # "the cat-flap" is not the cat
        marked = [self.referent, self.pronoun, *self.distractors]
        for m in again.finditer(self.text, 0, self.pronoun[0]):
            if not any(a < m.end() and m.start() < b for a, b in marked):
                return m.span()
        return None

    @property
    def candidates(self) -> list[tuple[Span, ...]]:
        """The referent, then each other character's mentions before the pronoun (a causal head cannot
        see later ones), in the order the distractors are listed: a character named twice is one
        candidate, and the attention on it is the sum over both mentions.

        Example:
            >>> from fabric_cli.probe.formats import parse_jsonl_line
            >>> parse_jsonl_line('{"text": "Ann met Bo. Bo left. She", "pronoun": [21, 24], "referent": [0, 3], '
            ...                  '"distractors": [[[8, 10], [12, 14]]]}').candidates
            [((0, 3),), ((8, 10), (12, 14))]
        """
        ids = self.entities or tuple(range(len(self.distractors)))
        groups: dict[int, list[Span]] = {}
        for d, who in zip(self.distractors, ids):
            if d[1] <= self.pronoun[0]:
                groups.setdefault(who, []).append(d)
        return [(self.referent,)] + [tuple(g) for g in groups.values()]

    def mentions_before(self) -> int:
        """How many distractor mentions come before the pronoun (a swap needs exactly one)."""
        return sum(d[1] <= self.pronoun[0] for d in self.distractors)

    def show_candidate(self, spans: tuple[Span, ...]) -> str:
        """'Emma the trader + Emma': a candidate's mentions."""
        return " + ".join(self.show(s) for s in spans)
