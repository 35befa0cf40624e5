"""`fabric probe` end to end on tiny checkpoints written by the test (CliRunner)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from test_probe_world import make_tokenizer, planted_model, random_model, write_run, write_suite
from typer.testing import CliRunner

from fabric_cli.cli import app
from fabric_cli.config import ProbeConfig
from fabric_cli.device import choose_device
from fabric_cli.rundir import RunPaths, probes_dir


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run whose latest checkpoint has the planted head; snapshots at 100 (random), 200, 300."""
    root = tmp_path_factory.mktemp("probe")
    tok = make_tokenizer()
    run = root / "run"
    write_run(run, tok, planted_model(tok), step=300,
              snapshots={100: random_model(tok, seed=0, std=0.3), 200: planted_model(tok, strength=1.5),
                         300: planted_model(tok)})
    write_suite(root / "toy.jsonl")
    noisy = root / "mine.txt"
    noisy.write_text("# hand-written\n[The queen] greeted <the king> before {she} sang. || sang | shouted\n"
                     "{She} greeted [the queen] before the king sang.\n", encoding="utf-8")
    rand = root / "random"
    write_run(rand, tok, random_model(tok, seed=1), step=50)
    return {"run": str(run), "suite": str(root / "toy.jsonl"), "noisy": str(noisy), "random": str(rand)}


def probe_text(run, path: Path, text: str, *args):
    """`fabric probe` on prompts in the markup, written to `path`."""
    path.write_text(text, encoding="utf-8")
    return CliRunner().invoke(app, ["probe", "--run", str(run), "--prompts", str(path), *args])


def probe(world, *args, run=None):
    result = CliRunner().invoke(app, ["probe", "--run", run or world["run"], "--prompts", world["suite"], *args])
    return result


def test_ranking_names_the_planted_head_and_writes_the_report(world):
    r = probe(world)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    first = lines[lines.index(next(x for x in lines if x.strip().startswith("rank"))) + 1].split()
    assert first[:3] == ["1", "1.2", "100.0%"]
    assert "[100]*" in r.stdout and "Pronoun head: 1.2" in r.stdout
    report = json.loads(open(f"{world['run']}/probe/report.json").read())
    assert report["named_head"] == "1.2" and report["ranking"][0] == "1.2"
    assert report["checkpoint"]["step"] == 300 and len(report["checkpoint"]["sha256"]) == 64
    assert report["grid"]["accuracy"][1][2] == 1.0 and len(report["heads"]) == 8
    assert report["ambiguous"]["n"] == 3 and report["prompts"]["scored"] == 24
    # every prompt's twin, with the pronoun swapped: the planted head follows the pronoun, so it is right on both
    assert report["twins"] == {"pairs": 24, "skipped": 0, "skipped_kinds": {}, "baselines": {
        "nearest": 0.0, "first": 0.0, "chance": 0.25, "uniform": 0.25, "pronoun_order": 0.333333},
        "best_baseline": {"name": "pronoun_order", "both": 0.333333}, "decides": True}
    assert report["heads"][6]["both"] == 1.0 and report["heads"][6]["head"] == "1.2"
    assert {p["pronoun"]: (p["n"], p["accuracy"]) for p in report["by_pronoun"]} == {
        "she": (8, 1.0), "he": (8, 1.0), "they": (8, 1.0)}  # the unambiguous prompts, 8 for each pronoun
    assert "By pronoun, head 1.2: he 100.0% of 8, she 100.0% of 8, they 100.0% of 8" in _words(r.stdout)
    assert max(map(len, r.stdout.splitlines()[1:])) <= 100  # all but the checkpoint's path wrap to the terminal
    assert (first[4], first[6:]) == ("100.0%", ["100.0%", "*"])  # argmax, then mass, both and the star
    grid = r.stdout.split("Right on both versions of a pronoun-swap pair (%), by layer and head; * above every baseline:\n")[1]
    assert grid.splitlines()[2].split() == ["L1", "0", "0", "100*", "0"]  # the uniform heads: one version each
    assert ("Pronoun swapped, head 1.2: right on both versions of 100.0% of 24 pairs (95% CI 86.2-100.0); a head that "
            "ignores the pronoun is right on one version of each, the best baseline (each pronoun to the first or the "
            "nearest) on both of 33.3%") in _words(r.stdout)


def test_random_weights_say_plainly_that_no_head_was_found(world):
    r = probe(world, run=world["random"])
    assert r.exit_code == 0, r.output
    assert "No pronoun head found" in r.stdout and "Pronoun head:" not in r.stdout
    assert ("; a model trained longer may grow one (--head with --over-checkpoints follows a head through the "
            "snapshots).") in _words(r.stdout)  # a next step, not a dead end


def test_head_prompt_by_prompt(world):
    r = probe(world, "--head", "L1H2", "--limit", "3")
    assert r.exit_code == 0, r.output
    assert "Head 1.2, prompt by prompt (first 3 of 27)" in r.stdout
    shown = [x for x in r.stdout.splitlines() if x.startswith("  ✓✓ ")]  # right on the prompt and on its twin
    assert len(shown) == 3 and all("█" in x for x in shown)
    assert "totals: accuracy 100.0% of 24 (95% CI " in r.stdout
    assert "argmax 100.0% of 24, mass" in _words(r.stdout)  # "(the · prompts too)" only where they add some
    assert "mass 1.00, right on both versions of 100.0% of 24 pronoun-swap pairs" in _words(r.stdout)  # as the table: 2 places
    assert "; the second mark: on the prompt with its pronoun swapped, where the distractor is the referent)" in _words(r.stdout)
    report = json.loads(probe(world, "--head", "0.0", "--limit", "27", "--json").stdout)
    rows = report["head_detail"]["prompts"]
    assert [it["twin"] is None for it in rows] == [it["ambiguous"] for it in rows]  # the ambiguous three have none
    both = sum(it["correct"] and it["twin"]["correct"] for it in rows if it["twin"])
    assert both == round(report["heads"][0]["both"] * 24)  # the marks add up to the head's rate


def test_looked_at_leaves_out_the_pronouns_own_tokens(world):
    # random attention often rests on the pronoun itself: argmax leaves its pieces out, and so does the list
    r = probe(world, "--head", "1.2", "--limit", "27", "--json", run=world["random"])
    shown = json.loads(r.stdout)["head_detail"]["prompts"]
    assert len(shown) == 27
    assert all(text.strip().lower() != it["pronoun"].lower() for it in shown for text, _ in it["top"])


def test_prompts_in_words_the_tokenizer_splits_are_named_as_the_likely_cause(world, tmp_path):
    assert json.loads(probe(world, "--json").stdout)["prompts"]["tokens_per_word"] == 1.0  # every word one token
    lines = "".join(f"[The {a}] greeted <the {b}> before {{{p}}} {v}.\n" for a, b, p, v in (
        ("zorblaxian", "quixotrum", "she", "sang"), ("vandergrift", "mollusculon", "he", "shouted"),
        ("plithernaut", "squembrill", "she", "sang"), ("grondelwick", "fizzlebrot", "he", "shouted")))
    r = probe_text(world["random"], tmp_path / "odd.txt", lines, "--json")
    report = json.loads(r.stdout)
    assert report["prompts"]["tokens_per_word"] > 1.6
    text = probe_text(world["random"], tmp_path / "odd.txt", lines).stdout
    assert (f"; this model's tokenizer splits these prompts' words into {report['prompts']['tokens_per_word']:.1f} "
            f"tokens each: words outside its corpus (probe it with prompts in its own corpus's words, --prompts), "
            f"or a vocabulary too small to hold them whole (tokenize with a larger --vocab-size).") in _words(text)


def test_head_out_of_range_states_the_models_shape(world):
    r = probe(world, "--head", "7.3")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip() == ("fabric: error: head 7.3 does not exist: the model has 2 layers (0-1) "
                                "and 4 heads (0-3)")


def test_json_prints_the_report(world):
    r = probe(world, "--json", "--head", "1.2", "--limit", "2")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report == json.loads(open(f"{world['run']}/probe/report.json").read())
    assert report["head_detail"]["shown"] == 2 and report["head_detail"]["prompts"][0]["top"][0][1] > 0.9
    used = choose_device("auto").device  # cpu, or cuda where the suite runs on a machine with a GPU
    assert report["settings"]["device"] == "auto" and report["settings"]["device_used"] == used  # asked, and where it ran
    masses = report["head_detail"]["prompts"][0]["candidate_mass"]  # what `correct` compares, referent first
    assert masses and all(set(c) == {"text", "mass"} for c in masses)


def test_report_path_keeps_the_runs_report(world, tmp_path):
    """--report writes there (folders made as needed) and leaves probe/report.json as it was."""
    assert probe(world).exit_code == 0
    kept = Path(world["run"], "probe", "report.json").read_bytes()
    target = tmp_path / "studies" / "head-1.2.json"
    r = probe(world, "--head", "1.2", "--json", "--report", str(target))
    assert r.exit_code == 0, r.output
    assert json.loads(target.read_text()) == json.loads(r.stdout) and "head_detail" in json.loads(r.stdout)
    assert Path(world["run"], "probe", "report.json").read_bytes() == kept
    assert f"report: {target}" in r.stderr
    r = probe(world, "--report", str(tmp_path))  # a folder: refused before any work
    assert r.exit_code == 1 and r.stdout == "" and r.stderr.count("\n") == 1 and "--report" in r.stderr


def test_a_snapshot_reports_beside_the_latest_not_over_it(world):
    """Probing a snapshot (an emergence study by hand) leaves the latest checkpoint's report alone."""
    run = RunPaths(Path(world["run"]))
    assert probe(world).exit_code == 0
    kept = run.probe_report.read_bytes()
    r = probe(world, "--checkpoint", str(run.snapshot(200)), "--json")
    assert r.exit_code == 0, r.output
    own = run.probe / "report-step-000200.json"
    assert json.loads(own.read_text()) == json.loads(r.stdout) and run.probe_report.read_bytes() == kept
    assert f"report: {own}" in r.stderr and own in run.training_outputs()  # a restart deletes it with the rest


def test_ablate_without_head_takes_the_top_head(world):
    r = probe(world, "--ablate", "--json", "--random-heads", "4")
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)["ablation"]
    assert a["head"] == "1.2" and a["n"] == 24 and a["zero_drop"] > 3.0 and a["mean_drop"] > 3.0
    assert len(a["random"]["heads"]) == 4 and a["random"]["zero_drop"]["max"] < 0.05
    text = probe(world, "--ablate", "--random-heads", "4").stdout
    assert "Ablation of head 1.2 on 24 prompts" in text and "4 random other heads" in text


def test_ablating_every_head_maps_their_drops(world):
    """--random-heads at least the number of other heads: every head is ablated, and the drops form a grid."""
    a = json.loads(probe(world, "--ablate", "--json", "--random-heads", "100").stdout)["ablation"]
    grid = a["grid"]["zero_drop"]
    assert len(grid) == 2 and all(len(row) == 4 for row in grid) and len(a["random"]["heads"]) == 7
    assert grid[1][2] == a["zero_drop"] > 3.0  # the planted head, where the ranking put it
    assert max(abs(v) for layer, row in enumerate(grid) for h, v in enumerate(row) if (layer, h) != (1, 2)) < 0.05
    text = probe(world, "--ablate", "--random-heads", "100").stdout
    lo, hi = a["zero_drop_ci95"]
    assert (f"  zero ablation {a['zero']:+.3f} (drop {a['zero_drop']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}); the "
            f"referent's continuation the more likely on {100 * a['zero_preferred']:.1f}% of prompts") in text
    assert f"  intact {a['clean']:+.3f}; the referent's continuation the more likely on 100.0% of prompts" in text
    assert "all 7 other heads" in text and "Zero-ablation drop (nats) of every head" in text and "[+" in text
    assert "grid" not in json.loads(probe(world, "--ablate", "--json", "--random-heads", "4").stdout)["ablation"]


def test_with_heads_removes_them_together_with_the_studied_head(world):
    r = probe(world, "--ablate", "--random-heads", "2", "--with-heads", "0.1, 1.2,0.1", "--json")  # 1.2 is studied: dropped
    assert r.exit_code == 0, r.output
    t = json.loads(r.stdout)["ablation"]["together"]
    assert t["heads"] == ["1.2", "0.1"] and t["zero_drop"] > 3.0 and len(t["random"]["sets"]) == 10
    text = probe(world, "--ablate", "--random-heads", "2", "--with-heads", "0.1").stdout
    assert "together, heads 1.2, 0.1: zero ablation" in text and "10 random sets of 2 other heads: zero drop mean" in text
    assert "each alone: zero drop +" in text and "(sum +" in text
    for args, says in ((["--with-heads", "0.1"], "--with-heads names heads to ablate together with the studied one; add --ablate"),
                       (["--ablate", "--with-heads", "5.0"], "head 5.0 does not exist: the model has 2 layers"),
                       (["--ablate", "--head", "1.2", "--with-heads", "1.2"], "--with-heads names only the studied head 1.2"),
                       (["--ablate", "--with-heads", " , "], "--with-heads ' , ' names no head; give heads such as 0.5,0.7"),
                       (["--head", ""], "head '' is not of the form LAYER.HEAD"),  # had silently ranked instead
                       (["--prompts", "/dev/null"], "probe file /dev/null is not a regular file"),
                       (["--checkpoint", "/dev/null"], "checkpoint /dev/null is not a regular file")):
        r = probe(world, *args)
        assert r.exit_code == 1 and r.stdout == "" and r.stderr.count("\n") == 1 and says in r.stderr, r.output


def test_over_checkpoints_finds_when_the_head_emerged(world):
    r = probe(world, "--over-checkpoints", "--json")
    assert r.exit_code == 0, r.output
    em = json.loads(r.stdout)["emergence"]
    assert em["head"] == "1.2" and [row["step"] for row in em["rows"]] == [100, 200, 300]
    assert em["rows"][0]["accuracy"] < 0.8 <= em["rows"][1]["accuracy"]
    assert em["emerged_at"] == 200 and em["first_reached"] == 200 and not em["at_last_snapshot"]
    assert [row["significant"] for row in em["rows"]] == [False, True, True] and em["significant_from"] == 200
    prefs = [row["preference"] for row in em["rows"]]  # the model's own choice follows its head: random, then planted
    assert abs(prefs[0]) < 1.0 < prefs[1] < prefs[2]  # strength 1.5 at step 200, 2.5 at 300
    assert [row["both"] for row in em["rows"]][1:] == [1.0, 1.0] and em["rows"][0]["both"] < 0.5  # the pronoun-swap twins
    assert em["best_both_baseline"] == {"name": "pronoun_order", "both": 0.333333}
    text = probe(world, "--over-checkpoints").stdout
    assert "      step  accuracy    95% CI    argmax    mass    both  preference  best head" in text
    assert "; and its bound right on both versions of a pronoun-swap pair (both) above 33.3% (each pronoun to the first or the nearest)" in text
    assert "  preference: the model's own choice at that step" in text
    bare = Path(world["noisy"]).parent / "bare.txt"  # no continuations: no preference column
    bare.write_text("[The queen] greeted <the king> before {she} sang.\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(bare), "--over-checkpoints", "--report",
                                 str(bare.with_suffix(".json"))])
    assert r.exit_code == 0, r.output
    assert "      step  accuracy    95% CI    argmax    mass  best head" in r.stdout and "preference" not in r.stdout
    text = probe(world, "--over-checkpoints", "--threshold", "0.99").stdout
    assert "Head 1.2 over training (accuracy on toy, 24 prompts with a distractor; threshold 99%)" in text
    assert ("stays at or above 99% from step 200 on (first reached at step 200; at step 100 it was at "
            f"{100 * em['rows'][0]['accuracy']:.1f}%, so it crossed between the two snapshots)\n") in text
    assert "head 1.2 beats every baseline with confidence from step 200 on" in text
    text = probe(world, "--over-checkpoints", "--threshold", "0.5165").stdout  # said as given, not rounded to 52%
    assert "threshold 51.65%)" in text and "stays at or above 51.65% from step 200 on" in text


def test_an_unreadable_snapshot_is_named_with_what_to_do(world, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    bad = run / "checkpoints" / "step-000999.safetensors"
    bad.write_bytes(b"")  # a copy cut short, say
    r = CliRunner().invoke(app, ["probe", "--run", str(run), "--prompts", world["suite"], "--over-checkpoints"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert str(bad) in r.stderr and r.stderr.rstrip().endswith(
        f"--over-checkpoints reads every snapshot in {bad.parent}: move this one out of the folder (or delete it) and probe again")


def test_a_crossing_at_the_last_snapshot_is_said_to_be_unproven():
    from fabric_cli.config import Head
    from fabric_cli.probe.emergence import emergence_table
    from fabric_cli.probe.sections import _emergence_lines

    class Scores:  # what emergence_table reads of a snapshot's HeadScores
        def __init__(self, accuracy, significant):
            self.ranking, self.named = [Head(0, 1)], Head(0, 1) if significant else None
            self.preference, self.both_baselines, self.both_decides = None, None, False  # no continuations, no swaps
            self.baselines = {"nearest": 0.52, "first": 0.48, "chance": 0.5, "uniform": float("nan")}
            self._row = {"accuracy": accuracy, "accuracy_ci95": [accuracy - 0.05, accuracy + 0.05], "n": 400,
                         "argmax_accuracy": accuracy, "mass": 0.5, "significant": significant}

        def head(self, h):
            return dict(self._row)

    rows = [(s, f"step-{s}", "sha", Scores(a, sig)) for s, a, sig in
            ((100, 0.5, False), (200, 0.7, True), (300, 0.6, False), (400, 0.75, True), (500, 0.81, True))]
    em = emergence_table(rows, Head(0, 1), 0.8)
    assert (em["emerged_at"], em["at_last_snapshot"]) == (500, True)
    assert (em["significant_first"], em["significant_from"]) == (200, 400)  # fell back at 300: from 400 on
    text = "\n".join(_emergence_lines(em))
    assert "from step 500 on (first reached at step 500; at step 400 it was at 75.0%, so it crossed between the two snapshots), the last snapshot: train longer to see it hold" in text
    assert "beats every baseline with confidence from step 400 on" in text
    assert "  500   81.0% *" in text and "  300   60.0%   " in text
    assert "above the best baseline, nearest candidate 52.0%" in text  # what the star is measured against
    assert "from step 400 on\n" in text + "\n"  # 400 is not the last snapshot: no caveat there
    em = emergence_table(rows[:4], Head(0, 1), 0.8)
    assert em["emerged_at"] is None and not em["at_last_snapshot"] and em["significant_from"] == 400
    assert em["significant_at_last_snapshot"]  # from the last snapshot only: said to be unproven too
    assert "beats every baseline with confidence from step 400 on, the last snapshot: train longer" in "\n".join(_emergence_lines(em))
    em = emergence_table(rows[-1:], Head(0, 1), 0.8)  # one snapshot, above the threshold: the last one as well
    assert em["at_last_snapshot"] and em["significant_at_last_snapshot"]
    from fabric_cli.demo import _emergence_lines as demo_lines

    said = demo_lines(emergence_table(rows[:3], Head(0, 1), 0.8))  # significant at 200, not at 300
    assert said.endswith("* above every baseline with confidence, as a named head must be: first at step 200, "
                         "but not at every later snapshot")



def test_skipped_items_are_counted_and_listed_with_reasons(world):
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", world["noisy"], "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    (skip,) = report["skipped"]
    assert skip["kind"] == "order" and skip["where"].endswith("mine.txt:3") and "comes before" in skip["reason"]
    text = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", world["noisy"]]).stdout
    assert "1 skipped (1 order; listed below)" in text
    assert f"  skipped {world['noisy']}:3 (order): the pronoun 'She' comes before its referent 'the queen'" in text


def test_a_suite_of_unusable_items_is_reported_item_by_item(world, tmp_path):
    """Pronoun first, or a span that cuts a token: every such prompt is named, none silently dropped."""
    text = "The queen greeted the king before she sang."
    lines = [  # 1: fine; 2: the pronoun comes first; 3: the referent span cuts "queen" in two
        {"text": text, "pronoun": [34, 37], "referent": [0, 9], "distractors": [[18, 26]]},
        {"text": "She greeted the queen.", "pronoun": [0, 3], "referent": [12, 21]},
        {"text": text, "pronoun": [34, 37], "referent": [0, 7], "distractors": [[18, 26]]},
    ]
    suite = tmp_path / "odd.jsonl"
    suite.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(suite)])
    assert r.exit_code == 0, r.output
    assert "2 skipped (1 order, 1 alignment; listed below)" in r.stdout
    assert f"skipped {suite}:2 (order): the pronoun 'She' comes before" in r.stdout
    assert f"skipped {suite}:3 (alignment): the referent 'The que'" in r.stdout
    report = json.loads(open(f"{world['run']}/probe/report.json").read())
    assert [(s["where"], s["kind"]) for s in report["skipped"]] == [(f"{suite}:2", "order"), (f"{suite}:3", "alignment")]
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text("".join(json.dumps(x) + "\n" for x in lines[1:]), encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(only_bad)])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip().startswith(f"fabric: error: no prompt of the 2 given can be probed (1 order, 1 alignment); "
                                       f"the first, {only_bad}:1: the pronoun 'She' comes before")


def test_showcase_ambiguous_items_are_scored_apart(world):
    """The bundled showcase: its ambiguous items are listed with where the head looked, not scored."""
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--suite", "showcase", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    flagged = [json.loads(x)["id"] for x in open(probes_dir() / "showcase.jsonl", encoding="utf-8") if json.loads(x)["ambiguous"]]
    amb = report["ambiguous"]
    assert len(flagged) >= 3 and [it["id"] for it in amb["items"]] == flagged and amb["n"] == len(flagged)
    assert all(len(it["candidates"]) == 2 and it["picked"] in {c["text"] for c in it["candidates"]} for it in amb["items"])
    assert report["prompts"]["scored"] == report["prompts"]["probed"] - len(flagged)
    head = next(h for h in report["heads"] if h["head"] == report["chosen_head"])
    assert head["n_all"] == report["prompts"]["scored"]  # the head's figures count no ambiguous item
    text = CliRunner().invoke(app, ["probe", "--run", world["run"], "--suite", "showcase"]).stdout
    assert f"Ambiguous prompts ({len(flagged)}, not scored)" in text and "it looked most at " in text
    assert "it -> " not in text  # `pronoun -> X` means X is the true referent, not where the head looked


def test_a_malformed_prompt_file_is_one_error_line(world, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("[The queen] met <the king> before {she} sang.\n[The queen] met the king.\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(bad)])
    assert r.exit_code == 1 and f"{bad}, line 2: expected exactly one pronoun" in r.stderr


def test_plot_without_matplotlib_says_how_to_install(world, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    r = probe(world, "--plot")
    assert r.exit_code == 1 and "pip install 'neural-fabric[plot]'" in r.stderr


def test_plot_writes_pictures_when_matplotlib_is_there(world):
    r = probe(world, "--plot", "--over-checkpoints")
    if importlib.util.find_spec("matplotlib") is None:  # the CI installs only the dev extra
        assert r.exit_code == 1 and "neural-fabric[plot]" in r.stderr
        return
    assert r.exit_code == 0, r.output
    for name in ("heads.png", "head-1.2.png", "emergence.png"):
        data = open(f"{world['run']}/probe/{name}", "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    r = probe(world, "--plot", "--head", "0.1")  # another head, no emergence: the earlier pictures go with their report
    assert r.exit_code == 0, r.output
    made = sorted(p.name for p in Path(world["run"], "probe").glob("*.png"))
    assert made == ["head-0.1.png", "heads.png"], made
    r = probe(world, "--plot", "--attribution", "--ablate", "--random-heads", "100")  # every head ablated: its map too
    assert r.exit_code == 0, r.output
    for name in ("attribution.png", "ablation.png"):
        data = open(f"{world['run']}/probe/{name}", "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    r = probe(world, "--plot", "--ablate", "--random-heads", "2")  # some heads only: no map to draw, and why
    assert r.exit_code == 0, r.output
    assert "note: no ablation map: it needs every head ablated, --random-heads 7" in r.stderr
    assert sorted(p.name for p in Path(world["run"], "probe").glob("*.png")) == ["head-1.2.png", "heads.png"]


def test_the_emergence_picture_marks_both_steps_the_text_gives():
    """The text leads with the step from which the head beats every baseline; the picture marks it
    beside the threshold's step (the marks are computed without matplotlib, which CI leaves out)."""
    from fabric_cli.probe.plots import emergence_marks

    marks = emergence_marks({"head": "1.2", "threshold": 0.8, "emerged_at": 300, "significant_from": 200})
    assert [(step, label) for step, label, _ in marks] == [(300, "emerged at step 300"),
                                                          (200, "above every baseline from step 200")]
    assert emergence_marks({"emerged_at": None, "significant_from": None}) == []  # never emerged: nothing marked


def test_the_report_and_its_pictures_are_replaced_together(tmp_path):
    """save_report draws the pictures into temporary files and moves them into place with the report:
    an interruption while drawing leaves the old report and pictures; a finished save removes the
    pictures the old report listed as its own and the new one does not make, and nothing else."""
    from fabric_cli.probe.run import save_report

    folder, elsewhere = tmp_path / "probe", tmp_path / "paper"
    folder.mkdir(), elsewhere.mkdir()
    (elsewhere / "emergence.png").write_text("the user's figure")
    listed = [str(folder / n) for n in ("heads.png", "head-1.1.png", "emergence.png")]
    old_report = json.dumps({"plots": listed})
    old = {"report.json": old_report, "heads.png": "old", "head-1.1.png": "old",
           "head-2.2.png": "the user's, not listed", "mine-heads.png": "another report's", "notes.png": "the user's"}
    for name, text in old.items():
        (folder / name).write_text(text)
    (folder / "emergence.png").symlink_to(elsewhere / "emergence.png")  # listed, and a link
    pictures = {"heads": folder / "heads.png", "attention": folder / "head-1.2.png"}

    def interrupted(tmps):
        tmps["heads"].write_text("new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_report({"new": True}, folder / "report.json", pictures, interrupted)
    assert {p.name: p.read_text() for p in folder.iterdir() if not p.is_symlink()} == old  # as it was, no temporary file

    def draw(tmps):
        for kind, tmp in tmps.items():
            tmp.write_text(f"new {kind}")

    report = {"new": True}
    save_report(report, folder / "report.json", pictures, draw)
    assert report["plots"] == [str(folder / "heads.png"), str(folder / "head-1.2.png")]
    assert json.loads((folder / "report.json").read_text()) == report
    assert {p.name: p.read_text() for p in folder.iterdir() if p.suffix == ".png"} == {
        "heads.png": "new heads", "head-1.2.png": "new attention", "head-2.2.png": "the user's, not listed",
        "mine-heads.png": "another report's", "notes.png": "the user's"}  # head-1.1 and the emergence link went
    assert (elsewhere / "emergence.png").read_text() == "the user's figure"  # the link went, not what it named
    save_report({"plain": True}, folder / "report.json")  # a probe without --plot: the report's pictures go with it
    assert sorted(p.name for p in folder.glob("*.png")) == ["head-2.2.png", "mine-heads.png", "notes.png"]
    outside = tmp_path / "desk"
    outside.mkdir()
    (outside / "heads.png").write_text("the user's")
    save_report({"x": 1}, outside / "report.json")  # a report.json elsewhere: pictures it did not list stay
    assert (outside / "heads.png").read_text() == "the user's"
    nest = tmp_path / "nest" / "a" / "b"
    with pytest.raises(KeyboardInterrupt):  # interrupted into folders it made: they go too
        save_report({"new": True}, nest / "r.json", {"heads": nest / "r-heads.png"}, interrupted)
    assert not (tmp_path / "nest").exists()


def test_a_checkpoint_of_another_run_is_probed_with_that_runs_snapshots_and_folder(world, tmp_path):
    """--checkpoint OTHER/checkpoints/latest with --run DEMO: OTHER's snapshots, OTHER/probe/; DEMO untouched."""
    tok = make_tokenizer()
    demo, other, exports = tmp_path / "demo", tmp_path / "other", tmp_path / "exports"
    write_run(demo, tok, planted_model(tok), step=400, snapshots={400: planted_model(tok)})
    write_run(other, tok, planted_model(tok), step=300,
              snapshots={50: random_model(tok, seed=2, std=0.3), 150: planted_model(tok, strength=1.5)})
    ckpt = other / "checkpoints" / "latest.safetensors"
    r = probe(world, "--checkpoint", str(ckpt), "--over-checkpoints", "--json", run=str(demo))
    assert r.exit_code == 0, r.output
    em = json.loads(r.stdout)["emergence"]
    assert [(row["step"], row["checkpoint"]) for row in em["rows"]] == [
        (50, str(other / "checkpoints" / "step-000050.safetensors")),
        (150, str(other / "checkpoints" / "step-000150.safetensors")), (300, str(ckpt))]
    assert em["emerged_at"] == 150
    assert json.loads((other / "probe" / "report.json").read_text()) == json.loads(r.stdout)
    assert not (demo / "probe").exists() and f"report: {other / 'probe' / 'report.json'}" in r.stderr
    # a weights file outside any run's checkpoints/ folder belongs to --run: its snapshots, its probe/ folder
    exports.mkdir()
    (exports / "ck.safetensors").write_bytes(ckpt.read_bytes())
    r = probe(world, "--checkpoint", str(exports / "ck.safetensors"), "--over-checkpoints", "--json", run=str(demo))
    assert r.exit_code == 0, r.output
    assert [row["step"] for row in json.loads(r.stdout)["emergence"]["rows"]] == [300, 400]
    assert (demo / "probe" / "report.json").is_file() and not (exports / "probe").exists()


def _words(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_help_shows_the_markup_and_what_the_defaults_are(runner):
    """Rich ate "[referent]" as a markup tag; --suite's default is none when --prompts is given."""
    text = _words(runner.invoke(app, ["probe", "--help"], terminal_width=200).stdout)
    assert "a text file in the [referent] {pronoun} <distractor> markup" in text
    assert "default: every suite there, or none when --prompts is given" in text
    assert "--over-checkpoints study (default: the top-ranked head)" in text


def test_a_probe_folder_that_cannot_be_written_is_one_error_line(world, tmp_path):
    """RUN/probe is a file: one line naming it, exit 1, no traceback, and no report or picture anywhere."""
    tok = make_tokenizer()
    run = tmp_path / "run"
    write_run(run, tok, planted_model(tok))
    (run / "probe").write_text("not a folder\n", encoding="utf-8")
    for extra in ([], ["--plot"] if importlib.util.find_spec("matplotlib") else []):
        r = probe(world, *extra, run=str(run))
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith("fabric: error: cannot write the ") and str(run / "probe") in line
        assert "Traceback" not in r.output
        assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "probe", "tokenizer.json"]
        assert (run / "probe").read_text(encoding="utf-8") == "not a folder\n"


def test_input_errors_come_before_the_model_is_loaded(world, monkeypatch, tmp_path):
    """--over-checkpoints without snapshots, a bad --prompts file, a head the model lacks, prompts with
    nothing to choose between: refused before minutes of scoring and ablation, not after them."""
    from fabric_cli.config import ProbeConfig
    from fabric_cli.errors import InputError
    from fabric_cli.probe import run as run_mod
    from fabric_cli.rundir import RunPaths

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(run_mod, "load_model", must_not_load)
    no_snaps = RunPaths(Path(world["random"]))
    with pytest.raises(InputError, match="no snapshots"):
        run_mod.run_probe(ProbeConfig(prompts=world["suite"], ablate=True, over_checkpoints=True), no_snaps)
    bad = tmp_path / "bad.txt"
    bad.write_text("[The queen] met <the king> before {she} sang.\n[The queen] met the king.\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2: expected exactly one pronoun"):
        run_mod.run_probe(ProbeConfig(prompts=str(bad)), no_snaps)
    with pytest.raises(InputError, match="head 7.3 does not exist"):
        run_mod.run_probe(ProbeConfig(prompts=world["suite"], head="7.3"), no_snaps)
    lone = tmp_path / "lone.txt"
    lone.write_text("[The king] met {he}\n", encoding="utf-8")
    with pytest.raises(InputError, match="no prompt of the 1 given has a distractor before the pronoun"):
        run_mod.run_probe(ProbeConfig(prompts=str(lone), ablate=True), RunPaths(Path(world["run"])))


def test_the_named_heads_example_comes_from_a_prompt_with_a_choice(world, tmp_path):
    """A prompt whose only candidate is the referent counts as 'right' whatever the head looked at;
    the headline example must not be such a prompt (here the head looked at the queen, not the king)."""
    lone = {"id": "lone", "text": "The king greeted the queen before she sang.", "pronoun": [34, 37], "referent": [0, 8]}
    suite = tmp_path / "mixed.jsonl"
    suite.write_text(json.dumps(lone) + "\n" + open(world["suite"], encoding="utf-8").read(), encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(suite), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    first = json.loads(open(world["suite"], encoding="utf-8").readline())
    (p0, p1), (r0, r1) = first["pronoun"], first["referent"]
    assert report["named_head"] == "1.2" and report["example"] == f"{first['text'][p0:p1]} -> {first['text'][r0:r1]}"


def test_over_checkpoints_without_a_distractor_says_accuracy_is_undefined(world, tmp_path):
    """The only prompt with a distractor is ambiguous (not scored): the argmax and mass still follow."""
    r = probe_text(world["run"], tmp_path / "lone.txt", "[The queen] smiled before {she} sang.\n[The king] smiled "
                   "before {he} sang.\n? [The queen] greeted <the girl> before {she} sang.\n", "--over-checkpoints")
    assert r.exit_code == 0, r.output
    assert "no accuracy to follow: no unambiguous prompt has a distractor before its pronoun" in r.stdout
    assert "no unambiguous prompt has a distractor before its pronoun, so there is nothing to choose" in _words(r.stdout)
    assert "never reached" not in r.stdout


def test_prompts_without_a_distractor_are_refused_before_any_report(world, tmp_path):
    """Nothing to choose between in any prompt: one error line, exit 1, no report, table or picture."""
    tok = make_tokenizer()
    run = tmp_path / "run"
    write_run(run, tok, planted_model(tok))
    king = tmp_path / "king.txt"
    for extra in ([], ["--ablate", "--json"]):
        r = probe_text(run, king, "[The king] met {he}\n", *extra)
        assert r.exit_code == 1 and r.stdout == "" and "Traceback" not in r.output
        assert r.stderr == ("fabric: error: no prompt of the 1 given has a distractor before the pronoun, so no head can "
                            "be scored; add a <distractor> before the {pronoun} (in a .jsonl suite, a \"distractors\" "
                            "span that ends before the pronoun's)\n")
        assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "tokenizer.json"]
    # a distractor after the pronoun is invisible to a causal model; skipped prompts are counted apart
    r = probe_text(run, tmp_path / "later.txt",
                   "[The king] met {he} and <the queen>\n{She} greeted [the queen] before <the king> sang.\n")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith("fabric: error: no prompt of the 2 given (1 skipped: 1 order) has a distractor "
                               "before the pronoun, so no head can be scored; add a <distractor> before the {pronoun}")
    assert not (run / "probe").exists()
    # with --head the question is where that head looks, which a prompt without a distractor answers too
    shown = probe_text(run, king, "[The king] met {he}\n", "--head", "1.2")
    assert shown.exit_code == 0 and "· " in shown.stdout and "he -> The king" in shown.stdout, shown.output


def test_prompts_of_which_some_lack_a_distractor_are_scored_on_the_others(world, tmp_path):
    some = ("[The king] met {he}\n[The queen] greeted <the king> before {she} sang.\n"
            "[The boy] smiled before {he} shouted.\n")
    r = probe_text(world["run"], tmp_path / "some.txt", some, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["prompts"]["scored"] == 3 and report["prompts"]["scored_accuracy"] == 1
    head = next(h for h in report["heads"] if h["head"] == "1.2")
    assert (head["n"], head["accuracy"], head["n_all"], head["argmax_accuracy"]) == (1, 1.0, 3, 1.0)
    text = probe_text(world["run"], tmp_path / "some.txt", some).stdout
    assert "3 scored (1 with a distractor before the pronoun)" in text


def test_ablation_says_it_compares_first_tokens_and_names_continuations_that_begin_alike(world, tmp_path):
    """' sang' and ' sangs' are two continuations but one first token (' sang' + 's'): the preference,
    which reads only the first token, cannot tell them apart, and the report says so, naming the prompt."""
    same = tmp_path / "same.txt"
    same.write_text("[The queen] greeted <the king> before {she} sang. || sang | sangs\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(same), "--ablate"])
    assert r.exit_code == 1 and r.stdout == "", r.output  # refused before the work, as prompts without any are
    assert r.stderr == ("fabric: error: --ablate: in none of the 1 unambiguous prompts probed do the two continuations "
                        "differ in their first token, which is all the preference compares (the first, "
                        f"{same}:1: ' sang' and ' sangs' both begin with the token ' sang'); give them different first "
                        "words, or leave out --ablate\n")
    # beside the toy suite: its 24 unambiguous prompts are ablated, the one that begins alike is named
    toy = open(world["suite"], encoding="utf-8").read()
    suite = tmp_path / "toy_and_same.jsonl"
    clash = {"id": "clash", "text": "The queen greeted the king before she sang.", "pronoun": [34, 37],
             "referent": [0, 9], "distractors": [[18, 26]], "continuations": [" sang", " sangs"]}
    suite.write_text(toy + json.dumps(clash) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(suite), "--ablate", "--random-heads",
                                 "2", "--json"])
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)["ablation"]
    assert a["n"] == 24 and a["without_continuations"] == 0
    assert a["same_first_token"] == [{"id": "clash", "where": f"{suite}:{len(toy.splitlines()) + 1}",
                                      "reason": "' sang' and ' sangs' both begin with the token ' sang'"}]
    text = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(suite), "--ablate",
                                    "--random-heads", "2"]).stdout
    assert ("Ablation of head 1.2 on 24 prompts: preference = log p of the first token of the referent's continuation "
            "minus the distractor's, at the pronoun") in text
    assert "  left out: 1 prompt whose two continuations begin with the same token" in text


def test_only_ambiguous_prompts_give_the_right_reason(world, tmp_path):
    amb = tmp_path / "amb.txt"
    amb.write_text("? [The queen] greeted <the girl> before {she} sang.\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(amb)])
    assert r.exit_code == 0, r.output
    assert "every prompt probed is marked ambiguous" in r.stdout and "no prompt has a distractor" not in r.stdout


def test_emergence_names_its_suites_and_no_random_heads_is_said_plainly(world):
    r = probe(world, "--over-checkpoints", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["emergence"]["suites"] == ["toy"]
    r = probe(world, "--ablate", "--random-heads", "0")
    assert r.exit_code == 0, r.output
    assert "no random head to compare with (--random-heads 0" in r.stdout


def test_a_report_that_cannot_be_written_is_refused_before_the_work(world, tmp_path, monkeypatch):
    import os

    import fabric_cli.cli.shell
    import fabric_cli.probe

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(fabric_cli.cli.shell.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    monkeypatch.setattr(fabric_cli.probe, "run_probe", lambda *a, **k: pytest.fail("probed before checking"))
    r = probe(world, "--report", str(locked / "probe" / "r.json"))  # probe/ does not exist yet: its parent decides
    assert r.exit_code == 1 and r.stderr == (f"fabric: error: cannot write the probe report {locked / 'probe' / 'r.json'}: "
                                             f"{locked} is not writable; pass another --run or --report\n")


def test_pictures_are_named_after_their_report_unless_it_is_the_runs_own(tmp_path, monkeypatch):
    from fabric_cli.probe.run import picture_prefix

    run = RunPaths(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    assert picture_prefix(run.probe_report, run) == ""  # probe/heads.png beside probe/report.json
    assert picture_prefix(Path("run/probe/report.json"), run) == ""  # the same file, named relatively
    assert picture_prefix(tmp_path / "studies" / "report.json", run) == "report-"  # not the user's own heads.png
    assert picture_prefix(run.probe / "report-step-000200.json", run) == "report-step-000200-"



def test_prompts_dash_reads_them_from_standard_input(world):
    markup = "[The queen] greeted <the king> before {she} sang. || sang | shouted\n"
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", "-", "--head", "1.2"], input=markup)
    assert r.exit_code == 0, r.output
    assert "prompts: 1 from stdin; 1 scored" in r.stdout and "stdin:1" in r.stdout
    suite = open(world["suite"], encoding="utf-8").read()  # JSONL, told apart by its first line
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", "-", "--json"], input=suite)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["named_head"] == "1.2"


def test_an_output_folder_that_takes_no_files_is_refused_before_the_report_is_replaced(world, tmp_path, read_only_folder):
    """access() says yes to root on /proc or a read-only mount: the probe wrote its report, then
    failed on --scores. The folder is tried with a temporary file first."""
    report, ro = tmp_path / "new.json", read_only_folder
    r = probe(world, "--report", str(report), "--scores", str(ro / "s.safetensors"))
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip() == (f"fabric: error: cannot write the scores {ro / 's.safetensors'}: {ro} takes no new files "
                                f"(Read-only file system); give --scores another path")
    assert not report.exists()  # refused before the work: no report written (nor one replaced)


def test_the_ranking_is_printed_before_the_studies_run(world, tmp_path, monkeypatch):
    """A minute of --ablate --random-heads 40 printed nothing until its end: the scores' part of the
    report now goes out first, and the two parts together are the report as render_text shows it."""
    import fabric_cli.probe.run as run_mod
    from fabric_cli.probe import render_text

    seen, real = [], run_mod._ablation
    monkeypatch.setattr(run_mod, "_ablation", lambda *a, **k: seen.append(len(printed)) or real(*a, **k))
    printed = []
    result = run_mod.run_probe(ProbeConfig(prompts=world["suite"], ablate=True, random_heads=2), RunPaths(Path(world["run"])),
                               on_scored=printed.append)
    assert seen == [1]  # the scored report was handed out once, before the ablation began
    text = probe(world, "--ablate", "--random-heads", "2", "--report", str(tmp_path / "r.json")).stdout
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert text == render_text(report) + "\n" and "Ablation of head 1.2" in text
    assert result.report["named_head"] == report["named_head"] == "1.2"


def test_replacing_the_runs_report_says_what_study_went_with_it(world):
    """The emergence step of the loop (--over-checkpoints --suite gender) replaced the all-suites report
    and its ablation without a word."""
    first = probe(world, "--prompts", world["noisy"], "--ablate", "--random-heads", "2")
    assert first.exit_code == 0, first.output
    r = probe(world)  # the toy suite alone, no ablation
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines()[-1] == (f"note: this replaced the earlier {world['run']}/probe/report.json, and with it "
                                         f"the suite mine and the ablation of head 1.2; --report FILE keeps a study apart")
    again = probe(world)  # nothing more lost
    assert again.exit_code == 0 and "note: this replaced" not in again.stderr
    assert probe(world, "--ablate", "--random-heads", "2").exit_code == 0
    other = probe(world, "--head", "0.1", "--ablate", "--random-heads", "2")  # another head's ablation
    assert other.stderr.splitlines()[-1].endswith("and with it the ablation of head 1.2; --report FILE keeps a study apart")
    if importlib.util.find_spec("matplotlib") is not None:  # pictures drawn, then a probe without --plot
        assert probe(world, "--plot").exit_code == 0
        plain = probe(world)
        assert plain.stderr.splitlines()[-1] == (f"note: this replaced the earlier {world['run']}/probe/report.json; its "
                                                 f"pictures heads.png, head-1.2.png went with it; --report FILE keeps a "
                                                 f"study apart")


def test_prompts_repeat_and_take_a_folder_of_suites(world, tmp_path):
    """A second --prompts is read too (it once replaced the first without a word), and a folder
    stands for its .jsonl suites, as fabric corpus --suites writes them."""
    r = probe(world, "--prompts", world["noisy"], "--json", "--report", str(tmp_path / "two.json"))
    assert r.exit_code == 0, r.output
    assert [s["suite"] for s in json.loads(r.stdout)["suites"]] == ["toy", "mine"]
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "toy.jsonl").write_text(open(world["suite"], encoding="utf-8").read(), encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(folder), "--report", str(tmp_path / "f.json")])
    assert r.exit_code == 0, r.output
    assert "prompts: 27 from toy;" in r.stdout
    r = probe(world, "--prompts", str(folder))  # toy.jsonl twice, from two folders: not pooled
    assert r.exit_code == 1 and "are both suite 'toy'" in r.stderr and "Traceback" not in r.output


def test_ablate_on_prompts_without_continuations_is_refused_before_the_work(world, tmp_path):
    r = probe_text(world["run"], tmp_path / "bare.txt", "[The queen] greeted <the king> before {she} sang.\n", "--ablate")
    assert r.exit_code == 1 and r.stdout == "" and not (tmp_path / "report.json").exists()
    assert r.stderr.strip() == (
        "fabric: error: --ablate measures the model's preference for what follows the pronoun, and none of the 1 "
        "unambiguous prompts probed says what does: end each markup line with ' || referent's word | distractor's "
        "word' (in a .jsonl suite, \"continuations\"), or leave out --ablate")
    both = "? [The queen] greeted <the girl> before {she} sang.\n[The queen] greeted <the king> before {she} sang.\n"
    r = probe_text(world["run"], tmp_path / "both.txt", both, "--ablate")  # the ambiguous prompt is not counted
    assert r.exit_code == 1 and "none of the 1 unambiguous prompts probed" in r.stderr
    r = probe_text(world["run"], tmp_path / "amb.txt", both.splitlines()[0] + "\n", "--ablate")
    assert r.exit_code == 0 and ": no unambiguous prompt has two continuations" in r.stdout


def test_ablating_when_no_head_was_named_says_so_and_how_to_map_every_head(world):
    text = probe(world, "--ablate", "--random-heads", "2", run=world["random"]).stdout
    assert "No pronoun head found" in text
    assert ("No head was named, so this removes the top-ranked head, ") in text and "--random-heads 8 removes each head" in text
    named = probe(world, "--ablate", "--random-heads", "2").stdout  # the planted head is named: nothing to say
    assert "Pronoun head: 1.2" in named and "No head was named" not in named


def test_probing_a_run_that_is_being_trained_says_so(world):
    import fcntl

    from fabric_cli.runlock import LOCK_NAME, holder

    run = Path(world["run"])
    assert holder(run) is None
    with open(run / LOCK_NAME, "a+") as other:  # as a `fabric train` in another process holds it
        other.write("fabric train (pid 4242)\n")
        other.flush()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert holder(run) == "fabric train (pid 4242)"
        r = probe(world)
        assert r.exit_code == 0, r.output
        assert (f"note: {run} is in use by fabric train (pid 4242): this probes the checkpoint saved last; probe "
                f"again when it ends") in r.stderr
        snapshot = str(RunPaths(run).snapshot(200))  # a snapshot is not being rewritten: nothing to say
        assert "in use by" not in probe(world, "--checkpoint", snapshot).stderr
        other.truncate(0)
    assert holder(run) is None and "in use by" not in probe(world).stderr


def test_a_threshold_given_as_a_percentage_is_refused_with_its_fraction(world):
    r = probe(world, "--over-checkpoints", "--threshold", "80")
    assert r.exit_code == 1 and r.stderr.strip() == "fabric: error: --threshold is an accuracy in (0, 1], got 80 (for 80%, give 0.8)"


def test_a_referent_mentioned_again_unmarked_is_pointed_out(world, tmp_path):
    """A head that looks at the unmarked 'queen' looks at no candidate: the user is told, with where."""
    text = ("[The queen] greeted <the king> before {she} sang. || sang | shouted\n"
            "[The queen] greeted <the king>, and the queen knew {she} sang. || sang | shouted\n")
    r = probe_text(world["run"], tmp_path / "again.txt", text, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["prompts"]["referent_repeated"] == {
        "n": 1, "first": {"id": "again:2", "where": f"{tmp_path / 'again.txt'}:2", "word": "queen", "at": 36}}
    r = probe_text(world["run"], tmp_path / "again.txt", text)
    assert (f"  note: 1 prompt mentions its referent again, unmarked, before the pronoun (the first, "
            f"{tmp_path / 'again.txt'}:2: 'queen' at character 36)") in r.stdout
    assert "mentions its referent again" not in probe(world).stdout  # the toy suite marks every mention


def test_attribution_maps_what_each_head_writes_into_the_preference(world, tmp_path):
    r = probe(world, "--attribution", "--json")
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)["attribution"]
    assert a["n"] == 24 and a["top"][0]["head"] == "1.2" and a["sum_error"] < 1e-4 and a["same_first_token"] == []
    text = probe(world, "--attribution").stdout
    assert "Direct logit attribution on 24 prompts: what each head writes straight into the preference" in text
    assert "  every head (nats), by layer (rows) and head (columns):" in text and "  L1  " in text
    assert "feed-forwards by layer: L0 +0.000, L1 +0.000" in text and f"the preference {a['preference']:+.3f}" in text
    r = probe_text(world["run"], tmp_path / "bare.txt", "[The queen] greeted <the king> before {she} sang.\n",
                   "--attribution", "--ablate")
    assert r.exit_code == 1 and "fabric: error: --ablate and --attribution measure the model's preference" in r.stderr


def test_attribution_and_ablation_say_how_many_prompts_they_left_out(world, tmp_path):
    toy = open(world["suite"], encoding="utf-8").read()
    bare = {"id": "bare", "text": "The queen greeted the king before she sang.", "pronoun": [34, 37],
            "referent": [0, 9], "distractors": [[18, 26]]}
    suite = tmp_path / "toy_and_bare.jsonl"
    suite.write_text(toy + json.dumps(bare) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["probe", "--run", world["run"], "--prompts", str(suite), "--attribution", "--ablate",
                                 "--random-heads", "1", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "Direct logit attribution on 24 prompts (1 without continuations left out): what each head" in r.stdout
    assert "Ablation of head 1.2 on 24 prompts (1 without continuations left out): preference" in r.stdout
    assert "warning:" not in r.stdout


def test_attribution_terms_that_miss_the_preference_are_a_warning():
    from fabric_cli.probe.sections import _attribution_lines

    a = {"n": 3, "preference": 2.0, "grid": [[0.5, 0.0]], "top": [{"head": "0.0", "mean": 0.5, "ci95": [0.1, 0.9]}],
         "heads_total": 0.5, "feed_forward": [1.0], "embeddings": 0.0, "attention_biases": 0.0, "norm_bias": 0.0,
         "sum_error": 0.5, "without_continuations": 0, "same_first_token": []}
    assert ("  warning: on one prompt the terms miss the preference by 0.5: the model holds something this "
            "attribution does not know of (fabric_cli/probe/attribution.py)") in _attribution_lines(a)
    assert not any("warning" in line for line in _attribution_lines({**a, "sum_error": 1e-6}))


def test_ablation_on_a_few_prompts_shows_each_ones_preference(world, tmp_path):
    text = ("[The queen] greeted <the king> before {she} sang. || sang | shouted\n"
            "[The king] greeted <the queen> before {he} shouted. || shouted | sang\n")
    r = probe_text(world["run"], tmp_path / "two.txt", text, "--ablate", "--random-heads", "1")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    at = lines.index(next(x for x in lines if x.lstrip().startswith("prompt ") and "intact" in x))
    assert lines[at - 1] == "  head 1.2 alone, prompt by prompt:" and lines[at].split() == ["prompt", "intact", "zeroed", "mean-ablated"]
    assert lines[at - 2].startswith("  mean ablation ")  # under the studied head's own lines, before any other heads
    first, second = lines[at + 1].split(), lines[at + 2].split()
    assert first[0] == f"{tmp_path / 'two.txt'}:1" and lines[at + 1].endswith("she -> The queen")
    assert second[0] == f"{tmp_path / 'two.txt'}:2" and lines[at + 2].endswith("he -> The king")
    assert float(first[1]) > 3.0 and float(first[2]) < float(first[1])  # the planted head's removal moved it
    a = json.loads(probe_text(world["run"], tmp_path / "two.txt", text, "--ablate", "--random-heads", "1", "--json").stdout)["ablation"]
    assert a["items"]["id"] == ["two:1", "two:2"] and a["items"]["clean"][0] == pytest.approx(float(first[1]), abs=1e-3)
    assert [it["where"] for it in a["items_shown"]] == [f"{tmp_path / 'two.txt'}:1", f"{tmp_path / 'two.txt'}:2"]
    many = probe(world, "--ablate", "--random-heads", "1", "--json")  # 24 prompts, over --limit 20: all in the JSON, not on the terminal
    assert many.exit_code == 0, many.output
    items = json.loads(many.stdout)["ablation"]["items"]
    assert len(items["id"]) == len(items["clean"]) == len(items["zero"]) == len(items["mean"]) == 24
    text = probe(world, "--ablate", "--random-heads", "1")
    assert text.exit_code == 0, text.output
    assert "alone, prompt by prompt" not in text.stdout


def test_scores_hold_every_prompts_score_for_every_head(world, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "new" / "scores.safetensors"
    r = probe(world, "--scores", str(out), "--json")
    assert r.exit_code == 0, r.output
    assert f"scores: {out}" in r.stderr
    report = json.loads(r.stdout)
    with safe_open(str(out), "pt") as f:
        meta, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    n = report["prompts"]["probed"]
    assert meta["format"] == "fabric-probe-scores" and meta["step"] == "300" and len(json.loads(meta["ids"])) == n
    assert t["correct"].shape == t["argmax_hit"].shape == t["mass"].shape == (n, 2, 4) and t["ambiguous"].sum() == 3
    assert t["preference"].shape == (n,) and (t["preference"][~t["preference"].isnan()] > 3.0).all()  # the planted model's choice
    scored = (t["ambiguous"] == 0) & (t["candidates"] > 1)  # the prompts accuracy counts
    grid = t["correct"][scored].float().mean(0)
    assert torch.allclose(grid, torch.tensor(report["grid"]["accuracy"]), atol=1e-6)  # the report's grid, recomputed
    assert meta["checkpoint"] == str(Path(world["run"], "checkpoints", "latest.safetensors").resolve())
    assert meta["checkpoint_sha256"] == report["checkpoint"]["sha256"]
    paired = t["twin"].bool() & scored  # the pairs "both" counts: right on the prompt and on its twin
    assert paired.sum() == report["twins"]["pairs"] == 24 and not t["twin_correct"][~t["twin"].bool()].any()
    both = (t["correct"][paired] & t["twin_correct"][paired]).float().mean(0)
    assert torch.allclose(both, torch.tensor(report["grid"]["both"]), atol=1e-6)
    assert probe(world, "--scores", str(out)).exit_code == 0  # earlier scores are replaced
    latest = Path(world["run"], "checkpoints", "latest.safetensors")
    before = latest.read_bytes()
    for args, says in ((["--scores", str(tmp_path)], "is a folder"),
                       (["--scores", str(latest)], "already holds a fabric-checkpoint file; give the scores a new file name"),
                       (["--report", str(tmp_path / "r.json"), "--scores", str(tmp_path / "r.json")], "is where the report goes"),
                       (["--scores", str(out / "x.safetensors")], "is a file, not a folder"),
                       (["--report", str(out / "r.json")], "is a file, not a folder"),
                       (["--report", str(latest)], "already holds a file that is not a probe report"),
                       (["--report", str(Path(world["run"], "tokenizer.json"))], "already holds a file that is not a probe report")):
        # refused before the work, not after
        bad = probe(world, *args)
        assert bad.exit_code == 1 and bad.stdout == "" and says in bad.stderr, (args, bad.output)
    assert latest.read_bytes() == before  # the weights were never touched


def test_scores_are_written_when_every_twin_is_left_out(world, tmp_path):
    """A swapped pronoun of many tokens pushes the one twin past the toy model's 32-token context: the
    probe says why, and --scores still writes (it had raised an IndexError after the report)."""
    from safetensors import safe_open

    tok = make_tokenizer()
    filler = ""
    while len(tok.encode(f"The queen greeted the king{filler} before she").ids) < 31:  # with <|endoftext|>: 32
        filler += " then"
    line = f"[The queen] greeted <the king>{filler} before {{she|xylophonists}} sang."
    out = tmp_path / "s.safetensors"
    r = probe_text(world["run"], tmp_path / "long.txt", line + "\n", "--scores", str(out),
                   "--report", str(tmp_path / "r.json"))
    assert r.exit_code == 0, r.output
    assert "Pronoun swapped: the one twin could not be scored (1 past the model's context)" in r.stdout
    with safe_open(str(out), "pt") as f:
        assert f.get_tensor("twin").sum() == 0 and f.get_tensor("twin_correct").sum() == 0
