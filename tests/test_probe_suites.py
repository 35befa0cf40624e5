"""Probe suites: the markup parser, the JSONL loader, and spans -> tokens."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from test_probe_world import make_tokenizer

from fabric_cli.errors import InputError
from fabric_cli.probe.encode import SpanMismatch, encode_items, span_tokens
from fabric_cli.probe.suites import ProbeItem, load_file, load_suites, parse_jsonl_line, parse_markup_line, to_json
from fabric_cli.rundir import probes_dir
from fabric_cli.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def test_markup_marks_referent_pronoun_distractors_and_continuations():
    it = parse_markup_line("[The professor] finished {her} lecture while <the janitor> waited. || lecture | mop")
    assert it.text == "The professor finished her lecture while the janitor waited."
    assert it.show(it.referent) == "The professor" and it.show(it.pronoun) == "her"
    assert [it.show(d) for d in it.distractors] == ["the janitor"]
    assert it.continuations == (" lecture", " mop") and not it.ambiguous
    amb = parse_markup_line("? [The cat] chased <the dog> because {it} was fast.")
    assert amb.ambiguous and amb.text.startswith("The cat") and amb.continuations is None
    two = parse_markup_line("<A> and <B> saw [C] before {she} left. || 's | ran")
    assert len(two.distractors) == 2 and two.continuations == ("'s", " ran")  # punctuation: no space


@pytest.mark.parametrize("line, words", [
    ("The professor finished {her} lecture.", "exactly one referent"),
    ("[The professor] finished her lecture.", "exactly one pronoun"),
    ("[The professor] and [the dean] finished {her} lecture.", "exactly one referent"),
    ("[The professor finished {her} lecture.", "opens a mention inside"),
    ("[The professor] finished {her lecture.", "never closed"),
    ("[The professor] finished her} lecture.", "closes nothing"),
    ("[The professor] finished {her} lecture. || lecture", "two continuations"),
    ("[ ] finished {her} lecture.", "column 1: the referent is empty"),
    ("[Ann] met <  > before {she} left.", "column 11: the distractor is empty"),
    ("?  [Ann] met <Bo> before { } left.", "column 26: the pronoun is empty"),  # the "? " and the spaces count  # the line's column, counted from 1
])
def test_markup_rejects_malformed_lines_with_the_line_number(tmp_path, line, words):
    f = tmp_path / "mine.txt"
    f.write_text(f"# a comment\n\n[The queen] met <the king> before {{she}} left.\n{line}\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_file(f)
    assert f"{f}, line 4:" in str(e.value) and words in str(e.value)


def _jsonl(**over) -> str:
    d = {"id": "x", "text": "The queen met the king before she left.", "pronoun": [30, 33],
         "referent": [0, 9], "distractors": [[14, 22]]}
    d.update(over)
    return json.dumps({k: v for k, v in d.items() if v is not None})


@pytest.mark.parametrize("line, words", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (_jsonl(text=""), '"text" must be'),
    (_jsonl(pronoun=None), '"pronoun" is missing'),
    (_jsonl(referent=[5, 200]), "not inside the text"),
    (_jsonl(referent=[0, "9"]), "two integers"),
    (_jsonl(distractors=[[0, 5]]), "overlaps"),
    (_jsonl(continuations=[" left"]), "two non-empty strings"),
    (_jsonl(ambiguous="yes"), '"ambiguous" must be'),
    (_jsonl(referent=[3, 4]), "only whitespace"),
    # JSON's "\ud800" is a lone surrogate: the tokenizer had raised a TypeError on it
    (_jsonl(continuations=[" left", " \ud800"]), '"continuations" is not valid UTF-8 text (a stray byte or lone surrogate at character 1)'),
    (_jsonl(swap=3), '"swap" must be one word'),
    (_jsonl(swap="he or it"), '"swap" must be one word'),
    (_jsonl(swap="he", distractors=[[14, 22], [10, 13]]), "this prompt has 2; the twin needs exactly one mention"),
    (_jsonl(swap="he", ambiguous=True), "an ambiguous prompt is not scored"),
    (_jsonl(swap="he|it"), '"swap" must be one word'),
    (_jsonl(swap="She"), "is the pronoun itself"),
    (_jsonl(swap="h\ud800"), '"swap" must be one word'),
    (_jsonl(swap="he", referent=[34, 38]), "comes after it; a causal model cannot look ahead"),
    (_jsonl(swap="he", distractors=[[[14, 22], [0, 3]]], referent=[4, 9]), "its distractor is mentioned 2 times before it"),
])
def test_jsonl_loader_rejects_malformed_lines_with_the_line_number(tmp_path, line, words):
    f = tmp_path / "suite.jsonl"
    f.write_text(_jsonl() + "\n" + _jsonl(id="y") + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_file(f)
    assert f"{f}, line 3:" in str(e.value) and words in str(e.value)


def test_jsonl_accepts_the_singular_distractor_and_defaults():
    it = parse_jsonl_line(_jsonl(distractors=None, distractor=[14, 22]), suite="s", default_id="s:1")
    assert it.distractors == ((14, 22),) and it.continuations is None and it.ambiguous is False and it.id == "x"


def test_span_tokens_owns_the_leading_space_and_sums_a_split_word():
    text = "The xylophonist met the queen."
    tok = train_tokenizer([text.replace("xylophonist", "")] * 5, vocab_size=300)
    enc = tok.encode(text)
    word = span_tokens(text, enc.offsets, (4, 15))  # "xylophonist": several byte-level pieces
    assert len(word) > 1 and "".join(text[slice(*enc.offsets[i])] for i in word).strip() == "xylophonist"
    queen = span_tokens(text, enc.offsets, (24, 29))  # the token is " queen": its space is its own
    assert [text[slice(*enc.offsets[i])] for i in queen] in (([" queen"], ["queen"]), [" queen"], ["queen"])
    with_space = span_tokens(text, enc.offsets, (23, 29))  # a span that includes the space: the same token
    assert with_space == queen
    with pytest.raises(SpanMismatch, match="does not line up"):
        span_tokens(text, enc.offsets, (24, 27))  # "que" cuts a token
    # trimmed offsets (ByteLevel post-processor) give the same positions
    trimmed = [(s + (text[s] == " " and e - s > 1), e) for s, e in enc.offsets]
    assert span_tokens(text, trimmed, (24, 29)) == queen


def test_encoding_positions_multitoken_pronoun_last_and_bos(tok):
    text = "The queen met the king before sheeba left."  # "sheeba" is not one token
    item = ProbeItem("i", text, pronoun=(30, 36), referent=(0, 9), distractors=((14, 22),))
    (e,), skipped = encode_items([item], tok, block_size=64, bos_id=tok.token_to_id("<|endoftext|>"))
    assert not skipped and e.ids[0] == tok.token_to_id("<|endoftext|>")
    pieces = span_tokens(text, tok.encode(text).offsets, (30, 36))
    assert len(pieces) > 1 and e.pronoun == pieces[-1] + 1  # its last piece (after BOS)
    assert e.offsets[e.pronoun][1] == 36 and len(e.ids) == e.pronoun + 1  # the prompt is cut after it
    assert [e.token_text(p) for p in e.candidates[0]] == ["The", " queen"]
    assert [e.token_text(p) for p in e.candidates[1]] == [" the", " king"]
    assert e.words[0] == -1 and e.referent_words == [0, 1]
    assert e.nearest_is_referent is False and e.first_is_referent is True


def test_unusable_items_are_skipped_with_reasons(tok):
    ok = parse_markup_line("[The queen] met <the king> before {she} sang.")
    first = ProbeItem("first", ok.text, pronoun=(0, 9), referent=(34, 37))
    cut = ProbeItem("cut", ok.text, pronoun=(34, 37), referent=(0, 7))  # "The que"
    far = parse_markup_line("[The queen] " + "met the king and " * 10 + "then {she} sang.")
    encoded, skipped = encode_items([ok, first, cut, far], tok, block_size=16, bos_id=None)
    assert [e.item.text for e in encoded] == [ok.text]
    kinds = {s.id: (s.kind, s.reason) for s in skipped}
    assert kinds["first"][0] == "order" and "comes before its referent" in kinds["first"][1]
    assert kinds["cut"][0] == "alignment" and "does not line up" in kinds["cut"][1]
    assert kinds[far.id][0] == "length" and "context is 16 tokens" in kinds[far.id][1]


def test_later_distractors_are_invisible_and_continuations_take_the_first_token(tok):
    item = parse_markup_line("[The queen] smiled before {she} sang to <the king>. || sang | shouted")
    (e,), _ = encode_items([item], tok, block_size=32, bos_id=None)
    assert len(e.candidates) == 1  # the king comes after the pronoun
    assert e.continuations == (tok.token_to_id("Ġsang"), tok.token_to_id("Ġshouted"))


def test_bundled_showcase_suite_loads_and_flags_its_ambiguous_items():
    items = load_suites(["showcase"])
    assert len(items) >= 24 and (probes_dir() / "showcase.jsonl").is_file()
    by_text = {it.text: it for it in items}
    assert by_text["The cat chased the dog because it was fast."].ambiguous
    prof = by_text["The professor finished her lecture."]
    assert prof.distractors == () and prof.show(prof.pronoun) == "her"
    assert sum(it.ambiguous for it in items) >= 3 and sum(not it.ambiguous for it in items) >= 20
    for it in items:
        assert it.referent[1] <= it.pronoun[0]  # every referent comes before its pronoun


def test_unknown_suite_names_the_ones_there_are():
    with pytest.raises(InputError, match="no such suite.*showcase"):
        load_suites(["no-such-suite"])


def test_a_suite_named_twice_is_read_once():
    """Its prompts counted twice would double n and narrow every confidence interval."""
    assert load_suites(["showcase", "showcase"]) == load_suites(["showcase"])


def test_two_prompts_of_one_id_are_refused(tmp_path):
    """--head rows and --scores name prompts by id: two of one id could not be told apart."""
    twice = tmp_path / "twice.jsonl"
    twice.write_text(_jsonl(id="a") + "\n\n" + _jsonl(id="a") + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"twice\.jsonl, line 3: id 'a' is line 1's too; give each prompt an id of its own"):
        load_file(twice)


def test_a_huge_value_is_cut_short_in_the_error(tmp_path):
    """A 100,000-character continuation was echoed whole, three times, in a 300 KB error line."""
    bad = tmp_path / "long.jsonl"
    bad.write_text(_jsonl(continuations=["a" * 100_000, " b"]) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_file(bad)
    assert len(str(e.value)) < 500 and "... (100,000 characters)" in str(e.value)
    assert "start it with a space" in str(e.value)  # the advice survives the cut


def test_prompts_take_many_files_and_folders_each_read_once(tmp_path):
    """fabric corpus --suites DIR writes a folder of suites: --prompts DIR probes them all."""
    folder = tmp_path / "suites"
    folder.mkdir()
    for name in ("gender", "number"):
        (folder / f"{name}.jsonl").write_text((probes_dir() / f"{name}.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "notes.txt").write_text("not a suite\n", encoding="utf-8")  # a folder stands for its .jsonl alone
    items = load_suites((), [str(folder)])
    assert [s for s in dict.fromkeys(it.suite for it in items)] == ["gender", "number"]
    # a file named again, directly or through its folder, counts once
    assert load_suites((), [str(folder / "number.jsonl"), str(folder), str(folder / "number.jsonl")]) == (
        load_suites((), [str(folder / "number.jsonl")]) + load_suites((), [str(folder / "gender.jsonl")]))
    markup = tmp_path / "mine.txt"
    markup.write_text("[Ann] met <Bo> before {she} left.\n", encoding="utf-8")
    both = load_suites(["showcase"], [str(markup), str(folder / "gender.jsonl")])
    assert [s for s in dict.fromkeys(it.suite for it in both)] == ["showcase", "mine", "gender"]


def test_a_bundled_suite_named_twice_by_name_and_by_file_is_read_once():
    assert load_suites(["gender"], [str(probes_dir() / "gender.jsonl")]) == load_suites(["gender"])


def test_two_pipes_are_two_suites(tmp_path):
    import os

    suites = []
    for text in ("[Ann] met <Bo> before {she} left.\n", "[Bo] met <Ann> before {he} left.\n"):
        r, w = os.pipe()
        os.write(w, text.encode())
        os.close(w)
        suites.append(f"/dev/fd/{r}")
    try:
        items = load_suites((), suites)
    finally:
        for path in suites:
            os.close(int(path.rsplit("/", 1)[1]))
    assert [it.suite for it in items] == [f"pipe{p.rsplit('/', 1)[1]}" for p in suites]


def test_a_suite_copied_under_another_name_is_refused_not_counted_twice(tmp_path):
    copy = tmp_path / "mygender.jsonl"
    copy.write_text((probes_dir() / "gender.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(InputError, match=r"--suite gender and .*mygender\.jsonl both hold a prompt of id 'gender-0001': "
                                         r"the same prompts counted twice"):
        load_suites(["gender"], [str(copy)])


def test_two_suites_of_one_name_are_refused_not_pooled(tmp_path):
    other = tmp_path / "gender.jsonl"
    other.write_text(_jsonl() + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"--suite gender and .*gender.jsonl are both suite 'gender'.*rename one"):
        load_suites(["gender"], [str(other)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"--prompts .*empty is a folder without .jsonl suites"):
        load_suites((), [str(empty)])


def test_a_folder_or_a_jsonl_suite_under_another_name_is_said_plainly(tmp_path):
    with pytest.raises(InputError, match="is a folder; pass one .jsonl suite or one markup file"):
        load_file(tmp_path)
    misnamed = tmp_path / "suite.json"
    misnamed.write_text(_jsonl() + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 1: .*the line is JSON: a JSONL suite's file name must end in \.jsonl"):
        load_file(misnamed)
    upper = tmp_path / "SUITE.JSONL"
    upper.write_text(_jsonl() + "\n", encoding="utf-8")
    assert load_file(upper)[0].referent == (0, 9)


def test_an_unreadable_prompts_file_is_an_input_error(tmp_path, monkeypatch):
    f = tmp_path / "mine.txt"
    f.write_text("[The queen] met <the king> before {she} sang.\n", encoding="utf-8")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(f), "read_bytes", denied)
    with pytest.raises(InputError, match=f"cannot read the probe file {f}: Permission denied"):
        load_file(f)


def test_jsonl_continuations_are_literal_text_and_one_glued_to_the_pronoun_is_refused(tmp_path):
    """The markup puts the space in; a JSONL suite gives the text as it follows the pronoun. 'sang' after
    'she ' would score the token of 'shesang': a preference the model never had, so it is refused."""
    glued = tmp_path / "glued.jsonl"
    glued.write_text(_jsonl(continuations=["left", " stayed"]) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_file(glued)
    pronoun = json.loads(_jsonl())["text"][slice(*json.loads(_jsonl())["pronoun"])]
    assert f"{glued}, line 1: continuation 'left' would follow the pronoun {pronoun!r} with no space" in str(e.value)
    assert "start it with a space, ' left'" in str(e.value)
    assert parse_jsonl_line(_jsonl(continuations=[", then", " stayed"])).continuations == (", then", " stayed")
    # a text written without spaces (as Chinese is) takes its continuations as they are
    cjk = {"text": "王后见到国王后她走了", "pronoun": [7, 8], "referent": [0, 2], "distractors": [[4, 6]],
           "continuations": ["走", "跑"]}
    assert parse_jsonl_line(json.dumps(cjk, ensure_ascii=False)).continuations == ("走", "跑")


def test_prompts_come_from_standard_input_or_a_pipe_in_either_form(tmp_path, monkeypatch):
    import io
    import os
    import sys
    import threading

    markup = "[The queen] met <the king> before {she} sang. || sang | shouted\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(markup.encode("utf-8"))))
    [it] = load_file("-")
    assert it.suite == "stdin" and it.where == "stdin:1" and it.continuations == (" sang", " shouted")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((_jsonl() + "\n").encode("utf-8"))))
    assert load_file("-")[0].referent == (0, 9)  # a JSON object first: JSONL, with no file name to say so
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n# nothing\n")))
    with pytest.raises(InputError, match="^standard input holds no prompts$"):
        load_file("-")
    fifo = tmp_path / "prompts"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(markup, encoding="utf-8"))
    writer.start()
    [it] = load_file(fifo)
    writer.join()
    assert it.text == "The queen met the king before she sang." and it.suite == "prompts"


@pytest.mark.parametrize("line, mention", [
    ("[George] met <Alice> at noon. Later George said that {he} was tired.", "George"),
    ("[The cook] met <Ann>; the Cook said {she} was late.", "Cook"),  # after its determiner, any case
    ("[The old one] met <the king>; the old one said {she} sang.", "old one"),
    ("[The old one] met <the king>; one day {she} sang.", None),  # 'one' alone is not 'old one'
    ("[The man in black] met <the cat> on a black night, and {he} sang.", None),
    ("[The cat] met <the dog>; the cat-flap creaked and {it} ran.", None),  # a longer word
    ("[The professor] met <the students>; professors say {she} left.", None),
    ("[The cook] met <Ann>, and {she} said the cook was late.", None),  # after the pronoun: a head cannot look there
])
def test_a_referent_mentioned_again_unmarked_is_found_and_only_then(line, mention):
    it = parse_markup_line(line)
    span = it.unmarked_mention()
    assert (span and it.text[span[0]:span[1]]) == mention


def test_glued_continuation_check_spares_contractions_and_follows_the_text():
    text = "The queen met the king before she"  # ends at the pronoun: a spaced text still needs the space
    ends = {"text": text, "pronoun": [30, 33], "referent": [0, 9], "distractors": [[14, 22]]}
    with pytest.raises(ValueError, match=r"start it with a space, ' sang'"):
        parse_jsonl_line(json.dumps({**ends, "continuations": ["sang", " ran"]}))
    assert parse_jsonl_line(json.dumps({**ends, "continuations": ["'d sing", " ran"]})).continuations == ("'d sing", " ran")
    tabbed = {**ends, "text": text + "\tsang.", "continuations": ["sang", " ran"]}
    with pytest.raises(ValueError, match=r"start it with a space, ' sang' \(the markup"):
        parse_jsonl_line(json.dumps(tabbed))


def test_standard_input_drops_a_byte_order_mark_and_a_broken_first_json_line_is_a_json_error(monkeypatch):
    import io
    import sys

    def stdin(text: str):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))

    stdin("\ufeff" + _jsonl() + "\n")  # PowerShell's pipes put one in front
    assert load_file("-")[0].referent == (0, 9)
    stdin(_jsonl()[:-1] + ",}\n")
    with pytest.raises(InputError, match=r"^standard input, line 1: not valid JSON"):
        load_file("-")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    with pytest.raises(InputError, match=r"--prompts - reads the prompts from standard input, which is a terminal"):
        load_file("-")


def test_a_swap_makes_the_twin_in_which_the_distractor_is_the_referent(tmp_path):
    """{she|he}: the same words with the pronoun swapped, the roles and the continuations traded, and
    spans after the pronoun moved by the difference in length; the twin's twin is the prompt again."""
    item = parse_markup_line("[The nurse] met <the farmer> before {she|he} left <the inn>. || bandaged | ploughed",
                             default_id="x", where="mine.txt:1")
    assert (item.text, item.show(item.pronoun), item.swap) == ("The nurse met the farmer before she left the inn.", "she", "he")
    twin = item.twin()
    assert twin.text == "The nurse met the farmer before he left the inn."
    assert (twin.show(twin.pronoun), twin.show(twin.referent)) == ("he", "the farmer")
    assert [twin.show(d) for d in twin.distractors] == ["The nurse", "the inn"]  # the later one moved one left
    assert twin.continuations == (" ploughed", " bandaged") and twin.where == "mine.txt:1 (pronoun swapped)"
    again = twin.twin()
    assert (again.text, again.pronoun, again.referent, again.continuations) == (
        item.text, item.pronoun, item.referent, item.continuations)
    assert parse_markup_line("[The nurse] met <the farmer> before {she} left.").twin() is None
    assert parse_jsonl_line(_jsonl()[:-1] + ', "swap": null}').twin() is None  # null: no twin, as an absent field
    # the JSONL form carries it, and reads back the same
    assert parse_jsonl_line(json.dumps(to_json(item))).twin() == dataclasses.replace(twin, where="x (pronoun swapped)")
    # a span with its space (" she") swaps the word only; the new referent's later mention is not a distractor
    spaced = parse_jsonl_line(json.dumps({"text": "Ann met Bo before she saw Bo.", "pronoun": [17, 21], "referent": [0, 3],
                                          "distractors": [[[8, 10], [26, 28]]], "swap": "he"}))
    twin = spaced.twin()
    assert (twin.text, twin.show(twin.pronoun), twin.distractors) == ("Ann met Bo before he saw Bo.", "he", ((0, 3),))
    for bad, words in [("[A] met <B> and <C> before {she|he} left.", "this prompt has 2"),
                       ("? [A] met <B> before {she|he} left.", "an ambiguous prompt is not scored"),
                       ("[A] met <B> before {she|} left.", "must be one word"),
                       ("[A] met <B> before {she|he|it} left.", "must be one word, the pronoun that would mean the distractor, found 'he|it'"),
                       ("[A] met <B> before {she|{he} left.", "must be one word"),
                       ("[A] met <B> before {she|She} left.", "is the pronoun itself"),
                       ("<A> met B before {she|he} left [C].", "comes after it")]:
        f = tmp_path / "bad.txt"
        f.write_text(bad + "\n", encoding="utf-8")
        with pytest.raises(InputError, match=f"line 1: .*{re.escape(words)}"):
            load_file(f)
