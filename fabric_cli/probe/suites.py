"""Probe suites: JSONL files and the hand-written markup, read into items with character spans.

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
is the referent, and names a head only if it is right on both versions more often than chance.

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

import dataclasses
import json
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from fabric_cli.config import probes_dir
from fabric_cli.errors import InputError
from fabric_cli.text import unicode_error

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


# --------------------------------------------------------------------------- finding suites


def available_suites() -> dict[str, Path]:
    """name -> path of every bundled suite (data/probes/*.jsonl)."""
    folder = probes_dir()
    return {p.stem: p for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def load_suites(names: tuple[str, ...] | list[str] = (), prompts: str | Path | None = None) -> list[ProbeItem]:
    """The items of the named bundled suites and/or a user's prompts file.

    With neither, every bundled suite. Unknown names are an InputError listing the suites there are.
    A name given twice is read once: its prompts counted twice would narrow every interval.
    """
    bundled = available_suites()
    if not names and prompts is None:
        if not bundled:
            raise InputError(f"no probe suites in {probes_dir()}; pass --prompts FILE or run `fabric corpus`")
        names = list(bundled)
    names = list(dict.fromkeys(names))
    items: list[ProbeItem] = []
    for name in names:
        if name not in bundled:
            have = ", ".join(bundled) or "none"
            raise InputError(f"--suite {name!r}: no such suite in {probes_dir()} (there are: {have}); "
                             f"pass a file of your own with --prompts")
        items += load_file(bundled[name])
    if prompts is not None:
        items += load_file(prompts)
    return items


def load_file(path: str | Path) -> list[ProbeItem]:
    """A .jsonl suite, or any other file as markup, one prompt a line. `-` is standard input, and a
    pipe (`<(...)`) or /dev/stdin is read too; having no name to tell them by, they are JSONL when
    their first prompt line starts with `{`, else markup. A UTF-8 byte-order mark is dropped."""
    stdin = str(path) == "-"
    # /dev/stdin and /dev/fd/N redirected from a file have no name to go by either; devices stay refused
    named_fd = str(path) == "/dev/stdin" or str(path).startswith(("/dev/fd/", "/proc/self/fd/"))
    stream = stdin or _is_pipe(path) or (named_fd and Path(path).is_file())
    path = Path(path)
    label = "stdin" if stdin else str(path)  # where each item came from: "stdin:3", "mine.txt:3"
    shown = "standard input" if stdin else f"probe file {path}"
    if not stdin and path.is_dir():
        raise InputError(f"probe file {path} is a folder; pass one .jsonl suite or one markup file")
    if not stream and not path.exists():
        raise InputError(f"probe file {path} does not exist")
    if not stream and not path.is_file():
        raise InputError(f"probe file {path} is not a regular file (a device); give a .jsonl suite or a markup file")
    if stdin and (sys.stdin is None or sys.stdin.isatty()):
        raise InputError("--prompts - reads the prompts from standard input, which is a terminal or closed; "
                         "pipe them in (echo '[Ann] met <Bo> before {she} left.' | fabric probe --prompts -)")
    try:
        raw = (sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin).read() if stdin else path.read_bytes()
        lines = (raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw.removeprefix("\ufeff")).splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{shown} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"cannot read the {shown}: {e.strerror or e}") from None
    if stream:  # a markup line cannot start with "{": a pronoun before its referent is refused
        parse = parse_jsonl_line if next((ln for ln in lines if ln.strip()), "").lstrip().startswith("{") else parse_markup_line
    else:
        parse = parse_jsonl_line if path.suffix.lower() == ".jsonl" else parse_markup_line
    suite = "stdin" if stdin else "pipe" if stream and str(path).startswith(("/dev/", "/proc/")) else path.stem
    items = []
    for n, line in enumerate(lines, start=1):
        if not line.strip() or (parse is parse_markup_line and line.lstrip().startswith("#")):
            continue
        try:
            items.append(parse(line, suite=suite, default_id=f"{suite}:{n}", where=f"{label}:{n}"))
        except _LineError as e:
            hint = ""
            if parse is parse_markup_line and not stream and _is_json_object(line):
                hint = "; the line is JSON: a JSONL suite's file name must end in .jsonl"
            raise InputError(f"{'standard input' if stdin else path}, line {n}: {e}{hint}") from None
    if not items:
        raise InputError(f"{shown} holds no prompts")
    return items


class _LineError(ValueError):
    """What is wrong with one line; load_file adds the file and line number."""


def _is_pipe(path: str | Path) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


# --------------------------------------------------------------------------- JSONL


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
            raise _LineError(f'continuation {c!r} would follow the pronoun {text[slice(*pronoun)]!r} with no space '
                             f'between ({text[slice(*pronoun)] + c!r}): start it with a space, {" " + c!r} '
                             f'(the markup puts the space in for you)')
    ambiguous = d.get("ambiguous", False)
    if not isinstance(ambiguous, bool):
        raise _LineError(f'"ambiguous" must be true or false, found {ambiguous!r}')
    swap = d.get("swap") or ""  # null or "": no twin
    if not isinstance(swap, str) or (swap and not _SWAP.fullmatch(swap)):
        raise _LineError(f'"swap" must be one word, the pronoun that would mean the distractor, found {swap!r}')
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
        raise _LineError(f'"{name}" must be a span [start, end) of two integers, found {value!r}')
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
                raise _LineError(f"the {na} {item.show(a)!r} {list(a)} overlaps the {nb} {item.show(b)!r} {list(b)}")
    if item.swap:
        before = item.mentions_before()
        if item.swap.lower() == item.show(item.pronoun).lower():
            raise _LineError(f"the swap {item.swap!r} is the pronoun itself; give the pronoun that would mean the "
                             f"distractor")
        if item.referent[1] > item.pronoun[0]:
            raise _LineError(f"the swap {item.swap!r} trades the referent with the distractor before the pronoun, and "
                             f"the referent {item.show(item.referent)!r} comes after it; a causal model cannot look ahead")
        if item.ambiguous:
            raise _LineError(f"the swap {item.swap!r} makes a twin to score, and an ambiguous prompt is not scored; "
                             f"drop one of them")
        if before != 1:
            what = (f"its distractor is mentioned {before} times before it" if len(item.candidates) == 2 else
                    f"this prompt has {before}")
            raise _LineError(f"the swap {item.swap!r} trades the referent with the one distractor before the pronoun, "
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
            raise _LineError(f"after '||' expected two continuations 'referent's | distractor's', found {tail!r}")
        conts = tuple(w if re.match(r"[^\w\s]", w) else " " + w for w in words)
    text, spans, open_at, kind = [], {"referent": [], "pronoun": [], "distractor": []}, None, None
    swap: list[str] | None = None  # "{she|he}": the characters after the bar
    for col, ch in enumerate(body, start=1):
        if kind == "pronoun" and ch == "|" and swap is None:
            swap = []
        elif swap is not None and kind == "pronoun" and ch not in _CLOSERS:
            swap.append(ch)
        elif ch in _MARKS:
            if kind is not None:
                raise _LineError(f"column {col}: {ch!r} opens a mention inside another {kind}; close it first")
            open_at, kind = len(text), _MARKS[ch][1]
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
        for s, e in found:
            if not text[s:e].strip():
                raise _LineError(f"the {name} at character {s} is empty")
    if not text.strip():
        raise _LineError("the prompt is empty")
    if swap is not None and not _SWAP.fullmatch(swap := "".join(swap).strip()):
        raise _LineError(f"the swap after '|' in the pronoun's braces must be one word, the pronoun that would mean "
                         f"the distractor, found {swap!r}")
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
