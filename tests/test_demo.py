"""`fabric demo` end to end: a shortened run (tiny preset, a few dozen steps) through the real CLI."""

from __future__ import annotations

import functools
import json
import shutil
import signal

import pytest
import torch
from typer.testing import CliRunner

import fabric_cli.demo
from fabric_cli.checkpoint import read_info
from fabric_cli.cli import app
from fabric_cli.rundir import RunPaths
from fabric_cli.train import train
from test_train import interrupt

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
    assert r.stdout.startswith("== 1. The Tokenizer")  # no blank line before the first chapter
    paths = RunPaths(root)
    assert paths.tokenizer.exists() and paths.train_bin.stat().st_size > 0 and paths.meta.exists()
    assert read_info(paths.latest).step == 30
    assert [read_info(p).step for p in paths.snapshots()] == [0, 10, 20, 30]
    assert paths.metrics.exists()
    report = json.loads((paths.probe / "report.json").read_text())
    summary = json.loads((root / "demo.json").read_text())
    head = summary["probe"]["head"]
    assert report["chosen_head"] == head and report["ablation"]["head"] == head
    em = report["emergence"]
    assert [row["step"] for row in em["rows"]] == [0, 10, 20, 30]
    assert (summary["probe"]["significant_from"], summary["probe"]["at_last_snapshot"]) == (em["significant_from"], em["at_last_snapshot"])
    chapter5 = [line for line in r.stdout.split("\n== 5.")[1].split("\n== 6.")[0].splitlines() if line.startswith("  step ")]
    assert [("% *" in line) for line in chapter5] == [row["significant"] for row in em["rows"]]  # the evidence, marked
    assert [line.split()[-2] for line in chapter5] == [f"{100 * row['both']:.1f}%" for row in em["rows"]]  # swap pairs
    assert summary["probe"]["pairs"] == report["twins"]["pairs"] > 1000
    assert [line.split()[-1] for line in chapter5] == [f"{row['preference']:+.3f}" if round(row["preference"], 3) else "+0.000"
                                                       for row in em["rows"]]  # and the model's own choice beside it
    assert set(summary["probe"]["by_suite"]) == {"gender", "number", "long_distance", "referent_first", "referent_second"}
    assert summary["probe"]["n"] > 1000  # every held-out suite was probed
    d, a = summary["probe"]["attribution"], report["attribution"]  # where the answer is written
    assert d["head"] == head and d["preference"] == a["preference"] and d["feed_forward"] == a["feed_forward"]
    assert a["sum_error"] < 1e-3 and "Direct logit attribution" not in r.stdout  # the grid is the report's, not chapter 3's
    ending = r.stdout.split("== The end")[1]
    assert f"where the answer is written (direct logit attribution, of {d['preference']:+.3f} nats): head {head} itself" in ending
    samples = summary["generate"]["samples"]
    assert len(samples) == 2 and all(len(s["completions"]) == 2 for s in samples)
    assert all(s["prompt"] in r.stdout for s in samples)
    showcase = r.stdout.split("on the Chronicles' own sentences\n")[1].split("\n== 5.")[0].splitlines()
    assert len(showcase) == 2 * 12 + 1 and all(" -> " in x and " attention: " in x for x in showcase[1:-1:2])


def test_a_second_run_reuses_the_tokens_and_the_checkpoint(demo_run):
    root, _ = demo_run
    before = RunPaths(root).latest.stat().st_mtime_ns
    r = CliRunner().invoke(app, ["demo", "--run", str(root), *SHORT, "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["tokenize"]["reused"] and summary["train"]["reused"]
    assert RunPaths(root).latest.stat().st_mtime_ns == before
    info, meta = read_info(RunPaths(root).latest), json.loads(RunPaths(root).meta.read_text())
    # what was achieved stays in the summary (and demo.json) of a run that reuses it
    assert summary["train"]["val_loss"] == info.extra["val_loss"] and summary["train"]["tokens_seen"] == info.tokens_seen
    assert summary["train"]["tokens_per_s"] > 0 and summary["train"]["max_steps"] == 30  # from the demo that trained it
    assert summary["tokenize"]["tokens"] == meta["train_tokens"] + meta["val_tokens"] > 0
    assert summary["tokenize"]["vocab_size"] == meta["vocab_size"]
    fewer = CliRunner().invoke(app, ["demo", "--run", str(root), *SHORT, "--steps", "20"])  # a run cannot go back
    assert fewer.exit_code == 0 and "(step 30, already past the --steps 20 asked for)" in fewer.output, fewer.output


def with_tokens_of(demo_run, other):
    """A new run directory holding the Chronicles tokens of `demo_run` (tokenizing again takes long)."""
    shutil.copytree(RunPaths(demo_run[0]).tokens, RunPaths(other).tokens)
    shutil.copy(RunPaths(demo_run[0]).tokenizer, RunPaths(other).tokenizer)
    return RunPaths(other)


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
    assert r.stdout == ""  # refused before the story starts
    assert not RunPaths(other).latest.exists()  # nothing trained on them


def test_bad_demo_options_are_one_line_errors(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--run", str(tmp_path / "x"), "--steps", "0"])
    assert r.exit_code != 0 and "--steps must be at least 1" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()
    r = CliRunner().invoke(app, ["demo", "--run", str(tmp_path / "y"), "--preset", "huge"])
    assert r.exit_code != 0 and "unknown preset" in r.stderr and not (tmp_path / "y").exists()
    # a model no memory holds: refused before stage 1 tokenizes (it wrote tokenizer.json and tokens/ first);
    # on the CPU, where the weights' gradients and moments count too (on a GPU the message is another)
    r = CliRunner().invoke(app, ["demo", "--run", str(tmp_path / "z"), "--context", str(10**11), "--device", "cpu"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "needs 190,734.9 GiB for its weights" in r.stderr
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_training_exits_like_fabric_train_and_names_the_command_that_resumes(demo_run, tmp_path, sig):
    paths = with_tokens_of(demo_run, tmp_path / "my run")
    flags = ["--preset", "tiny", "--context", "64", "--steps", "100000", "--snapshot-every", "100000"]
    code, out, err = interrupt(["demo", "--run", str(paths.root), *flags], paths.metrics, 2, sig)
    assert code == 128 + sig, err
    step = read_info(paths.latest).step
    again = f"fabric demo --run '{paths.root}' --steps 100000 --preset tiny --context 64 --snapshot-every 100000"
    assert f"stopped by {sig.name} at step {step:,}; checkpoint saved. Continue with `{again}`" in err
    assert "Traceback" not in err and "3. The Prompt" not in out


def test_an_interruption_after_training_says_the_same_command_goes_on(demo_run, tmp_path, monkeypatch):
    copy = tmp_path / "my run"
    shutil.copytree(demo_run[0], copy)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fabric_cli.demo, "run_probe", ctrl_c)  # Ctrl-C while the heads are probed
    r = CliRunner().invoke(app, ["demo", "--run", str(copy), *SHORT])
    assert r.exit_code == 130
    again = f"fabric demo --run '{copy}' --steps 30 --preset tiny --context 64 --snapshot-every 10"
    assert r.stderr.endswith(f"fabric: interrupted (Ctrl-C); the run's checkpoint (step 30) is kept, nothing after it "
                             f"was saved. Go on with `{again}`: it reuses the tokens and the checkpoint.\n"), r.stderr


@pytest.fixture(scope="module")
def resumed_demo(demo_run, tmp_path_factory, request):
    """A demo of 40 steps stopped at step 20, then taken up by a plain `fabric demo --run RUN`."""
    paths = with_tokens_of(demo_run, tmp_path_factory.mktemp("resumed") / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fabric_cli.demo, "train", functools.partial(train, stop_at=20))
        first = CliRunner().invoke(app, ["demo", "--run", str(paths.root), *SHORT[:4], "--steps", "40",
                                         "--snapshot-every", "10"])
    assert first.exit_code == 1 and "stopped by --stop-at at step 20" in first.stderr, first.output
    assert f"Continue with `fabric demo --run {paths.root} --steps 40 --preset tiny --context 64" in first.stderr
    return paths, CliRunner().invoke(app, ["demo", "--run", str(paths.root)])


def test_resuming_without_steps_keeps_the_runs_step_budget_and_settings(resumed_demo):
    paths, r = resumed_demo
    assert r.exit_code == 0, r.output
    assert "resuming with" not in r.stderr  # nothing typed, so nothing changed
    assert read_info(paths.latest).step == 40
    assert [read_info(p).step for p in paths.snapshots()] == [0, 10, 20, 30, 40]  # its own --snapshot-every


def test_the_training_header_describes_the_resumed_run_not_the_defaults(resumed_demo):
    paths, r = resumed_demo
    assert "2. The Gradient: training the tiny preset (2 layers, 2 heads, width 16, context 64) for 40 steps" in r.stdout
    summary = json.loads((paths.root / "demo.json").read_text())
    assert (summary["settings"]["preset"], summary["settings"]["steps"]) == ("tiny", 40)


def test_a_larger_steps_typed_now_extends_a_finished_run(resumed_demo):
    paths, _ = resumed_demo
    r = CliRunner().invoke(app, ["demo", "--run", str(paths.root), "--steps", "50"])
    assert r.exit_code == 0, r.output
    assert "resuming with --steps 50 (was 40)" in r.stderr and read_info(paths.latest).step == 50
    assert "--eval-interval 10 (was 8)" in r.stderr  # a fifth of the new budget, not of the old one
    r = CliRunner().invoke(app, ["demo", "--run", str(paths.root), "--preset", "cpu"])  # a resumed model keeps its shape
    assert r.exit_code == 1 and "--preset cpu differs from the checkpoint's tiny" in r.stderr
    assert "Traceback" not in r.output and "1. The Tokenizer" not in r.stdout  # refused before stage 1


def test_a_finished_run_without_its_training_state_is_reused(demo_run, tmp_path):
    """Weights alone (the state file gone, or never copied) still probe and generate: no --restart asked."""
    root = tmp_path / "copy"
    shutil.copytree(demo_run[0], root)
    RunPaths(root).latest_state.unlink()
    r = CliRunner().invoke(app, ["demo", "--run", str(root), "--json"])
    assert r.exit_code == 0, r.output
    train = json.loads(r.stdout)["train"]
    assert train["reused"] and train["step"] == 30 and train["val_loss"] == read_info(RunPaths(root).latest).extra["val_loss"]
    r = CliRunner().invoke(app, ["demo", "--run", str(root), "--steps", "40"])  # training further needs the state
    assert r.exit_code == 1 and "latest.state.safetensors is missing" in r.stderr and "Traceback" not in r.output


def test_an_unusable_device_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = CliRunner().invoke(app, ["demo", "--run", str(tmp_path / "x"), "--preset", "tiny", "--device", "cuda"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip() == "fabric: error: --device cuda: CUDA is not available here; use --device cpu or auto"
    assert "1. The Tokenizer" not in r.stdout and not (tmp_path / "x").exists()


def test_threads_the_user_chose_reach_the_demos_training(tmp_path, monkeypatch):
    import fabric_cli.demo as demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: seen.append(kw["auto_threads"]) or {})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("FABRIC_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        for args in (["--threads", "2"], []):
            assert CliRunner().invoke(app, [*args, "demo", "--run", str(tmp_path / "x")]).exit_code == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [False, True]  # --threads 2 is kept, not overruled by the small-step rule


def test_the_showcase_shows_what_its_marks_compare():
    """`pronoun -> X` means X is the true referent, as in `fabric probe --head`. Beside it, the head's
    attention summed over each candidate mention, referent first: what ✓ and ✗ compare. (The single
    token it looked at most once stood there, and read `✓ he -> The farmer  looked most at: queen`
    when the two mentions were close and "The" tipped the sum.)"""
    def prompt(text, pronoun, referent, correct, masses, ambiguous=False):
        return {"text": text, "pronoun": pronoun, "referent": referent, "correct": correct, "ambiguous": ambiguous,
                "candidate_mass": [{"text": t, "mass": m} for t, m in masses]}

    report = {"head_detail": {"prompts": [
        prompt("The king praised the nurse when she healed.", "she", "the nurse", False, [("the nurse", 0.05), ("The king", 0.1)]),
        prompt("The farmer met the queen, and he ploughed.", "he", "The farmer", True, [("The farmer", 0.18), ("the queen", 0.17)]),
        prompt("The cat chased the dog because it was fast.", "it", "The cat", None, [("The cat", 0.2), ("the dog", 0.57)], ambiguous=True),
    ], "totals": {"accuracy": 0.5, "n": 2}}}
    lines = fabric_cli.demo._showcase_lines(report).splitlines()
    assert lines[0] == "  ✗ The king praised the nurse when she healed."
    assert lines[1] == "      she -> the nurse        attention: the nurse ▍ 0.05  The king ▊ 0.10"
    assert lines[3] == "      he -> The farmer       attention: The farmer █▌ 0.18  the queen █▍ 0.17"
    assert lines[4].startswith("  ? ") and lines[5] == "      it -> ?                attention: The cat █▋ 0.20  the dog ████▌ 0.57"
    assert len(lines) == 7 and "right on 50% of 2 sentences with a distractor: ✓ the true referent holds" in lines[6]


def test_heads_that_share_the_task_are_ablated_together_and_told():
    """A head's partners: the other above every baseline heads at the emergence threshold or above."""
    def head(name, accuracy, significant=True):
        return {"head": name, "accuracy": accuracy, "significant": significant}

    report = {"heads": [head("0.3", 0.94), head("0.5", 0.88), head("0.7", 0.85), head("0.0", 0.57),
                        head("2.1", 0.9, significant=False), head("1.1", None, significant=False)]}
    assert fabric_cli.demo._partners(report, "0.3", 0.8) == ("0.5", "0.7")
    assert fabric_cli.demo._partners(report, "0.3", 0.9) == ()
    said = []
    summary = {"run": "r", "seconds": 1.0, "probe": {
        "head": "0.3", "named": True, "accuracy": 0.94, "n": 2000, "threshold": 0.8, "emerged_at": 1500,
        "best_baseline": {"accuracy": 0.5, "name": "first"},
        "ablation": {"zero_drop": 1.46, "random_zero_drop_mean": -0.011, "random_zero_drop_max": 0.029,
                     "together": {"heads": ["0.3", "0.5", "0.7"], "zero_drop": 3.735, "mean_drop": 3.746,
                                  "zero_drop_alone": [1.46, 0.937, 0.405],
                                  "random_zero_drop_mean": 0.026, "random_zero_drop_max": 0.072}}}}
    fabric_cli.demo._ending(summary, said.append)
    assert any(line.endswith("; emerged at step 1,500") for line in said)  # a demo.json written before the suite was
    assert not any("where the answer is written" in line for line in said)  # a demo.json written before attribution
    summary["probe"]["attribution"] = {"head": "0.3", "direct": 0.025, "heads_total": -0.026,
                                       "feed_forward": [3.013, 0.3, 0.533], "preference": 5.591}
    said.clear()
    fabric_cli.demo._ending(summary, said.append)
    assert ("where the answer is written (direct logit attribution, of +5.591 nats): head 0.3 itself +0.025, all heads "
            "-0.026; the most, +3.013, by layer 0's feed-forward, the other feed-forwards +0.833") in said
    said.clear()
    summary["probe"]["emergence_suite"] = "gender"  # the step is the emergence suite's, not the held-out prompts'
    fabric_cli.demo._ending(summary, said.append)
    assert ("head 0.3 (named): 94.0% of 2,000 held-out prompts, best baseline 50.0% (first); emerged on the gender "
            "suite at step 1,500") in said
    said.clear()
    summary["probe"].update(at_last_snapshot=True, significant_from=1100)  # crossed at the last snapshot: not yet seen to hold
    summary["probe"]["ablation"]["zero_drop_ci95"] = [1.38, 1.54]
    fabric_cli.demo._ending(summary, said.append)
    assert any(line.startswith("ablating it lowers the first token of the referent's continuation by +1.460 nats "
                               "(95% CI +1.380 to +1.540) against") for line in said)
    said.clear()
    summary["probe"]["significant_at_last_snapshot"] = True  # beating the baselines only at the last snapshot
    fabric_cli.demo._ending(summary, said.append)
    assert any(line.endswith("above every baseline there from step 1,100 (the last snapshot)") for line in said)
    said.clear()
    summary["probe"].update(both=0.754, pairs=1815)
    fabric_cli.demo._ending(summary, said.append)
    assert any("best baseline 50.0% (first); right on both versions of 75.4% of 1,815 pronoun-swap pairs; emerged" in line
               for line in said)
    said.clear()
    summary["probe"]["significant_at_last_snapshot"] = False
    fabric_cli.demo._ending(summary, said.append)
    assert any(line.endswith("; emerged on the gender suite at step 1,500 (the last snapshot), above every baseline "
                             "there from step 1,100") for line in said)
    assert ("heads 0.3, 0.5, 0.7 share the task: removed together they lower it by +3.735 nats (one at a time +1.460, "
            "+0.937, +0.405); random sets of 3 heads by +0.026 on average (max +0.072)") in said
    summary["probe"]["ablation"]["together"] = None  # no partners: no such line
    said.clear()
    fabric_cli.demo._ending(summary, said.append)
    assert not any("share the task" in line for line in said)
