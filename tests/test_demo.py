"""`fabric demo` end to end: a shortened run (tiny preset, a few dozen steps) through the real CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from fabric_cli.checkpoint import read_info
from fabric_cli.cli import app
from fabric_cli.config import RunPaths

SHORT = ["--preset", "tiny", "--context", "64", "--steps", "30", "--snapshot-every", "10"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(app, ["demo", "--run", str(root), *SHORT])
    return root, result


def test_the_short_demo_tells_every_chapter_and_writes_every_artefact(demo_run):
    root, r = demo_run
    assert r.exit_code == 0, r.output
    for chapter in ("1. The Tokenizer", "2. The Gradient", "3. The Prompt Engineers", "4. Head", "5. When did head",
                    "6. The Inference Engine", "The end"):
        assert chapter in r.stdout, chapter
    paths = RunPaths(root)
    assert paths.tokenizer.exists() and paths.train_bin.stat().st_size > 0 and paths.meta.exists()
    assert read_info(paths.latest).step == 30
    assert [read_info(p).step for p in paths.snapshots()] == [0, 10, 20, 30]
    assert paths.metrics.exists()
    report = json.loads((paths.probe / "report.json").read_text())
    summary = json.loads((root / "demo.json").read_text())
    head = summary["probe"]["head"]
    assert report["chosen_head"] == head and report["ablation"]["head"] == head
    assert [row["step"] for row in report["emergence"]["rows"]] == [0, 10, 20, 30]
    assert set(summary["probe"]["by_suite"]) == {"gender", "number", "long_distance", "referent_first", "referent_second"}
    assert summary["probe"]["n"] > 1000  # every held-out suite was probed
    samples = summary["generate"]["samples"]
    assert len(samples) == 2 and all(len(s["completions"]) == 2 for s in samples)
    assert all(s["prompt"] in r.stdout for s in samples)


def test_a_second_run_reuses_the_tokens_and_the_checkpoint(demo_run):
    root, _ = demo_run
    before = RunPaths(root).latest.stat().st_mtime_ns
    r = CliRunner().invoke(app, ["demo", "--run", str(root), *SHORT, "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["tokenize"]["reused"] and summary["train"]["reused"]
    assert RunPaths(root).latest.stat().st_mtime_ns == before


def test_tokens_of_another_corpus_are_refused_not_reused(demo_run, tmp_path):
    root, _ = demo_run
    other = tmp_path / "run"
    shutil.copytree(RunPaths(root).tokens, RunPaths(other).tokens)
    shutil.copy(RunPaths(root).tokenizer, RunPaths(other).tokenizer)
    meta = json.loads(RunPaths(other).meta.read_text())
    meta["sources"] = [{"path": "/somewhere/novel.txt", "bytes": 10, "sha256": "0" * 64}]
    RunPaths(other).meta.write_text(json.dumps(meta))
    r = CliRunner().invoke(app, ["demo", "--run", str(other), *SHORT])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "holds tokens of novel.txt, not the bundled Chronicles" in r.stderr and "--restart" in r.stderr
    assert not RunPaths(other).latest.exists()  # nothing trained on them


def test_bad_demo_options_are_one_line_errors(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--run", str(tmp_path / "x"), "--steps", "0"])
    assert r.exit_code != 0 and "--steps must be at least 1" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(app, ["demo", "--run", str(tmp_path / "y"), "--preset", "huge"])
    assert r.exit_code != 0 and "unknown preset" in r.stderr and not (tmp_path / "y").exists()
