"""The Chronicles corpus: short stories from a seeded grammar, and probe suites with ground truth.

People and creatures meet, act and are referred to again by pronouns. Every story's characters
differ in agreement class (she, he, it, they), so each pronoun has exactly one referent, and in
category, so the word after a pronoun ("she ruled", "his plough", "gave them rope") can be predicted
only by finding who the pronoun means. That is what teaches an attention head to look from a pronoun
to its referent. The lexicon is in lexicon.py, the sentence shapes in grammar.py,
the engine that renders them in story.py.

Held-out pairs: the unordered pair of two characters' nouns is hashed; a quarter of all pairs
(`is_heldout_pair`) never meet in a training story, whatever the seed, and the probe suites use only
those, so a probe item is never a pairing the model has seen.

No torch here.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from fabric_cli import grammar as G
from fabric_cli.config import check_seed
from fabric_cli.errors import InputError
from fabric_cli.files import atomic_paths, check_room, failed_target, nearest_existing, refuses_files, undo_new_folders
from fabric_cli.lexicon import CLASSES, PRONOUNS
from fabric_cli.story import HELDOUT_PERCENT, Writer, cast, is_heldout_pair, pick, story_classes
from fabric_cli.text import plural

__all__ = ["CorpusConfig", "SUITES", "HELDOUT_PERCENT", "is_heldout_pair", "generate_corpus", "write_corpus", "write_all",
           "corpus_length", "parse_size", "generate_suite", "write_suites", "baselines"]

SUITES = ("gender", "number", "long_distance", "referent_first", "referent_second")
SEPARATOR = "\n\n"  # a blank line between stories: the tokenizer's document boundary
# Short stories, dense in pronouns that need their referent: most of what a model learns from the
# Chronicles is which verb or possession follows a pronoun, and that needs the pronoun resolved.
EVENTS_PER_STORY = (1, 4)
INTRO_THEN_PROBABILITY = 0.5  # the introduction goes straight on with a pronoun
CLOSING_PROBABILITY = 0.2


@dataclass
class CorpusConfig:
    """`fabric corpus` settings; these defaults are the command's defaults."""

    size: str = "4MB"  # characters: 4MB, 500KB, 20000 (decimal units; KiB, MiB are binary)
    seed: int = 0
    suite_size: int = 400  # items per probe suite
    suite_seed: int = 1  # suites come from a different seed than the bundled corpus (seed 0)


def _story(rng: random.Random) -> tuple[str, list[str]]:
    """One training story and its characters' nouns."""
    chars = cast(rng, story_classes(rng, rng.choices((2, 3, 4), weights=(50, 35, 15))[0]), heldout=False)
    w = Writer(rng, chars)
    a, b = chars[0], chars[1]
    roles = {"a": a, "b": b, "x": rng.choice((a, b))}
    if rng.random() < INTRO_THEN_PROBABILITY:
        w.sentence(pick(rng, G.INTROS_THEN, w, roles), roles)
    else:
        w.sentence(pick(rng, G.INTROS, w, roles), roles)
    present, waiting = [a, b], chars[2:]
    n_events = max(rng.randint(*EVENTS_PER_STORY), len(waiting))  # each joining character comes with an event
    joins = sorted(rng.sample(range(n_events), len(waiting)))
    for i in range(n_events):
        if joins and joins[0] == i:
            joins.pop(0)
            c = waiting.pop(0)
            roles = {"a": rng.choice(present), "c": c}
            w.sentence(pick(rng, G.JOINS, w, roles), roles)
            present.append(c)
        if rng.random() < G.SCENE_PROBABILITY:
            w.sentence(rng.choice(G.SCENES), {})
            continue
        x = rng.choice(present)
        roles = {"x": x, "y": rng.choice([c for c in present if c is not x])}
        w.sentence(pick(rng, G.EVENTS, w, roles), roles)
    if rng.random() < CLOSING_PROBABILITY:
        w.sentence(rng.choice(G.CLOSINGS), {})
    return w.text(), [c.noun for c in chars]


# --------------------------------------------------------------------------- the corpus


def generate_corpus(n_stories: int | None = None, n_chars: int | None = None, seed: int = 0) -> Iterator[str]:
    """Stories, one paragraph each; the same seed gives the same stories.

    Give n_stories, or n_chars (stories are made until the file they make, a blank line between
    stories, holds at least that many characters).

    Example:
        >>> stories = list(generate_corpus(n_stories=2, seed=0))
        >>> len(stories), stories == list(generate_corpus(n_stories=2, seed=0))
        (2, True)
    """
    return (text for text, _ in _stories(n_stories, n_chars, seed))


def _stories(n_stories: int | None, n_chars: int | None, seed: int) -> Iterator[tuple[str, list[str]]]:
    """(story, its characters' nouns) pairs; the arguments are checked before the first story is made."""
    if (n_stories is None) == (n_chars is None):
        raise InputError(_ONE_LENGTH)
    if n_stories is not None and n_stories < 1:
        raise InputError(f"--stories must be at least 1, got {n_stories}")
    if n_chars is not None and n_chars < 1:
        raise InputError(f"--size must be at least 1 character, got {n_chars}")

    def stories() -> Iterator[tuple[str, list[str]]]:
        rng, made, chars = random.Random(seed), 0, 0
        while (made < n_stories) if n_stories is not None else (chars < n_chars):
            story = _story(rng)
            made, chars = made + 1, chars + len(story[0]) + (len(SEPARATOR) if made else 0)
            yield story

    return stories()


_ONE_LENGTH = "give --stories or --size, not both: each sets the length of the corpus"


def corpus_length(stories: int | None = None, size: str | None = None) -> tuple[int | None, int | None]:
    """(n_stories, n_chars) for write_all from `--stories` and `--size`, each None when not given.

    Each sets the corpus's length, so the two together are refused; neither means the default --size.

    Example:
        >>> corpus_length(stories=5), corpus_length(size="2KB"), corpus_length()
        ((5, None), (None, 2000), (None, 4000000))
    """
    if stories is not None and size is not None:
        raise InputError(_ONE_LENGTH)
    if stories is not None:
        return stories, None
    return None, parse_size(CorpusConfig.size if size is None else size)


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """'4MB' -> 4000000 characters (KB, MB, GB are decimal; KiB, MiB, GiB binary; a bare number counts characters).

    Example:
        >>> parse_size("4MB"), parse_size("1.5k"), parse_size("2KiB"), parse_size("300")
        (4000000, 1500, 2048, 300)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m and m.group(2).lower()
    if not m or unit not in _UNITS:
        raise InputError(f"size {text!r} is not a number of characters like 4MB, 500KB or 20000")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n < 1:
        raise InputError(f"size {text!r} is less than one character; give a positive size like 4MB")
    return n


@dataclass
class CorpusSummary:
    path: str
    seed: int
    stories: int
    characters: int
    words: int
    nouns: int  # distinct nouns (named people count by their role)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        return [f"wrote {self.path}: {plural(self.stories, 'story', 'stories')}, {plural(self.characters, 'character')}, "
                f"{plural(self.words, 'word')}, {plural(self.nouns, 'distinct noun')} (seed {self.seed})"]


def write_corpus(path: str | Path, n_stories: int | None = None, n_chars: int | None = None, seed: int = 0,
                 progress: bool = False, force: bool = False) -> CorpusSummary:
    """Write a corpus file atomically (a blank line between stories) and return what it holds.

    An existing file is refused unless force; progress draws a bar on stderr.
    """
    return write_all(path, None, n_stories=n_stories, n_chars=n_chars, seed=seed, force=force, progress=progress)[0]


def write_all(out: str | Path | None, suites: str | Path | None, n_stories: int | None = None,
              n_chars: int | None = None, seed: int = 0, suite_size: int = 400, suite_seed: int = 1,
              force: bool = False, progress: bool = False) -> tuple[CorpusSummary | None, list[dict] | None]:
    """`fabric corpus`: the corpus file `out` and/or the probe suites in the folder `suites`.

    Every setting and destination is checked before anything is written; the files are written
    to temporary names and moved into place one after another once all are written, so an error
    while writing leaves nothing behind (not even a folder made for them). An existing corpus file or suite file is replaced only
    with force. Returns (corpus summary or None, per suite its path, size and baselines, or None).
    """
    if out is None and suites is None:
        raise InputError("nothing to write: give a corpus file (fabric corpus stories.txt) and/or --suites DIR")
    check_seed(seed), check_seed(suite_seed, "--suite-seed")
    made = _stories(n_stories, n_chars, seed) if out is not None else None  # checks the size
    if suites is not None and not 1 <= suite_size <= SUITE_LIMIT:
        raise InputError(f"--suite-size must be between 1 and {SUITE_LIMIT:,} (each suite is built in memory), got {suite_size:,}")
    targets = []  # (path, what it is): every file this call writes
    if out is not None:
        targets.append((_check_corpus_file(Path(out), force), "the corpus"))
        check_room(Path(out), n_chars if n_chars is not None else 400 * (n_stories or 0),  # 400: a generous story
                   "a corpus", "ask for less (--size, --stories)")
    if suites is not None:
        targets += [(p, "the probe suite") for p in _check_suites_folder(Path(suites), force)]
    if out is not None and Path(out).absolute() in {p.absolute() for p, _ in targets[1:]}:
        raise InputError(f"the corpus file {out} is one of the suite files in --suites {suites}; give another name")
    suite_items = {kind: generate_suite(kind, suite_size, suite_seed) for kind in SUITES} if suites is not None else {}
    summary, where = None, targets[0]
    try:
        # the files move into place together as the block ends; folders made are removed on failure
        with undo_new_folders(*(p.parent for p, _ in targets)), atomic_paths(*(p for p, _ in targets)) as tmps:
            for (path, what), tmp, kind in zip(targets[out is not None:], tmps[out is not None:], SUITES):
                where = (path, what)
                tmp.write_text("".join(json.dumps(it) + "\n" for it in suite_items[kind]), encoding="utf-8")
            if made is not None:
                where = targets[0]
                summary = _write_stories(tmps[0], made, n_stories, n_chars, seed, progress, str(out))
    except OSError as e:
        failed = failed_target(e, [p for p, _ in targets])  # making a folder or temporary file names where it failed
        where = targets[failed] if failed is not None else where
        raise InputError(f"cannot write {where[1]} {where[0]}: {e.strerror or e}") from None
    suite_rows = None
    if suites is not None:
        suite_rows = [{"suite": kind, "path": str(Path(suites) / f"{kind}.jsonl"), "items": len(suite_items[kind]),
                       **baselines(suite_items[kind]), "swaps": sum("swap" in it for it in suite_items[kind])}
                      for kind in SUITES]
    return summary, suite_rows


def _write_stories(tmp: Path, made, n_stories, n_chars, seed: int, progress: bool, name: str) -> CorpusSummary:
    from tqdm import tqdm

    bar = tqdm(total=n_chars if n_stories is None else n_stories, unit="char" if n_stories is None else "story",
               unit_scale=True, desc="corpus", disable=not progress, file=sys.stderr)
    stories = chars = words = 0
    nouns: set[str] = set()
    with bar, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for text, keys in made:
            if stories:
                f.write(SEPARATOR)
                chars += len(SEPARATOR)
            f.write(text)
            stories, chars, words = stories + 1, chars + len(text), words + len(text.split())
            nouns.update(keys)
            bar.update(1 if n_stories is not None else len(text) + len(SEPARATOR))
        f.write("\n")
    return CorpusSummary(name, seed, stories, chars + 1, words, len(nouns))


SUITE_LIMIT = 100_000  # items per suite: every suite is built in memory before any is written


def _check_corpus_file(path: Path, force: bool) -> Path:
    if str(path) == "-":
        raise InputError("the corpus is written to a file, not to standard output: give OUT a file name, such as stories.txt")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name, such as {path / 'chronicles.txt'}")
    if path.exists() and not force:
        raise InputError(f"corpus file {path} already exists; pass --force to replace it, or give another file name")
    _check_folder(path.parent, f"cannot write the corpus to {path}")
    return path


def _check_suites_folder(folder: Path, force: bool) -> list[Path]:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--suites {folder} is a file; give a folder (it is made if missing)")
    _check_folder(folder, f"cannot write the probe suites to {folder}")
    paths = [folder / f"{kind}.jsonl" for kind in SUITES]
    if taken := [p for p in paths if p.is_dir()]:
        raise InputError(f"--suites {folder} holds a folder named {taken[0].name}; remove it or give another folder")
    if (taken := [p.name for p in paths if p.exists()]) and not force:
        raise InputError(f"--suites {folder} already holds {', '.join(taken)}; pass --force to replace "
                         f"{'it' if len(taken) == 1 else 'them'}, or give another folder")
    return paths


def _check_folder(folder: Path, doing: str) -> None:
    """A folder that exists, or can be made: its nearest existing ancestor is a writable folder."""
    p = nearest_existing(folder)
    if not p.is_dir():
        raise InputError(f"{doing}: {p} is a file, not a folder; give a path inside a folder")
    if why := ("no write permission" if not os.access(p, os.W_OK | os.X_OK) else refuses_files(p)):
        raise InputError(f"{doing}: the folder {p} is not writable ({why}); give a path you can write to")


# --------------------------------------------------------------------------- probe suites

_FINALS = {  # the sentence that ends at the pronoun; x is the referent
    "subj": ("{adv} {x.subj}", "{x.subj}"),
    "poss": ("{x.poss}", "{adv} {x.poss}"),
    "obj": ("{giver} {give} {x.obj}",),
}
_FINALS_Y = {  # the same, with the distractor y named just before (long_distance only)
    "subj": ("{y} {y.watch} {x.subj}", "When {y} {y.arrive}, {x.subj}"),
    "poss": ("{y} {y.see} {x.poss}",),
    "obj": ("{y} {y.give} {x.obj}",),
}
_FILLERS = (("{y} {y.vp}.", ()), ("{adv} {y} {y.vp}.", ()), ("{y} had {y.have}.", ()),
            ('"{line}," said {y}.', ("person:y",)))


def _suite_item(rng: random.Random, kind: str) -> dict:
    """One probe item: two characters of a held-out pair, text ending right after the pronoun."""
    if kind == "gender":
        classes = ["f", "m"]
    elif kind == "number":
        classes = [rng.choice(("f", "m", "n")), "pl"]
    else:
        classes = rng.sample(CLASSES, 2)
    rng.shuffle(classes)
    x, y = cast(rng, classes, heldout=True)  # x: the referent, y: the distractor
    first = {"referent_first": x, "referent_second": y}.get(kind) or rng.choice((x, y))
    a, b = (x, y) if first is x else (y, x)
    w = Writer(rng, [x, y], suite=True)
    slots = ["subj", "subj", "poss"] + (["obj"] if x.cat.gifts and y.cat.gifts else [])
    slot = rng.choice(slots)
    roles = {"a": a, "b": b, "x": x, "y": y}
    if kind != "long_distance" and slot == "subj" and rng.random() < 0.35:
        span = w.sentence(pick(rng, G.INTROS_THEN, w, roles), roles, stop="x.subj")
    else:
        w.sentence(pick(rng, G.INTROS, w, roles), roles)
        finals = _FINALS[slot]
        if kind == "long_distance":  # 2-4 sentences between; in half the items the distractor is named again
            fillers = [(s, {}) for s in rng.sample(G.SCENES, rng.randint(2, 4))]
            if rng.random() < 0.5:
                shapes = [t for t, cond in _FILLERS if w.allowed(cond, roles)]
                fillers[rng.randrange(len(fillers))] = (rng.choice(shapes), roles)
                if y.kind != "vessel" and rng.random() < 0.4:
                    finals = _FINALS_Y[slot]
            for template, who in fillers:
                w.sentence(template, who)
        span = w.sentence(rng.choice(finals), roles, stop=f"x.{slot}")
    if slot == "subj":
        conts = [rng.choice(c.cat.verbs).split()[0] for c in (x, y)]
    elif slot == "poss":
        conts = [x.item, y.item]
    else:
        conts = [rng.choice(c.cat.gifts) for c in (x, y)]
    ys = [list(s) for s in w.mentions[y]]  # the distractor named twice (long_distance) is one candidate, its mentions listed
    item = {"text": w.text(), "pronoun": list(span), "referent": list(w.mentions[x][0]),
            "distractors": [ys if len(ys) > 1 else ys[0]], "continuations": [" " + c for c in conts], "ambiguous": False}
    if len(w.mentions[x]) == 1 == len(w.mentions[y]):  # the twin trades one mention for the other
        item["swap"] = (str.capitalize if item["text"][span[0]].isupper() else str)(PRONOUNS[y.cls][slot])
    return item


def generate_suite(kind: str, n: int = 400, seed: int = 1) -> list[dict]:
    """n probe items of one kind (see SUITES), in the JSONL schema the probe reads; deterministic for a seed.

    Every item pairs two nouns that never meet in a training story. Spans are [start, end)
    character offsets; the referent and distractor spans cover a mention's head ("queen",
    "sailors", "Ada the professor"; "Ada" when a named person is mentioned again); the text ends
    right after the pronoun. continuations[0] follows the pronoun when it means the referent,
    continuations[1] when it means the distractor.

    Example:
        >>> item = generate_suite("gender", n=1)[0]
        >>> item["text"][slice(*item["pronoun"])].lower() in {"he", "she", "him", "her", "his"}
        True
    """
    if kind not in SUITES:
        raise InputError(f"unknown probe suite {kind!r}; choose one of {', '.join(SUITES)}")
    if n < 1:
        raise InputError(f"a suite needs at least 1 item, got {n}")
    rng = random.Random(f"{kind}:{seed}")  # a str seed is hashed with sha512: stable across runs
    items, seen = [], set()
    while len(items) < n:
        item = _suite_item(rng, kind)
        if item["text"] not in seen:
            seen.add(item["text"])
            items.append({"id": f"{kind}-{len(items) + 1:04d}", **item})
    return items


def baselines(items: list[dict]) -> dict[str, float]:
    """How often the nearest earlier candidate, and the first, is the referent."""
    nearest = first = 0
    for it in items:
        cands = [c for c in [[it["referent"]]] + [[s for s in ([d] if isinstance(d[0], int) else d) if s[1] <= it["pronoun"][0]]
                                                  for d in it["distractors"]] if c]  # each one's mentions before the pronoun
        nearest += max(cands, key=lambda c: max(s[1] for s in c)) is cands[0]
        first += min(cands, key=lambda c: min(s[0] for s in c)) is cands[0]
    return {"nearest": nearest / len(items), "first": first / len(items)}


def write_suites(folder: str | Path, n: int = 400, seed: int = 1, force: bool = False) -> list[dict]:
    """Write every suite to FOLDER/<kind>.jsonl atomically; return per suite its path, size and baselines.

    Existing suite files are replaced only with force."""
    return write_all(None, folder, suite_size=n, suite_seed=seed, force=force)[1]
