"""`fabric tokenize` and fabric_cli.tokenizer: round trips, streaming, reuse, bad input, output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import stories
from fabric_cli import encode, sources, tokenizer as tk
from fabric_cli.cli import app
from fabric_cli.config import EOT, TokenizeConfig
from fabric_cli.rundir import RunPaths

README = Path(__file__).resolve().parents[1] / "README.md"


def invoke(runner, *args, **kw):
    return runner.invoke(app, [str(a) for a in args], **kw)


def tree(root: Path) -> dict:
    """Every folder and file under root, with file bytes: to prove a failure wrote nothing."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def reference_docs(text: str) -> list[str]:
    """Documents the plain way: maximal runs of non-blank lines."""
    docs, cur = [], []
    for line in text.split("\n"):
        if line.strip():
            cur.append(line)
        elif cur:
            docs.append("\n".join(cur))
            cur = []
    return docs + (["\n".join(cur)] if cur else [])


def expected_ids(tok, docs, f):
    eot = tk.eot_id(tok)
    train, val = [], []
    for i, doc in enumerate(docs):
        (val if encode._is_val(i, f) else train).extend(tok.encode(doc).ids + [eot])
    return train, val


def read_tokens(run: Path):
    meta = json.loads((run / "tokens/meta.json").read_text())
    load = lambda name: np.fromfile(run / "tokens" / name, dtype=np.dtype(meta["dtype"]).newbyteorder("<"))
    return load("train.bin").tolist(), load("val.bin").tolist(), meta


@pytest.fixture(scope="module")
def tok():
    mixed = stories(200, seed=3) + ["def f(x):\n\treturn x ** 2  # ok", "Zürich, naïve café, 日本語, Привет, 🦊🎉"]
    return tk.train_tokenizer(mixed, vocab_size=400, min_frequency=2)


# --------------------------------------------------------------------------- round trips


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8"), max_size=200))
def test_any_unicode_survives_encode_then_decode(tok, text):
    assume(tk.EOT not in text)  # the one exception: the test below
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    assert tok.token_to_id("<unk>") is None  # byte-level: there is no unknown token to fall back on


def test_the_end_of_text_marker_in_text_is_the_end_of_text_token(tok):
    """As in GPT-2's tokenizer: the literal marker in a corpus is a document boundary (hypothesis, which
    tries the strings of the code it tests, found it), and decoding leaves it out like every boundary."""
    eot = tok.token_to_id(tk.EOT)
    ids = tok.encode(f"The dog{tk.EOT}The cat", add_special_tokens=False).ids
    assert eot in ids and ids == [*tok.encode("The dog").ids, eot, *tok.encode("The cat").ids]
    assert tok.decode(ids) == "The dogThe cat"


def test_saved_tokenizer_is_a_standard_tokenizer_json(tok, tmp_path):
    from tokenizers import Tokenizer

    tok.save(str(tmp_path / "t.json"))
    loaded = Tokenizer.from_file(str(tmp_path / "t.json"))
    text = "The professor\u00a0finished\r\n\n  her lecture 🧑‍🏫\x00\u200b"
    assert loaded.encode(text).ids == tok.encode(text).ids
    assert loaded.decode(loaded.encode(text).ids) == text
    assert tk.eot_id(loaded) == tk.eot_id(tok) == 0


def test_training_is_deterministic(tmp_path, corpus_file, runner):
    for run in ("a", "b"):
        assert invoke(runner, "tokenize", corpus_file, "--run", tmp_path / run, "--vocab-size", 300).exit_code == 0
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()
    assert (tmp_path / "a/tokens/train.bin").read_bytes() == (tmp_path / "b/tokens/train.bin").read_bytes()


# --------------------------------------------------------------------------- streaming


def test_streamed_tokens_equal_encoding_everything_at_once(tmp_path, monkeypatch):
    # tiny reads and batches so documents, blank lines and multi-byte characters straddle chunks
    monkeypatch.setattr(sources, "CHUNK_BYTES", 7)
    monkeypatch.setattr(sources, "BATCH_CHARS", 50)
    docs = [s.replace("queen", "königin 👑").replace(". ", ".\n", 1) for s in stories(60, seed=5)]
    text = "\n  \n" + "\n\n".join(docs[:20]) + "\n\n\n \t \n\n" + "\n\n".join(docs[20:]) + "\n \n"
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    run = RunPaths(tmp_path / "run")
    s = encode.tokenize_corpus([tmp_path / "c.txt"], run, TokenizeConfig(vocab_size=300), progress=False)
    assert reference_docs(text) == docs and s.documents == 60
    train, val, meta = read_tokens(run.root)
    assert (train, val) == expected_ids(tk.load_tokenizer(run.tokenizer), docs, 0.05)
    assert len(val) > 0 and s.val_split == "documents"
    assert meta["characters"] == sum(map(len, docs)) and meta["bytes"] == len(text.encode())


def test_single_document_in_pieces_splits_the_tail(tmp_path, monkeypatch):
    # one long document, read in pieces cut at line ends: val is the stream's tail, never empty
    monkeypatch.setattr(sources, "MAX_PIECE_CHARS", 60)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 64)
    doc = "\n".join(stories(40, seed=7, max_sentences=2))
    (tmp_path / "one.txt").write_text(doc + "\n", encoding="utf-8")
    run = RunPaths(tmp_path / "run")
    s = encode.tokenize_corpus([tmp_path / "one.txt"], run, TokenizeConfig(vocab_size=300), progress=False)
    train, val, meta = read_tokens(run.root)
    whole = tk.load_tokenizer(run.tokenizer).encode(doc).ids + [s.eot_id]
    assert train + val == whole
    assert len(val) == max(1, int(len(whole) * 0.05)) and val[-1] == s.eot_id
    assert meta["val_split"] == "tail" and meta["documents"] == 1


def test_folders_and_stdin(tmp_path, runner):
    (tmp_path / "in/b").mkdir(parents=True)
    (tmp_path / "in/b/2.txt").write_text("Second file.\n")
    (tmp_path / "in/1.txt").write_text("First file.\n\nStill first.\n")
    (tmp_path / "in/skip.md").write_text("not a .txt file\n")
    r = invoke(runner, "tokenize", tmp_path / "in", "-", "--run", tmp_path / "run", "--vocab-size", 300,
               "--json", input="From standard input.\n")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert [src["path"] for src in out["sources"]] == [str(tmp_path / "in/1.txt"), str(tmp_path / "in/b/2.txt"), "-"]
    assert out["documents"] == 4
    train, val, _ = read_tokens(tmp_path / "run")
    t = tk.load_tokenizer(tmp_path / "run/tokenizer.json")
    assert t.decode(train + val, skip_special_tokens=False).split(EOT) == [
        "First file.", "Still first.", "Second file.", "From standard input.", ""]


# --------------------------------------------------------------------------- reuse


def gpt2_style_tokenizer(path: Path, eot_id: int = 300) -> None:
    """A tokenizer.json laid out like GPT-2's (no model type, ByteLevel post-processor, EOT last)."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet(), key=lambda c: ord(c)))}
    merges = ["Ġ t", "h e", "Ġt he"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    vocab[EOT] = eot_id
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    path.write_text(json.dumps({
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": eot_id, "content": EOT, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
        "model": {"dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "vocab": vocab, "merges": merges},
    }))


def test_reuse_a_tokenizer(tmp_path, corpus_file, runner):
    assert invoke(runner, "tokenize", corpus_file, "--run", tmp_path / "a", "--vocab-size", 300).exit_code == 0
    src = tmp_path / "a/tokenizer.json"
    (tmp_path / "other.txt").write_text("The professor thanked the queen.\n\nThe dog lost its ball.\n")
    r = invoke(runner, "tokenize", tmp_path / "other.txt", "--run", tmp_path / "b", "--tokenizer", src, "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["trained"] is False and (tmp_path / "b/tokenizer.json").read_bytes() == src.read_bytes()
    assert out["tokenizer_sha256"] == tk.tokenizer_sha256(src) == read_tokens(tmp_path / "b")[2]["tokenizer_sha256"]
    train, val, _ = read_tokens(tmp_path / "b")
    assert tk.load_tokenizer(src).decode(train + val) == "The professor thanked the queen.The dog lost its ball."
    # the run's own tokenizer can be reused in place
    r = invoke(runner, "tokenize", tmp_path / "other.txt", "--run", tmp_path / "b", "--tokenizer", tmp_path / "b/tokenizer.json")
    assert r.exit_code == 0, r.stderr
    # a run directory stands for its tokenizer, as with probe and generate
    r = invoke(runner, "tokenize", tmp_path / "other.txt", "--run", tmp_path / "c", "--tokenizer", tmp_path / "a", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["tokenizer_sha256"] == tk.tokenizer_sha256(src)


def test_reuse_a_gpt2_format_tokenizer(tmp_path, runner):
    gpt2_style_tokenizer(tmp_path / "gpt2.json")
    (tmp_path / "t.txt").write_text("the theme\n\nthe end\n")
    r = invoke(runner, "tokenize", tmp_path / "t.txt", "--run", tmp_path / "run", "--tokenizer", tmp_path / "gpt2.json", "--json")
    assert r.exit_code == 0, r.stderr
    train, val, meta = read_tokens(tmp_path / "run")
    assert meta["eot_id"] == 300 and meta["dtype"] == "uint16" and (train + val).count(300) == 2
    assert tk.load_tokenizer(tmp_path / "gpt2.json").decode(train + val) == "the themethe end"


def test_token_dtype():
    assert (tk.token_dtype(4096), tk.token_dtype(65535), tk.token_dtype(65536), tk.token_dtype(100_000)) == (
        "uint16", "uint16", "uint32", "uint32")


# --------------------------------------------------------------------------- bad input


def _bad(runner, tmp_path, *args, expect: str, input=None):
    """Run a command that must fail: exit 1, one line naming the problem, the run folder untouched."""
    run = tmp_path / "run"
    before = tree(run) if run.exists() else None
    r = invoke(runner, "tokenize", *args, "--run", run, input=input)
    assert r.exit_code == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fabric: error: "), r.stderr
    assert re.search(expect, lines[0]), lines[0]
    assert r.stdout == ""
    assert (tree(run) if run.exists() else None) == before
    return lines[0]


def test_bad_inputs_fail_cleanly_and_write_nothing(tmp_path, runner, corpus_file, monkeypatch):
    (tmp_path / "empty.txt").write_text(" \n\n\t\n")
    (tmp_path / "bin.txt").write_bytes(b"GIF89a" + b"\x00" * 10)
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 ok\n".encode() * 3 + "na\u00efve\n".encode("latin-1"))
    (tmp_path / "junk.json").write_text('{"not": "a tokenizer"}')
    (tmp_path / "nodocs").mkdir()
    gpt2_style_tokenizer(tmp_path / "gpt2.json")
    _bad(runner, tmp_path, tmp_path / "nope.txt", expect=r"nope\.txt does not exist")
    _bad(runner, tmp_path, tmp_path / "empty.txt", expect=r"corpus is empty: .*empty\.txt holds no text; give a file with some text in it$")
    (tmp_path / "blank.txt").write_text("\n")
    _bad(runner, tmp_path, tmp_path / "empty.txt", tmp_path / "blank.txt",
         expect=r"corpus is empty: .*empty\.txt and .*blank\.txt hold no text; give files with some text in them$")
    for i in range(3):
        (tmp_path / "nothing" / str(i)).mkdir(parents=True)
        (tmp_path / "nothing" / str(i) / f"{i}.txt").write_text(" \n" * i)
    _bad(runner, tmp_path, tmp_path / "nothing", tmp_path / "empty.txt", tmp_path / "blank.txt",
         expect=r"corpus is empty: .*0\.txt, .*1\.txt, .*2\.txt and 2 more files hold no text")
    _bad(runner, tmp_path, tmp_path / "nothing", tmp_path / "empty.txt", expect=r"2\.txt and 1 more file hold no text")
    _bad(runner, tmp_path, tmp_path / "nodocs", expect=r"nodocs has no \.txt files")
    _bad(runner, tmp_path, tmp_path / "bin.txt", expect=r"bin\.txt looks like a binary file: a NUL byte at byte offset 6")
    _bad(runner, tmp_path, corpus_file, tmp_path / "latin1.txt", expect=r"latin1\.txt is not UTF-8 text: byte 0xef at byte offset 29")
    _bad(runner, tmp_path, corpus_file, "--vocab-size", 200, expect=r"--vocab-size 200 is too small.*257")
    _bad(runner, tmp_path, corpus_file, "--tokenizer", tmp_path / "junk.json", expect=r"junk\.json is not a Hugging Face tokenizer")
    _bad(runner, tmp_path, corpus_file, "--val-fraction", 1.5, expect=r"--val-fraction must be between 0 and 1")
    # the BPE trainer stops at pairs seen fewer than max(1, min_frequency) times: 0 would silently act as 1
    _bad(runner, tmp_path, corpus_file, "--min-frequency", 0, expect=r"--min-frequency must be between 1 and 2\*\*63 - 1, got 0 \(")
    _bad(runner, tmp_path, corpus_file, "--min-frequency", -1, expect=r"--min-frequency must be between 1 and 2\*\*63 - 1, got -1")
    # past the trainer's 64-bit count (2**64 overflowed inside it with a traceback)
    _bad(runner, tmp_path, corpus_file, "--min-frequency", 2**64, expect=r"--min-frequency must be between 1 and 2\*\*63 - 1, got 18446744073709551616")
    _bad(runner, tmp_path, "--show", "hi", expect=r"tokenizer file .*tokenizer\.json does not exist")
    # found while encoding with a reused tokenizer (no training pass): still nothing left behind
    _bad(runner, tmp_path, corpus_file, tmp_path / "latin1.txt", "--tokenizer", tmp_path / "gpt2.json", expect=r"offset 29")
    _bad(runner, tmp_path, tmp_path / "empty.txt", "--tokenizer", tmp_path / "gpt2.json", expect=r"corpus is empty")
    _bad(runner, tmp_path, "-", expect=r"corpus is empty: - \(standard input\) holds no text", input="")
    monkeypatch.setattr(sources, "bundled_corpus", lambda: tmp_path / "gone/chronicles.txt")
    _bad(runner, tmp_path, expect=r"bundled Chronicles corpus .*chronicles\.txt is missing")
    # --errors replace reads the same file anyway
    r = invoke(runner, "tokenize", corpus_file, tmp_path / "latin1.txt", "--run", tmp_path / "run", "--errors", "replace")
    assert r.exit_code == 0, r.stderr


def test_a_trained_run_refuses_to_retokenize_without_force(tmp_path, runner, corpus_file):
    run = tmp_path / "run"
    assert invoke(runner, "tokenize", corpus_file, "--run", run, "--vocab-size", 300).exit_code == 0
    (run / "checkpoints").mkdir()
    outputs = [run / "checkpoints" / n for n in ("latest.safetensors", "latest.state.safetensors", "step-000010.safetensors")]
    (run / "probe").mkdir()
    made_from = [run / "probe" / n for n in ("report.json", "heads.png", "head-1.2.png")] + [run / "demo.json"]
    mine = run / "probe" / "my-prompts.txt"  # the user's own file in probe/ is not the run's output
    for p in outputs + made_from + [run / "metrics.jsonl", mine]:
        p.write_bytes(b"trained")
    _bad(runner, tmp_path, corpus_file, "--vocab-size", 320,
         expect=r"already has a trained checkpoint.*--force to re-tokenize it: a tokenizer that comes out different starts the run over .*deletes the checkpoints.*the same tokenizer keeps them")
    # --force that fails (bad input) deletes nothing: _bad proves the run is as it was
    _bad(runner, tmp_path, tmp_path / "nope.txt", "--vocab-size", 320, "--force", expect=r"nope\.txt does not exist")
    # the same tokenizer again: the checkpoint still matches it, so it is kept
    r = invoke(runner, "tokenize", corpus_file, "--run", run, "--tokenizer", run / "tokenizer.json", "--force", "--json")
    assert r.exit_code == 0 and not json.loads(r.stdout)["started_over"] and all(p.exists() for p in outputs + made_from)
    assert json.loads(r.stdout)["kept"] == "unknown"  # this stand-in checkpoint records no tokens
    # a new tokenizer: the checkpoints could read neither it nor its tokens, so the run starts over
    r = invoke(runner, "tokenize", corpus_file, "--run", run, "--vocab-size", 320, "--force")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith(f"started over {run}: its checkpoints, snapshots and metrics.jsonl")
    assert not any(p.exists() for p in outputs + made_from + [run / "metrics.jsonl"]) and mine.exists()
    assert json.loads((run / "tokens/meta.json").read_text())["vocab_size"] == 320


def test_tokens_made_again_with_the_same_tokenizer_are_told_apart_from_those_trained_on(tmp_path, runner, corpus_file):
    """--force with the same tokenizer keeps the checkpoints; tokenize and the resumed train both say
    when the tokens are no longer the ones the checkpoint was trained on (here: another val split)."""
    run = tmp_path / "run"
    assert invoke(runner, "tokenize", corpus_file, "--run", run, "--vocab-size", 300).exit_code == 0
    train = ["train", "--run", run, "--preset", "tiny", "--batch-size", "4", "--eval-batches", "1", "--device", "cpu"]
    assert invoke(runner, *train, "--steps", "4").exit_code == 0
    again = ["tokenize", corpus_file, "--run", run, "--tokenizer", run / "tokenizer.json", "--force"]
    same = invoke(runner, *again)
    assert same.exit_code == 0 and same.stdout.splitlines()[-1] == (
        f"kept         {run / 'checkpoints'}: trained with this tokenizer on these very tokens")
    other = invoke(runner, *again, "--val-fraction", "0.2")
    assert other.exit_code == 0 and "same tokenizer, but these tokens differ from the ones they were trained on" in other.stdout
    resumed = invoke(runner, *train, "--steps", "6", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "holds other tokens than" in resumed.stderr and "train.bin" in resumed.stderr and "no longer the run resumed exactly" in resumed.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_is_read_like_standard_input_and_a_device_is_refused(tmp_path, runner, corpus_file):
    """`fabric tokenize <(command)` gives a path to a pipe: it is read once and tokenized like a file."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(corpus_file.read_bytes()))
    writer.start()
    piped = invoke(runner, "tokenize", fifo, "--run", tmp_path / "piped", "--vocab-size", 300, "--json")
    writer.join()
    direct = invoke(runner, "tokenize", corpus_file, "--run", tmp_path / "direct", "--vocab-size", 300, "--json")
    assert piped.exit_code == 0 == direct.exit_code, piped.output
    assert (tmp_path / "piped/tokens/train.bin").read_bytes() == (tmp_path / "direct/tokens/train.bin").read_bytes()
    assert json.loads(piped.stdout)["sources"][0]["path"] == str(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(b"once"))
    writer.start()
    _bad(runner, tmp_path, fifo, fifo, expect=r"pipe .*pipe is given twice, and a pipe can be read only once")
    writer.join()
    if Path("/dev/null").exists():
        _bad(runner, tmp_path, "/dev/null", expect=r"input /dev/null is not a text file \(a device or socket\)")


def test_a_tokenizer_that_is_not_byte_level_is_refused(tmp_path, runner, corpus_file):
    """A word-level tokenizer maps what it does not know to [UNK]: text would be lost without a word."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, EOT: 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.save(str(tmp_path / "words.json"))
    says = r"tokenizer .*words\.json is not byte-level \(its decoder is missing\)"
    _bad(runner, tmp_path, corpus_file, "--tokenizer", tmp_path / "words.json", expect=says)
    _bad(runner, tmp_path, "--show", "Zürich hello", "--tokenizer", tmp_path / "words.json", expect=says)
    # byte-level, but a normalizer rewrites characters: "ﬁ" comes back as "fi"
    nfkc = tk.train_tokenizer(["the cat sat"], vocab_size=270)
    nfkc.normalizer = normalizers.NFKC()
    nfkc.save(str(tmp_path / "nfkc.json"))
    _bad(runner, tmp_path, corpus_file, "--tokenizer", tmp_path / "nfkc.json",
         expect=r"nfkc\.json does not give text back unchanged: .* comes back as ' Zürich, 東京 🦊 fi 1")


def test_an_absurd_vocab_size_is_refused_before_training(tmp_path, runner, corpus_file):
    # the BPE trainer allocates per slot up front: a billion aborted the process (rc 134) in Rust
    with pytest.raises(tk.InputError, match=r"--vocab-size 1,000,000,000 is too large: at most 1,048,576"):
        tk.check_vocab_size(10**9)  # what train_tokenizer checks first
    _bad(runner, tmp_path, corpus_file, "--vocab-size", 2**20 + 1, expect=r"--vocab-size 1,048,577 is too large")
    tk.check_vocab_size(2**20)  # uint32 token files hold it; the limit is memory, not the dtype


def test_no_files_uses_the_bundled_corpus(tmp_path, runner, corpus_file, monkeypatch):
    monkeypatch.setattr(sources, "bundled_corpus", lambda: corpus_file)
    r = invoke(runner, "tokenize", "--run", tmp_path / "run", "--vocab-size", 300, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["sources"][0]["path"] == str(corpus_file)


# --------------------------------------------------------------------------- output


def test_show_makes_the_split_visible(tmp_path, runner, corpus_file):
    run = tmp_path / "run"
    assert invoke(runner, "tokenize", corpus_file, "--run", run, "--vocab-size", 500).exit_code == 0
    text = "The professor met Xylophonist 🦊\tok"
    r = invoke(runner, "tokenize", "--show", text, "--run", run)
    assert r.exit_code == 0, r.stderr
    display, count = r.stdout.splitlines()
    assert display.startswith("The|·professor|") and "|🦊|◦|◦|◦|→" in display  # 4 byte tokens, one character
    pieces = display.split("|")
    assert "".join(p for p in pieces if p != "◦").replace("·", " ").replace("→", "\t") == text
    ids = [int(i) for i in count.split(":")[1].split()]
    assert count.startswith(f"{len(pieces)} tokens:") and tk.load_tokenizer(run / "tokenizer.json").decode(ids) == text
    r2 = invoke(runner, "tokenize", "--show", text, "--tokenizer", run / "tokenizer.json", "--run", tmp_path / "none", "--json")
    out = json.loads(r2.stdout)
    assert out["display"] == display and out["ids"] == ids and out["count"] == len(ids) and not (tmp_path / "none").exists()
    piped = invoke(runner, "tokenize", "--show", "-", "--run", run, input=text + "\n")  # as `echo TEXT |` gives it
    assert piped.exit_code == 0 and piped.stdout == r.stdout
    assert invoke(runner, "tokenize", "--show", "-", "--run", run, input=text + "\r\n").stdout == r.stdout  # CRLF too
    one = invoke(runner, "tokenize", "--show", "T", "--run", run)
    assert one.stdout.splitlines()[1].startswith("1 token: ")
    ignored = invoke(runner, "tokenize", "--show", "T", "--run", run, "--vocab-size", 9999, "--force")
    assert ignored.exit_code == 1 and ignored.stderr == (
        "fabric: error: --show splits the text with the tokenizer there is and trains none: --vocab-size, --force "
        "would change nothing; leave them out\n")
    reuse = invoke(runner, "tokenize", "--tokenizer", run / "tokenizer.json", "--run", tmp_path / "other", "--vocab-size", 300)
    assert reuse.exit_code == 1 and reuse.stderr == (
        "fabric: error: --tokenizer reuses a trained tokenizer and trains none: --vocab-size would change nothing; "
        "leave it out, or drop --tokenizer to train one\n") and not (tmp_path / "other").exists()


def test_min_frequency_1_merges_every_pair_seen_and_2_does_not():
    text = ["the cat sat on the mat", "a dog ran"]  # most pairs are seen once
    once, twice = (tk.train_tokenizer(text, vocab_size=400, min_frequency=m).get_vocab_size() for m in (1, 2))
    assert once > twice
    with pytest.raises(tk.InputError, match=r"--min-frequency must be between 1 and 2\*\*63 - 1, got 0"):
        tk.train_tokenizer(text, vocab_size=400, min_frequency=0)


def summary_of(runner, *args) -> list[str]:
    r = invoke(runner, "tokenize", *args, "--vocab-size", 300)
    assert r.exit_code == 0, r.stderr
    return r.stdout.splitlines()


def test_the_summary_says_what_val_holds(tmp_path, runner, corpus_file):
    lines = summary_of(runner, corpus_file, "--run", tmp_path / "a")
    _, val, meta = read_tokens(tmp_path / "a")
    assert len(val) >= encode.SMALL_SPLIT_TOKENS and not any(line.startswith("warning") for line in lines)
    assert lines[1].endswith(f"(uint16; val: {val.count(meta['eot_id'])} of the 300 documents, spread evenly)")
    assert lines[2] == f"documents    300 from 1 file, {corpus_file.stat().st_size / 1e6:.2f} MB"
    # the file's blank lines are not the documents' characters: corpus counts the file, this the documents
    assert lines[3] == f"characters   {meta['characters']:,} in the documents (the blank lines between them not counted)"
    assert meta["characters"] < len(corpus_file.read_text())
    one = tmp_path / "one.txt"
    one.write_text(" ".join(stories(20, seed=2)) + "\n")  # a single document: val is the tail
    lines = summary_of(runner, one, "--run", tmp_path / "b", "--val-fraction", 0.1)
    assert read_tokens(tmp_path / "b")[2]["val_split"] == "tail"
    assert lines[1].endswith("(uint16; val: the last 10% of the tokens, too few documents to hold whole ones out)")


def test_a_small_split_is_warned_about_at_tokenize_time(tmp_path, runner, corpus_file):
    """`fabric train` refuses val.bin of 2 tokens; tokenize says so first, and still writes the files."""
    few = tmp_path / "few.txt"
    few.write_text("\n\n".join(stories(30, seed=4)) + "\n")
    lines = summary_of(runner, few, "--run", tmp_path / "a")
    _, val, _ = read_tokens(tmp_path / "a")
    assert 0 < len(val) < encode.SMALL_SPLIT_TOKENS
    context = encode.SMALL_SPLIT_TOKENS // 2
    effect = (f"fewer than one window of fabric train's default context ({context}) + 1, which it refuses"
              if len(val) <= context else f"under two windows of fabric train's default context ({context})")
    warning = f"val.bin holds only {len(val)} tokens, {effect}; tokenize a bigger corpus or raise --val-fraction (now 0.05)"
    assert lines[2] == f"warning      {warning}"
    r = invoke(runner, "tokenize", few, "--run", tmp_path / "a2", "--vocab-size", 300, "--json")  # a script sees it too
    assert r.exit_code == 0 and json.loads(r.stdout)["warnings"] == [warning]
    lines = summary_of(runner, few, "--run", tmp_path / "b", "--val-fraction", 0.97)
    assert re.fullmatch(r"warning      train\.bin holds only \d+ tokens, .*; tokenize a bigger corpus or lower "
                        r"--val-fraction \(now 0\.97\)", lines[2]), lines[2]
    tiny = tmp_path / "mine.txt"
    tiny.write_text("Hello there. This is mine.\n")
    lines = summary_of(runner, tiny, "--run", tmp_path / "c")
    # so little text that the BPE trainer stops after 1 of the 43 merges asked for: said, not silent
    assert lines[0].endswith("(trained, vocab 258 of 300 asked, <|endoftext|> = 0)"), lines[0]
    assert lines[2] == ("warning      the tokenizer learned 1 merge of the 43 --vocab-size 300 asks for: no further "
                        "pair occurs 2 times (--min-frequency) in this text, so most words stay in pieces; lower "
                        "--min-frequency or tokenize more text")
    assert re.fullmatch(r"warning      train\.bin and val\.bin hold only \d+ and \d+ tokens, fewer than one window .*which "
                        r"it refuses; tokenize a bigger corpus",
                        lines[3]), lines[3]
    assert (tmp_path / "c/tokens/val.bin").stat().st_size > 0  # a warning, not a failure


def test_a_text_of_few_distinct_words_stops_short_without_a_false_warning(tmp_path, runner, corpus_file):
    # ~30 distinct words: BPE, which merges only within words, runs out of pairs once each is a token
    r = invoke(runner, "tokenize", corpus_file, "--run", tmp_path / "a", "--vocab-size", 4096, "--json")
    s = json.loads(r.stdout)
    assert s["vocab_size"] < 2000 and s["tokens_per_word"] <= 1.5
    assert s["warnings"] == []
    first = invoke(runner, "tokenize", corpus_file, "--run", tmp_path / "b", "--vocab-size", 4096).stdout.splitlines()[0]
    assert f"vocab {s['vocab_size']:,} of 4,096 asked: this text's words are whole tokens already" in first
    # --min-frequency 1 merges every pair there is: a short vocabulary then always means whole words,
    # never the advice to lower --min-frequency, which the warning gave before
    tiny = tmp_path / "mine.txt"
    tiny.write_text("Hello there. This is mine.\n")
    r = invoke(runner, "tokenize", tiny, "--run", tmp_path / "c", "--vocab-size", 300, "--min-frequency", 1, "--json")
    s = json.loads(r.stdout)
    assert s["vocab_size"] < 300 and not [w for w in s["warnings"] if "merge" in w]


def test_json_summary_matches_the_files(tmp_path, runner, corpus_file):
    r = invoke(runner, "tokenize", corpus_file, "--run", tmp_path / "run", "--vocab-size", 300, "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    train, val, meta = read_tokens(tmp_path / "run")
    assert (out["train_tokens"], out["val_tokens"]) == (len(train), len(val)) == (meta["train_tokens"], meta["val_tokens"])
    assert out["documents"] == meta["documents"] == 300 and (train + val).count(meta["eot_id"]) == 300
    assert meta["format"] == "fabric-tokens" and meta["version"] == 1 and meta["vocab_size"] == out["vocab_size"] <= 300
    assert meta["tokenizer_sha256"] == tk.tokenizer_sha256(tmp_path / "run/tokenizer.json")
    assert meta["sources"] == [{"path": str(corpus_file), "bytes": corpus_file.stat().st_size,
                                "sha256": hashlib.sha256(corpus_file.read_bytes()).hexdigest()}]
    assert out["chars_per_token"] == pytest.approx(meta["characters"] / (len(train) + len(val) - 300), abs=1e-3)
    assert out["tokens_per_word"] == pytest.approx((out["tokens"] - 300) / len(corpus_file.read_text().split()), abs=1e-3)


def test_the_readme_example_runs(tmp_path, runner, monkeypatch, corpus_file):
    section = README.read_text().split("## fabric tokenize", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^    \$ (fabric .*)\n((?:    (?!\$).*\n)*)", section, re.M)
    assert len(blocks) >= 2, "the README's tokenize section shows its commands as `    $ fabric ...`"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FABRIC_RUN", raising=False)
    for command, shown in blocks:
        argv = shlex.split(command)[1:]
        for arg in argv:
            if arg.endswith(".txt") and not Path(arg).exists():
                Path(arg).write_text(corpus_file.read_text())
        r = invoke(runner, *argv)
        assert r.exit_code == 0, (command, r.stderr)
        shown_lines = [line[4:] for line in shown.rstrip("\n").splitlines()]
        got = r.stdout.rstrip("\n").splitlines()
        assert len(got) == len(shown_lines), (command, r.stdout)
        for want, have in zip(shown_lines, got):
            if "--show" in argv and "|" in want:  # a --show split: the pieces put back together are the text
                text = argv[argv.index("--show") + 1]
                assert have.replace("|", "").replace("◦", "").replace("·", " ") == text
            else:  # a summary line: the same label
                assert have.split()[0] == want.split()[0], (want, have)
