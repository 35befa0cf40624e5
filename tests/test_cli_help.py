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


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["train", "-h"], ["probe", "--help"]])
def test_no_help_row_shows_a_bool_value(runner, args):
    """typer prints <bool> beside on/off flags (--help, --version, --json, ...): they take no value."""
    r = runner.invoke(app, args, terminal_width=200)
    assert r.exit_code == 0 and "--help" in r.stdout and "<bool>" not in r.stdout


def test_threads_sets_torch_threads(runner, monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    r = runner.invoke(app, ["--threads", "1", "inspect", "--help"])
    assert r.exit_code == 0 and seen == [1]
    r = runner.invoke(app, ["--threads", "0", "inspect", "--help"])
    assert r.exit_code == 1 and r.stderr.strip() == ("fabric: error: --threads (or $FABRIC_THREADS) must be between 1 and 4096 (one "
                                                  "per core is the default), got 0")


def test_an_os_error_is_one_line_naming_the_path(runner, tmp_path):
    """A run folder under a file: the OSError becomes one line, no traceback."""
    (tmp_path / "notes.txt").write_text("x")
    corpus = tmp_path / "c.txt"
    corpus.write_text("Once upon a time. " * 50)
    r = runner.invoke(app, ["--run", str(tmp_path / "notes.txt" / "run"), "tokenize", str(corpus), "--vocab-size", "300"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fabric: error:") and "notes.txt" in lines[0] and "Traceback" not in r.output


def test_a_run_that_is_a_file_is_refused(runner, tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    r = runner.invoke(app, ["--run", str(tmp_path / "tokenizer.json"), "inspect"])
    assert r.exit_code == 1 and r.stderr.strip().startswith(f"fabric: error: --run {tmp_path / 'tokenizer.json'} is a file")


def test_a_closed_stdout_is_a_quiet_exit_not_a_path_error(tmp_path):
    """`fabric ... | head` closes the pipe early: exit 141 as a shell expects, nothing on stderr."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "fabric_cli", "corpus", "--suites", str(tmp_path / "s"), "--suite-size", "5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == ""


def test_ctrl_c_outside_training_is_one_line_and_exit_130(runner, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fabric_cli.encode.tokenize_corpus", interrupted)
    corpus = tmp_path / "c.txt"
    corpus.write_text("Once upon a time. " * 50)
    r = runner.invoke(app, ["--run", str(tmp_path / "run"), "tokenize", str(corpus)])
    assert r.exit_code == 130 and r.stderr == "fabric: interrupted (Ctrl-C)\n" and r.stdout == ""


@pytest.mark.parametrize("args, says", [
    (["train", "--steps", "abc"], "fabric: error: Invalid value for '--steps': "),
    (["train", "--stepz", "3"], "fabric: error: No such option: --stepz"),
    (["tokenize", "--errors", "bogus"], "fabric: error: Invalid value for '--errors': "),
    (["bogus"], "fabric: error: No such command 'bogus'."),
])
def test_a_mistyped_option_is_one_line_and_exit_2(runner, args, says):
    """Not the boxed usage message: one line that names the option and where the help is."""
    r = runner.invoke(app, args)
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith(says), r.stderr
    assert lines[0].endswith("--help)")


def test_sigterm_outside_training_removes_the_half_written_file(tmp_path):
    """SIGTERM unwinds like Ctrl-C: the temporary file of an output being written is removed and
    nothing is left under the output's name (it had stayed, hundreds of MB of .tmp)."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "big.txt"
    p = subprocess.Popen([sys.executable, "-m", "fabric_cli", "corpus", str(out), "--size", "200MB"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big.txt*")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)  # until the temporary file exists: writing has begun
    assert list(tmp_path.glob(".big.txt*")), "corpus never started writing"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and err.rstrip().endswith("fabric: terminated (SIGTERM)"), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["tokenize", "probe", "generate"])
def test_repeatable_values_show_one_values_kind_not_a_python_type(runner, command):
    """tokenize's files, probe's --suite and generate's --stop take many values: typer printed <list[str]>."""
    r = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0 and "list[" not in r.stdout


@pytest.mark.parametrize("args", [["--run", "", "tokenize", "-"], ["tokenize", "--run", " ", "-"], ["inspect", "--run", ""]])
def test_an_empty_run_is_refused_not_the_current_folder(runner, tmp_path, monkeypatch, args):
    """Path("") is the current folder: `--run ""` once wrote tokenizer.json and tokens/ there."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args, input="some text\n")
    assert r.exit_code == 1 and r.stderr == ("fabric: error: --run is empty; name the run's folder (default "
                                             "./fabric-run), or leave --run out\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, where", [(["train", "--steps"], "fabric train"), (["probe", "--head"], "fabric probe"),
                                         (["--threads"], "fabric")])
def test_an_option_without_its_value_points_to_its_commands_help(runner, args, where):
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and r.stderr == (f"fabric: error: Option '{args[-1]}' requires an argument. "
                                             f"(see {where} --help)\n")
