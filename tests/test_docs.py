"""Every example in the package's docstrings holds: they are documentation a reader will trust."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fabric_cli

MODULES = sorted(m.name for m in pkgutil.walk_packages(fabric_cli.__path__, "fabric_cli.") if m.name != "fabric_cli.__main__")


def test_every_module_is_found():
    assert {"fabric_cli.model", "fabric_cli.generate", "fabric_cli.probe.report", "fabric_cli.corpus"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail"


def test_the_readmes_python_example_runs(tmp_path, monkeypatch, capsys):
    """The README's 'From Python' block, run as written on a run directory of the same shape (a
    random model with a head 0.1 and a tokenizer): its calls exist and print what it says they do."""
    import re
    from pathlib import Path

    import torch

    from fabric_cli.checkpoint import CheckpointInfo, save_weights
    from fabric_cli.config import preset
    from fabric_cli.model import GPT
    from fabric_cli.rundir import RunPaths
    from fabric_cli.tokenizer import tokenizer_sha256, train_tokenizer

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n\n((?:    .*\n|\n)+?)\nprints", section).group(1)
    code = "\n".join(line[4:] for line in block.splitlines())
    paths = RunPaths(tmp_path / "fabric-run")
    paths.root.mkdir()
    tok = train_tokenizer(["The queen met the farmer at the market. She smiled. He smiled."] * 5, vocab_size=300)
    tok.save(str(paths.tokenizer))
    torch.manual_seed(0)
    model = GPT(preset("tiny", n_head=4, vocab_size=tok.get_vocab_size()))
    save_weights(paths.latest, model, CheckpointInfo(model.config, step=1, tokenizer_sha256=tokenizer_sha256(paths.tokenizer)))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    first, intact, zeroed, patched = capsys.readouterr().out.splitlines()
    import ast

    looked = ast.literal_eval(first)  # three (token, attention) pairs: the prompt's own tokens, most attended first
    words = {tok.decode([t]) for t in tok.encode("The queen met the farmer at the market. She").ids} | {""}  # "": end-of-text
    assert len(looked) == 3 and all(w in words and 0 <= a <= 1 for w, a in looked), first
    assert [a for _, a in looked] == sorted((a for _, a in looked), reverse=True) and sum(a for _, a in looked) <= 1.02
    assert re.fullmatch(r"intact: log p\(' ruled'\) - log p\(' ploughed'\) = [+-]\d+\.\d\d", intact), intact
    assert re.fullmatch(r"head 0\.1 zeroed: log p\(' ruled'\) - log p\(' ploughed'\) = [+-]\d+\.\d\d", zeroed), zeroed
    assert re.fullmatch(r"head 0\.1 patched from 'He': log p\(' ruled'\) - log p\(' ploughed'\) = [+-]\d+\.\d\d", patched)
