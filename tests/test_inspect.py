"""fabric inspect: config, parameters per component, losses, and the gradient-flow table."""

from __future__ import annotations

import json

import pytest

from fabric_cli.checkpoint import CheckpointInfo, save_weights
from fabric_cli.cli import app
from fabric_cli.config import RunPaths, TrainConfig, preset
from fabric_cli.inspection import gradient_flow, inspect_checkpoint
from fabric_cli.model import GPT
from fabric_cli.train import train
from test_train import FAST, write_tokens


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> RunPaths:
    paths = RunPaths(tmp_path_factory.mktemp("inspect") / "run")
    write_tokens(paths.tokens)
    train(paths, TrainConfig(steps=12, eval_interval=6, snapshot_every=6, **{**FAST, "log_interval": 3}), progress=False)
    return paths


def test_report_counts_every_parameter_by_component(trained):
    report = inspect_checkpoint(trained.latest)
    model = GPT(preset("tiny", vocab_size=256))
    c, n = model.config, report["parameters"]
    assert n["total"] == model.num_params()
    assert n["embeddings"] == (c.vocab_size + c.block_size) * c.n_embd  # the LM head is tied: not counted twice
    assert n["attention"] == c.n_layer * (4 * c.n_embd * c.n_embd + 4 * c.n_embd)
    assert n["feed_forward"] == c.n_layer * (2 * c.n_embd * c.n_ff + c.n_ff + c.n_embd)
    assert n["norms"] == (2 * c.n_layer + 1) * 2 * c.n_embd
    assert report["step"] == 12 and report["tokens_seen"] == 12 * 8 * 16
    assert report["config"]["n_layer"] == 2 and report["losses"]["val_loss"] > 0


def test_gradient_flow_uses_first_middle_and_last_logged_steps(trained, runner):
    result = runner.invoke(app, ["inspect", "--run", str(trained.root), "--json"])
    assert result.exit_code == 0, result.output
    flow = json.loads(result.output)["gradient_flow"]
    assert flow["layers"] == ["emb", "0", "1"]
    assert flow["steps"] == [3, 9, 12]  # logged at 3, 6, 9, 12
    assert all(len(col) == 3 and all(v > 0 for v in col) for col in flow["norms"])
    text = runner.invoke(app, ["inspect", "--run", str(trained.root)]).output
    for word in ("embeddings", "attention", "feed-forward", "norms", "step 12", "gradient flow", "val"):
        assert word in text


def test_a_snapshot_reads_only_the_metrics_up_to_its_step(trained):
    report = inspect_checkpoint(trained.snapshot(6))
    assert report["step"] == 6 and report["gradient_flow"]["steps"] == [3, 6]


def test_vanishing_and_exploding_layers_are_flagged(tmp_path, runner):
    paths = RunPaths(tmp_path / "run")
    model = GPT(preset("tiny", vocab_size=64, n_layer=4))
    save_weights(paths.latest, model, CheckpointInfo(model.config, step=30))
    rows = [[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2e-5, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 500.0]]
    paths.metrics.write_text("".join(
        json.dumps({"kind": "train", "step": 10 * (i + 1), "loss": 1.0, "grad_norm_layers": r}) + "\n" for i, r in enumerate(rows)
    ) + '{"kind": "train", "step": 40, "loss"\n')  # a line cut short by a kill is skipped
    report = json.loads(runner.invoke(app, ["inspect", str(paths.latest), "--json"]).output)
    flags = {(f["step"], f["layer"], f["flag"]) for f in report["gradient_flow"]["flags"]}
    assert flags == {(20, "0", "vanishing"), (30, "3", "exploding")}
    text = runner.invoke(app, ["inspect", str(paths.latest)]).output
    assert "layer 0 at step 20: vanishing" in text and "layer 3 at step 30: exploding" in text


def test_healthy_norms_raise_no_flag():
    recs = [{"kind": "train", "step": s, "grad_norm_layers": [0.5, 0.2, 0.3]} for s in range(1, 6)]
    assert gradient_flow(recs)["flags"] == [] and gradient_flow([]) is None


def test_without_metrics_or_checkpoint(tmp_path, runner):
    path = tmp_path / "w.safetensors"
    model = GPT(preset("tiny", vocab_size=64))
    save_weights(path, model, CheckpointInfo(model.config, step=3))
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0 and "no gradient norms logged" in result.output
    missing = runner.invoke(app, ["inspect", "--run", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "fabric train" in missing.output
