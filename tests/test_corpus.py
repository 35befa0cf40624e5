"""The Chronicles corpus and its probe suites: determinism, agreement, held-out pairs, the CLI, the bundled data.

The checks read the generated text back through the lexicon alone (not the generator's own
bookkeeping), so a generator bug that writes a wrong pronoun or a wrong span shows up here.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fabric_cli import corpus, grammar, lexicon, story
from fabric_cli.cli import app
from fabric_cli.corpus import (SUITES, corpus_length, generate_corpus, generate_suite, is_heldout_pair, parse_size,
                               write_corpus)
from fabric_cli.errors import InputError
from fabric_cli.lexicon import CATEGORIES, NAME_CLASS, NOUN_CLASS, PRONOUN_CLASS, mention_class
from fabric_cli.probe.suites import parse_jsonl_line, to_json
from fabric_cli.rundir import bundled_corpus, probes_dir

WORD = re.compile(r"[A-Za-z]+")
# every word that may follow a pronoun and belongs to one category: verbs' first words, possessions, gifts
CATEGORY_OF_WORD = {w: c.name for c in CATEGORIES for w in [v.split()[0] for v in c.verbs] + list(c.items) + list(c.gifts)}


# what may follow each pronoun: "it" is a subject or an object, "her" an object or a possessive
SLOTS = {"she": ("subj",), "he": ("subj",), "they": ("subj",), "it": ("subj", "obj"), "him": ("obj",),
         "them": ("obj",), "her": ("obj", "poss"), "his": ("poss",), "its": ("poss",), "their": ("poss",)}


def words_of(category) -> dict[str, set[str]]:
    return {"subj": {v.split()[0] for v in category.verbs}, "poss": set(category.items), "obj": set(category.gifts)}


def nouns_in(text: str) -> set[str]:
    """The lexicon nouns a text mentions (named people count by their role)."""
    return {w for w in WORD.findall(text) if w in NOUN_CLASS}


def characters_in(text: str) -> dict[str, set[str]]:
    """agreement class -> the categories of the story's characters of that class, read from the text."""
    found: dict[str, set[str]] = {}
    for m in re.finditer(r"\b([A-Z][a-z]+) the ([a-z]+)\b", text):  # "Ada the professor"
        if m.group(1) in NAME_CLASS and m.group(2) in NOUN_CLASS:
            found.setdefault(NAME_CLASS[m.group(1)], set()).add(NOUN_CLASS[m.group(2)][1].name)
    for w in WORD.findall(text):
        cls, cat = NOUN_CLASS.get(w, (None, None))
        if cls is not None:
            found.setdefault(cls, set()).add(cat.name)
    return found


# --------------------------------------------------------------------------- the lexicon


def test_lexicon_is_broad_and_its_category_words_are_disjoint():
    counts = lexicon.counts()
    assert counts["nouns"] >= 300 and counts["f"] >= 40 and counts["m"] >= 40 and counts["pl"] >= 100
    assert counts["n"] >= 40 and counts["names"] >= 80
    for slot in ("subj", "poss", "obj"):
        owners: dict[str, str] = {}
        for c in CATEGORIES:
            for w in words_of(c)[slot]:
                assert owners.setdefault(w, c.name) == c.name, f"{slot} word {w!r} in {owners[w]} and {c.name}"
    everything = [w for c in CATEGORIES for w in CATEGORY_OF_WORD if CATEGORY_OF_WORD[w] == c.name]
    assert len(everything) == len(set(everything)), "a word follows pronouns of two categories"
    generic = {w for table in (grammar.GENERIC, grammar.MOOD, grammar.SEE) for ws in table.values() for w in ws}
    assert not generic & set(CATEGORY_OF_WORD), "a plain word is also a category's word"


def test_no_lexicon_noun_hides_in_phrases():
    """A noun inside a verb phrase or a scene would make a character out of nothing."""
    phrases = [p for c in CATEGORIES for p in c.verbs + c.items + c.gifts]
    phrases += [*grammar.SCENES, *grammar.PLACES, *grammar.SEA_PLACES, *grammar.OPENERS, *grammar.CLOSINGS,
                *grammar.ADVERBS, *grammar.GIVERS, *grammar.LINES]
    for p in phrases:
        bad = [w for w in WORD.findall(p) if w in NOUN_CLASS or w in NAME_CLASS]
        assert not bad, f"{p!r} holds the lexicon word(s) {bad}"


# --------------------------------------------------------------------------- the stories


def test_generator_is_deterministic_for_a_seed_and_differs_across_seeds():
    a = list(generate_corpus(n_stories=40, seed=0))
    assert a == list(generate_corpus(n_stories=40, seed=0))
    b = list(generate_corpus(n_stories=40, seed=1))
    assert a != b and len(set(a) & set(b)) < 3


def test_size_in_characters_is_met_by_whole_stories():
    stories = list(generate_corpus(n_chars=5000, seed=4))
    assert len("\n\n".join(stories)) >= 5000 > len("\n\n".join(stories[:-1]))
    with pytest.raises(InputError):
        list(generate_corpus(n_stories=3, n_chars=100))
    with pytest.raises(InputError):
        generate_corpus(n_stories=0)


def test_stories_are_paragraphs_of_sentences():
    for s in generate_corpus(n_stories=300, seed=5):
        assert "\n" not in s and "  " not in s and "{" not in s
        assert s[0].isupper() and s.endswith((".", "!"))
        for sentence_start in re.findall(r"[.!] ([a-zA-Z])", s):
            assert sentence_start.isupper(), s


def test_each_pronoun_has_one_referent_and_the_next_word_is_its_categorys():
    """The point of the corpus: what follows a pronoun is predictable only from who it means."""
    followed = 0
    for s in generate_corpus(n_stories=400, seed=6):
        chars = characters_in(s)
        assert all(len(cats) == 1 for cats in chars.values()), f"two characters share a pronoun: {chars}\n{s}"
        assert len(chars) >= 2
        for m in re.finditer(r"\b(she|he|it|they|her|him|his|its|their|them)\b (\w+)", s, flags=re.I):
            pron, nxt = m.group(1).lower(), m.group(2)
            if nxt in CATEGORY_OF_WORD:
                owners = chars.get(PRONOUN_CLASS[pron], set())
                assert owners == {CATEGORY_OF_WORD[nxt]}, f"{m.group(0)!r}: nobody of category {CATEGORY_OF_WORD[nxt]}\n{s}"
                followed += 1
    assert followed > 1000


def test_training_never_pairs_held_out_nouns():
    pairs = set()
    for s in generate_corpus(n_stories=1500, seed=7):
        pairs |= {frozenset(p) for p in itertools.combinations(sorted(nouns_in(s)), 2)}
    assert pairs and not [p for p in pairs if is_heldout_pair(*p)]
    held = {frozenset(p) for p in itertools.combinations(sorted(NOUN_CLASS), 2) if is_heldout_pair(*p)}
    assert 0.2 < len(held) / (len(NOUN_CLASS) * (len(NOUN_CLASS) - 1) / 2) < 0.3


# --------------------------------------------------------------------------- the probe suites


def check_item(item: dict, kind: str, twin: bool = True) -> tuple[str, str]:
    """Every promise an item makes, checked from its text; returns the (referent, distractor) nouns.
    With a swap, its pronoun-swap twin keeps every promise too, with the roles traded."""
    keys = ["id", "text", "pronoun", "referent", "distractors", "continuations", "ambiguous"]
    assert list(item) in (keys, keys + ["swap"])
    if twin and "swap" in item:
        swapped = parse_jsonl_line(json.dumps(item)).twin()
        assert (swapped.text[: item["pronoun"][0]], len(item["distractors"])) == (item["text"][: item["pronoun"][0]], 1)
        assert check_item(to_json(swapped), kind, twin=False) == check_item(item, kind, twin=False)[::-1]
    text = item["text"]
    assert item["id"].startswith(kind + "-") and item["ambiguous"] is False
    assert len(item["distractors"]) == 1  # one other character, its mentions listed when it is named twice
    if not isinstance(item["distractors"][0][0], int):
        assert kind == "long_distance" and len(item["distractors"][0]) >= 2
        item = {**item, "distractors": item["distractors"][0]}  # each mention checked alike below
    spans = [item["pronoun"], item["referent"], *item["distractors"]]
    for s, e in spans:
        assert 0 <= s < e <= len(text) and text[s:e] == text[s:e].strip()
    pronoun = text[slice(*item["pronoun"])]
    referent = text[slice(*item["referent"])]
    distractors = [text[slice(*d)] for d in item["distractors"]]
    assert item["pronoun"][1] == len(text), "the text ends right after the pronoun"
    assert 0 < item["referent"][0] and item["referent"][1] <= item["pronoun"][0] and distractors
    assert all(0 < d[0] and d[1] <= item["pronoun"][0] for d in item["distractors"])
    cls = PRONOUN_CLASS[pronoun.lower()]
    assert mention_class(referent) == cls, f"{referent!r} does not agree with {pronoun!r}: {text}"
    for d in distractors:
        assert mention_class(d) != cls, f"distractor {d!r} agrees with {pronoun!r}: {text}"
    ref_cat = NOUN_CLASS[referent.split()[-1]][1]
    dis_cat = NOUN_CLASS[distractors[0].split()[-1]][1]
    slots = SLOTS[pronoun.lower()]
    c0, c1 = (c.removeprefix(" ") for c in item["continuations"])
    assert all(c.startswith(" ") for c in item["continuations"])
    for word, cat in ((c0, ref_cat), (c1, dis_cat)):
        assert any(word in words_of(cat)[slot] for slot in slots), f"{word!r} can't follow {pronoun!r} for {cat.name}"
    return referent.split()[-1], distractors[0].split()[-1]


@pytest.mark.parametrize("kind", SUITES)
def test_suite_items_are_correct(kind):
    items = generate_suite(kind, n=120, seed=3)
    assert len(items) == 120 and len({it["text"] for it in items}) == 120
    assert generate_suite(kind, n=10, seed=3) == items[:10]
    for item in items:
        ref, dis = check_item(item, kind)
        assert is_heldout_pair(ref, dis)
        text, r, ds = item["text"], item["referent"], item["distractors"]
        ds = ds if isinstance(ds[0][0], int) else ds[0]
        classes = {mention_class(text[slice(*r)]), mention_class(text[slice(*ds[0])])}
        if kind != "long_distance":  # there, half the distractors are named twice: no twin trades one mention
            assert "swap" in item
        if kind == "gender":
            assert classes == {"f", "m"}
        elif kind == "number":
            assert "pl" in classes and len(classes) == 2
        elif kind == "referent_first":
            assert all(r[0] < d[0] for d in ds)
        elif kind == "referent_second":
            assert ds[0][0] < r[0]
        else:  # long_distance: at least two whole sentences between the referent and the pronoun
            assert len(re.findall(r"[.!] ", text[r[1] : item["pronoun"][0]])) >= 3
    order = corpus.baselines(items)
    if kind in ("gender", "number"):
        assert 0.35 < order["nearest"] < 0.65, "the referent must not be guessable from its position"


def test_suite_pairings_never_occur_in_training_text():
    train = set()
    for s in generate_corpus(n_stories=1500, seed=0):
        train |= {frozenset(p) for p in itertools.combinations(nouns_in(s), 2)}
    for kind in SUITES:
        for item in generate_suite(kind, n=80, seed=1):
            ref, dis = check_item(item, kind)
            assert frozenset((ref, dis)) not in train


# --------------------------------------------------------------------------- files and the CLI


def test_parse_size():
    assert [parse_size(s) for s in ("4MB", "500KB", "1.5k", "2KiB", "300", " 2 mb ")] == [
        4_000_000, 500_000, 1500, 2048, 300, 2_000_000]
    for bad in ("", "4QB", "-3", "0", "MB"):
        with pytest.raises(InputError):
            parse_size(bad)


def test_write_corpus_is_atomic(tmp_path):
    out = tmp_path / "c.txt"
    out.write_text("old")
    with pytest.raises(InputError):
        write_corpus(out, n_chars=0)
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
    with pytest.raises(InputError, match="already exists; pass --force"):
        write_corpus(out, n_stories=25, seed=2)
    assert out.read_text() == "old"
    summary = write_corpus(out, n_stories=25, seed=2, force=True)
    text = out.read_text()
    assert text == "\n\n".join(generate_corpus(n_stories=25, seed=2)) + "\n"
    assert (summary.stories, summary.characters, summary.words) == (25, len(text), len(text.split()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_a_pipe_or_a_link_to_a_device_is_not_replaced_by_a_file(tmp_path):
    """Run as root, `--force` over /dev/stdout or /dev/null would swap a device for a plain file."""
    import os

    fifo, link = tmp_path / "fifo", tmp_path / "null"
    os.mkfifo(fifo)
    link.symlink_to("/dev/null")
    for target in (fifo, link):
        with pytest.raises(InputError, match="is not a plain file"):
            write_corpus(target, n_stories=2, force=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink() and os.readlink(link) == "/dev/null"


def test_sizes_no_disk_or_memory_can_hold_and_a_dash_are_refused_before_writing(tmp_path):
    with pytest.raises(InputError, match=r"a corpus of 99,999,000,000,000 bytes needs about 99999.0 GB, and .* GB free; ask for less"):
        corpus.write_all(tmp_path / "big" / "c.txt", None, n_chars=99_999 * 10**9)
    with pytest.raises(InputError, match="--suite-size must be between 1 and 100,000"):
        corpus.write_all(None, tmp_path / "s", suite_size=999_999_999)
    with pytest.raises(InputError, match="not to standard output"):
        corpus.write_all("-", None, n_stories=2)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_corpus_and_suites(runner, tmp_path):
    out, folder = tmp_path / "stories.txt", tmp_path / "probes"
    r = runner.invoke(app, ["corpus", str(out), "--size", "20KB", "--seed", "3",
                            "--suites", str(folder), "--suite-size", "12", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    text = out.read_text()
    assert text == "\n\n".join(generate_corpus(n_chars=20_000, seed=3)) + "\n"
    assert result["corpus"]["stories"] == text.count("\n\n") + 1 and result["corpus"]["characters"] == len(text)
    assert [s["suite"] for s in result["suites"]] == list(SUITES)
    for kind in SUITES:
        lines = (folder / f"{kind}.jsonl").read_text().splitlines()
        assert [json.loads(x) for x in lines] == generate_suite(kind, 12, 1)
    r = runner.invoke(app, ["corpus", str(tmp_path / "few.txt"), "--stories", "3"])
    assert r.exit_code == 0 and "3 stories" in r.stdout
    # a researcher's own --seed gives the bundled suites: said, so they are not taken for suites of their own
    r = runner.invoke(app, ["corpus", "--suites", str(tmp_path / "own")])
    assert r.exit_code == 0 and r.stdout.splitlines()[-1] == (
        "suites from --suite-seed 1, as the bundled data/probes are: the corpus's --seed does not change them, and no "
        "story pairs their nouns")
    assert (tmp_path / "own" / "gender.jsonl").read_bytes() == (probes_dir() / "gender.jsonl").read_bytes()
    r = runner.invoke(app, ["corpus", "--suites", str(tmp_path / "other"), "--suite-seed", "5"])
    assert r.stdout.splitlines()[-1].startswith("suites from --suite-seed 5: the corpus's --seed does not change them")


def test_cli_errors_are_one_line(runner, tmp_path):
    for args in (["corpus"], ["corpus", str(tmp_path / "x.txt"), "--size", "4QB"], ["corpus", str(tmp_path)]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and r.output.startswith("fabric: error: ") and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "x.txt").exists()


def _fails(runner, args, expect: str) -> str:
    r = runner.invoke(app, ["corpus", *map(str, args)])
    assert r.exit_code == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr.startswith("fabric: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert re.search(expect, r.stderr), r.stderr
    return r.stderr


def test_a_folder_that_takes_no_files_is_named_not_its_free_space(runner, read_only_folder):
    """/proc took the blame of a full disk ("has 0.0 GB free; ask for less")."""
    ro = read_only_folder
    _fails(runner, [ro / "c.txt", "--size", "1KB"], r"cannot write the corpus to .*c\.txt: the folder .*ro is not writable "
                                                     r"\(Read-only file system\); give a path you can write to")
    _fails(runner, ["--suites", ro / "suites"], r"cannot write the probe suites to .*suites: the folder .*ro is not writable")
    assert list(ro.iterdir()) == []


def test_a_failure_writes_nothing(runner, tmp_path):
    """Every setting and destination is checked first: no corpus file, no folder, is left behind."""
    out = tmp_path / "c/x.txt"
    (tmp_path / "afile").write_text("mine")
    _fails(runner, [out, "--stories", 3, "--suites", tmp_path / "c/suites", "--suite-size", 0], r"--suite-size must be between 1 and 100,000 \(each suite is built in memory\), got 0")
    _fails(runner, [out, "--stories", 3, "--suites", tmp_path / "afile"], r"--suites .*afile is a file")
    _fails(runner, [out, "--stories", 3, "--suites", tmp_path / "afile/sub"], r"afile is a file, not a folder")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken/number.jsonl").write_text("mine")
    _fails(runner, [out, "--stories", 3, "--suites", tmp_path / "taken"], r"taken already holds number\.jsonl; pass --force")
    if Path("/proc/self").is_dir():  # a folder nothing can be made in, whatever access() says
        _fails(runner, [out, "--stories", 3, "--suites", "/proc/fabric-suites"],
               r"cannot write the probe suites to /proc/fabric-suites: the folder /proc is not writable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "taken"]
    assert (tmp_path / "afile").read_text() == "mine" and [p.name for p in (tmp_path / "taken").iterdir()] == ["number.jsonl"]


def test_options_for_a_file_not_written_are_refused_not_ignored(runner, tmp_path):
    _fails(runner, ["--suites", tmp_path / "s", "--seed", 3], r"--seed is for the corpus file, and no OUT is given")
    _fails(runner, ["--suites", tmp_path / "s", "--stories", 2, "--size", "1KB"], r"--size and --stories are for the corpus")
    _fails(runner, [tmp_path / "c.txt", "--suite-size", 5], r"--suite-size is for the probe suites, and --suites is not given")
    _fails(runner, [tmp_path / "c.txt", "--seed", -1], r"--seed must be between 0 and 2\*\*64 - 1")
    _fails(runner, ["--suites", tmp_path / "s", "--suite-seed", -2], r"--suite-seed must be between 0 and")
    assert list(tmp_path.iterdir()) == []


def test_stories_and_size_each_set_the_length_so_not_both(runner, tmp_path):
    assert corpus_length(stories=5) == (5, None) and corpus_length(size="1KB") == (None, 1000)
    assert corpus_length() == (None, parse_size(corpus.CorpusConfig.size))  # neither: the default --size
    out = tmp_path / "s3.txt"
    _fails(runner, [out, "--stories", 5, "--size", "1KB"], r"give --stories or --size, not both: each sets the length of the corpus")
    _fails(runner, [out, "--size", "1KB", "--stories", 5], r"give --stories or --size, not both")
    _fails(runner, [out, "--stories", 0], r"--stories must be at least 1, got 0$")
    _fails(runner, [out, "--stories", -2], r"--stories must be at least 1, got -2$")
    assert not out.exists()
    with pytest.raises(InputError, match=r"--size must be at least 1 character, got 0"):
        generate_corpus(n_chars=0)
    r = runner.invoke(app, ["corpus", str(out), "--stories", "5"])
    assert r.exit_code == 0 and ": 5 stories, " in r.stdout, r.output


def test_existing_files_are_replaced_only_with_force(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("notes.txt").write_text("mine")
    _fails(runner, ["notes.txt", "--stories", 2], r"corpus file notes\.txt already exists; pass --force to replace it")
    assert Path("notes.txt").read_text() == "mine"
    r = runner.invoke(app, ["corpus", "notes.txt", "--stories", 2, "--force"])
    assert r.exit_code == 0 and Path("notes.txt").read_text() == "\n\n".join(generate_corpus(n_stories=2)) + "\n"
    assert runner.invoke(app, ["corpus", "--suites", "s", "--suite-size", 2]).exit_code == 0
    _fails(runner, ["--suites", "s", "--suite-size", 3], r"already holds gender\.jsonl, .*; pass --force to replace them")
    (Path("s") / "mine.txt").write_text("kept")  # other files in the folder are no obstacle, and are kept
    assert runner.invoke(app, ["corpus", "--suites", "s", "--suite-size", 3, "--force"]).exit_code == 0
    assert len(Path("s/gender.jsonl").read_text().splitlines()) == 3 and Path("s/mine.txt").read_text() == "kept"


def test_missing_folders_are_made_and_a_file_is_not_a_folder(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["corpus", "new/deeper/x.txt", "--stories", 1])
    assert r.exit_code == 0 and Path("new/deeper/x.txt").is_file(), r.output
    Path("notes.txt").write_text("mine")
    _fails(runner, ["notes.txt/x.txt", "--stories", 1], r"cannot write the corpus to notes\.txt/x\.txt: notes\.txt is a file, not a folder")


def test_counts_agree_with_their_nouns(runner, tmp_path):
    r = runner.invoke(app, ["corpus", str(tmp_path / "one.txt"), "--stories", "1", "--suites", str(tmp_path / "s"), "--suite-size", "1"])
    assert r.exit_code == 0, r.output
    assert ": 1 story, " in r.stdout and "1 stories" not in r.stdout
    assert r.stdout.count(": 1 item (") == len(SUITES) and "1 items" not in r.stdout


# --------------------------------------------------------------------------- the bundled data


def test_bundled_corpus_is_the_seed_0_corpus():
    path = bundled_corpus()
    assert 3_000_000 <= path.stat().st_size <= 6_000_000
    with path.open(encoding="utf-8") as f:
        head = f.read(200_000)
    stories = head.split("\n\n")[:-1]  # the last one may be cut by the read
    assert stories == list(generate_corpus(n_stories=len(stories), seed=0)), "regenerate data/chronicles.txt"
    pairs = {frozenset(p) for s in stories for p in itertools.combinations(nouns_in(s), 2)}
    assert not [p for p in pairs if is_heldout_pair(*p)]


@pytest.mark.parametrize("kind", SUITES)
def test_bundled_suites_parse_and_match_the_generator(kind):
    from fabric_cli.probe.suites import load_file

    path = probes_dir() / f"{kind}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == corpus.CorpusConfig().suite_size
    assert [json.loads(x) for x in lines[:30]] == generate_suite(kind, 30, corpus.CorpusConfig().suite_seed)
    items = load_file(path)  # the probe's own reader accepts every line
    assert len(items) == len(lines) and all(not it.ambiguous for it in items)


def test_the_corpus_needs_no_torch():
    code = "import sys, fabric_cli.corpus; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert Path(corpus.__file__).read_text().count("\n") < 400


def test_half_the_stories_or_more_pair_a_woman_and_a_man():
    # only a woman and a man force a pronoun to be resolved by gender, not by kind (person, animal, thing)
    rng = random.Random(0)
    share = sum({"f", "m"} <= set(story.story_classes(rng, 2)) for _ in range(4000)) / 4000
    assert 0.55 < share < 0.72  # 0.5 chosen outright + 0.5 x P(f and m drawn by the class weights) = 0.63
    assert all(len(set(story.story_classes(rng, n))) == n for n in (2, 3, 4) for _ in range(200))


def test_the_corpus_file_cannot_be_a_suite_file(tmp_path):
    with pytest.raises(InputError, match="is one of the suite files"):
        corpus.write_all(tmp_path / "s" / "gender.jsonl", tmp_path / "s", n_chars=1000, force=True)
    assert not (tmp_path / "s").exists()
