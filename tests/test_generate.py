"""Sampling filters, the cached loop against recomputation, streaming text, and `fabric generate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import pre_tokenizers, trainers

from fabric_cli import generate as gen
from fabric_cli.checkpoint import CheckpointInfo, save_weights
from fabric_cli.cli import app
from fabric_cli.config import SampleConfig, preset
from fabric_cli.errors import InputError
from fabric_cli.generate import (
    StreamDecoder, complete, draw, filter_logits, generate, load_engine, next_logits, sample_next,
)
from fabric_cli.model import GPT
from fabric_cli.rundir import RunPaths
from fabric_cli.tokenizer import eot_id, new_tokenizer, tokenizer_sha256, train_tokenizer

TEXT = [
    "The professor finished her lecture before the janitor arrived.",
    "The queen thanked them. 猫が好きです。日本語の文章。 The dog barked 🐕🦊 at the moon.",
    "Mrs Okafor read their notes. Zürich, café, naïve: ünïcödé everywhere.",
] * 20
UNICODE_PROMPT = "日本語の猫 🦊 café"


def _steer_eot(model: GPT, eot: int, always: bool) -> None:
    """Make the end-of-text logit hugely negative (never) or positive (always), by construction.

    Feature 0 of the final state gets a bias of 10, read by EOT's (tied) embedding row alone: every
    other row's feature 0 is zeroed, so their logits are untouched, while the normalized state is at
    most sqrt(n_embd) = 4 long, so EOT's logit is 5 * (10 +- 4): always far below (or above) the rest.
    """
    with torch.no_grad():
        wte = model.transformer.wte.weight  # (V, C)
        wte[:, 0] = 0.0
        wte[eot, 0] = 5.0 if always else -5.0
        model.transformer.ln_f.bias[0] += 10.0


def _make_run(root: Path, tok, always_eot: bool = False, vocab_size: int | None = None, record_sha: bool = True) -> RunPaths:
    """A run directory with `tok` and a tiny random-weight model (context 16) that matches it."""
    paths = RunPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(paths.tokenizer))
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=vocab_size or tok.get_vocab_size())).eval()
    with torch.no_grad():  # GPT-2's small init makes a random model repeat one token; larger weights vary
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    if eot_id(tok) is not None:
        _steer_eot(model, eot_id(tok), always_eot)
    sha = tokenizer_sha256(paths.tokenizer) if record_sha else None
    save_weights(paths.latest, model, CheckpointInfo(model.config, step=7, tokenizer_sha256=sha))
    return paths


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXT, vocab_size=300)


@pytest.fixture(scope="module")
def run(tok, tmp_path_factory) -> RunPaths:
    return _make_run(tmp_path_factory.mktemp("gen") / "run", tok)


@pytest.fixture(scope="module")
def engine(run):
    return load_engine(run.latest, run.tokenizer, "cpu")


def _cli(runner, run: RunPaths, *args, input=None):
    return runner.invoke(app, ["generate", "--run", str(run.root), "--device", "cpu", *args], input=input)


def _json(runner, run, *args):
    r = _cli(runner, run, "--json", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# --------------------------------------------------------------------------- one step


def test_top_p_keeps_exactly_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])  # second row: same, reversed
    for p, kept in [(0.8, 2), (0.81, 3), (0.5, 1), (0.96, 4), (1.0, 4)]:
        mask = filter_logits(probs.log(), SampleConfig(temperature=1.0, top_p=p)).isfinite()
        assert mask[0].tolist() == [i < kept for i in range(4)], p
        assert mask[1].tolist() == [i >= 4 - kept for i in range(4)], p  # order restored per row
    for tiny in (1e-6, 1e-9):  # at or under the tolerance: still the most likely token, never none
        mask = filter_logits(probs.log(), SampleConfig(temperature=1.0, top_p=tiny)).isfinite()
        assert mask.tolist() == [[True, False, False, False], [False, False, False, True]], tiny
    g = torch.Generator().manual_seed(0)
    draws = sample_next(probs.log().repeat(500, 1), SampleConfig(temperature=1.0, top_p=0.8), g)  # (1000,)
    assert set(draws[0::2].tolist()) == {0, 1} and set(draws[1::2].tolist()) == {2, 3}


def test_draw_follows_the_distribution_and_never_picks_a_zero():
    probs = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.0, 0.05])
    g = torch.Generator().manual_seed(0)
    draws = draw(probs.repeat(20_000, 1), g)  # (20000,)
    counts = torch.bincount(draws, minlength=6).double()
    assert counts[1] == 0 and counts[4] == 0
    expected = probs.double() * 20_000
    kept = expected > 0
    chi2 = ((counts[kept] - expected[kept]) ** 2 / expected[kept]).sum().item()
    assert chi2 < 16.3  # 3 degrees of freedom: p = 0.001
    # unnormalised rows and a row whose only mass is its last token
    rows = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 7.0]]).repeat(100, 1)
    assert draw(rows, g).tolist() == [0, 2] * 100
    # the same generator state gives the same draws
    a = draw(probs.repeat(50, 1), torch.Generator().manual_seed(3))
    assert torch.equal(a, draw(probs.repeat(50, 1), torch.Generator().manual_seed(3)))


def test_top_k_and_temperature_zero():
    torch.manual_seed(1)
    logits = torch.randn(64, 50)
    greedy = sample_next(logits, SampleConfig(temperature=0))
    assert torch.equal(greedy, logits.argmax(-1))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, SampleConfig(temperature=1.5, top_k=1), g), greedy)
    kept = filter_logits(logits, SampleConfig(temperature=1.0, top_k=3)).isfinite()
    assert kept.sum(-1).eq(3).all()
    assert torch.equal(kept, torch.zeros_like(kept).scatter(1, logits.topk(3).indices, True))
    # ties at the k-th value (common in bf16): exactly k kept, and top-k 1 picks what greedy picks
    tied = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5]])
    assert filter_logits(tied, SampleConfig(temperature=1.0, top_k=2)).isfinite().sum().item() == 2
    assert sample_next(tied, SampleConfig(temperature=1.0, top_k=1), g).tolist() == [1]


@pytest.mark.parametrize("kwargs", [dict(temperature=-0.1), dict(temperature=float("inf")), dict(top_p=0.0), dict(top_p=1.01), dict(top_k=-1),
                                    dict(num_samples=0), dict(stop=("",))])
def test_sample_config_refuses_bad_values(kwargs):
    with pytest.raises(InputError):
        SampleConfig(**kwargs)


# --------------------------------------------------------------------------- the loop


def _reference_greedy(model: GPT, ids: torch.Tensor, n: int, keep: int) -> torch.Tensor:
    """The definition, written out: the whole window each step; when full, keep the last `keep`."""
    out, window = [], ids
    with torch.no_grad():
        for _ in range(n):
            nxt = model(window)[0][:, -1].argmax(-1)  # (B,)
            out.append(nxt)
            window = torch.cat([window, nxt[:, None]], dim=1)
            if window.size(1) > model.config.block_size:
                window = window[:, -keep:]
    return torch.stack(out, dim=1)  # (B, n)


@pytest.mark.parametrize("slide", [0, 5])
def test_greedy_with_cache_equals_without_and_slides_past_the_context(engine, slide):
    model, block = engine.model, engine.model.config.block_size
    ids = torch.randint(0, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(3))
    n = 3 * block  # the window slides several times
    runs = {}
    for use_cache in (True, False):
        cfg = SampleConfig(temperature=0, max_new_tokens=n, use_cache=use_cache, slide=slide)
        runs[use_cache] = torch.stack(list(generate(model, ids, cfg)), dim=1)  # (B, n)
    assert runs[True].shape == (2, n)
    assert torch.equal(runs[True], runs[False])
    assert torch.equal(runs[True], _reference_greedy(model, ids, n, slide or block // 2))
    assert len(set(runs[True][0].tolist())) > 3  # not a degenerate constant model


def test_top_k_one_generation_equals_greedy(engine):
    ids = torch.tensor([[1, 2, 3]])
    greedy = list(generate(engine.model, ids, SampleConfig(temperature=0, max_new_tokens=20)))
    g = torch.Generator().manual_seed(5)
    topk1 = list(generate(engine.model, ids, SampleConfig(temperature=1.0, top_k=1, max_new_tokens=20), g))
    assert torch.equal(torch.stack(greedy), torch.stack(topk1))


def test_small_passes_run_on_one_thread_and_the_thread_count_is_restored(engine, monkeypatch):
    """A decode step of a small model is dispatch-bound: it runs on one thread, then the count is back."""
    model, seen = engine.model, []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (seen.append(torch.get_num_threads()), forward(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ids = torch.tensor([[1, 2, 3]])
        list(generate(model, ids, SampleConfig(temperature=0, max_new_tokens=4)))
        assert seen == [1] * 4 and torch.get_num_threads() == 2  # prefill and three steps
        monkeypatch.setattr(gen, "ONE_THREAD_FLOPS", 0)  # every pass counts as large
        assert next_logits(model, ids).shape == (1, model.config.vocab_size) and seen[-1] == 2
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- text


def test_stream_decoder_never_splits_a_character(tok):
    ids = tok.encode(UNICODE_PROMPT, add_special_tokens=False).ids
    assert len(ids) > len(UNICODE_PROMPT)  # some characters really are split across tokens
    d = StreamDecoder(tok)
    pieces = [d.push([i]) for i in ids] + [d.finish()]
    assert "".join(pieces) == UNICODE_PROMPT and not any("\ufffd" in p for p in pieces)


def test_stream_decoder_holds_a_possible_stop_string():
    class Chars:  # one token per character
        def decode(self, ids):
            return "".join(map(chr, ids))

    d = StreamDecoder(Chars(), stop=["\n\n", "END"])
    out = [d.push([ord(c)]) for c in "ab\nEN c\nEND x"]
    assert "".join(out) == "ab\nEN c\n" == d.text and d.stopped
    assert out[2] == "" and out[3] == "\n"  # "\n" waits (could begin "\n\n"), then "E" waits instead
    assert out[4] == "" and out[5] == "EN "  # "EN" waits until " " shows it is not "END"


def test_stream_decoder_decodes_each_token_a_bounded_number_of_times(tok):
    """A long completion streams in linear time: each push decodes the held tail, not everything."""
    decoded = []

    class Counting:
        def decode(self, ids):
            decoded.append(len(ids))
            return tok.decode(ids)

    for text in (UNICODE_PROMPT * 40, "日本語の猫が走る" * 100):  # characters split across tokens, 840 and 2,400 of them
        ids = tok.encode(text, add_special_tokens=False).ids
        decoded.clear()
        d = StreamDecoder(Counting(), stop=["never appears"])
        pieces = [d.push([i]) for i in ids] + [d.finish()]
        assert "".join(pieces) == text == d.text
        assert sum(decoded) < 8 * len(ids) and max(decoded) <= 8  # decoding the whole list at every push: len(ids)**2 / 2
    # text that keeps matching the start of a stop string is held a character at a time, not all along
    ids = tok.encode("a" * 2000, add_special_tokens=False).ids
    decoded.clear()
    d = StreamDecoder(Counting(), stop=["ab"])
    assert "".join([d.push([i]) for i in ids] + [d.finish()]) == "a" * 2000
    assert sum(decoded) < 8 * len(ids) and max(decoded) <= 8


def test_stream_decoder_keeps_a_decoder_that_treats_the_first_piece_apart():
    """A Metaspace decoder (SentencePiece, Llama) drops the first piece's leading space: starting
    afresh from a bare piece would run the words together."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = {"<unk>": 0, "▁the": 1, "▁cat": 2, "▁sat": 3, "▁on": 4, "▁mat": 5}
    spm = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    spm.pre_tokenizer = pre_tokenizers.Metaspace()
    spm.decoder = decoders.Metaspace()
    ids = spm.encode("the cat sat on the mat", add_special_tokens=False).ids
    d = StreamDecoder(spm)
    assert "".join([d.push([i]) for i in ids] + [d.finish()]) == spm.decode(ids) == "the cat sat on the mat"


def test_streamed_text_equals_final_text_unicode(engine):
    pieces = []
    cfg = SampleConfig(temperature=1.0, max_new_tokens=60, seed=11)
    result = complete(engine, UNICODE_PROMPT, cfg, on_text=lambda row, s: pieces.append(s))
    assert "".join(pieces) == result.completions[0]
    assert len(pieces) > 5 and result.new_tokens == 60 and result.finish_reasons == ["length"]


def test_same_seed_same_text_other_seed_other_text(engine):
    def text(seed):
        return complete(engine, "The queen", SampleConfig(max_new_tokens=30, seed=seed)).completions[0]

    assert text(1) == text(1)
    assert text(1) != text(2)


# --------------------------------------------------------------------------- the command


def test_cli_streams_and_reports(runner, run, engine):
    r = _cli(runner, run, "The professor", "-n", "40", "--seed", "3", "--top-k", "20", "--top-p", "0.9")
    assert r.exit_code == 0, r.output
    cfg = SampleConfig(max_new_tokens=40, seed=3, top_k=20, top_p=0.9)
    assert r.stdout == "The professor" + complete(engine, "The professor", cfg).completions[0] + "\n"
    assert "40 tokens" in r.stderr and "tokens/s" in r.stderr and "first after" in r.stderr
    quiet = _cli(runner, run, "The professor", "-n", "5", "--quiet", "--no-echo")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_greedy_names_no_seed_and_says_its_samples_are_the_same(runner, run):
    r = _cli(runner, run, "The professor", "-n", "5", "-t", "0", "--num-samples", "2")
    assert r.exit_code == 0, r.output
    assert "--temperature 0 is greedy: the 2 samples will be the same" in r.stderr
    assert r.stderr.rstrip().endswith("greedy)") and "seed" not in r.stderr  # nothing was drawn: no seed to repeat
    assert _json(runner, run, "The professor", "-n", "5", "-t", "0")["seed"] is None
    assert _json(runner, run, "The professor", "-n", "5", "--seed", "8")["seed"] == 8


def test_cli_json_num_samples_and_stdin(runner, run):
    out = _json(runner, run, "The dog", "-n", "12", "--num-samples", "3", "--seed", "4", "--no-cache")
    assert len(out["completions"]) == 3 and len(set(out["completions"])) == 3  # one batch, three draws
    assert out["new_tokens"] == 36 and out["completion_tokens"] == [12, 12, 12]
    assert out["cache"] is False and out["tokens_per_s"] > 0
    stopped = _json(runner, run, "The dog", "-n", "12", "--num-samples", "4", "--seed", "4", "--stop", "e")
    counts, reasons = stopped["completion_tokens"], stopped["finish_reasons"]
    assert sum(counts) == stopped["new_tokens"] and len(set(counts)) > 1  # each sample ends where its own stop is
    assert all(c == 12 if r == "length" else c <= 12 for c, r in zip(counts, reasons)) and "stop" in reasons
    assert out["step"] == 7 and out["time_to_first_token_s"] > 0
    piped = _cli(runner, run, "-", "--json", "-n", "12", "--num-samples", "3", "--seed", "4", input="The dog")
    assert json.loads(piped.stdout)["prompt"] == "The dog"
    text = _cli(runner, run, "The dog", "-n", "12", "--num-samples", "3", "--seed", "4")
    assert text.exit_code == 0, text.output
    for i, completion in enumerate(json.loads(piped.stdout)["completions"], 1):
        assert f"--- sample {i} ---\nThe dog{completion}\n" in text.stdout


def test_cli_stop_string_ends_the_completion_and_is_not_printed(runner, run):
    full = _json(runner, run, "The queen", "-t", "0", "-n", "40")["completions"][0]
    stop = full[12:15]
    assert len(full) > 20 and stop.strip()
    expected = full[: full.find(stop)]
    out = _json(runner, run, "The queen", "-t", "0", "-n", "40", "--stop", stop, "--stop", "never seen")
    assert out["completions"] == [expected] and out["finish_reasons"] == ["stop"]
    streamed = _cli(runner, run, "The queen", "-t", "0", "-n", "40", "--stop", stop, "--no-echo")
    assert streamed.stdout == expected + "\n"


def test_cli_interactive_matches_one_shot(runner, run):
    r = _cli(runner, run, "--interactive", "-t", "0", "-n", "10", "-q", input="The dog\n\nThe queen\n")
    assert r.exit_code == 0, r.output
    one = [_json(runner, run, p, "-t", "0", "-n", "10")["completions"][0] for p in ("The dog", "The queen")]
    assert r.stdout == f"{one[0]}\n{one[1]}\n"
    assert r.stderr.count("> ") == 4  # asked three times, and once more before Ctrl-D (end of input)


def test_cli_interactive_echoes_prompts_when_asked(runner, run):
    r = _cli(runner, run, "--interactive", "--echo", "-t", "0", "-n", "10", "-q", input="The dog\n")
    assert r.exit_code == 0, r.output
    assert r.stdout == "The dog" + _json(runner, run, "The dog", "-t", "0", "-n", "10")["completions"][0] + "\n"
    assert r.stderr.endswith("> \n")  # Ctrl-D ends the prompt's line


def test_cli_finds_the_tokenizer_beside_a_checkpoint_or_asks_for_it(runner, run, tmp_path):
    elsewhere = ["generate", "--run", str(tmp_path / "elsewhere"), "--device", "cpu"]  # a run without a tokenizer
    r = runner.invoke(app, [*elsewhere, "--checkpoint", str(run.latest), "The dog", "-t", "0", "-n", "5", "--no-echo", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout == _json(runner, run, "The dog", "-t", "0", "-n", "5")["completions"][0] + "\n"
    # a run directory (or its checkpoints/ folder) names its latest checkpoint, and its tokenizer
    for ckpt in (run.root, run.checkpoints):
        by_folder = runner.invoke(app, [*elsewhere, "--checkpoint", str(ckpt), "--tokenizer", str(run.root),
                                        "The dog", "-t", "0", "-n", "5", "--no-echo", "-q"])
        assert by_folder.exit_code == 0 and by_folder.stdout == r.stdout, by_folder.output
    assert "is a folder without checkpoints/latest.safetensors" in _error(
        runner.invoke(app, [*elsewhere, "--checkpoint", str(tmp_path), "hi"]))
    lone = tmp_path / "lone.safetensors"  # a checkpoint outside any run: no tokenizer beside it
    lone.write_bytes(run.latest.read_bytes())
    msg = _error(runner.invoke(app, [*elsewhere, "--checkpoint", str(lone), "hi"]))
    assert "pass --tokenizer" in msg and tokenizer_sha256(run.tokenizer)[:12] in msg
    (tmp_path / "elsewhere" / "tokenizer.json").mkdir(parents=True)  # a folder where the run's tokenizer goes
    msg = _error(runner.invoke(app, [*elsewhere, "--checkpoint", str(lone), "hi"]))
    assert f"tokenizer file {tmp_path / 'elsewhere' / 'tokenizer.json'} is not a file; pass --tokenizer" in msg


def test_cli_empty_prompt_starts_from_end_of_text_and_long_prompt_is_cut(runner, run, tok):
    r = _cli(runner, run, "--json", "-n", "5", "--seed", "1", "-", input="")
    out = json.loads(r.stdout)
    assert out["prompt_tokens"] == 1 and out["new_tokens"] == 5
    assert "the prompt is empty: starting from the end-of-text token" in r.stderr
    r = _cli(runner, run, "--json", "-n", "3", "word " * 40)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["prompt_tokens"] == 16 and "keeping the last 16" in r.stderr
    r = _cli(runner, run, "--json", "-n", "3", "word")  # a short prompt: end-of-text in front
    assert json.loads(r.stdout)["prompt_tokens"] == 1 + len(tok.encode("word", add_special_tokens=False).ids)


def test_a_prompt_starts_a_new_document_as_in_training(tok):
    eot = eot_id(tok)
    words = tok.encode("The dog ran home", add_special_tokens=False).ids
    assert gen.encode_prompt(tok, "The dog ran home", 16, eot) == ([eot, *words], 0)  # as tokenize writes: EOT, then the text
    assert gen.encode_prompt(tok, "", 16, eot) == ([eot], 0)
    n = len(words)
    assert gen.encode_prompt(tok, "The dog ran home", n, eot) == (words, 0)  # fills the context: the prompt's own tokens win
    assert gen.encode_prompt(tok, "The dog ran home", n - 1, eot) == (words[1:], 1)
    assert gen.encode_prompt(tok, "The dog ran home", 16, None) == (words, 0)  # a tokenizer without one


def test_cli_stops_at_end_of_text(runner, tok, tmp_path):
    run = _make_run(tmp_path / "eot", tok, always_eot=True)
    out = _json(runner, run, "The dog", "-n", "50")
    assert out["completions"] == [""] and out["finish_reasons"] == ["eot"] and out["new_tokens"] == 1


def _error(r) -> str:
    assert r.exit_code == 1 and r.stdout == "", r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fabric: error: "), r.stderr
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (["-t", "-1"], "--temperature"), (["--top-p", "0"], "--top-p"), (["--top-p", "1.5"], "--top-p"),
    (["--top-k", "-3"], "--top-k"), (["--num-samples", "0"], "--num-samples"),
    (["--seed", str(2**64)], "--seed"), (["--slide", "100"], "--slide 100"),  # the context is 16
    (["--num-samples", str(10**12)], "more than this machine's"),  # refused before allocating a byte of it
])
def test_cli_bad_sampling_values(runner, run, args, says):
    assert says in _error(_cli(runner, run, "hi", *args))


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
])
def test_cli_out_of_memory_while_generating_is_one_line_naming_the_knob(runner, run, monkeypatch, error):
    def out_of_memory(*args, **kwargs):
        raise error
        yield  # a generator, as generate is

    monkeypatch.setattr("fabric_cli.generate.generate", out_of_memory)
    assert "lower --num-samples" in _error(_cli(runner, run, "hi", "--num-samples", "4"))


def test_a_batch_too_big_is_refused_before_the_first_interactive_prompt(runner, run):
    r = _cli(runner, run, "--interactive", "--num-samples", str(10**12), input="")
    assert r.exit_code == 1 and "more than this machine's" in r.stderr and "one prompt a line" not in r.stderr


def test_cli_checkpoint_and_tokenizer_problems(runner, run, tok, tmp_path):
    assert "no run directory" in _error(_cli(runner, RunPaths(tmp_path / "mistyped"), "hi"))  # likelier a typo than untrained
    (tmp_path / "empty").mkdir()
    assert "fabric train" in _error(_cli(runner, RunPaths(tmp_path / "empty"), "hi"))
    other = train_tokenizer(["completely different text for another tokenizer"] * 5, vocab_size=280)
    other.save(str(tmp_path / "other.json"))
    msg = _error(_cli(runner, run, "hi", "--tokenizer", str(tmp_path / "other.json")))
    assert "tokenizer mismatch" in msg and tokenizer_sha256(run.tokenizer)[:12] in msg and "other.json has" in msg
    small = _make_run(tmp_path / "small", tok, vocab_size=200, record_sha=False)  # no sha: the size check speaks
    assert "vocabulary of 200" in _error(_cli(runner, small, "hi"))
    plain = new_tokenizer()  # a byte-level BPE trained without the end-of-text token
    plain.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=270, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    no_eot = _make_run(tmp_path / "noeot", plain)
    assert "end-of-text" in _error(_cli(runner, no_eot, ""))
    assert _cli(runner, no_eot, "hi", "-n", "3", "-q").exit_code == 0  # a real prompt needs no EOT


def test_generated_control_characters_are_shown_not_obeyed_on_a_terminal():
    """A model can emit any byte: on a terminal ESC [2J would clear the screen, CR overwrite the line."""
    from fabric_cli.cli.generate import terminal_safe

    assert terminal_safe("a\x1b[2Jb\rc\x00d\x7fe\x9bf") == "a\u241b[2Jb\u240dc\u2400d\u2421e\ufffdf"
    text = "Zürich, 東京 🦊\n\tnext line"
    assert terminal_safe(text) == text  # text, newlines and tabs pass unchanged


def _one_line(result) -> str:
    assert result.exit_code == 1 and result.stdout == "", result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fabric: error: "), result.stderr
    return lines[0]


def test_text_that_is_not_utf8_is_one_line_before_anything_is_printed(runner, run, tmp_path):
    """A lone surrogate (argv's undecodable bytes, stdin read in the C locale) had reached the
    tokenizer, after the prompt was echoed, and ended in a TypeError traceback."""
    line = _one_line(_cli(runner, run, "The \udcff queen"))
    assert line == ("fabric: error: the prompt is not valid UTF-8 text (a stray byte or lone surrogate at character 4); "
                    "convert it to UTF-8")
    line = _one_line(_cli(runner, run, "-", input=b"The \xff queen"))  # read in a UTF-8 locale: a decode error
    assert line == "fabric: error: standard input is not UTF-8 text (invalid start byte at byte 4); convert it to UTF-8"
    # --interactive: that line is refused and the loop goes on to Ctrl-D
    r = _cli(runner, run, "-i", "-n", "3", "--seed", "1", "--no-echo", input=b"bad \xff\n")
    assert r.exit_code == 0 and "fabric: error: that line is not UTF-8 text (invalid start byte); type it again" in r.stderr


def test_a_closed_stdin_is_one_line(run, tmp_path):
    import subprocess
    import sys

    for args in (["-"], ["-i"]):
        p = subprocess.run(f'"{sys.executable}" -m fabric_cli generate --run "{run.root}" --device cpu {args[0]} <&-',
                           shell=True, capture_output=True, text=True, executable="/bin/bash")
        assert p.returncode == 1 and p.stderr.startswith("fabric: error: standard input is closed"), p.stderr
        assert len(p.stderr.splitlines()) == 1
    p = subprocess.run(f'"{sys.executable}" -m fabric_cli generate --run "{run.root}" --device cpu The >&-',
                       shell=True, capture_output=False, stderr=subprocess.PIPE, text=True, executable="/bin/bash")
    assert p.returncode == 1 and p.stderr == ("fabric: error: standard output is closed, so the text has nowhere to go; "
                                              "send it to a file (> out.txt) instead\n"), p.stderr


def test_non_finite_weights_are_refused_when_loaded(runner, run, tmp_path, tok):
    """A NaN checkpoint (fabric saves none) had sampled id V, one past the vocabulary: an IndexError."""
    broken = _make_run(tmp_path / "nan", tok)
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(broken.latest), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(broken.latest)
    tensors["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    save_file(tensors, broken.latest, metadata=meta)
    line = _one_line(_cli(runner, broken, "The dog"))
    assert "tensor transformer.h.0.mlp.c_fc.weight holds NaN or infinite values" in line


def test_ctrl_c_ends_the_streamed_line_and_sigterm_ends_the_interactive_session(runner, run, monkeypatch):
    import signal

    from fabric_cli.cli import shell as cli

    calls = []

    def stopped(engine, prompt, cfg, on_text=None, on_notice=None, stop=KeyboardInterrupt):
        calls.append(prompt)
        on_text(0, " and then")
        raise stop()

    monkeypatch.setattr(gen, "complete", stopped)
    r = _cli(runner, run, "The dog")
    assert r.exit_code == 130 and r.stdout == "The dog and then\n" and r.stderr.endswith("fabric: interrupted (Ctrl-C)\n")
    r = _cli(runner, run, "-i", "--no-echo", input="The dog\nThe cat\n")  # Ctrl-C stops one completion, not the loop
    assert r.exit_code == 0 and calls[-2:] == ["The dog", "The cat"] and r.stdout == " and then\n and then\n"
    monkeypatch.setattr(gen, "complete", lambda *a, **k: stopped(*a, **k, stop=cli.Terminated))
    calls.clear()
    r = _cli(runner, run, "-i", input="The dog\nThe cat\n")  # SIGTERM (a Terminated) ends the session
    assert r.exit_code == 143 and calls == ["The dog"] and r.stderr.endswith("fabric: terminated (SIGTERM)\n")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored once the command is done
