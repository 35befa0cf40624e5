"""fabric inspect: config, parameters per component, losses, and the gradient-flow table."""

from __future__ import annotations

import json

import pytest
import torch

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fabric_cli.checkpoint import CheckpointInfo, save_weights
from fabric_cli.cli import app
from fabric_cli.config import TrainConfig, preset
from fabric_cli.inspection import gradient_flow, inspect_checkpoint
from fabric_cli.metrics import read_metrics
from fabric_cli.model import GPT
from fabric_cli.rundir import RunPaths
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
    assert flow["layers"] == ["emb+head", "0", "1"]
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


def test_nan_inf_and_negative_norms_are_flagged_and_another_models_metrics_are_not_read(tmp_path, runner):
    """NaN, inf and -1 were listed, then 'no layer below 0.001x or above 100x the median: gradients flow'."""
    paths = RunPaths(tmp_path / "run")
    model = GPT(preset("tiny", vocab_size=64))  # 2 layers: 3 entries a record
    save_weights(paths.latest, model, CheckpointInfo(model.config, step=30))

    def write(rows):
        paths.metrics.write_text("".join(json.dumps({"kind": "train", "step": 10 * (i + 1), "loss": 1.0})[:-1]
                                         + f', "grad_norm_layers": [{", ".join(r)}]}}\n' for i, r in enumerate(rows)))

    write([["1.0", "1.0", "1.0"], ["1.0", "NaN", "1e400"], ["-1.0", "1.0", "1.0"]])  # 1e400 reads as inf
    strict = runner.invoke(app, ["inspect", str(paths.latest), "--json"]).stdout  # JSON has no NaN: null stands in
    report = json.loads(strict, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))
    flags = {(f["step"], f["layer"], f["flag"]) for f in report["gradient_flow"]["flags"]}
    assert flags == {(20, "0", "not finite"), (20, "1", "not finite"), (30, "emb+head", "not a norm")}
    text = runner.invoke(app, ["inspect", str(paths.latest)]).output
    assert "layer 0 at step 20: not finite" in text and "gradients flow" not in text
    write([["1.0"] * 9] * 3)  # 8 layers' norms for a 2-layer model
    report = json.loads(runner.invoke(app, ["inspect", str(paths.latest), "--json"]).output)
    assert report["gradient_flow"] is None and report["gradient_flow_note"] == (
        f"{paths.metrics} logs gradient norms of 8 layers, and this checkpoint has 2: they are another model's; "
        f"name this run's metrics.jsonl with --metrics")


def test_nan_weights_are_named_as_generate_and_probe_would_refuse_them(tmp_path, runner):
    model = GPT(preset("tiny", vocab_size=64))
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")
    path = tmp_path / "w.safetensors"
    save_weights(path, model, CheckpointInfo(model.config, step=3))
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 0 and ("  ! NaN or infinite values in transformer.h.1.mlp.c_fc.weight: generate and probe "
                                 "refuse this checkpoint; use a snapshot in checkpoints/, or retrain") in r.stdout
    assert json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).stdout)["nonfinite_tensors"] == [
        "transformer.h.1.mlp.c_fc.weight"]


def test_a_runs_metrics_of_garbage_is_said_to_be_unreadable(tmp_path, runner):
    """Random bytes as the run's metrics.jsonl read as 'no gradient norms logged at or before step 30'."""
    paths = RunPaths(tmp_path / "run")
    model = GPT(preset("tiny", vocab_size=64))
    save_weights(paths.latest, model, CheckpointInfo(model.config, step=30))
    paths.metrics.write_bytes(bytes(range(256)) * 4)
    report = json.loads(runner.invoke(app, ["inspect", str(paths.latest), "--json"]).stdout)
    assert report["gradient_flow_note"] == (f"no gradient norms: {paths.metrics} holds no readable record (not fabric's "
                                            f"JSON lines: damaged, or another file); name the run's metrics.jsonl with --metrics")


def test_healthy_norms_raise_no_flag():
    recs = [{"kind": "train", "step": s, "grad_norm_layers": [0.5, 0.2, 0.3]} for s in range(1, 6)]
    assert gradient_flow(recs)["flags"] == [] and gradient_flow([]) is None


def refused(result) -> str:
    """The one error line of a command that must fail cleanly: exit 1, nothing on stdout, no traceback."""
    assert result.exit_code == 1 and result.stdout == "", result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fabric: error: "), result.stderr
    return lines[0]


def test_without_metrics_or_checkpoint(tmp_path, runner):
    path = tmp_path / "w.safetensors"
    model = GPT(preset("tiny", vocab_size=64))
    save_weights(path, model, CheckpointInfo(model.config, step=3))
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert (f"gradient flow: no gradient norms: {path} is not inside a run's checkpoints/ folder; "
            f"name its metrics.jsonl with --metrics") in result.stdout
    line = refused(runner.invoke(app, ["inspect", "--run", str(tmp_path / "nothing")]))
    assert line.startswith(f"fabric: error: no run directory {tmp_path / 'nothing'} (looking for its checkpoint ")
    assert "check --run (or $FABRIC_RUN); a new run starts with `fabric --run" in line and "--checkpoint" not in line
    (tmp_path / "trained-nothing").mkdir()  # a run folder that exists, without a checkpoint
    line = refused(runner.invoke(app, ["inspect", "--run", str(tmp_path / "trained-nothing")]))
    assert "fabric train" in line and "give a weights file or a run directory" in line and "--checkpoint" not in line


def test_a_named_metrics_file_must_exist_and_be_json_lines(trained, tmp_path, runner):
    def inspect_with(metrics):
        return runner.invoke(app, ["inspect", "--run", str(trained.root), "--metrics", str(metrics)])

    assert f"metrics file {tmp_path / 'nothere.jsonl'} does not exist" in refused(inspect_with(tmp_path / "nothere.jsonl"))
    (tmp_path / "small.txt").write_text("step 3: loss 4.2\nstep 6: loss 3.9\n")
    assert "small.txt is not JSON lines: line 1 is not a JSON object" in refused(inspect_with(tmp_path / "small.txt"))
    assert "cannot be read as text" in refused(inspect_with(trained.root))  # a directory
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n  \n")):
        (tmp_path / name).write_text(text)
        line = refused(inspect_with(tmp_path / name))
        assert f"metrics file {tmp_path / name} is empty" in line
        assert line.endswith("or leave out --metrics to read the one of the checkpoint's run")
    (tmp_path / "meta.json").write_text('{"vocab": 5}\n')  # JSON lines, but not metrics
    assert ("meta.json holds no metrics: line 1 is a JSON object without a \"kind\" and an integer \"step\""
            in refused(inspect_with(tmp_path / "meta.json")))
    (tmp_path / "mixed.jsonl").write_text(trained.metrics.read_text() + '{"kind": "eval", "step": "12"}\n')
    assert "mixed.jsonl holds no metrics: line " in refused(inspect_with(tmp_path / "mixed.jsonl"))
    cut = tmp_path / "cut.jsonl"  # a copy whose last line a kill cut short still reads
    cut.write_text(trained.metrics.read_text() + '{"kind": "train", "st')
    result = inspect_with(cut)
    assert result.exit_code == 0, result.output
    report = json.loads(runner.invoke(app, ["inspect", "--run", str(trained.root), "--metrics", str(cut), "--json"]).stdout)
    assert report["metrics"] == str(cut) and report["gradient_flow"]["steps"] == [3, 9, 12]


def test_a_snapshot_older_than_every_logged_norm_says_so(trained, runner):
    result = runner.invoke(app, ["inspect", str(trained.snapshot(0))])
    assert result.exit_code == 0, result.output
    assert f"gradient flow: no gradient norms logged at or before step 0 in {trained.metrics}" in result.stdout
    assert "does not exist" not in result.stdout and "not found" not in result.stdout


def test_a_run_directory_is_read_as_its_latest_checkpoint(trained, tmp_path, runner):
    result = runner.invoke(app, ["inspect", str(trained.root), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["checkpoint"] == str(trained.latest) and report["step"] == 12
    assert report["metrics"] == str(trained.metrics) and report["gradient_flow"]["steps"] == [3, 9, 12]
    line = refused(runner.invoke(app, ["inspect", str(tmp_path)]))
    assert f"{tmp_path} is a folder without checkpoints/latest.safetensors" in line


def test_the_training_state_file_points_to_the_weights_beside_it(trained, runner):
    line = refused(runner.invoke(app, ["inspect", str(trained.latest_state)]))
    assert "training state" in line and f"pass the weights file beside it, {trained.latest}" in line


def test_a_checkpoint_that_does_not_fit_its_config_is_refused(trained, tmp_path, runner):
    """inspect shows what generate and probe can load: a tensor cut out or reshaped is named."""
    with safe_open(str(trained.latest), framework="pt") as f:
        meta = f.metadata()  # the config the model is rebuilt from
    tensors = load_file(trained.latest)
    cut = {k: v for k, v in tensors.items() if k != "transformer.h.1.mlp.c_fc.bias"}
    save_file(cut, tmp_path / "cut.safetensors", metadata=meta)
    line = refused(runner.invoke(app, ["inspect", str(tmp_path / "cut.safetensors")]))
    assert "does not fit the model: missing ['transformer.h.1.mlp.c_fc.bias']" in line
    tensors["transformer.ln_f.weight"] = tensors["transformer.ln_f.weight"][:-1].clone()
    save_file(tensors, tmp_path / "narrow.safetensors", metadata=meta)
    line = refused(runner.invoke(app, ["inspect", str(tmp_path / "narrow.safetensors")]))
    assert "tensor transformer.ln_f.weight has shape (15,), the model expects (16,)" in line


@pytest.mark.parametrize("field, value, says", [
    ("format_version", "1.0", "format_version '1.0' is not a whole number; it was not written by fabric"),
    ("config", '{"n_layer": "2"}', "metadata is malformed (model n_layer must be an integer, got '2')"),
    ("config", '{"n_layer": 2.5}', "metadata is malformed (model n_layer must be an integer, got 2.5)"),
    ("config", '{"bias": "no"}', "metadata is malformed (model bias must be true or false, got 'no')"),
    ("extra", "[1]", "metadata is malformed (extra is list, not an object)"),
    # a config no model is built for: refused from the file's header (these had hung, or failed in the allocator)
    ("config", '{"n_layer": 99999999999}', "its config says 99,999,999,999 layers but its tensors hold 2"),
    ("config", '{"block_size": 10000000000}', "tensor transformer.wpe.weight has shape (16, 16), the model expects (10000000000, 16)"),
    # a config cut down to one key: the defaults (4096 x 128) stood in for the rest, and the error blamed the tensors
    ("config", '={"n_layer": 2}', "metadata is malformed (config lacks n_head, n_embd, block_size, vocab_size)"),
    ("step", "-5", "metadata is malformed (step -5 and tokens_seen 1,536 must be 0 or more)"),
])
def test_malformed_metadata_is_one_line_not_a_traceback(trained, tmp_path, runner, field, value, says):
    with safe_open(str(trained.latest), framework="pt") as f:
        meta = f.metadata()
    if field == "config" and not value.startswith("="):  # a hand-edited config: one value changed
        value = json.dumps({**json.loads(meta["config"]), **json.loads(value)})
    value = value.removeprefix("=")  # "=...": the whole value replaced
    save_file(load_file(trained.latest), tmp_path / "edited.safetensors", metadata={**meta, field: value})
    assert says in refused(runner.invoke(app, ["inspect", str(tmp_path / "edited.safetensors")]))


def test_the_step_loss_and_the_evaluation_losses_are_told_apart(trained, runner):
    records = [json.loads(line) for line in trained.metrics.read_text().splitlines()]
    last_train = [r for r in records if r["kind"] == "train"][-1]
    last_eval = [r for r in records if r["kind"] == "eval"][-1]
    losses = json.loads(runner.invoke(app, ["inspect", "--run", str(trained.root), "--json"]).stdout)["losses"]
    assert losses == {"step_loss": last_train["loss"], "eval_step": 12,
                      "eval_train_loss": last_eval["train_loss"], "val_loss": last_eval["val_loss"]}
    text = runner.invoke(app, ["inspect", "--run", str(trained.root)]).stdout
    assert f"step loss     {last_train['loss']:.4f} (the training batch of step 12 alone)" in text
    assert f"eval loss     train {last_eval['train_loss']:.4f}, val {last_eval['val_loss']:.4f} (evaluation at step 12" in text


def write_metrics(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_checkpoint_outside_a_run_reads_no_foreign_metrics(tmp_path, runner):
    """x/exports/ck.safetensors: x/metrics.jsonl belongs to no run of it, so it is read only when named."""
    path = tmp_path / "exports" / "ck.safetensors"
    model = GPT(preset("tiny", vocab_size=64))
    save_weights(path, model, CheckpointInfo(model.config, step=8, extra={"val_loss": 9.0}))
    write_metrics(tmp_path / "metrics.jsonl", [
        {"kind": "train", "step": 4, "loss": 3.0, "grad_norm_layers": [1.0, 1.0, 1.0]},
        {"kind": "eval", "step": 6, "val_loss": 2.5, "train_loss": 2.7},
    ])
    report = json.loads(runner.invoke(app, ["inspect", str(path), "--json"]).stdout)
    assert report["metrics"] is None and report["gradient_flow"] is None
    assert report["losses"] == {"step_loss": None, "eval_step": None, "eval_train_loss": None, "val_loss": 9.0}
    assert report["gradient_flow_note"] == (f"no gradient norms: {path} is not inside a run's checkpoints/ folder; "
                                            f"name its metrics.jsonl with --metrics")
    text = runner.invoke(app, ["inspect", str(path)]).stdout
    assert "eval loss     train -, val 9.0000 (val: stored in the checkpoint; no evaluation in the metrics)" in text
    named = json.loads(runner.invoke(app, ["inspect", str(path), "--metrics", str(tmp_path / "metrics.jsonl"), "--json"]).stdout)
    assert named["metrics"] == str(tmp_path / "metrics.jsonl") and named["gradient_flow"]["steps"] == [4]


def test_a_folder_named_checkpoints_is_a_run_only_beside_what_fabric_wrote(tmp_path):
    """RUN/checkpoints/x.safetensors names RUN only when RUN holds metrics, a tokenizer or tokens:
    ~/models/checkpoints/ is not a run to read metrics from or write a probe report into."""
    ck = tmp_path / "models" / "checkpoints" / "x.safetensors"
    assert RunPaths.of_checkpoint(ck) is None
    for made in ("metrics.jsonl", "tokenizer.json", "tokens/meta.json"):
        path = tmp_path / made.replace("/", "-") / "checkpoints" / "x.safetensors"
        (path.parents[1] / made).parent.mkdir(parents=True, exist_ok=True)
        (path.parents[1] / made).write_text("{}")
        assert RunPaths.of_checkpoint(path).root == path.parents[1]
    assert RunPaths.of_checkpoint(tmp_path / "metrics.jsonl-x" / "x.safetensors") is None  # not in checkpoints/


def test_the_eval_loss_line_is_one_evaluation(tmp_path, runner):
    """The checkpoint's stored val loss (9.0) never sits beside another evaluation's train loss."""
    paths = RunPaths(tmp_path / "run")
    model = GPT(preset("tiny", vocab_size=64))
    save_weights(paths.latest, model, CheckpointInfo(model.config, step=8, extra={"train_loss": 3.1, "val_loss": 9.0}))
    write_metrics(paths.metrics, [
        {"kind": "eval", "step": 6, "val_loss": 2.5, "train_loss": 2.7},
        {"kind": "eval", "step": 10, "val_loss": 1.5, "train_loss": 1.7},  # after the checkpoint: not its evaluation
    ])
    losses = json.loads(runner.invoke(app, ["inspect", str(paths.latest), "--json"]).stdout)["losses"]
    assert losses == {"step_loss": 3.1, "eval_step": 6, "eval_train_loss": 2.7, "val_loss": 2.5}
    text = runner.invoke(app, ["inspect", str(paths.latest)]).stdout
    assert "eval loss     train 2.7000, val 2.5000 (evaluation at step 6," in text
    write_metrics(paths.metrics, [{"kind": "train", "step": 8, "loss": 3.1}])  # no evaluation: the stored value
    losses = json.loads(runner.invoke(app, ["inspect", str(paths.latest), "--json"]).stdout)["losses"]
    assert losses == {"step_loss": 3.1, "eval_step": None, "eval_train_loss": None, "val_loss": 9.0}


def test_garbled_metrics_lines_are_skipped(trained, tmp_path):
    """Bytes that are not UTF-8, or a record whose fields have the wrong types, are skipped like a
    line cut short (they had raised UnicodeDecodeError and TypeError)."""
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(trained.metrics.read_bytes() + b'\xff\xfe{"kind": "train"\n{"kind": "train", "step": "x"}\n'
                    b'{"kind": "train", "step": 13, "grad_norm_layers": ["a"]}\n')
    records = read_metrics(bad)  # what inspect and train --resume read a run's metrics.jsonl with
    assert records == read_metrics(trained.metrics)
    assert gradient_flow(records)["steps"] == [3, 9, 12]


def test_a_first_command_in_an_empty_folder_points_to_demo_and_tokenize(tmp_path, runner, monkeypatch):
    """No --run, no $FABRIC_RUN, no fabric-run here: a new user's first step, not a mistyped --run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FABRIC_RUN", raising=False)
    for command in (["inspect"], ["probe"], ["generate", "hi"]):
        line = refused(runner.invoke(app, command))
        assert line.startswith("fabric: error: no run directory fabric-run here "), line
        assert "`fabric demo` makes one on the bundled corpus, or `fabric tokenize [FILES]` then `fabric train`" in line
