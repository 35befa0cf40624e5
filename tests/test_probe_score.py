"""Head scores against ground truth: a planted head must come out first and named, random weights
must name nothing, and ablating the planted head must move the continuation far more than others."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from test_probe_world import PLANTED, items, make_tokenizer, planted_model, random_model

from fabric_cli.config import Head
from fabric_cli.model import GPT
from fabric_cli.probe.ablate import ablation_study, preference, random_heads
from fabric_cli.probe.attribution import attribution_study, direct_effects
from fabric_cli.probe.emergence import crossing
from fabric_cli.probe.encode import encode_items
from fabric_cli.probe.score import head_scores, make_batches, paired, score_items, wilson
from fabric_cli.probe.suites import parse_jsonl_line, parse_markup_line


@pytest.fixture(scope="module")
def world():
    tok = make_tokenizer()
    suite = [parse_jsonl_line(json.dumps(d), suite="toy") for d in items()]
    encoded, skipped = encode_items(suite, tok, block_size=32, bos_id=tok.token_to_id("<|endoftext|>"))
    assert not skipped
    return tok, encoded


def _scores(model, encoded, batch_size=7):
    batches = make_batches(encoded, batch_size)
    per_item = score_items(model, batches, len(encoded))
    return per_item, head_scores(per_item, encoded)


def test_planted_head_ranks_first_at_100_percent_and_is_named(world):
    tok, encoded = world
    per_item, hs = _scores(planted_model(tok), encoded)
    assert hs.ranking[0] == PLANTED and hs.named == PLANTED
    assert hs.accuracy[PLANTED] == 1.0 and hs.argmax_accuracy[PLANTED] == 1.0 and hs.mass[PLANTED] > 0.95
    assert hs.n == sum(not e.item.ambiguous for e in encoded)  # ambiguous items are left out
    assert hs.significant.sum() == 1  # the uniform heads are not significant
    assert hs.baselines == pytest.approx({"nearest": 0.5, "first": 0.5, "chance": 0.5, "uniform": 0.5})  # ties split
    assert hs.accuracy.shape == (2, 4)
    u, second = hs.runner_up, hs.ranking[1]  # the planted head against the next: told apart
    assert u["head"] == str(second) and u["only_other"] == 0
    assert u["only_top"] == hs.n - int(per_item.correct[:, second.layer, second.head][
        [i for i, e in enumerate(encoded) if not e.item.ambiguous and len(e.candidates) > 1]].sum())
    assert u["p"] == pytest.approx(min(1.0, 2 * 0.5 ** u["only_top"]), abs=1e-6) and u["p"] < 0.05


def test_two_heads_a_point_apart_are_said_not_to_be_told_apart():
    from fabric_cli.probe.render import _against_next

    heads = {"0.1": {"accuracy": 0.871}, "0.4": {"accuracy": 0.866}}
    r = {"named_head": "0.1", "ranking": ["0.1", "0.4"], "runner_up": {"head": "0.4", "only_top": 231, "only_other": 219, "p": 0.6}}
    assert _against_next(r, heads) == ("; but not told apart from the next, 0.4 at 86.6%: on the prompts only one of "
                                       "them gets right, 231 against 219 (exact McNemar p = 0.60), so they may share the task")
    r["runner_up"] = {"head": "0.4", "only_top": 40, "only_other": 5, "p": 1e-7}
    assert _against_next(r, heads) == ("; ahead of the next, 0.4, on the prompts only one of them gets right, "
                                       "40 against 5 (exact McNemar p = 1e-07)")
    r["runner_up"] = {"head": "0.4", "only_top": 1200, "only_other": 0, "p": 0.0}  # 2 * 0.5**1200 underflows
    assert _against_next(r, heads).endswith("1200 against 0 (exact McNemar p < 1e-300)")


def test_a_clear_winners_p_value_is_not_rounded_to_zero():
    c = torch.zeros(100, 1, 2, dtype=torch.bool)
    c[:60, 0, 0] = True  # 60 prompts only the first head gets right, none only the second
    u = paired(c, Head(0, 0), Head(0, 1))
    assert (u["only_top"], u["only_other"]) == (60, 0)
    assert u["p"] == float(f"{2 / 2**60:.3g}") > 0  # exact two-sided binomial tail: 2 * 0.5^60


def test_scores_do_not_depend_on_batching_or_padding(world):
    tok, encoded = world
    model = random_model(tok, seed=3, std=0.3)
    a, ha = _scores(model, encoded, batch_size=1)
    b, hb = _scores(model, encoded, batch_size=64)
    assert torch.equal(a.correct, b.correct) and torch.equal(a.argmax_hit, b.argmax_hit)
    assert torch.allclose(a.mass, b.mass, atol=1e-6) and hb.ranking == ha.ranking


def test_a_head_that_only_spreads_its_attention_is_not_named_on_longer_referents(world):
    """Referents of four words against one-word distractors, first and second equally often:
    nearest, first and chance are all 50%, and the planted model's uniform heads sum more attention
    over the longer mention every time. The uniform-attention baseline (100%) keeps them unnamed."""
    tok, _ = world
    lines = []
    for a, b in [("queen", "king"), ("nurse", "farmer"), ("girl", "man"), ("woman", "boy")] * 2:
        lines.append(f"[The {a} and the {b}] greeted <Bob> before {{they}} danced.")
        lines.append(f"<Bob> greeted [the {a} and the {b}] before {{they}} danced.")
    encoded, skipped = encode_items([parse_markup_line(x) for x in lines], tok, 32, tok.token_to_id("<|endoftext|>"))
    assert not skipped and all(e.uniform_hit == 1.0 for e in encoded)
    _, hs = _scores(planted_model(tok), encoded)
    assert hs.baselines == pytest.approx({"nearest": 0.5, "first": 0.5, "chance": 0.5, "uniform": 1.0})
    uniform_head = Head(0, 0)  # zero query and key weights: attention spread evenly
    assert hs.accuracy[uniform_head] == 1.0
    assert float(hs.lower_bound[uniform_head]) > 0.5  # the other three baselines alone would name it
    assert hs.named is None and not hs.significant.any()


def test_the_uniform_baseline_splits_ties(world):
    """A head spreading attention evenly is right half the time on mentions of equal length (any
    unevenness breaks the tie, each way alike), never when the distractor is longer: counting ties as
    losses would put the baseline low enough for a length-only head to be named."""
    tok, _ = world
    lines = ["[The queen] greeted <the king> before {she} danced.",  # equal lengths
             "[The queen] greeted <the king and the farmer> before {she} danced.",  # the distractor longer
             "[The queen and the nurse] greeted <Bob> before {they} danced."]  # the referent longer
    encoded, skipped = encode_items([parse_markup_line(x) for x in lines], tok, 32, tok.token_to_id("<|endoftext|>"))
    assert not skipped
    lengths = [[len(c) for c in e.candidates] for e in encoded]
    assert lengths[0][0] == lengths[0][1] and lengths[1][0] < lengths[1][1] and lengths[2][0] > lengths[2][1]
    assert [e.uniform_hit for e in encoded] == [0.5, 0.0, 1.0]
    _, hs = _scores(planted_model(tok), encoded)
    assert hs.baselines["uniform"] == pytest.approx(0.5)


@pytest.mark.parametrize("seed, std", [(0, None), (1, None), (2, 0.3), (3, 1.0)])
def test_random_weights_name_no_head(world, seed, std):
    tok, encoded = world
    _, hs = _scores(random_model(tok, seed=seed, std=std), encoded)
    assert hs.named is None and not hs.significant.any()
    assert float(hs.lower_bound.max()) <= max(hs.baselines.values())


def test_accuracy_sums_attention_over_a_multi_token_mention(world):
    """Head 1.2 splits its attention: 'The' + ' queen' (two tokens) must count as one mention."""
    tok, encoded = world
    model = planted_model(tok)
    item = parse_markup_line("[The queen] greeted <the king> before {she} sang.")
    (e,), _ = encode_items([item], tok, 32, tok.token_to_id("<|endoftext|>"))
    with torch.no_grad():  # make the key of "The" match "she" as well: half the attention each
        f = [t for t in range(tok.get_vocab_size()) if tok.decode([t]) == "The"][0]
        model.transformer.wte.weight[f] = model.transformer.wte.weight[tok.token_to_id("Ġqueen")]
    per_item, _ = _scores(model, [e])
    att = per_item.rows[0][PLANTED]
    queen = e.candidates[0]
    assert att[queen].min() > 0.45 and att[queen].sum() > 0.99  # split over two tokens, summed for the mention
    assert per_item.correct[0][PLANTED] and per_item.argmax_hit[0][PLANTED]


def test_ablating_the_planted_head_moves_the_preference_far_more_than_random_heads(world):
    tok, encoded = world
    usable = [e for e in encoded if e.continuations and not e.item.ambiguous]
    result = ablation_study(planted_model(tok), make_batches(usable, 16), PLANTED, k=5, seed=0)
    assert result["n"] == len(usable) and result["clean"] > 3.0
    assert result["zero_drop"] > 3.0 and result["mean_drop"] > 3.0
    rnd = result["random"]
    assert len(rnd["heads"]) == 5 and PLANTED not in [h["head"] for h in rnd["heads"]]
    assert abs(rnd["zero_drop"]["max"]) < 0.01 * result["zero_drop"]
    assert abs(rnd["mean_drop"]["max"]) < 0.01 * result["mean_drop"]
    for name in ("zero", "mean"):  # the interval holds the drop, and is clear of 0; a random head's is not far from 0
        lo, hi = result[f"{name}_drop_ci95"]
        assert 0 < lo <= result[f"{name}_drop"] <= hi  # the planted circuit moves every prompt alike: a narrow interval
        assert all(h[f"{name}_drop_ci95"][0] < 0.01 * result[f"{name}_drop"] for h in rnd["heads"])
    assert result["clean_preferred"] == 1.0 and result["zero_preferred"] < 0.75  # the share of prompts it gets right
    clean = preference(planted_model(tok), make_batches(usable, 16))  # each prompt's own preference, in order
    assert clean.shape == (len(usable),) and float(clean.double().mean()) == pytest.approx(result["clean"], abs=1e-6)


def test_one_prompt_has_no_interval_and_the_report_stays_valid_json(world):
    from fabric_cli.files import json_text

    tok, encoded = world
    usable = [e for e in encoded if e.continuations and not e.item.ambiguous][:1]
    result = ablation_study(planted_model(tok), make_batches(usable, 16), PLANTED, k=2, seed=0)
    assert result["n"] == 1 and result["zero_drop_ci95"] == result["mean_drop_ci95"] == [None, None]
    text = json_text(result)
    assert "NaN" not in text and json.loads(text)["zero_drop"] == result["zero_drop"]  # JSON.parse would reject NaN


def test_heads_that_share_the_task_are_removed_together_beside_random_sets(world):
    """Two planted copies of the circuit: each alone carries half the preference, so removing one
    shows half the effect; removed together the preference goes, while random pairs move nothing."""
    tok, encoded = world
    usable = [e for e in encoded if e.continuations and not e.item.ambiguous]
    twin = Head(0, 1)
    model = planted_model(tok, gain=0.5, heads=(PLANTED, twin))
    result = ablation_study(model, make_batches(usable, 16), PLANTED, k=3, seed=0, together=[twin])
    t = result["together"]
    assert t["heads"] == [str(PLANTED), str(twin)]
    assert t["zero_drop"] > 1.8 * result["zero_drop"] > 0 and t["zero_drop"] == pytest.approx(result["clean"], abs=0.01)
    assert [a["head"] for a in t["alone"]] == [str(PLANTED), str(twin)] and t["alone"][0]["zero_drop"] == result["zero_drop"]
    assert t["zero_drop_alone_sum"] == pytest.approx(sum(a["zero_drop"] for a in t["alone"]), abs=1e-5)
    sets = t["random"]["sets"]
    assert len(sets) == 10 and all(len(s["head"].split(",")) == 2 for s in sets)
    assert len({s["head"] for s in sets}) == 10  # ten different pairs, not one drawn ten times
    assert not any(h in s["head"].split(",") for s in sets for h in (str(PLANTED), str(twin)))
    assert abs(t["random"]["zero_drop"]["max"]) < 0.01 * t["zero_drop"]
    assert "together" not in ablation_study(model, make_batches(usable[:4], 16), PLANTED, k=1, seed=0)


def test_ablation_shows_a_bar_over_its_passes(world, capsys):
    """--ablate makes 1 + 2 x (1 + k) forward passes over the suite: minutes on a CPU, so a bar counts them."""
    tok, encoded = world
    usable = [e for e in encoded if e.continuations and not e.item.ambiguous][:8]
    quiet = ablation_study(planted_model(tok), make_batches(usable, 16), PLANTED, k=3, seed=0)
    assert "ablation" not in capsys.readouterr().err
    shown = ablation_study(planted_model(tok), make_batches(usable, 16), PLANTED, k=3, seed=0, progress=True)
    assert "ablation" in (err := capsys.readouterr().err) and "9/9" in err
    assert shown == quiet


def test_random_heads_are_seeded_and_exclude_the_target():
    a = random_heads(Head(1, 2), 5, 8, 10, seed=0)
    assert a == random_heads(Head(1, 2), 5, 8, 10, seed=0) and a != random_heads(Head(1, 2), 5, 8, 10, seed=1)
    assert Head(1, 2) not in a and len(set(a)) == 10
    assert len(random_heads(Head(0, 0), 1, 2, 10, seed=0)) == 1  # only one other head exists


def test_wilson_interval_matches_the_formula():
    lo, hi = wilson(torch.tensor([0, 10, 20]), 20, 1.959964)
    assert lo[0] == 0 and hi[2] == pytest.approx(1.0)
    assert (lo[1].item(), hi[1].item()) == pytest.approx((0.2993, 0.7007), abs=1e-4)  # p = 0.5, n = 20
    assert lo[2].item() == pytest.approx(20 / (20 + 1.959964**2), abs=1e-6)  # all right: n / (n + z^2)


def test_no_head_is_named_without_distractors(world):
    tok, _ = world
    lone = [parse_markup_line("[The queen] smiled before {she} sang.")] * 10
    encoded, _ = encode_items(lone, tok, 32, None)
    _, hs = _scores(planted_model(tok), encoded)
    assert hs.n == 0 and hs.n_all == 10 and hs.named is None
    assert math.isnan(hs.accuracy[PLANTED]) and hs.mass[PLANTED] > 0.95  # still scored for mass


def test_crossing_needs_the_head_to_stay_above():
    assert crossing([0, 100, 200], [0.1, 0.95, 0.5], 0.9) == (100, None)
    assert crossing([0, 100, 200], [0.1, 0.95, 0.92], 0.9) == (100, 100)
    assert crossing([0, 100], [None, 0.2], 0.9) == (None, None)


def test_argmax_sums_the_pieces_of_a_word_split_into_many_tokens(world):
    """'xylophonist' is many byte-level pieces, each with less attention than 'king', together more:
    the head's largest attention is on the referent's word (DESIGN: summed over its pieces)."""
    from types import SimpleNamespace

    tok, _ = world
    item = parse_markup_line("[The xylophonist] met <the king> before {she} sang.")
    (e,), _ = encode_items([item], tok, 64, tok.token_to_id("<|endoftext|>"))
    pieces = [p for p in e.candidates[0] if e.token_text(p).strip() != "The"]
    king = next(p for p in e.candidates[1] if e.token_text(p).strip() == "king")
    assert len(pieces) > 2
    row = torch.zeros(len(e.ids))
    row[pieces] = 0.6 / len(pieces)  # each piece well below 0.4
    row[king] = 0.4

    class Attends:  # a one-head "model" whose pronoun attends as `row` says
        config = SimpleNamespace(n_layer=1, n_head=1)

        def __call__(self, idx, probe, at):
            att = torch.zeros(idx.size(0), 1, idx.size(1), idx.size(1))  # (B, nh, T, T)
            att[0, 0, e.pronoun, : len(row)] = row
            probe.attention.append(att)
            return torch.zeros(idx.size(0), 1, 8), None  # logits at the pronoun: no preference either way

    per_item = score_items(Attends(), make_batches([e], 4), 1)
    assert per_item.argmax_hit[0, 0, 0] and per_item.correct[0, 0, 0]
    assert per_item.mass[0, 0, 0] == pytest.approx(0.6)
    from fabric_cli.probe.report import _top

    top = _top(e, row)  # what --head shows: whole words, the pieces summed
    assert [w for w, _ in top[:2]] == ["xylophonist", "king"] and top[0][1] == pytest.approx(0.6)


def test_a_head_barely_above_the_baseline_is_named_weak():
    """Significant on 2,000 prompts is not the same as resolving pronouns: 54% against 50% says so."""
    from fabric_cli.probe.render import _verdict

    def verdict(accuracy, lower_bound):
        head = {"head": "0.1", "accuracy": accuracy, "n": 2023, "lower_bound": lower_bound}
        report = {"named_head": "0.1", "example": "he -> Gilbert the drummer",
                  "best_baseline": {"accuracy": 0.502, "name": "first"}}
        return _verdict(report, {"0.1": head})

    assert verdict(0.539, 0.505).startswith("Pronoun head (weak): 0.1 (he -> Gilbert the drummer), 53.9% of 2,023 "
                                            "prompts, 3.7 points above the best baseline 50.2% (first)")
    assert verdict(0.956, 0.945).startswith("Pronoun head: 0.1 (he -> Gilbert the drummer), 95.6% of 2,023 prompts; "
                                            "lower bound 94.5% > best baseline 50.2% (first)")


def test_direct_attribution_splits_the_preference_exactly_and_finds_the_head_that_writes_it(world):
    """The planted head writes the verb into the residual stream: its direct effect is the preference."""
    tok, encoded = world
    usable = [e for e in encoded if e.continuations and not e.item.ambiguous]
    model = planted_model(tok)
    a = attribution_study(model, make_batches(usable, 16))
    assert a["n"] == len(usable) and a["preference"] > 3.0 and a["sum_error"] < 1e-4
    assert a["top"][0]["head"] == str(PLANTED) and a["grid"][PLANTED.layer][PLANTED.head] == pytest.approx(a["preference"], rel=0.02)
    lo, hi = a["top"][0]["ci95"]
    assert 0 < lo <= a["top"][0]["mean"] <= hi
    assert all(abs(t["mean"]) < 0.01 * a["preference"] for t in a["top"][1:])
    assert a["feed_forward"] == [0.0, 0.0]  # its feed-forwards are zero
    assert not model.transformer.ln_f._forward_hooks and not model.transformer.h[0].mlp._forward_hooks  # removed again
    again = attribution_study(model, make_batches(usable, 5))["grid"]  # other batches, other padding: the same
    assert torch.allclose(torch.tensor(again), torch.tensor(a["grid"]), atol=1e-5)
    assert attribution_study(model, []) == {"n": 0}
    gone = attribution_study(model, make_batches(usable, 16), ablate={PLANTED: None})  # the writer removed
    assert gone["grid"][PLANTED.layer][PLANTED.head] == 0.0 and gone["sum_error"] < 1e-4
    assert abs(gone["preference"]) < 0.05 * a["preference"]  # nothing else wrote it


@pytest.mark.parametrize("seed, bias", [(0, True), (1, True), (2, False)])
def test_direct_attribution_terms_sum_to_the_preference_in_any_model(world, seed, bias):
    """Random weights, biases and norms included: heads, feed-forwards, embeddings, attention biases and
    the final norm's bias add up to log p(continuation 0) - log p(continuation 1), item by item."""
    tok, encoded = world
    usable = [e for e in encoded if e.continuations and not e.item.ambiguous]
    model = random_model(tok, seed=seed, std=0.3)
    if not bias:  # no biases anywhere, the final norm's included: the terms that read them are zero
        model = GPT(dataclasses.replace(model.config, bias=False))
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
        model.eval()
    a = attribution_study(model, make_batches(usable, 16))
    assert a["sum_error"] < 1e-4 * max(1.0, abs(a["preference"]))
    total = (sum(map(sum, a["grid"])) + sum(a["feed_forward"]) + a["embeddings"] + a["attention_biases"] + a["norm_bias"])
    assert total == pytest.approx(a["preference"], abs=1e-4)
    assert a["preference"] == pytest.approx(float(preference(model, make_batches(usable, 16)).double().mean()), abs=1e-5)
    t = direct_effects(model, make_batches(usable, 16)[0])  # item by item (the toy suite's means cancel: both orders)
    each = t["heads"].sum((1, 2)) + t["feed_forward"].sum(1) + t["embeddings"] + t["attention_biases"] + t["norm_bias"]
    assert torch.allclose(each, t["preference"], atol=1e-4)
    if bias:  # terms a model without biases would not test
        assert (t["attention_biases"].abs() > 1e-3).all() and (t["norm_bias"].abs() > 1e-3).all()
    else:
        assert not t["attention_biases"].any() and not t["norm_bias"].any()


def test_ablation_gives_the_studied_heads_preferences_prompt_by_prompt_in_item_order(world):
    """Batches regroup items by length; the per-item values come back in the order of the items."""
    tok, encoded = world
    usable = [e for e in encoded if e.continuations and not e.item.ambiguous]
    model = random_model(tok, seed=3, std=0.3)  # every prompt its own preference (the planted model's are all alike)
    batches = make_batches(usable, 5)
    assert [r for b in batches for r in b.rows] != list(range(len(usable)))  # the grouping does reorder them
    result = ablation_study(model, batches, Head(1, 0), k=1, seed=0)
    each = result["each"]
    alone = [float(preference(model, make_batches([e], 1))[0]) for e in usable]
    zeroed = [float(preference(model, make_batches([e], 1), {Head(1, 0): None})[0]) for e in usable]
    assert len(set(round(x, 3) for x in alone)) > len(usable) // 2
    assert each["clean"] == pytest.approx(alone, abs=1e-5) and each["zero"] == pytest.approx(zeroed, abs=1e-5)
    assert len(each["mean"]) == len(usable)
    mixed = make_batches(usable[:4], 2) + make_batches(usable[4:8], 2)  # two calls: rows collide, no one order
    with pytest.raises(ValueError, match="one make_batches call"):
        ablation_study(model, mixed, Head(1, 0), k=0, seed=0)


def test_scoring_reads_the_models_preference_from_the_same_pass(world):
    """score_items keeps the logits it computes anyway: each prompt's preference, as ablate.preference
    gives it, NaN where a prompt has no two continuations; head_scores averages the known ones."""
    tok, encoded = world
    model = random_model(tok, seed=4, std=0.3)
    scores = score_items(model, make_batches(encoded, 7), len(encoded))
    usable = [i for i, e in enumerate(encoded) if e.continuations]
    assert 0 < len(usable) < len(encoded)  # some prompts have none: their preference must be NaN
    for i in usable[:5]:
        alone = float(preference(model, make_batches([encoded[i]], 1))[0])
        assert float(scores.preference[i]) == pytest.approx(alone, abs=1e-5)
    assert all(scores.preference[i].isnan() for i, e in enumerate(encoded) if not e.continuations)
    rows = [i for i, e in enumerate(encoded) if not e.item.ambiguous]
    known = [float(scores.preference[i]) for i in rows if i in usable]
    assert head_scores(scores, encoded).preference == pytest.approx(sum(known) / len(known), abs=1e-6)
    some = usable[:5] + [i for i in range(len(encoded)) if i not in usable][:2]  # the rows given, the NaN ones skipped
    assert head_scores(scores, encoded, only=some).preference == pytest.approx(
        sum(float(scores.preference[i]) for i in usable[:5]) / 5, abs=1e-6)


def test_the_position_controls_are_read_against_each_other():
    from fabric_cli.probe.render import _controls_text

    r = {"chosen_head": "0.1", "suites": [{"suite": "referent_first", "n": 400, "accuracy": 0.8825},
                                          {"suite": "referent_second", "n": 400, "accuracy": 0.89}]}
    assert _controls_text(r) == ["Controls, head 0.1: 88.2% with the referent first, 89.0% with it second, -0.8 points "
                                 "(95% CI -5.2 to +3.7); a head that follows the pronoun, not the order, scores both alike"]
    r["suites"][1]["accuracy"] = 0.2  # a head that looks at the first mention: position, not the pronoun
    assert "+68.2 points (95% CI +63" in _controls_text(r)[0]
    assert _controls_text({"chosen_head": "0.1", "suites": r["suites"][:1]}) == []


def test_the_paired_test_past_its_exact_range_agrees_with_the_exact_sum(monkeypatch):
    import fabric_cli.probe.score as score

    c = torch.zeros(6000, 1, 2, dtype=torch.bool)
    c[:3100, 0, 0] = True
    c[3100:, 0, 1] = True  # 3,100 prompts only head 0.0 gets right, 2,900 only 0.1: p near 0.01
    approx = score.paired(c, Head(0, 0), Head(0, 1))["p"]
    monkeypatch.setattr(score, "EXACT_UP_TO", 10**6)
    exact = score.paired(c, Head(0, 0), Head(0, 1))["p"]
    assert 0.009 < exact < 0.011 and approx == pytest.approx(exact, rel=0.01)  # three significant digits each


def _twins(tok, encoded, model):
    from fabric_cli.probe.encode import encode_twins
    from fabric_cli.probe.score import Twins

    rows, twins, skipped = encode_twins(encoded, tok, 32, tok.token_to_id("<|endoftext|>"))
    scored = score_items(model, make_batches(twins, 7), len(twins))
    return Twins(rows, twins, scored.correct, skipped, scored.rows)


def test_a_head_right_on_one_version_of_each_pronoun_swap_is_not_named(world):
    """The planted head follows the pronoun: right on both versions of every pair. A head right on every
    prompt and wrong on every twin (it follows something that the swap leaves alone) has 100% accuracy,
    which the four baselines alone would name, and 0% on both: it is not named."""
    from fabric_cli.probe.render import _verdict

    tok, encoded = world
    model = planted_model(tok)
    per_item, twins = score_items(model, make_batches(encoded, 7), len(encoded)), _twins(tok, encoded, model)
    assert twins.skipped == [] and len(twins.rows) == sum(not e.item.ambiguous for e in encoded)
    hs = head_scores(per_item, encoded, twins=twins)
    assert hs.pairs == len(twins.rows) and hs.both[PLANTED] == 1.0 and hs.named == PLANTED
    # the toy prompts trade she and he, and he and they, so no rule of pronoun words to first or nearest is
    # right on both versions of more than half the pairs
    assert hs.both_baselines == pytest.approx({"nearest": 0.0, "first": 0.0, "chance": 0.25, "uniform": 0.25,
                                               "pronoun_order": hs.both_baselines["pronoun_order"]})
    assert hs.both_baselines["pronoun_order"] == pytest.approx(1 / 3)
    one_sided = Head(0, 0)
    per_item.correct, twins.correct = per_item.correct.clone(), twins.correct.clone()  # inference tensors are read-only
    per_item.correct[:, 0, 0] = True
    twins.correct[:, 0, 0] = False
    assert head_scores(per_item, encoded).significant[one_sided]  # without the twins it would be named
    hs = head_scores(per_item, encoded, twins=twins)
    assert hs.accuracy[one_sided] == 1.0 and hs.both[one_sided] == 0.0 and not hs.significant[one_sided]
    assert hs.named == PLANTED
    # with the planted head gone too, the verdict says why the best head is not named
    per_item.correct[:, PLANTED.layer, PLANTED.head] = False
    hs = head_scores(per_item, encoded, twins=twins)
    assert hs.named is None and hs.ranking[0] == one_sided
    from fabric_cli.config import ProbeConfig
    from fabric_cli.probe.report import build_report

    r = build_report(ProbeConfig(head="0.0", limit=2), {"path": "x", "step": 1}, [e.item for e in encoded], encoded, [],
                     per_item, hs, one_sided, True, twins)
    heads = {h["head"]: h for h in r["heads"]}
    from fabric_cli.probe.render import _detail_lines

    lines = _detail_lines(r["head_detail"])  # each pair split: the twin's line says where its pronoun looked
    first, second = encoded[0].item.twin(), encoded[1].item.twin()
    assert [x.split("looked at")[0].split() for x in lines[1:5]] == [
        ["✓✗", encoded[0].item.id, encoded[0].item.show(encoded[0].item.pronoun), "->", *encoded[0].item.show(encoded[0].item.referent).split()],
        ["swapped,", first.show(first.pronoun), "->", *first.show(first.referent).split()],
        ["✓✗", encoded[1].item.id, encoded[1].item.show(encoded[1].item.pronoun), "->", *encoded[1].item.show(encoded[1].item.referent).split()],
        ["swapped,", second.show(second.pronoun), "->", *second.show(second.referent).split()]]
    assert len({x.index("looked at") for x in lines[1:5]}) == 1  # in one column, however long the referent
    assert _verdict(r, heads).startswith(
        "No pronoun head found: the best, 0.0 at 100.0% of 24 prompts, clears the baselines (lower bound 79.4% > "
        "50.0% (nearest)), but is right on both versions of only 0.0% of 24 pronoun-swap pairs (lower bound 0.0%, not "
        "above 33.3%, each pronoun to the first or the nearest): it does not reliably follow the pronoun to its referent")


def test_a_twin_that_does_not_fit_the_context_is_counted_and_left_out(world):
    from fabric_cli.probe.encode import encode_twins

    tok, _ = world
    item = parse_markup_line("[The queen] greeted <the king> before {she|xylophonists} sang.")
    bos = tok.token_to_id("<|endoftext|>")
    (e,), _ = encode_items([item], tok, len(tok.encode(item.text[: item.pronoun[1]]).ids) + 1, bos)
    assert encode_twins([e], tok, e.pronoun + 1, bos)[1:] == ([], ["length"])  # the swapped pronoun is many tokens longer
    assert encode_twins([e], tok, 32, bos)[0] == [0]


def test_too_few_pairs_to_decide_are_shown_and_not_applied(world):
    """Fewer than MIN_PAIRS pairs (20) could only veto a head that the accuracy names, on a handful of prompts:
    the rate is shown and naming goes by accuracy, saying so; from 20 pairs on the swap test applies."""
    from fabric_cli.config import ProbeConfig
    from fabric_cli.probe.render import render_text
    from fabric_cli.probe.report import build_report
    from fabric_cli.probe.score import Twins

    tok, encoded = world
    model = planted_model(tok)
    per_item, twins = score_items(model, make_batches(encoded, 7), len(encoded)), _twins(tok, encoded, model)
    few = Twins(twins.rows[:2], twins.encoded[:2], twins.correct[:2].clone())
    few.correct[:, PLANTED.layer, PLANTED.head] = False  # even wrong on both twins
    hs = head_scores(per_item, encoded, twins=few)
    assert hs.pairs == 2 and not hs.both_decides and hs.both[PLANTED] == 0.0 and hs.named == PLANTED
    r = build_report(ProbeConfig(), {"path": "x", "step": 1}, [e.item for e in encoded], encoded, [], per_item, hs,
                     PLANTED, True, few)
    assert r["twins"]["decides"] is False and "pronoun-swap pair is above" not in r["settings"]["criterion"]
    text = " ".join(render_text(r).split())  # wrapped to 100 columns
    assert ("right on both versions of 0.0% of 2 pronoun-swap pairs (fewer than 20 pairs, too few to ask of a head: the "
            "rate is shown and naming goes by accuracy") in text
    assert "by layer and head; * above every baseline (on accuracy alone: fewer than 20 pairs):" in text
    twenty = Twins(twins.rows[:20], twins.encoded[:20], few.correct[:1].repeat(20, 1, 1))  # wrong on every twin
    assert head_scores(per_item, encoded, twins=twenty).both_decides
    assert head_scores(per_item, encoded, twins=twenty).named != PLANTED
    assert head_scores(per_item, encoded, twins=Twins(twenty.rows[:19], twenty.encoded[:19], twenty.correct[:19])).named == PLANTED


def test_twins_that_could_not_be_scored_are_said_with_the_reason():
    from fabric_cli.probe.render import _swap_text

    r = {"twins": {"pairs": 0, "skipped": 3, "skipped_kinds": {"length": 2, "alignment": 1}}, "chosen_head": "0.1"}
    assert _swap_text(r, {}) == ["Pronoun swapped: none of the 3 twins could be scored (2 past the model's context, 1 "
                                 "whose swapped pronoun does not line up with the tokens), so naming goes by accuracy alone"]
    r["twins"] = {"pairs": 0, "skipped": 1, "skipped_kinds": {"length": 1}}
    assert _swap_text(r, {}) == ["Pronoun swapped: the one twin could not be scored (1 past the model's context), so "
                                 "naming goes by accuracy alone"]


def test_a_character_named_twice_is_one_candidate(world):
    """'the king' twice: a head giving 0.4 to the queen and 0.3 to each king looks more at the king (0.6),
    and is wrong; listed as two characters (flat spans) it would be counted right."""
    from types import SimpleNamespace

    from fabric_cli.probe.suites import to_json

    tok, _ = world
    text = "The queen greeted the king. The king sang, then she"
    grouped = {"text": text, "pronoun": [48, 51], "referent": [0, 9], "distractors": [[[18, 26], [28, 36]]]}
    flat = {**grouped, "distractors": [[18, 26], [28, 36]]}
    bos = tok.token_to_id("<|endoftext|>")
    (g, f), skipped = encode_items([parse_jsonl_line(json.dumps(d)) for d in (grouped, flat)], tok, 32, bos)
    assert not skipped and len(g.candidates) == 2 and len(f.candidates) == 3
    assert g.candidates[1] == sorted(f.candidates[1] + f.candidates[2])  # both mentions' tokens, one candidate
    assert g.item.show_candidate(g.item.candidates[1]) == "the king + The king"
    assert to_json(g.item)["distractors"] == [[[18, 26], [28, 36]]] and to_json(f.item)["distractors"] == flat["distractors"]
    queen = next(p for p in g.candidates[0] if g.token_text(p).strip() == "queen")
    kings = [p for p in g.candidates[1] if g.token_text(p).strip() == "king"]

    class Attends:  # the pronoun gives 0.4 to "queen" and 0.3 to each "king"
        config = SimpleNamespace(n_layer=1, n_head=1)

        def __call__(self, idx, probe, at):
            att = torch.zeros(idx.size(0), 1, idx.size(1), idx.size(1))
            att[:, 0, g.pronoun, queen] = 0.4
            att[:, 0, g.pronoun, kings] = 0.3
            probe.attention.append(att)
            return torch.zeros(idx.size(0), 1, 8), None

    scores = score_items(Attends(), make_batches([g, f], 4), 2)
    assert scores.correct[:, 0, 0].tolist() == [False, True]


def test_the_pronoun_order_rule_is_the_best_one_found_group_by_group():
    """Against trying every rule on small random sets, and on 20 words (too many to try at once) in ten
    groups that no pair crosses, against each group's best added up."""
    import itertools
    import random
    from types import SimpleNamespace as E

    from fabric_cli.probe.score import pronoun_order_rate

    def item(word, first):
        return E(item=E(text=word, pronoun=(0, len(word))), first_is_referent=first, nearest_is_referent=not first)

    def best(pairs):
        words = sorted({x.item.text for pair in pairs for x in pair})
        return max(sum(all(x.first_is_referent if rule[x.item.text] else x.nearest_is_referent for x in pair)
                       for pair in pairs) for rule in (dict(zip(words, bits))
                                                        for bits in itertools.product((True, False), repeat=len(words))))

    rng = random.Random(0)
    for _ in range(20):
        words = [f"w{i}" for i in range(rng.randint(2, 8))]
        pairs = [(item(p, f), item(q, not f)) for p, q, f in
                 ((*rng.sample(words, 2), rng.random() < 0.5) for _ in range(rng.randint(5, 30)))]
        assert pronoun_order_rate(pairs) == pytest.approx(best(pairs) / len(pairs))
    groups = [[(item(f"a{g}", f), item(f"b{g}", not f)) for f in (rng.random() < 0.5 for _ in range(7))] for g in range(10)]
    assert pronoun_order_rate(sum(groups, [])) == pytest.approx(sum(best(g) for g in groups) / 70)


def test_head_totals_say_why_argmax_counts_more_prompts():
    from fabric_cli.probe.render import _detail_lines

    totals = {"accuracy": 0.867, "accuracy_ci95": [0.85, 0.88], "n": 2023, "argmax_accuracy": 0.844, "n_all": 2025,
              "mass": 0.55}
    text = " ".join(" ".join(_detail_lines({"head": "0.1", "shown": 0, "of": 2029, "prompts": [], "totals": totals})).split())
    assert "prompt by prompt (first 0 of 2,029)" in text
    assert "accuracy 86.7% of 2,023 (95% CI 85.0%-88.0%), argmax 84.4% of 2,025 (the · prompts too), mass 0.55" in text


def test_skipped_prompts_past_the_shown_ten_point_to_the_report_whatever_its_name():
    """It said 'every one in report.json' when --report had named another file."""
    from fabric_cli.probe.render import SHOWN_SKIPS, _skipped_lines

    skipped = [{"where": f"mine.txt:{i}", "id": str(i), "kind": "too long", "reason": "x"} for i in range(SHOWN_SKIPS + 3)]
    lines = _skipped_lines(skipped)
    assert len(lines) == SHOWN_SKIPS + 1 and lines[-1] == '  ... and 3 more, every one under "skipped" in the JSON report'
