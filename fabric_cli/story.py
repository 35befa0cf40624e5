"""The story engine behind the Chronicles corpus: characters, held-out pairs, and a writer that
renders grammar.py's sentence shapes while recording where each character is mentioned.

Used by corpus.py for training stories (spans ignored) and probe items (spans kept). No torch here.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import random
import re
from dataclasses import dataclass

from fabric_cli import grammar as G
from fabric_cli.lexicon import CATEGORIES, CLASSES, NAMES, PRONOUNS, Category

HELDOUT_PERCENT = 25  # share of noun pairs kept out of training for the probe suites


@functools.lru_cache(maxsize=None)
def _heldout(key: str) -> bool:
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % 100 < HELDOUT_PERCENT


def is_heldout_pair(a: str, b: str) -> bool:
    """True if nouns a and b (in either order) are kept for the probe suites and never meet in training.

    Example:
        >>> is_heldout_pair("queen", "farmer") == is_heldout_pair("farmer", "queen")
        True
    """
    return _heldout("|".join(sorted((a, b))))


# --------------------------------------------------------------------------- characters


@dataclass(eq=False)  # compared by identity: two farmers in different stories are different people
class Character:
    cls: str  # agreement class: f, m, n, pl
    cat: Category
    noun: str  # the noun, or the role of a named person; the key of held-out pairs
    name: str | None  # "Ada" for "Ada the professor"
    item: str  # the one possession this character has in its story

    @property
    def kind(self) -> str:
        return self.cat.kind

    def pron(self, case: str) -> str:
        return PRONOUNS[self.cls][case]


_BY_CLASS = {cls: [c for c in CATEGORIES if c.nouns(cls) or (cls in "fm" and c.kind == "person" and c.roles)]
             for cls in CLASSES}
_CLASS_WEIGHTS = {"f": 3, "m": 3, "n": 2, "pl": 2}
GENDER_PAIR_PROBABILITY = 0.5  # stories that open with a woman and a man (see story_classes)


def _character(rng: random.Random, cls: str, cat: Category) -> Character:
    roles = cat.roles if cls in ("f", "m") else ()
    noun = rng.choice(cat.nouns(cls) + roles)
    name = rng.choice(NAMES[cls]) if noun in roles else None
    return Character(cls, cat, noun, name, rng.choice(cat.items))


def cast(rng: random.Random, classes: list[str], heldout: bool) -> list[Character]:
    """Characters of the given classes, in different categories, every pair held out (or none)."""
    chars: list[Character] = []
    for cls in classes:
        for _ in range(200):
            cat = rng.choice(_BY_CLASS[cls])
            if any(cat is c.cat for c in chars):
                continue
            ch = _character(rng, cls, cat)
            if all(is_heldout_pair(ch.noun, c.noun) == heldout for c in chars):
                break
        else:  # pragma: no cover - the lexicon is far larger than this needs
            raise RuntimeError(f"cannot cast a {cls} character beside {[c.noun for c in chars]}")
        chars.append(ch)
    return chars


def _article(word: str) -> str:
    w = word.lower()
    vowel = w[0] in "aeiou" and not w.startswith(("uni", "use", "eu")) or w.startswith(("heir", "hour", "hon"))
    return "an" if vowel else "a"


# --------------------------------------------------------------------------- writing one story

_SLOT = re.compile(r"\{([a-z_.]*)\}")
_TEMPLATES: dict[str, list[tuple[str, str | None]]] = {}


def _parsed(template: str) -> list[tuple[str, str | None]]:
    """'{x.subj} ruled.' -> [('', 'x.subj'), (' ruled.', None)], parsed once."""
    if template not in _TEMPLATES:
        pieces = _SLOT.split(template)  # literal, slot, literal, slot, ..., literal
        _TEMPLATES[template] = [(pieces[i], pieces[i + 1] if i + 1 < len(pieces) else None)
                                for i in range(0, len(pieces), 2)]
    return _TEMPLATES[template]


class Writer:
    """Builds one story sentence by sentence and records where each character is mentioned."""

    def __init__(self, rng: random.Random, chars: list[Character], suite: bool = False):
        self.rng, self.chars, self.suite = rng, chars, suite
        self.parts: list[str] = []
        self.n = 0  # characters written
        self.cap = False  # the next word starts a sentence
        self.mentions: dict[Character, list[tuple[int, int]]] = {c: [] for c in chars}
        self.sea = any(c.kind == "vessel" for c in chars)
        self.no_plural = all(c.cls != "pl" for c in chars)
        self.used: set[str] = set()  # verb phrases already told

    def text(self) -> str:
        return "".join(self.parts)

    def add(self, s: str) -> tuple[int, int]:
        if self.cap and s:  # capitalise the first letter of a sentence, after any quote mark
            if s[0] != '"':
                s, self.cap = s[0].upper() + s[1:], False
            elif len(s) > 1:
                s, self.cap = '"' + s[1].upper() + s[2:], False
        start = self.n
        self.n = start + len(s)
        self.parts.append(s)
        return start, self.n

    def allowed(self, conditions: tuple[str, ...], roles: dict[str, Character]) -> bool:
        for cond in conditions:
            what, _, role = cond.partition(":")
            c = roles.get(role)
            if what == "no_pl":
                ok = self.no_plural
            elif what == "a_sg":
                ok = roles["a"].cls != "pl"
            elif what in ("agent", "acts"):
                ok = c.kind != "vessel"
            elif what == "gifts":
                ok = bool(c.cat.gifts)
            else:  # person
                ok = c.kind == "person"
            if not ok:
                return False
        return True

    def sentence(self, template: str, roles: dict[str, Character], stop: str | None = None):
        """Write one sentence; with `stop`, end right after that slot and return its span."""
        if self.n:
            self.add(" ")
        self.cap = True
        for literal, slot in _parsed(template):
            if literal:
                self.add(literal)
            if slot is not None:
                span = self.slot(slot, roles)
                if slot == stop:
                    return span
        return None

    def slot(self, slot: str, roles: dict[str, Character]) -> tuple[int, int]:
        rng, add = self.rng, self.add
        role, _, field = slot.partition(".")
        c = roles.get(role)
        if c is None:  # a scene word
            if role == "opener":
                return add(rng.choice(G.OPENERS) + " ") if self.suite or rng.random() < 0.6 else add("")
            return add(rng.choice(G.SEA_PLACES if self.sea and role == "place" else _SCENE_WORDS[role]))
        if field in _BY_KIND:
            return add(rng.choice(_BY_KIND[field][c.kind]))
        if field in ("", "new", "indef"):
            return self.mention(c, field)
        if field in ("subj", "obj", "poss"):
            return add(PRONOUNS[c.cls][field])
        if field == "vp":
            return add(self.verb_phrase(c))
        if field == "item":
            return add(c.item)
        if field == "gift":
            return add(rng.choice(c.cat.gifts))
        if field == "was":
            return add("were" if c.cls == "pl" else "was")
        if field == "itemwas":
            return add("were" if _plural_item(c.item) else "was")
        if field == "who":
            return add("who" if c.kind == "person" else "that")
        if field == "have":
            adj = rng.choice(G.ITEM_ADJECTIVES)
            return add(f"{adj} {c.item}" if _plural_item(c.item) else f"{_article(adj)} {adj} {c.item}")
        if field.startswith("meet."):
            other = roles[field[5:]].kind
            return add(rng.choice(G.MEET.get((c.kind, other)) or G.MEET_DEFAULT.get(c.kind) or _MEET_OTHER))
        raise KeyError(f"unknown slot {{{slot}}}")

    def verb_phrase(self, c: Character) -> str:
        """A verb phrase of c's category not yet used in this story (while there are some)."""
        verbs = [v for v in c.cat.verbs if v not in self.used and not (self.suite and "{" in v)]
        vp = self.rng.choice(verbs or c.cat.verbs)
        self.used.add(vp)
        return vp.replace("{poss}", c.pron("poss")).replace("{s}", "s" if c.cls == "pl" else "")

    def mention(self, c: Character, form: str) -> tuple[int, int]:
        """A noun phrase for c; the recorded span is its head: "queen", "sailors", "Ada the professor"."""
        rng = self.rng
        if c.name is not None:  # a named person
            if form or self.suite or rng.random() < 0.6:
                span = self.add(f"{c.name} the {c.noun}" if form else c.name)
            else:
                self.add("the ")
                span = self.add(c.noun)  # "the professor" is not recorded as a gendered mention
                return span
        else:
            adj = rng.choice(G.ADJECTIVES[c.kind]) + " " if form and rng.random() < 0.2 else ""
            if form == "indef":
                det = "some " if c.cls == "pl" else _article(adj or c.noun) + " "
            else:
                det = "the "
            self.add(det + adj)
            span = self.add(c.noun)
        self.mentions[c].append(span)
        return span


_SCENE_WORDS = {"place": G.PLACES, "adv": G.ADVERBS, "line": G.LINES, "itemadj": G.ITEM_ADJECTIVES,
                "giver": G.GIVERS, "give": G.GIVE["person"]}
_BY_KIND = {"give": G.GIVE, "see": G.SEE, "watch": G.WATCH, "arrive": G.ARRIVE, "come": G.COME, "idle": G.IDLE,
            "generic": G.GENERIC, "mood": G.MOOD}
_MEET_OTHER = ("watched", "noticed")


def _plural_item(item: str) -> bool:
    return item.endswith("s") and not item.endswith("ss")


_CUMULATIVE: dict[int, tuple[list[float], float]] = {}


def pick(rng: random.Random, shapes, writer: Writer, roles: dict[str, Character]) -> str:
    """A weighted random sentence shape whose conditions these characters meet.

    Drawing again until one fits gives the same odds as drawing among the fitting ones, faster.
    """
    if id(shapes) not in _CUMULATIVE:
        _CUMULATIVE[id(shapes)] = (list(itertools.accumulate(w for _, w, _ in shapes)), sum(w for _, w, _ in shapes))
    cum, total = _CUMULATIVE[id(shapes)]
    while True:
        template, _, conditions = shapes[bisect.bisect(cum, rng.random() * total)]
        if not conditions or writer.allowed(conditions, roles):
            return template


def story_classes(rng: random.Random, n: int) -> list[str]:
    """n distinct agreement classes; most stories have a woman and a man, the case only gender resolves.

    When the candidates differ in kind (a queen and a dog), "she" could be resolved by kind alone;
    a woman and a man differ only in gender, so their stories are what teach a head to bind a pronoun
    to the noun of its gender rather than to whichever person is present.
    """
    pool = list(CLASSES)
    out = []
    if n >= 2 and rng.random() < GENDER_PAIR_PROBABILITY:
        out = rng.sample(["f", "m"], 2)
        pool = [c for c in pool if c not in out]
    while len(out) < n:
        cls = rng.choices(pool, weights=[_CLASS_WEIGHTS[c] for c in pool])[0]
        pool.remove(cls)
        out.append(cls)
    return out
