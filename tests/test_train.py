"""fabric train: the loss goes down, resume is bitwise exact, faults are handled, DDP tracks one process.

Token files are written here with numpy (byte-level ids of a generated corpus), so these tests do
not depend on the tokenizer's internals.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import stories
from fabric_cli.checkpoint import read_info
from fabric_cli.cli import app
from fabric_cli.config import TrainConfig, preset
from fabric_cli.data import load_tokens
from fabric_cli.errors import CheckpointError, InputError, TrainingError
from fabric_cli.files import atomic_paths, file_sha256
from fabric_cli.metrics import LayerGroups, read_metrics
from fabric_cli.model import GPT
from fabric_cli.rundir import RunPaths
from fabric_cli.train import train
from fabric_cli.tokenizer import train_tokenizer
from fabric_cli.trainstep import lr_at, make_optimizer, train_step

SHA = "ab" * 32
# a tiny model and a fast schedule; log every step so every loss is in metrics.jsonl
FAST = dict(preset="tiny", batch_size=8, warmup=2, lr=3e-3, min_lr=3e-4, eval_batches=2, log_interval=1, device="cpu")
FAST_ARGS = ["--preset", "tiny", "--batch-size", "8", "--warmup", "2", "--lr", "3e-3", "--min-lr", "3e-4",
             "--eval-batches", "2", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def write_tokens(folder: Path, sha: str = SHA, vocab: int = 256) -> Path:
    """Byte-level tokens of ~20 KB of stories: train.bin, val.bin (uint16) and meta.json."""
    ids = np.frombuffer("\n\n".join(stories(250, seed=1)).encode(), np.uint8).astype("<u2")
    n = int(len(ids) * 0.9)
    folder.mkdir(parents=True, exist_ok=True)
    ids[:n].tofile(folder / "train.bin")
    ids[n:].tofile(folder / "val.bin")
    meta = {"dtype": "uint16", "vocab_size": vocab, "eot_id": 0, "tokenizer_sha256": sha,
            "train_tokens": n, "val_tokens": len(ids) - n}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def run(tmp_path: Path) -> RunPaths:
    paths = RunPaths(tmp_path / "run")
    write_tokens(paths.tokens)
    return paths


def train_losses(paths: RunPaths) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(paths.metrics) if r["kind"] == "train"}


def test_loss_goes_down_and_outputs_are_written(run):
    result = train(run, TrainConfig(steps=40, eval_interval=20, snapshot_every=20, **FAST), progress=False)
    losses = train_losses(run)
    assert sorted(losses) == list(range(1, 41))
    assert result.val_loss < math.log(256) - 1.0  # well below a uniform guess over 256 bytes
    assert np.mean([losses[s] for s in range(36, 41)]) < losses[1] - 1.0
    info = read_info(run.latest)
    assert (info.step, info.tokens_seen, info.tokenizer_sha256) == (40, 40 * 8 * 16, SHA)
    assert info.extra["val_loss"] == pytest.approx(result.val_loss)
    assert [p.name for p in run.snapshots()] == [f"step-{s:06d}.safetensors" for s in (0, 20, 40)]
    rec = [r for r in read_metrics(run.metrics) if r["kind"] == "train"][-1]
    assert set(rec) >= {"step", "loss", "lr", "tokens_per_s", "tokens_seen", "grad_norm", "grad_norm_layers"}
    assert len(rec["grad_norm_layers"]) == 3  # embeddings + 2 blocks
    # the per-layer norms and the final norm make up the total norm
    assert math.sqrt(sum(g * g for g in rec["grad_norm_layers"])) <= rec["grad_norm"] + 1e-6
    evals = [r for r in read_metrics(run.metrics) if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [20, 40] and evals[1]["val_loss"] < evals[0]["val_loss"]
    assert result.flops_per_s == pytest.approx(GPT(info.config).flops_per_token() * result.tokens_per_s)


def test_resume_is_bitwise_exact(tmp_path):
    # dropout and gradient accumulation on, so RNG and micro-steps must be restored exactly too
    cfg = TrainConfig(steps=20, eval_interval=5, dropout=0.1, grad_accum=2, **FAST)
    straight, split = RunPaths(tmp_path / "a"), RunPaths(tmp_path / "b")
    for p in (straight, split):
        write_tokens(p.tokens)
    train(straight, cfg, progress=False)
    first = train(split, cfg, stop_at=12, progress=False)  # between two evaluations
    assert (first.step, first.stopped_by, read_info(split.latest).step) == (12, "stop-at", 12)
    second = train(split, TrainConfig(device="cpu"), resume=True, progress=False)  # settings come from the state
    assert second.step == 20
    a, b = load_file(straight.latest), load_file(split.latest)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = load_file(straight.latest_state), load_file(split.latest_state)
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith("optim."))
    assert train_losses(straight) == train_losses(split)  # every step's loss, bit for bit
    assert [r for r in read_metrics(straight.metrics) if r["kind"] == "eval"] == [
        r for r in read_metrics(split.metrics) if r["kind"] == "eval"]


def test_refuses_to_overwrite_without_resume_or_restart(run, runner):
    args = ["train", "--run", str(run.root), "--steps", "6", "--eval-interval", "3", "--snapshot-every", "3", *FAST_ARGS]
    assert runner.invoke(app, args).exit_code == 0
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert "--resume" in refused.output and "--restart" in refused.output and "step 6" in refused.output
    both = runner.invoke(app, [*args, "--resume", "--restart"])
    assert both.exit_code == 1 and "both" in both.output
    shape = runner.invoke(app, [*args, "--resume", "--steps", "9", "--width", "32"])
    assert shape.exit_code == 1 and "--width 32 differs from the checkpoint's" in shape.output
    for flag, said in (("--ff-width", "--ff-width 24 differs from the checkpoint's 64"),
                       ("--no-bias", "--no-bias differs from the checkpoint, which has biases")):
        shape = runner.invoke(app, [*args, "--resume", "--steps", "9", *([flag, "24"] if flag == "--ff-width" else [flag])])
        assert shape.exit_code == 1 and said in shape.stderr, shape.output
    done = runner.invoke(app, ["train", "--run", str(run.root), "--resume"])
    assert done.exit_code == 1 and "already at step 6" in done.output
    more = runner.invoke(app, ["train", "--run", str(run.root), "--resume", "--steps", "7", "--lr", "1e-3"])
    assert more.exit_code == 0, more.output
    assert "resuming with --steps 7 (was 6), --lr 0.001 (was 0.003) (the rest as saved with the checkpoint)" in more.stderr
    run.probe.mkdir(exist_ok=True)
    (run.probe / "report.json").write_text("{}")  # made from the old run's checkpoints
    again = runner.invoke(app, ["train", "--run", str(run.root), "--steps", "2", "--restart", *FAST_ARGS])
    assert again.exit_code == 0, again.output
    assert read_info(run.latest).step == 2 and run.snapshots() == []  # the old run's snapshots are gone
    assert not (run.probe / "report.json").exists()
    assert max(train_losses(run)) == 2


def test_resume_removes_the_snapshots_of_unsaved_steps_and_snapshots_alone_point_to_restart(run, runner):
    args = ["train", "--run", str(run.root), "--steps", "6", "--eval-interval", "2", "--snapshot-every", "2", *FAST_ARGS]
    assert runner.invoke(app, [*args, "--stop-at", "2"]).exit_code == 0
    stale = run.snapshot(4)  # as a second Ctrl-C leaves it: a snapshot of a step after the last save
    stale.write_bytes(run.snapshot(2).read_bytes())
    more = runner.invoke(app, [*args, "--resume"])
    assert more.exit_code == 0, more.output
    assert "note: removed 1 snapshot past step 2 (step-000004.safetensors), left by steps after the checkpoint" in more.stderr
    assert [read_info(p).step for p in run.snapshots()] == [0, 2, 4, 6]  # step-000004 is this run's own now
    run.latest.unlink()
    run.latest_state.unlink()
    for extra in ([], ["--resume"]):  # each way the same way out, not one pointing at the other
        msg = runner.invoke(app, [*args, *extra])
        assert msg.exit_code == 1 and "holds snapshots but no latest.safetensors to resume" in msg.stderr
        assert "pass --restart to start over" in msg.stderr and msg.stderr.count("\n") == 1
    assert runner.invoke(app, [*args, "--restart"]).exit_code == 0


def test_resuming_on_another_number_of_threads_is_said_to_round_otherwise(run, runner):
    before = torch.get_num_threads()
    args = ["train", "--run", str(run.root), "--steps", "4", *FAST_ARGS]
    try:
        assert runner.invoke(app, ["--threads", "1", *args, "--stop-at", "2"]).exit_code == 0
        same = runner.invoke(app, ["--threads", "1", *args, "--resume", "--stop-at", "3"])
        assert same.exit_code == 0 and "CPU thread" not in same.stderr
        other = runner.invoke(app, ["--threads", "2", *args, "--resume"])
        assert other.exit_code == 0, other.output
        assert ("note: the run trained on 1 CPU thread until step 3; this session runs 2, whose kernels round sums "
                "differently, so the resume is not bitwise exact; --threads 1 keeps it so") in other.stderr
    finally:
        torch.set_num_threads(before)


def test_a_small_model_trains_on_one_thread_unless_threads_are_chosen(run, runner, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("FABRIC_THREADS", raising=False)
    before = torch.get_num_threads()
    args = ["train", "--run", str(run.root), "--steps", "3", *FAST_ARGS]
    try:
        torch.set_num_threads(2)
        auto = runner.invoke(app, args)
        assert auto.exit_code == 0, auto.output
        assert "1 CPU thread, as a step this small gains nothing from more (--threads N to choose)" in auto.stderr
        assert "parameters, cpu, 1 thread)" in auto.stdout
        assert torch.get_num_threads() == 2  # given back when the run ends
        chosen = runner.invoke(app, ["--threads", "2", *args, "--restart"])
        assert chosen.exit_code == 0, chosen.output
        assert "CPU thread, as a step" not in chosen.stderr and "parameters, cpu, 2 threads)" in chosen.stdout
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # chosen the other way
        assert "parameters, cpu, 2 threads)" in runner.invoke(app, [*args, "--restart"]).stdout
        monkeypatch.delenv("OMP_NUM_THREADS")
        # a resume takes the count its run was saved on, so the command printed at a stop resumes exactly
        assert runner.invoke(app, ["--threads", "2", *args, "--restart", "--steps", "4", "--stop-at", "2"]).exit_code == 0
        resumed = runner.invoke(app, [*args, "--resume", "--steps", "4"])
        assert resumed.exit_code == 0 and "parameters, cpu, 2 threads)" in resumed.stdout
        assert "CPU thread" not in resumed.stderr
    finally:
        torch.set_num_threads(before)


def test_the_summary_counts_passes_over_the_training_tokens(run):
    result = train(run, TrainConfig(steps=6, eval_interval=6, **FAST), progress=False)
    train_tokens = (run.tokens / "train.bin").stat().st_size // 2
    assert result.tokens_seen == 6 * 8 * 16
    assert result.epochs == pytest.approx(result.tokens_seen / train_tokens, rel=1e-3)
    assert f"tokens seen   768 ({result.epochs:.2f} passes over train.bin)" in result.summary()


def test_a_busy_machine_is_named_with_the_thread_count_that_helps(monkeypatch):
    from fabric_cli.train import _busy_note

    monkeypatch.setattr("fabric_cli.train.usable_cpus", lambda: 2)  # the CPUs this process may use, whatever the host has
    monkeypatch.setattr(os, "getloadavg", lambda: (3.7, 2.0, 1.0))
    assert _busy_note(2) == ("note: the machine was busy (load average 3.7 on 2 cores): with other programs holding "
                             "cores, each of this run's 2 threads waits for the slowest, and --threads 1 can be many "
                             "times faster")
    assert _busy_note(1) is None  # one thread waits for nobody
    monkeypatch.setattr(os, "getloadavg", lambda: (2.2, 2.0, 1.0))  # this run's own two threads
    assert _busy_note(2) is None


def test_under_torchrun_only_rank_0_speaks_for_an_interrupted_run(run, monkeypatch, capsys):
    # torchrun SIGTERMs the other ranks when rank 0 stops (say, refused: the run is in use); their
    # "terminated ... the run is as it was" beside rank 0's reason read as a second, contrary story
    import typer

    from fabric_cli.cli import shell as cli

    train(run, TrainConfig(steps=2, eval_interval=2, **FAST), progress=False)
    for rank, says in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(typer.Exit) as stop:
            cli.interrupted(cli.Terminated(), run, None, False, "fabric train --resume")
        assert stop.value.exit_code == 143
        assert ("terminated (SIGTERM)" in capsys.readouterr().err) == says


def test_the_learning_rate_note_names_what_changed():
    from fabric_cli.runplan import schedule_jump

    saved = TrainConfig(**FAST, steps=60)  # warm-up 2, then the cosine down to --min-lr at step 60
    warm = schedule_jump(saved, TrainConfig(**{**FAST, "warmup": 80}, steps=90), 60, 0, 90, 16, 1)
    assert "--warmup is now 80 steps where it was 2 (step 61 is back in the warm-up). The loss may rise" in warm
    assert "cosine" not in warm  # the warm-up, not the cosine, sets step 61's rate
    longer = schedule_jump(saved, TrainConfig(**FAST, steps=120), 60, 0, 120, 16, 1)
    assert "the cosine now spans 120 steps where it spanned 60" in longer and "--warmup" not in longer
    peak = schedule_jump(saved, TrainConfig(**{**FAST, "lr": 3e-2}, steps=60), 30, 0, 60, 16, 1)
    assert "--lr is now 3.00e-02 where it was 3.00e-03" in peak and "cosine" not in peak
    assert schedule_jump(saved, TrainConfig(**FAST, steps=60), 30, 0, 60, 16, 1) == ""  # the same schedule
    early = TrainConfig(**{**FAST, "warmup": 100}, steps=200)  # step 2 of a warm-up doubles the rate by itself
    assert schedule_jump(early, TrainConfig(**{**FAST, "warmup": 100}, steps=200), 1, 0, 200, 16, 1) == ""


def test_stretching_a_finished_run_says_the_learning_rate_rises_again(run, runner):
    args = ["train", "--run", str(run.root), *FAST_ARGS]
    assert runner.invoke(app, [*args, "--steps", "8", "--stop-at", "4"]).exit_code == 0
    same = runner.invoke(app, ["train", "--run", str(run.root), "--resume"])  # the same schedule: no note
    assert same.exit_code == 0 and "learning rate rises" not in same.stderr
    longer = runner.invoke(app, ["train", "--run", str(run.root), "--resume", "--steps", "16"])
    assert longer.exit_code == 0, longer.output
    # 8 steps ended at --min-lr 3e-4; step 9 of 16 is partway down a cosine from 3e-3
    last, following = lr_at(7, TrainConfig(**FAST, steps=8), 8), lr_at(8, TrainConfig(**FAST, steps=16), 16)
    assert f"rises from {last:.2e} (step 8, the last trained) to {following:.2e} (step 9)" in longer.stderr
    assert "spans 16 steps where it spanned 8" in longer.stderr


def test_a_state_saved_under_the_earlier_schedule_is_said_not_to_resume_exactly(run, runner):
    args = ["train", "--run", str(run.root), "--steps", "4", *FAST_ARGS]
    assert runner.invoke(app, [*args, "--stop-at", "2"]).exit_code == 0
    with safe_open(run.latest_state, "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert meta.pop("lr_schedule") == "nanogpt"  # what this version writes
    save_file(tensors, run.latest_state, metadata=meta)  # as a version before it wrote
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert "note: the run was saved by an earlier fabric, whose learning-rate schedule differed by a step at each end" in r.stderr


def test_the_lock_makes_a_missing_run_folder_and_leaves_none_behind_when_nothing_was_written(tmp_path, run, runner):
    from fabric_cli.runlock import LOCK_NAME, holding

    fresh = tmp_path / "new" / "run"
    with holding(fresh, "fabric train"):
        assert (fresh / LOCK_NAME).read_text().startswith("fabric train (pid ")  # locked from the start
    assert not (tmp_path / "new").exists()  # made for the block, parent too, and empty again: removed
    r = runner.invoke(app, ["train", "--run", str(fresh), "--data", str(run.tokens), "--steps", "2", *FAST_ARGS])
    assert r.exit_code == 0, r.output
    assert (fresh / LOCK_NAME).read_text() == "" and RunPaths(fresh).latest.is_file()  # trained into it, unlocked


def test_one_trainer_at_a_time_in_a_run_directory(run, runner):
    import fcntl

    from fabric_cli.runlock import LOCK_NAME

    args = ["train", "--run", str(run.root), "--steps", "2", *FAST_ARGS]
    with open(run.root / LOCK_NAME, "a+") as other:  # as another `fabric train` in this run holds it
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("fabric train (pid 4242)\n")
        other.flush()
        busy = runner.invoke(app, args)
        assert busy.exit_code == 1 and busy.stderr == (f"fabric: error: {run.root} is in use by fabric train "
                                                       f"(pid 4242); wait for it to finish (or stop it), or give another --run\n")
        forced = runner.invoke(app, ["tokenize", "--run", str(run.root), "--force", "--vocab-size", "300"])
        assert forced.exit_code == 1 and "is in use by fabric train (pid 4242)" in forced.stderr  # deletes nothing
        assert not run.latest.exists() and not run.metrics.exists()
    done = runner.invoke(app, args)  # released with the file closed, as when a process ends however it ends
    assert done.exit_code == 0, done.output
    assert (run.root / LOCK_NAME).read_text() == ""  # emptied at the end: no stale holder named


def test_a_reader_asking_who_holds_the_run_never_turns_a_trainer_away(tmp_path):
    """holder() takes a shared lock for an instant (probe asks it); a trainer starting at that instant
    waits it out instead of being refused as if the run were in use."""
    import threading

    from fabric_cli.runlock import holder, holding

    root, stop, refused = tmp_path / "run", threading.Event(), []
    with holding(root, "fabric train"):
        (root / "kept").write_text("")  # something written: the folder stays after the block
    poller = threading.Thread(target=lambda: [holder(root) for _ in iter(stop.is_set, True)])
    poller.start()
    try:
        for _ in range(300):
            try:
                with holding(root, "fabric train"):
                    pass
            except InputError as e:
                refused.append(str(e))
    finally:
        stop.set()
        poller.join()
    assert refused == []


def test_restart_checks_every_setting_before_deleting_the_run(run, runner):
    args = ["train", "--run", str(run.root), "--steps", "4", "--eval-interval", "2", "--snapshot-every", "2", *FAST_ARGS]
    assert runner.invoke(app, args).exit_code == 0
    kept = {p: p.read_bytes() for p in [run.latest, run.metrics, *run.snapshots()]}
    for bad, says in ((["--heads", "3"], "--heads"), (["--context", "100000"], "context")):
        r = runner.invoke(app, [*args, "--restart", *bad])
        assert r.exit_code == 1 and says in r.stderr and "Traceback" not in r.output, r.output
        assert {p: p.read_bytes() for p in kept if p.exists()} == kept  # the trained run is untouched


@pytest.mark.parametrize("key, value, says", [
    ("train_config", lambda c: json.dumps({**json.loads(c), "batch_size": "16"}), "its train_config is malformed"),
    ("train_config", lambda c: "[1]", "its train_config is malformed"),
    ("step", lambda c: "x", "its step 'x' is not a number"),
])
def test_a_hand_edited_training_state_is_one_line(run, runner, key, value, says):
    """Each had ended resume (and demo) in a TypeError, AttributeError or ValueError traceback."""
    args = ["train", "--run", str(run.root), "--steps", "2", *FAST_ARGS]
    assert runner.invoke(app, args).exit_code == 0
    with safe_open(str(run.latest_state), framework="pt") as f:
        meta = f.metadata()
    save_file(load_file(run.latest_state), run.latest_state, metadata={**meta, key: value(meta["train_config"])})
    r = runner.invoke(app, ["train", "--run", str(run.root), "--resume", "--steps", "3"])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and says in lines[0] and "use --restart" in lines[0], r.output


@pytest.mark.parametrize("extra, says", [
    (["--steps", "5", "--tokens", "300"], "not both"),
    (["--steps", "5", "--min-lr", "0.01"], "--min-lr 0.01 is above --lr 0.003"),
    (["--steps", "5", "--stop-at", "9"], "--stop-at 9 is outside the run"),
    (["--steps", "5", "--stop-at", "5"], "--stop-at 5 is outside the run"),  # the run ends there by itself
    (["--steps", "5", "--lr", "5e-5"], "--min-lr 0.0003 is above --lr 5e-05"),  # FAST_ARGS: --min-lr 3e-4
    (["--steps", "5", "--seed", str(2**64)], "--seed must be between 0 and"),
    (["--steps", "5", "--seed", "-1"], "--seed must be between 0 and"),
    (["--steps", "5", "--lr", "0", "--min-lr", "0"], "--lr must be a number above 0, got 0"),
    (["--steps", "5", "--lr", "inf"], "--lr must be a number above 0, got inf"),
    (["--steps", "5", "--min-lr", "nan"], "--min-lr must be a number, 0 or more, got nan"),
    (["--steps", "5", "--grad-clip", "nan"], "--grad-clip must be a number, 0 or more, got nan"),
    (["--steps", "5", "--weight-decay", "-0.1"], "--weight-decay must be a number, 0 or more, got -0.1"),
    (["--steps", "5", "--batch-size", "100000000"], "for one micro-step's activations, more than this machine's"),
    # refused before anything is built (each had eaten the machine's memory, or hung building modules)
    (["--steps", "5", "--grad-accum", str(2**64)], "for one step's token ids alone, more than this machine's"),
    (["--steps", "5", "--layers", "99999999999"], "for its weights, gradients and AdamW moments more than this machine's"),
    (["--steps", "5", "--context", "99999999999"], "fewer than one window of context 99,999,999,999 + 1"),
    # a run of 10**23 steps started, its ETA 10**17 hours
    (["--steps", str(10**23)], "--steps must be at most 1,000,000,000, got 100,000,000,000,000,000,000,000"),
    (["--tokens", str(10**23)], "--tokens 100,000,000,000,000,000,000,000 is 781,250,000,000,000,000,000 steps of 128 "
                                "tokens; a run takes at most 1,000,000,000 steps"),
    (["--steps", "5", "--device", ""], "--device is empty; give auto (the default), cpu, cuda, cuda:N or mps"),
])
def test_conflicting_or_impossible_settings_are_refused(run, runner, extra, says):
    r = runner.invoke(app, ["train", "--run", str(run.root), *FAST_ARGS, *extra])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and says in lines[0], r.output
    assert not run.latest.exists() and not run.metrics.exists()


def test_resume_checks_the_settings_it_trains_with_and_steps_replace_a_token_budget(run, runner):
    base = ["train", "--run", str(run.root), "--preset", "tiny", "--batch-size", "8", "--eval-batches", "2",
            "--warmup", "1", "--device", "cpu"]
    first = runner.invoke(app, [*base, "--lr", "5e-5", "--min-lr", "1e-5", "--tokens", "300"])  # 3 steps of 128
    assert first.exit_code == 0 and read_info(run.latest).step == 3, first.output
    assert "note: --tokens 300 is not a whole number of steps of 128 tokens: training 3 steps, 384 tokens" in first.stderr
    more = runner.invoke(app, [*base, "--resume", "--lr", "4e-5", "--steps", "5"])  # the saved --min-lr 1e-5 holds
    assert more.exit_code == 0, more.output
    assert read_info(run.latest).step == 5
    assert "--steps 5 (was 1000), --tokens unset (was 300), --lr 4e-05 (was 5e-05)" in more.stderr


def test_summary_says_what_its_figures_cover_and_a_long_warmup_is_noted(run, runner):
    r = runner.invoke(app, ["train", "--run", str(run.root), *FAST_ARGS, "--steps", "3", "--warmup", "2",
                            "--eval-interval", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert "note: --warmup 2 leaves no steps for the cosine decay in a run of 3" in r.stderr  # steps 1, 2, 3 at 3e-3
    out = json.loads(r.stdout)
    assert out["val_step"] == 3 and 0 < out["train_seconds"] <= out["seconds"]
    assert out["tokens_per_s"] == pytest.approx(out["tokens_seen"] / out["train_seconds"], rel=1e-6)
    # what ran, for a script: the settings (typed or defaulted) and the model's shape
    assert out["settings"]["warmup"] == 2 and out["settings"]["lr"] == 3e-3 and out["settings"]["preset"] == "tiny"
    assert out["model"] == preset("tiny", vocab_size=256).to_dict()
    assert out["gpu"] is None and out["mfu"] is None  # MFU needs a GPU's data-sheet peak
    text = runner.invoke(app, ["train", "--run", str(run.root), *FAST_ARGS, "--steps", "5", "--eval-interval", "2",
                               "--restart", "--stop-at", "3"])
    assert text.exit_code == 0, text.output
    for words in ("(stopped by --stop-at)", "(the last step's batch)", "(evaluated at step 2)", "of training steps",
                  "in the training steps"):
        assert words in text.stdout, words
    assert "stopped by --stop-at at step 3" in text.stderr


def test_compiling_in_the_first_step_is_left_out_of_tokens_per_s(run, monkeypatch):
    """--compile: torch.compile works in the first call, tens of seconds on a CPU. That step's time
    (here a stand-in: torch.compile as identity, the first step made 0.6 s slower) and its tokens
    are left out of tokens/s, of the logged interval and of the summary's training time."""
    import torch

    import fabric_cli.train as train_module

    calls = []

    def slow_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.6)
        return train_step(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)
    monkeypatch.setattr(train_module, "train_step", slow_first)
    r = train(run, TrainConfig(**{**FAST, "log_interval": 4}, steps=4, eval_interval=4, compile=True), progress=False)
    assert r.compile_seconds >= 0.6 and r.seconds - r.train_seconds >= 0.6
    assert r.tokens_per_s == pytest.approx(3 * 8 * 16 / r.train_seconds, rel=1e-6)  # 3 timed steps of 128 tokens
    logged = [m["tokens_per_s"] for m in read_metrics(run.metrics) if m["kind"] == "train"]
    assert len(logged) == 1 and logged[0] > 3 * 8 * 16 / (r.train_seconds + 0.6)  # the 0.6 s is not in it
    assert f"the rest evaluation and saving, and {r.compile_seconds:.1f} s compiling in the first step)" in r.summary()


def test_a_token_budget_resumed_with_another_batch_spends_what_is_left(run, runner):
    base = ["train", "--run", str(run.root), "--preset", "tiny", "--eval-batches", "1", "--warmup", "1", "--device", "cpu"]
    first = runner.invoke(app, [*base, "--batch-size", "8", "--tokens", "5120", "--stop-at", "20"])  # 128 a step
    assert first.exit_code == 0 and read_info(run.latest).tokens_seen == 2560, first.output
    more = runner.invoke(app, [*base, "--resume", "--batch-size", "16"])  # 256 a step: 10 more spend the other half
    assert more.exit_code == 0, more.output
    info = read_info(run.latest)
    assert (info.step, info.tokens_seen) == (30, 5120)
    assert "step          30 / 30" in more.stdout and "not a whole number" not in more.stderr
    # 5,000: 20 steps of 128 spent 2,560; the 2,440 left take 10 steps of 256, which end at 5,120
    again = base + ["--batch-size", "8", "--tokens", "5000", "--stop-at", "20", "--restart"]
    assert runner.invoke(app, again).exit_code == 0
    more = runner.invoke(app, [*base, "--resume", "--batch-size", "16"])
    assert more.exit_code == 0 and read_info(run.latest).tokens_seen == 5120, more.output
    assert ("note: --tokens 5,000 is not a whole number of steps of 256 tokens from the 2,560 seen: training 30 steps, "
            "5,120 tokens") in more.stderr


def test_bf16_autocast_on_the_cpu_is_asked_for_and_kept_to_this_session(run, runner, tmp_path, monkeypatch):
    """--dtype bfloat16 runs the CPU step under bf16 autocast (other numbers than fp32, weights
    still fp32); like --device it is not saved: a resume runs as its own command line says."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # so the tiny model's step takes one thread
    monkeypatch.delenv("FABRIC_THREADS", raising=False)
    base = ["train", "--run", str(run.root), *FAST_ARGS, "--steps", "8", "--eval-interval", "4", "--log-interval", "1"]
    bf16 = runner.invoke(app, [*base, "--dtype", "bfloat16", "--stop-at", "4"])
    assert bf16.exit_code == 0, bf16.output
    assert "bf16 autocast, as --dtype asks" in bf16.stderr and "(10,944 parameters, cpu, 1 thread, bf16 autocast)" in bf16.stdout
    assert all(t.dtype == torch.float32 for t in load_file(run.latest).values())
    other = RunPaths(tmp_path / "fp32")
    write_tokens(other.tokens)
    assert runner.invoke(app, ["train", "--run", str(other.root), *FAST_ARGS, "--steps", "8", "--eval-interval", "4",
                               "--log-interval", "1", "--stop-at", "4"]).exit_code == 0
    a, b = train_losses(run), train_losses(other)
    assert a.keys() == b.keys() and all(math.isfinite(v) for v in a.values()) and a != b
    more = runner.invoke(app, [*base, "--resume", "--json"])  # no --dtype now: fp32, and a note says so
    assert more.exit_code == 0 and json.loads(more.stdout)["dtype"] == "float32", more.output
    assert ("note: the run trained in bf16 autocast until step 4; this session runs fp32 (--dtype bfloat16 then, "
            "auto now)") in more.stderr and "resuming with" not in more.stderr
    with pytest.raises(InputError, match="--dtype must be auto, float32 or bfloat16, got 'float16'"):
        TrainConfig(dtype="float16")


def test_command_line_overrides_token_budget_bar_and_summary(run, runner):
    args = ["train", "--run", str(run.root), *FAST_ARGS, "--layers", "3", "--heads", "4", "--width", "32",
            "--context", "8", "--dropout", "0.1", "--tokens", "300", "--eval-interval", "2", "--log-interval", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    c = read_info(run.latest).config
    assert (c.n_layer, c.n_head, c.n_embd, c.n_ff, c.block_size, c.dropout) == (3, 4, 32, 128, 8, 0.1)
    assert c.bias and "(3 layers, 4 heads, width 32, context 8," in result.stderr  # 4x feed-forward goes unsaid
    assert read_info(run.latest).step == 5  # ceil(300 tokens / (8 sequences x 8 tokens))
    for word in ("5/5", "loss=", "lr=", "tok_s=", "step 2: train loss", "val loss"):  # the bar, the eval lines
        assert word in result.stderr, word
    for word in ("step          5 / 5", "train loss", "val loss", "tokens seen   320", "tokens/s", "model FLOP/s", "GFLOP/s"):
        assert word in result.stdout, word


def test_feed_forward_width_and_no_biases_from_the_command_line(run, runner):
    args = ["train", "--run", str(run.root), *FAST_ARGS, "--steps", "3", "--ff-width", "24", "--no-bias"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    c = read_info(run.latest).config
    assert (c.n_ff, c.bias) == (24, False)
    assert "feed-forward 24, context" in result.stderr and ", no biases)" in result.stderr
    weights = load_file(run.latest)
    assert weights["transformer.h.0.mlp.c_fc.weight"].shape[0] == 24 and not any(k.endswith(".bias") for k in weights)
    shown = runner.invoke(app, ["inspect", "--run", str(run.root)])
    assert shown.exit_code == 0 and "feed-forward 24," in shown.stdout and "no biases" in shown.stdout
    zero = runner.invoke(app, [*args[:-3], "--ff-width", "0"])
    assert zero.exit_code == 1 and "--ff-width must be a positive integer, got 0" in zero.stderr


def test_the_bar_into_a_file_is_not_redrawn_every_tenth_of_a_second(run, runner):
    r = runner.invoke(app, ["train", "--run", str(run.root), *FAST_ARGS, "--steps", "200", "--eval-interval", "200"])
    assert r.exit_code == 0, r.output
    # stderr is not a terminal here: the first frame, one redrawn around the evaluation line, the last
    assert 2 <= r.stderr.count("train:") <= 5 and "200/200" in r.stderr, r.stderr


def test_out_of_memory_names_the_knobs_to_turn(run, runner, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("fabric_cli.train.train_step", out_of_memory)
    result = runner.invoke(app, ["train", "--run", str(run.root), "--steps", "3", *FAST_ARGS])
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("fabric: error: out of memory") and "--batch-size" in line and "--grad-accum" in line
    assert "Traceback" not in result.output and not run.latest.exists()


class _RecordingSGD(torch.optim.SGD):
    """SGD that notes the total gradient norm it was handed (after clipping)."""

    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.seen = torch.nn.utils.get_total_norm(grads).item()
        return super().step(closure)


def test_step_clips_accumulates_and_frees_gradients():
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=64))
    groups, opt = LayerGroups(model, 2), _RecordingSGD(model.parameters(), lr=0.0)  # lr 0: weights stay put
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    whole = train_step(model, opt, [(x, y)], groups, grad_clip=0.0, layer_grad_norms=True)
    assert opt.seen == pytest.approx(whole.grad_norm.item(), rel=1e-5)  # no clipping
    assert whole.layer_grad_norms.shape == (3,) and (whole.layer_grad_norms > 0).all()
    assert all(p.grad is None for p in model.parameters())  # freed, not zeroed
    halves = train_step(model, opt, [(x[:2], y[:2]), (x[2:], y[2:])], groups, grad_clip=0.0)
    assert halves.grad_norm.item() == pytest.approx(whole.grad_norm.item(), rel=1e-4)  # accumulation = one batch
    assert halves.loss.item() == pytest.approx(whole.loss.item(), rel=1e-5)
    clipped = train_step(model, opt, [(x, y)], groups, grad_clip=0.01)
    assert whole.grad_norm.item() > 0.1  # so a clip at 0.01 bites
    assert clipped.grad_norm.item() == pytest.approx(whole.grad_norm.item(), rel=1e-5)  # reported: before clipping
    assert opt.seen == pytest.approx(0.01, rel=1e-3)  # applied: after


def test_step_runs_where_the_device_has_no_fused_foreach_kernels(monkeypatch):
    # MPS has none: there foreach=True is an error, and auto picks MPS on every Apple Silicon Mac
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=64))
    groups, opt = LayerGroups(model, 2), torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    fused = train_step(model, opt, [(x, y)], groups, grad_clip=0.01)
    monkeypatch.setattr("torch.nn.utils.clip_grad._device_has_foreach_support", lambda device: False)
    monkeypatch.setattr("torch.nn.utils.clip_grad._has_foreach_support", lambda tensors, device: False)
    with pytest.raises(RuntimeError, match="foreach=True"):  # the stand-in bites: foreach=True fails as on MPS
        torch.nn.utils.get_total_norm([p.detach() for p in model.parameters()], foreach=True)
    looped = train_step(model, opt, [(x, y)], groups, grad_clip=0.01)
    assert looped.grad_norm.item() == pytest.approx(fused.grad_norm.item(), rel=1e-6)


def test_a_frozen_parameter_is_left_out_of_the_norms_and_stays_put():
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=64))
    model.transformer.wpe.weight.requires_grad_(False)  # as a user fine-tuning with fixed positions would
    before, wte = model.transformer.wpe.weight.clone(), model.transformer.wte.weight.clone()
    groups, opt = LayerGroups(model, 2), make_optimizer(model, TrainConfig(lr=1e-2))
    x, y = torch.randint(0, 64, (4, 16)), torch.randint(0, 64, (4, 16))
    for layer_grad_norms in (True, False):  # the per-layer norms and the total alone: both had passed a None gradient
        stats = train_step(model, opt, [(x, y)], groups, grad_clip=1.0, layer_grad_norms=layer_grad_norms)
        assert torch.isfinite(stats.grad_norm) and stats.grad_norm > 0
    assert torch.equal(model.transformer.wpe.weight, before)
    assert not torch.equal(model.transformer.wte.weight, wte)  # the rest trains
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="every parameter is frozen"):
        LayerGroups(model, 2)


def test_flops_per_token_counts_each_matmul_weight_once():
    c = preset("tiny", vocab_size=256)
    per_layer = 3 * c.n_embd**2 + c.n_embd**2 + 2 * c.n_embd * c.n_ff  # q,k,v; out projection; feed-forward
    lm_head = c.vocab_size * c.n_embd  # tied to wte, but a real matmul: counted once
    attention = 12 * c.n_layer * c.n_embd * c.block_size
    model = GPT(c)
    assert model.flops_per_token() == 6 * (c.n_layer * per_layer + lm_head) + attention
    # the config's arithmetic is the model's own matrices: every Linear, and wte as the LM head
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert c.matmul_params == model.matmul_params() == linear + model.transformer.wte.weight.numel()


def test_missing_tokens_say_run_tokenize(tmp_path, runner):
    result = runner.invoke(app, ["train", "--run", str(tmp_path / "empty"), "--preset", "tiny"])
    assert result.exit_code == 1
    run = tmp_path / "empty"  # the command names the run: its tokens are what --run's train reads
    assert (f"no tokens to train on: {run / 'tokens'} does not exist; run `fabric --run {run} tokenize [FILES]` "
            f"first (no files: the bundled corpus)") in result.stderr
    assert "Traceback" not in result.output
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.bin").write_bytes(b"")
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "half"), "--run", str(tmp_path / "r"), "--preset", "tiny"])
    assert result.exit_code == 1 and f"{tmp_path / 'half'} lacks meta.json, val.bin" in result.stderr
    # a --data folder not named tokens: `fabric tokenize` would write fabric-run/tokens, not it
    assert result.stderr.rstrip().endswith("; --data takes the tokens folder `fabric tokenize` writes (RUN/tokens, "
                                           "with train.bin, val.bin, meta.json)")


def test_bad_token_files_are_refused(tmp_path):
    folder = write_tokens(tmp_path / "t", vocab=100)  # bytes go up to 'y' = 121
    with pytest.raises(InputError, match="different tokenizers"):
        load_tokens(folder)
    paths = RunPaths(tmp_path / "r")
    write_tokens(paths.tokens)
    with pytest.raises(InputError, match="--context"):
        train(paths, TrainConfig(steps=1, context=40000, **FAST), progress=False)


def test_token_files_of_different_tokenize_runs_are_refused(tmp_path):
    folder = write_tokens(tmp_path / "t")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "val.bin").write_bytes((folder / "val.bin").read_bytes() * 2)  # a val.bin that meta.json did not count
    with pytest.raises(InputError, match=rf"val.bin holds {2 * meta['val_tokens']:,} tokens but meta.json says "
                                         rf"{meta['val_tokens']:,}: the files come from different tokenize runs"):
        load_tokens(folder)


def test_resume_with_other_tokens_is_refused(run):
    train(run, TrainConfig(steps=3, eval_interval=3, **FAST), progress=False)
    write_tokens(run.tokens, sha="cd" * 32)
    with pytest.raises(CheckpointError, match="tokenizer mismatch"):
        train(run, TrainConfig(steps=6, device="cpu"), resume=True, explicit={"steps"}, progress=False)
    write_tokens(run.tokens, sha=SHA, vocab=300)
    with pytest.raises(CheckpointError, match="vocabulary mismatch"):
        train(run, TrainConfig(steps=6, device="cpu"), resume=True, explicit={"steps"}, progress=False)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(run, monkeypatch):
    real_forward, calls = GPT.forward, {"n": 0}

    def poisoned(self, idx, targets=None, **kw):
        logits, loss = real_forward(self, idx, targets, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 13:  # training step 13 onwards (one forward per step)
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite \(nan\) at step 13.*step 10\)"):
        train(run, TrainConfig(steps=30, eval_interval=5, **FAST), progress=False)
    assert read_info(run.latest).step == 10  # the save planned at step 15 never happened
    assert all(torch.isfinite(t).all() for t in load_file(run.latest).values())
    assert max(train_losses(run)) == 12  # nothing logged from the poisoned steps


def test_huge_lr_fails_cleanly_on_the_command_line(run, runner):
    result = runner.invoke(app, ["train", "--run", str(run.root), "--steps", "30", *FAST_ARGS, "--lr", "1e9", "--warmup", "0"])
    assert result.exit_code == 1
    assert "non-finite" in result.output and "--lr" in result.output and "Traceback" not in result.output
    assert not run.latest.exists()


def interrupt(args: list[str], metrics: Path, records: int, sig: int) -> tuple[int, str, str]:
    """Run `python -m fabric_cli ARGS`, send `sig` once metrics.jsonl holds `records` lines:
    (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "fabric_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while len(read_metrics(metrics)) < records and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_saves_a_checkpoint_and_says_how_to_resume(run, sig):
    args = ["train", "--run", str(run.root), "--steps", "100000", "--eval-interval", "100000", "--log-interval", "1", *FAST_ARGS]
    code, out, err = interrupt(args, run.metrics, 3, sig)
    assert code == 128 + sig, err
    assert "fabric train --resume" in err and sig.name in err and "Traceback" not in err
    again = "; Ctrl-C again stops at once, without saving" if sig == signal.SIGINT else ""
    assert f"fabric: {sig.name} received: stopping after this step, with a checkpoint{again}\n" in err  # said at once
    info = read_info(run.latest)
    assert info.step >= 3 and info.step == max(train_losses(run))
    assert f"step          {info.step:,}" in out


def test_the_way_to_go_on_names_the_tokens_and_quotes_the_run_and_a_second_ctrl_c_says_what_is_kept(run, runner, tmp_path, monkeypatch):
    spaced = RunPaths(tmp_path / "my run ü")
    args = ["train", "--run", str(spaced.root), "--data", str(run.tokens), "--steps", "6", *FAST_ARGS]
    r = runner.invoke(app, [*args, "--stop-at", "3"])
    assert r.exit_code == 0, r.output
    command = f"fabric train --resume --run '{spaced.root}' --data {run.tokens}"
    assert f"Continue with `{command}`." in r.stderr
    import fabric_cli.train

    def second_ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fabric_cli.train, "train", second_ctrl_c)
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 130 and r.stderr == (f"fabric: interrupted (Ctrl-C); the run's checkpoint (step 3) is kept, "
                                               f"nothing after it was saved. Go on with `{command}`.\n")
    r = runner.invoke(app, [*args, "--restart"])  # stopped while --restart still checked: the old run is untouched
    assert r.exit_code == 130 and r.stderr == ("fabric: interrupted (Ctrl-C) before --restart deleted anything: the run "
                                               "is as it was; the same command starts over\n")
    assert read_info(spaced.latest).step == 3


def test_the_resume_command_names_what_the_next_shell_needs(monkeypatch):
    from fabric_cli.cli.train import _resume_command

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _resume_command(RunPaths(Path("fabric-run")), None) == "fabric train --resume"
    monkeypatch.setenv("FABRIC_RUN", "runs/a b")  # set for one command: the next shell may not have it
    assert _resume_command(RunPaths.resolve(), None) == "fabric train --resume --run 'runs/a b'"
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun: the same launch, the run in FABRIC_RUN
    assert _resume_command(RunPaths.resolve(), Path("t/tokens")) == (
        "FABRIC_RUN='runs/a b' torchrun --nproc_per_node=2 -m fabric_cli train --resume --data t/tokens")


def test_a_ctrl_c_cannot_fall_between_a_checkpoints_two_files(tmp_path, monkeypatch):
    """Weights and training state move into place together: a Ctrl-C while they move (a second
    Ctrl-C during the final save) arrives after both, so the pair stays one moment of the run."""
    real, moved = os.replace, []

    def replace(src, dst):
        if not moved:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right before the first move
        moved.append(Path(dst).name)
        real(src, dst)

    a, b = tmp_path / "latest.state.safetensors", tmp_path / "latest.safetensors"
    a.write_text("old state"), b.write_text("old weights")
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with atomic_paths(a, b) as (ta, tb):
            ta.write_text("new state"), tb.write_text("new weights")
    assert moved == [a.name, b.name] and (a.read_text(), b.read_text()) == ("new state", "new weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.name, b.name])  # no temporary file left


def test_ddp_two_processes_track_one_process(tmp_path, runner):
    """2 CPU ranks x 4 sequences draw the same global batch as 1 process x 8: same losses up to rounding."""
    common = ["--preset", "tiny", "--steps", "20", "--warmup", "2", "--lr", "3e-3", "--min-lr", "3e-4",
              "--eval-interval", "10", "--eval-batches", "2", "--log-interval", "1", "--device", "cpu"]
    single, ddp = RunPaths(tmp_path / "single"), RunPaths(tmp_path / "ddp")
    for p in (single, ddp):
        write_tokens(p.tokens)
    train(single, TrainConfig(steps=20, eval_interval=10, **FAST), progress=False)  # batch 8
    # torchrun's own parser would take `--run` for its `--run-path`: the run directory goes in FABRIC_RUN
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "fabric_cli", "train", *common, "--batch-size", "4", "--json"],
        env={**ENV, "FABRIC_RUN": str(ddp.root)}, capture_output=True, text=True, timeout=120,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    assert json.loads(launched.stdout)["world_size"] == 2  # only rank 0 printed the result
    a, b = train_losses(single), train_losses(ddp)
    assert sorted(a) == sorted(b) == list(range(1, 21))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-4
    assert a[20] < a[1] - 0.5
    va = [r["val_loss"] for r in read_metrics(single.metrics) if r["kind"] == "eval"]
    vb = [r["val_loss"] for r in read_metrics(ddp.metrics) if r["kind"] == "eval"]
    assert np.allclose(va, vb, atol=1e-4)
    # resumed by one process: half the batch a step, said rather than silent
    more = runner.invoke(app, ["train", "--run", str(ddp.root), "--resume", "--steps", "21"])
    assert more.exit_code == 0, more.output
    assert ("note: the run trained over 2 processes until step 20, 128 tokens a step; this session runs 1 process, "
            "64 tokens a step") in more.stderr


def test_lr_schedule_is_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup=10, steps=111)
    lrs = [lr_at(s, cfg, 111) for s in range(111)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)
    assert all(a < b for a, b in zip(lrs[:11], lrs[1:11]))  # rising to the peak at step 10, reached once
    assert lrs[10] == pytest.approx(1.0) and lrs.count(max(lrs)) == 1
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))  # then falling
    assert lrs[60] == pytest.approx(0.55)  # half-way through the decay, half-way between the two
    assert lrs[110] == pytest.approx(0.1)  # the last step trained is at --min-lr, as --help says
    no_warmup = TrainConfig(lr=1.0, min_lr=0.1, warmup=0)
    assert [round(lr_at(s, no_warmup, 3), 6) for s in range(3)] == [1.0, 0.55, 0.1]  # the peak at once
    assert lr_at(0, no_warmup, 1) == 1.0  # a one-step run: the peak, nothing to decay over
    assert [round(lr_at(s, cfg, 5), 6) for s in range(5)] == [round((s + 1) / 11, 6) for s in range(5)]  # warm-up only


def test_weight_decay_only_on_matrices():
    model = GPT(TrainConfig(preset="tiny").model_config(64))
    opt = make_optimizer(model, TrainConfig(weight_decay=0.3))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names and all(n.endswith("weight") and ("attn" in n or "mlp" in n) for n in names)
    assert "transformer.wte.weight" not in names and not any("ln_" in n for n in names)


def test_batches_are_a_function_of_the_step_and_ranks_split_the_global_batch(run):
    data = load_tokens(run.tokens)
    x1, y1 = data.batch("train", 5, 0, 8, 16, seed=3)
    x2, _ = data.batch("train", 5, 0, 8, 16, seed=3)
    x3, _ = data.batch("train", 6, 0, 8, 16, seed=3)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.equal(x1[:, 1:], y1[:, :-1])
    halves = [data.batch("train", 5, 0, 4, 16, seed=3, rank=r, world_size=2)[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), x1)


def test_resume_finds_the_tokens_a_run_was_given_with_data(tmp_path, runner):
    """--resume without --data looked in the run's own tokens/, which a --data run does not have."""
    tokens = write_tokens(tmp_path / "elsewhere" / "tokens")
    run = RunPaths(tmp_path / "run")
    r = runner.invoke(app, ["train", "--run", str(run.root), "--data", str(tokens), "--steps", "8", "--stop-at", "4", *FAST_ARGS])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--run", str(run.root), "--resume"])
    assert r.exit_code == 0, r.output
    assert f"note: training on {tokens.resolve()}, the tokens this run was trained on (--data names others)" in r.stderr
    assert read_info(run.latest).step == 8
    tokens.rename(tmp_path / "moved")
    r = runner.invoke(app, ["train", "--run", str(run.root), "--resume", "--steps", "12"])
    assert r.exit_code == 1 and r.stderr == (f"fabric: error: --resume: this run trained on the tokens in {tokens.resolve()}, "
                                             f"and they are not there now; pass --data with the folder they moved to\n")
    (tmp_path / "moved").rename(tokens)
    write_tokens(run.tokens)  # the run gains tokens of its own: they win, and the note says which it trained on
    r = runner.invoke(app, ["train", "--run", str(run.root), "--resume", "--steps", "10"])
    assert r.exit_code == 0, r.output
    assert (f"note: training on {run.tokens}, the run's own tokens; it was trained on {tokens.resolve()} "
            f"(--data {tokens.resolve()} goes on with those)") in r.stderr


def test_tokens_of_another_tokenizer_are_refused_and_a_runs_own_tokenizer_comes_along(tmp_path, runner):
    """Generate and probe read a run's checkpoints with its tokenizer.json: training must not make them disagree."""
    other = RunPaths(tmp_path / "other")
    other.root.mkdir()
    other.tokenizer.write_text('{"model": "the other run\'s"}')
    write_tokens(other.tokens, sha=file_sha256(other.tokenizer))
    mine = RunPaths(tmp_path / "mine")
    mine.root.mkdir()
    train_tokenizer(["a tokenizer of this run's own"], vocab_size=270).save(str(mine.tokenizer))
    args = ["--data", str(other.tokens), "--steps", "2", *FAST_ARGS]
    r = runner.invoke(app, ["train", "--run", str(mine.root), *args])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "wrong tokenizer" in r.stderr, r.output
    assert not mine.checkpoints.exists()
    mine.tokenizer.write_text("{")  # damaged, not another tokenizer: tokenize --force (starting over) is not the fix
    r = runner.invoke(app, ["train", "--run", str(mine.root), *args])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "--force" not in r.stderr, r.output
    assert r.stderr.startswith(f"fabric: error: this run's tokenizer is damaged: {mine.tokenizer} is not a Hugging Face "
                               f"tokenizer.json (") and "put back the tokenizer.json that" in r.stderr
    mine.tokenizer.unlink()
    mine.tokenizer.mkdir()
    r = runner.invoke(app, ["train", "--run", str(mine.root), *args])
    assert r.exit_code == 1 and f"this run's {mine.tokenizer} is not a file; put back the tokenizer.json" in r.stderr
    mine.tokenizer.rmdir()
    fresh = RunPaths(tmp_path / "fresh")
    r = runner.invoke(app, ["train", "--run", str(fresh.root), *args])
    assert r.exit_code == 0, r.output
    assert fresh.tokenizer.read_bytes() == other.tokenizer.read_bytes() and fresh.latest.is_file()
    other.tokenizer.unlink()  # tokens whose tokenizer is nowhere to be found: trained, with a note
    bare = RunPaths(tmp_path / "bare")
    r = runner.invoke(app, ["train", "--run", str(bare.root), *args])
    assert r.exit_code == 0 and "generate and probe will need --tokenizer" in r.stderr and not bare.tokenizer.exists()


def test_summary_gives_mfu_against_the_gpus_bf16_peak():
    """On CUDA in bf16 the summary reads as nanoGPT's does: model FLOP utilisation per GPU."""
    from fabric_cli.device import peak_bf16
    from fabric_cli.train import TrainResult

    flops = 0.412 * peak_bf16("NVIDIA H100 80GB HBM3")
    r = TrainResult(step=10, max_steps=10, tokens_seen=1, train_loss=1.0, val_loss=1.0, seconds=1.0, train_seconds=1.0,
                    tokens_per_s=1.0, flops_per_s=flops, params=1, device="cuda", world_size=1, checkpoint="c",
                    gpu="NVIDIA H100 80GB HBM3", mfu=0.412)
    assert "model FLOP/s  407.6 TFLOP/s (1 parameters, cuda); MFU 41.2% of the NVIDIA H100 80GB HBM3's dense bf16 peak" in r.summary()
    assert peak_bf16("NVIDIA H100 PCIe") == 756e12 and peak_bf16("NVIDIA L4") == 121e12 and peak_bf16("Tesla T4") is None


def test_an_edited_token_count_in_a_checkpoint_is_a_note_not_a_crash(tmp_path):
    """A checkpoint's recorded token counts are read as they are: an edited one ("x") had crashed the
    resume with a format error."""
    from types import SimpleNamespace

    from fabric_cli.runplan import other_tokens_note

    data = SimpleNamespace(identity={"train": 100, "val": 10, "sources": None}, folder=tmp_path)
    info = SimpleNamespace(extra={"tokens": {"train": "x", "val": 10, "sources": None}})
    note = other_tokens_note(RunPaths(tmp_path), info, data)
    assert "train.bin an unknown count of -> 100 tokens" in note and "val.bin" not in note
