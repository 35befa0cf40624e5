"""Every command's --help: exits 0, shows worked examples, and names the presets' shapes."""

from __future__ import annotations

import pytest

from fabric_cli.cli import app
from fabric_cli.config import PRESETS


@pytest.mark.parametrize("command", ["tokenize", "corpus", "train", "inspect", "probe", "generate", "demo"])
def test_help_shows_examples_of_the_command(runner, command):
    r = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    examples = r.stdout.split("Examples:")[1]
    assert f"fabric {command}" in examples or f"fabric_cli {command}" in examples


@pytest.mark.parametrize("command", ["train", "demo"])
def test_preset_help_gives_each_shape(runner, command):
    text = " ".join(runner.invoke(app, [command, "--help"], terminal_width=200).stdout.replace("│", " ").split())
    for name, c in PRESETS.items():
        assert f"{name} ({c.n_layer} layers x {c.n_head} heads, width {c.n_embd}, context {c.block_size})" in text


def test_flags_do_not_look_like_they_take_a_value(runner):
    text = " ".join(runner.invoke(app, ["train", "--help"], terminal_width=200).stdout.replace("│", " ").split())
    for flag in ("--resume", "--restart", "--compile", "--json"):
        assert f"{flag} <bool>" not in text and f"{flag} " in text, flag
