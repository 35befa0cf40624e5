"""The two forms a probe prompt is written in, read into ProbeItems: a JSONL line and the markup.

A JSONL line (spans are character offsets [start, end) into "text"):

    {"id": "gender-0001", "text": "The queen met the farmer before he ploughed.",
     "pronoun": [32, 34], "referent": [14, 24], "distractors": [[0, 9]],
     "continuations": [" ploughed", " ruled"], "ambiguous": false}

"distractor": [s, e] (one span) is accepted too. continuations[0] is what follows the pronoun if it
means the referent, continuations[1] if it means the distractor, as literal text: its leading space
included (one that would join the pronoun into a longer word, "shebaked", is refused). They are
optional, and the ablation compares only their first tokens, so those must differ (with many
tokenizers " lecture" and " lectures" do not). "swap": "he" (optional) is the pronoun that would mean
the one distractor instead: the probe also scores that twin (ProbeItem.twin), in which the distractor
is the referent, and names a head only if it is right on both versions more often than every baseline.
A distractor named more than once is one character: its spans in a list, "distractors": [[[8, 10], [12, 14]]].

The markup, one prompt a line (a .txt file for `--prompts`):

    [The professor] thanked <the janitor> before {she} gave her lecture. || gave | mopped
    ? [The cat] chased <the dog> because {it} was fast.
    [The nurse] met <the farmer> before {she|he} left. || bandaged | ploughed

[referent] (exactly one), {pronoun} (exactly one; `{she|he}` gives its swap), <distractor> (any
number); after ` || ` the two continuations, referent's first (a space is put in front of each unless it starts with
punctuation); a leading `? ` flags the item as ambiguous; blank lines and `#` lines are skipped.
A malformed line is an InputError naming the file and the line. `--prompts -` reads either form
from standard input. Only distractors before the
pronoun count: a head cannot look ahead, so a prompt with none is shown but not scored.
"""

from __future__ import annotations

import json
import re

from fabric_cli.probe.item import ProbeItem, Span
from fabric_cli.text import unicode_error


def _shown(value, most: int = 60) -> str:
    """repr(value) for an error message, cut to `most` characters: a 100,000-character continuation
    was echoed whole, three times, in one line."""
    text = repr(value)
    size = len(value) if isinstance(value, str) else len(text)
    return text if len(text) <= most else f"{text[:most - 11]}... ({size:,} characters)"


class _LineError(ValueError):
    """What is wrong with one line; load_file adds the file and line number."""


def parse_jsonl_line(line: str, suite: str = "", default_id: str = "", where: str = "") -> ProbeItem:
    """One JSONL line -> ProbeItem.

    Example:
        >>> parse_jsonl_line('{"text": "Ann saw her cat.", "pronoun": [8, 11], "referent": [0, 3]}').referent
        (0, 3)
    """
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise _LineError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(d, dict):
        raise _LineError(f"expected a JSON object, found {type(d).__name__}")
    text = d.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _LineError('"text" must be a non-empty string')
    for key in ("pronoun", "referent"):
        if key not in d:
            raise _LineError(f'"{key}" is missing; expected a character span [start, end)')
    distractors = d.get("distractors", [])
    if not isinstance(distractors, list):
        raise _LineError('"distractors" must be a list of spans [[start, end], ...] (a character mentioned more '
                         'than once as a list of its spans)')
    if "distractor" in d:
        distractors = [*distractors, d["distractor"]]
    entities = []  # a nested list is one character's mentions: [[s, e], [[s, e], [s, e]]]
    for who, entry in enumerate(distractors):
        group = entry if isinstance(entry, list) and entry and all(isinstance(x, list) for x in entry) else [entry]
        entities += [(who, span) for span in group]
    conts = d.get("continuations") or None
    if conts is not None and not (
        isinstance(conts, list) and len(conts) == 2 and all(isinstance(c, str) and c.strip() for c in conts)
    ):
        raise _LineError('"continuations" must be two non-empty strings [referent\'s, distractor\'s]')
    for key, value in [("text", text)] + [("continuations", c) for c in conts or ()]:
        if problem := unicode_error(value):
            raise _LineError(f'"{key}" is not valid UTF-8 text ({problem})')
    pronoun = _span(d["pronoun"], "pronoun", text)
    after = text[pronoun[1]:pronoun[1] + 1]  # what follows the pronoun in the text ("" at its end)
    for c in conts or ():
        # glued: the text puts whitespace after the pronoun, or ends there in a text of spaced words
        spaced = after.isspace() or (not after and " " in text and c[:1].isascii())
        if re.match(r"\w", c) and spaced:
            raise _LineError(f'continuation {_shown(c)} would follow the pronoun {_shown(text[slice(*pronoun)])} with no space '
                             f'between ({_shown(text[slice(*pronoun)] + c)}): start it with a space, {_shown(" " + c)} '
                             f'(the markup puts the space in for you)')
    ambiguous = d.get("ambiguous", False)
    if not isinstance(ambiguous, bool):
        raise _LineError(f'"ambiguous" must be true or false, found {_shown(ambiguous)}')
    swap = d.get("swap") or ""  # null or "": no twin
    if not isinstance(swap, str) or (swap and not _SWAP.fullmatch(swap)):
        raise _LineError(f'"swap" must be one word, the pronoun that would mean the distractor, found {_shown(swap)}')
    if problem := unicode_error(swap):
        raise _LineError(f'"swap" is not valid UTF-8 text ({problem})')
    item_id = d.get("id", default_id)
    return _checked(
        ProbeItem(
            id=str(item_id), text=text, pronoun=pronoun,
            referent=_span(d["referent"], "referent", text),
            distractors=tuple(_span(s, "distractor", text) for _, s in entities),
            entities=tuple(who for who, _ in entities) if len(entities) > len(distractors) else (),
            continuations=tuple(conts) if conts else None, ambiguous=ambiguous, suite=suite, where=where, swap=swap,
        )
    )


def _span(value, name: str, text: str) -> Span:
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        raise _LineError(f'"{name}" must be a span [start, end) of two integers, found {_shown(value)}')
    s, e = value
    if not 0 <= s < e <= len(text):
        raise _LineError(f'"{name}" span [{s}, {e}) is not inside the text (0..{len(text)}) or is empty')
    if not text[s:e].strip():
        raise _LineError(f'"{name}" span [{s}, {e}) covers only whitespace')
    return (s, e)


def _checked(item: ProbeItem) -> ProbeItem:
    """Spans must not overlap: a mention is the referent, a distractor or the pronoun, not two. A swap
    needs one distractor before the pronoun (the twin trades it with the referent) and an unambiguous item."""
    named = [("pronoun", item.pronoun), ("referent", item.referent)] + [("distractor", d) for d in item.distractors]
    for i, (na, a) in enumerate(named):
        for nb, b in named[i + 1 :]:
            if a[0] < b[1] and b[0] < a[1]:
                raise _LineError(f"the {na} {_shown(item.show(a))} {list(a)} overlaps the {nb} {_shown(item.show(b))} {list(b)}")
    if item.swap:
        before = item.mentions_before()
        if item.swap.lower() == item.show(item.pronoun).lower():
            raise _LineError(f"the swap {_shown(item.swap)} is the pronoun itself; give the pronoun that would mean the "
                             f"distractor")
        if item.referent[1] > item.pronoun[0]:
            raise _LineError(f"the swap {_shown(item.swap)} trades the referent with the distractor before the pronoun, and "
                             f"the referent {_shown(item.show(item.referent))} comes after it; a causal model cannot look ahead")
        if item.ambiguous:
            raise _LineError(f"the swap {_shown(item.swap)} makes a twin to score, and an ambiguous prompt is not scored; "
                             f"drop one of them")
        if before != 1:
            what = (f"its distractor is mentioned {before} times before it" if len(item.candidates) == 2 else
                    f"this prompt has {before}")
            raise _LineError(f"the swap {_shown(item.swap)} trades the referent with the one distractor before the pronoun, "
                             f"and {what}; the twin needs exactly one mention, or drop the swap")
    return item


# --------------------------------------------------------------------------- markup

_SWAP = re.compile(r"[\w'’-]+")  # one word: "he", "Him", "él", "they're"
_MARKS = {"[": ("]", "referent"), "{": ("}", "pronoun"), "<": (">", "distractor")}
_CLOSERS = {close: opener for opener, (close, _) in _MARKS.items()}
_OPENERS = {kind: opener for opener, (_, kind) in _MARKS.items()}


def parse_markup_line(line: str, suite: str = "", default_id: str = "", where: str = "") -> ProbeItem:
    """`[referent] ... {pronoun} ... <distractor> || cont0 | cont1` -> ProbeItem.

    Example:
        >>> it = parse_markup_line("[The professor] finished {her} lecture while <the janitor> waited. || lecture | mop")
        >>> it.show(it.referent), it.show(it.pronoun), it.continuations
        ('The professor', 'her', (' lecture', ' mop'))
    """
    body, conts = line.strip(), None
    ambiguous = body.startswith("?")
    if ambiguous:
        body = body[1:].lstrip()
    if "||" in body:
        body, tail = (part.strip() for part in body.split("||", 1))
        words = [w.strip() for w in tail.split("|")]
        if len(words) != 2 or not all(words):
            raise _LineError(f"after '||' expected two continuations 'referent's | distractor's', found {_shown(tail)}")
        conts = tuple(w if re.match(r"[^\w\s]", w) else " " + w for w in words)
    skipped = line.find(body)  # the line's columns: indentation and a leading "? " count
    text, spans, open_at, kind = [], {"referent": [], "pronoun": [], "distractor": []}, None, None
    opened = {"referent": [], "pronoun": [], "distractor": []}  # the line's column of each mention's bracket
    swap: list[str] | None = None  # "{she|he}": the characters after the bar
    for col, ch in enumerate(body, start=1 + skipped):
        if kind == "pronoun" and ch == "|" and swap is None:
            swap = []
        elif swap is not None and kind == "pronoun" and ch not in _CLOSERS:
            swap.append(ch)
        elif ch in _MARKS:
            if kind is not None:
                raise _LineError(f"column {col}: {ch!r} opens a mention inside another {kind}; close it first")
            open_at, kind = len(text), _MARKS[ch][1]
            opened[kind].append(col)
        elif ch in _CLOSERS:
            if kind != _MARKS[_CLOSERS[ch]][1]:
                raise _LineError(f"column {col}: {ch!r} closes nothing (or the wrong kind of bracket)")
            spans[kind].append((open_at, len(text)))
            kind = None
        else:
            text.append(ch)
    if kind is not None:
        raise _LineError(f"the {kind} opened with {_OPENERS[kind]!r} is never closed")
    text = "".join(text)
    for name, mark in (("referent", "[...]"), ("pronoun", "{...}")):
        if len(spans[name]) != 1:
            raise _LineError(f"expected exactly one {name} marked {mark}, found {len(spans[name])}")
    for name, found in spans.items():
        for (s, e), col in zip(found, opened[name]):
            if not text[s:e].strip():
                raise _LineError(f"column {col}: the {name} is empty")
    if not text.strip():
        raise _LineError("the prompt is empty")
    if swap is not None and not _SWAP.fullmatch(swap := "".join(swap).strip()):
        raise _LineError(f"the swap after '|' in the pronoun's braces must be one word, the pronoun that would mean "
                         f"the distractor, found {_shown(swap)}")
    return _checked(
        ProbeItem(
            id=default_id, text=text, pronoun=spans["pronoun"][0], referent=spans["referent"][0],
            distractors=tuple(spans["distractor"]), continuations=conts, ambiguous=ambiguous, suite=suite, where=where,
            swap=swap or "",
        )
    )


def to_json(item: ProbeItem) -> dict:
    """The JSONL form of an item (the schema parse_jsonl_line reads)."""
    d = {"id": item.id, "text": item.text, "pronoun": list(item.pronoun), "referent": list(item.referent),
         "distractors": _grouped(item)}
    if item.continuations:
        d["continuations"] = list(item.continuations)
    d["ambiguous"] = item.ambiguous
    if item.swap:
        d["swap"] = item.swap
    return d


def _grouped(item: ProbeItem) -> list:
    """The distractors as JSONL writes them: a span per character, or a list of spans for one named twice."""
    if not item.entities:
        return [list(s) for s in item.distractors]
    groups: dict[int, list] = {}
    for d, who in zip(item.distractors, item.entities):
        groups.setdefault(who, []).append(list(d))
    return [g if len(g) > 1 else g[0] for g in groups.values()]
