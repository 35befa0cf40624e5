"""`fabric demo`: the whole life of a model on the bundled Chronicles, told as it happens.

Tokenize the bundled corpus, train the CPU preset with snapshots, probe every suite for the pronoun
head, prove it by ablation (alone, and together with any heads that share its task), find where the
answer is written (direct logit attribution), find the step it emerged, show it on the Chronicles'
own sentences, and generate text. Every stage is the library function its subcommand calls, so what the demo shows is
what `fabric tokenize`, `train`, `probe` and `generate` do; it adds only the telling.

Re-running the demo on the same run directory reuses what is already there: the tokens, and the
checkpoint once it has reached its step budget (an unfinished one is resumed, with the run's own
settings except those typed on this command line). `restart=True` starts everything over.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from pathlib import Path
from typing import Callable

from fabric_cli.checkpoint import read_info
from fabric_cli.config import (PRESETS, SEED_LIMIT, DemoConfig, ModelConfig, ProbeConfig, SampleConfig, TokenizeConfig,
                               TrainConfig)
from fabric_cli.device import choose_device
from fabric_cli.encode import tokenize_corpus
from fabric_cli.errors import FabricError, InputError
from fabric_cli.files import file_sha256, write_json_atomic
from fabric_cli.generate import complete, load_engine
from fabric_cli.probe import render_text, run_probe, save_report
from fabric_cli.probe.emergence import UNPROVEN
from fabric_cli.rundir import RunPaths, bundled_corpus
from fabric_cli.text import bar, signed
from fabric_cli.runlock import holding
from fabric_cli.tokenizer import load_tokenizer, show_split
from fabric_cli.trainstate import load_train_state, read_train_config
from fabric_cli.runplan import budget, resume_config
from fabric_cli.train import train
from fabric_cli.trainstep import check_memory

SHOW_TEXT = "The queen thanked the xylophonist"  # the Tokenizer's dilemma: a common word whole, a rare one in pieces
HELD_OUT_SUITES = ("gender", "number", "long_distance", "referent_first", "referent_second")


OPTIONS = ("steps", "preset", "context", "snapshot_every", "seed", "device")  # DemoConfig fields with a flag
TRAINED = ("steps", "preset", "context", "snapshot_every", "seed")  # a resumed run keeps its own unless typed

Say = Callable[[str], None]


class DemoStopped(FabricError):
    """A signal cut the demo's training short; the checkpoint is saved and `command` resumes the run."""

    def __init__(self, stopped_by: str, step: int, command: str):
        super().__init__(f"stopped by {stopped_by} at step {step:,}; checkpoint saved. Continue with `{command}`")
        self.stopped_by, self.step, self.command = stopped_by, step, command


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """What the demo's training stage will do, settled before anything is written."""

    config: TrainConfig  # the settings train() is given
    explicit: frozenset[str]  # the settings typed on the command line, which a resumed run takes over its own
    resume: bool
    step: int  # the run's checkpoint step; 0 for a new run
    steps: int  # the step budget the run trains to
    model: str  # "the tiny preset (2 layers, 2 heads, width 16, context 16)"


def run_demo(paths: RunPaths, cfg: DemoConfig, say: Say, restart: bool = False,
             given: frozenset[str] = frozenset(), auto_threads: bool = True) -> dict:
    """Run every stage on `paths`, telling the story through `say`; returns the demo's summary.

    `given` names the settings (DemoConfig fields) typed on the command line: a run being resumed
    keeps its own value of every other one. `auto_threads` is train()'s (False when the user
    chose the thread count). The device and a resume's settings are checked before
    stage 1 writes anything. The summary is also written to the run directory as demo.json.

    Raises:
        DemoStopped when a signal stops the training (its checkpoint is saved; the error names the
        command that resumes the run); InputError on settings that cannot be used.
    """
    with holding(paths.root, "fabric demo"):  # tokenize and train take it again: one process, reentrant
        return _run_demo(paths, cfg, say, restart, given, auto_threads)


def _run_demo(paths: RunPaths, cfg: DemoConfig, say: Say, restart: bool, given: frozenset[str], auto_threads: bool) -> dict:
    t0 = time.perf_counter()
    plan = plan_training(paths, cfg, given, restart)
    settings = {**dataclasses.asdict(cfg), "steps": plan.steps, "preset": plan.config.preset, "seed": plan.config.seed,
                "context": plan.config.context, "snapshot_every": plan.config.snapshot_every}
    summary = {"run": str(paths.root), "settings": settings}
    summary["tokenize"] = _tokenize(paths, say, restart)
    summary["train"] = _train(paths, plan, say, restart, resume_command(paths, cfg, given), auto_threads)
    summary["probe"] = _probe(paths, cfg, say)
    summary["generate"] = _generate(paths, cfg, say)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    _ending(summary, say)
    write_json_atomic(paths.root / "demo.json", summary)
    return summary


# ----------------------------------------------------------------------------- the chapters


def _tokenize(paths: RunPaths, say: Say, restart: bool) -> dict:
    reuse = paths.meta.exists() and paths.tokenizer.exists() and not restart
    if reuse:
        _check_chronicles_tokens(paths)  # before the story starts: a refusal is the only output
    say("== 1. The Tokenizer: learning the words of the Chronicles")
    if reuse:
        say(f"reusing {paths.tokenizer} and {paths.tokens}/ (--restart to tokenize again)")
        meta = json.loads(paths.meta.read_text())  # the figures a fresh tokenize reports, from the tokens' own record
        tokens = meta["train_tokens"] + meta["val_tokens"]
        result = {"reused": True, "vocab_size": meta["vocab_size"], "documents": meta["documents"], "tokens": tokens,
                  "chars_per_token": round(meta["characters"] / max(1, tokens - meta["documents"]), 4)}
    else:
        s = tokenize_corpus([], paths, TokenizeConfig(), force=restart)
        for line in s.lines():
            say(line)
        result = {"reused": False, **{k: getattr(s, k) for k in ("vocab_size", "documents", "tokens", "chars_per_token", "seconds")}}
    split = show_split(load_tokenizer(paths.tokenizer), SHOW_TEXT)
    say(f"its dilemma over rare words: {split['display']}  ({split['count']} tokens)")
    return {**result, "show": split["display"]}


def _check_chronicles_tokens(paths: RunPaths) -> None:
    """Tokens of another corpus in the run directory would silently change the story: refuse them."""
    sources = json.loads(paths.meta.read_text()).get("sources", [])
    if [src.get("sha256") for src in sources] != [file_sha256(bundled_corpus())]:
        names = ", ".join(Path(src.get("path", "?")).name for src in sources) or "an unrecorded corpus"
        raise InputError(
            f"{paths.tokens} holds tokens of {names}, not the bundled Chronicles the demo is told on; "
            f"give another --run directory, or --restart to tokenize the Chronicles there (its checkpoints go too)"
        )


def plan_training(paths: RunPaths, cfg: DemoConfig, given: frozenset[str], restart: bool) -> TrainPlan:
    """The settings the training stage will use: the demo's for a new run; for a run being resumed,
    its saved ones with the settings typed now (`given`). Refuses an unusable device, or a typed
    setting that would change a resumed model's shape, before anything is written."""
    choose_device(cfg.device)
    explicit = frozenset(given) & frozenset(TRAINED)
    if "steps" in explicit:  # the evaluation interval follows the step budget (a fifth of it)
        explicit |= {"eval_interval"}
    config = cfg.train_config()
    if restart or not paths.latest.exists():
        config.check_schedule()
        model = config.model_config(PRESETS[config.preset].vocab_size)  # the vocabulary asked, at most what is made
        check_memory(model, config.batch_size, config.grad_accum, choose_device(config.device).device)  # before stage 1
        return TrainPlan(config, explicit, resume=False, step=0, steps=config.steps, model=_model_line(config.preset, model))
    info = read_info(paths.latest)
    saved = read_train_config(paths.latest_state)
    if saved is None:  # weights without the state to resume from: usable as they are, not trainable further
        if "steps" in explicit and config.steps > info.step:
            load_train_state(paths.latest_state, paths.latest)  # raises: says what is missing and what to do
        return TrainPlan(config, explicit, resume=True, step=info.step, steps=info.step,
                         model=_model_line(None, info.config))
    config = resume_config(saved, config, explicit, info.config)
    config.check_schedule()
    steps = budget(config, info.config.block_size, 1)[1]
    return TrainPlan(config, explicit, resume=True, step=info.step, steps=steps,
                     model=_model_line(config.preset, info.config))


def _model_line(preset: str | None, c: ModelConfig) -> str:
    shape = f"{c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, context {c.block_size}"
    return f"the {preset} preset ({shape})" if preset else f"the model ({shape})"


def resume_command(paths: RunPaths, cfg: DemoConfig, given: frozenset[str]) -> str:
    """The command that takes this run up again: its --run, and the settings typed on this command line."""
    words = ["fabric", "demo", "--run", str(paths.root)]
    for name in OPTIONS:
        if name in given and getattr(cfg, name) is not None:
            words += [f"--{name.replace('_', '-')}", str(getattr(cfg, name))]
    return shlex.join(words)


def _train(paths: RunPaths, plan: TrainPlan, say: Say, restart: bool, again: str, auto_threads: bool) -> dict:
    if plan.resume and plan.step >= plan.steps:
        say(f"\n== 2. The Gradient: {plan.model}, trained for {plan.step:,} steps")
        past = f", already past the --steps {plan.steps:,} asked for" if plan.step > plan.steps else ""
        say(f"reusing {paths.latest} (step {plan.step:,}{past}); --restart trains again")
        return {**_earlier_training(paths, plan.step), "reused": True}
    say(f"\n== 2. The Gradient: training {plan.model} for {plan.steps:,} steps")
    if plan.resume:
        say(f"resuming {paths.latest} from step {plan.step:,}")
    result = train(paths, plan.config, resume=plan.resume, restart=restart and paths.latest.exists(),
                   explicit=plan.explicit,  # a larger --steps typed now extends a finished or stopped run
                   auto_threads=auto_threads)
    say(result.summary())
    if result.stopped_by:
        raise DemoStopped(result.stop_reason(), result.step, again)
    return {"reused": False, **result.to_dict()}


def _earlier_training(paths: RunPaths, step: int) -> dict:
    """What a reused run's training achieved: the checkpoint's own record (step, tokens, losses),
    over the train section of the demo.json that trained it, when that one reached the same step."""
    try:
        earlier = json.loads((paths.root / "demo.json").read_text())["train"]
    except (OSError, ValueError, KeyError, TypeError):
        earlier = {}
    if not isinstance(earlier, dict) or earlier.get("step") != step:
        earlier = {}
    info = read_info(paths.latest)
    return {**earlier, "step": info.step, "tokens_seen": info.tokens_seen, "train_loss": info.extra.get("train_loss"),
            "val_loss": info.extra.get("val_loss"), "checkpoint": str(paths.latest)}


def _probe(paths: RunPaths, cfg: DemoConfig, say: Say) -> dict:
    say("\n== 3. The Prompt Engineers: which head ties a pronoun to its referent?")
    scored = run_probe(ProbeConfig(suites=HELD_OUT_SUITES, device=cfg.device), paths).report
    head = scored["named_head"] or scored["ranking"][0]  # the top-ranked head either way: what --ablate studies
    partners = _partners(scored, head, ProbeConfig.threshold)
    report = run_probe(ProbeConfig(suites=HELD_OUT_SUITES, ablate=True, attribution=True, with_heads=partners,
                                   device=cfg.device), paths).report
    say(render_text({**report, "attribution": None}, top=5))  # its grid is in report.json; the end says what it found
    say(f"\n== 4. Head {head} on the Chronicles' own sentences")
    showcase = run_probe(ProbeConfig(suites=("showcase",), head=head, limit=12, device=cfg.device), paths).report
    say(_showcase_lines(showcase))
    say(f"\n== 5. When did head {head} find its calling? (its accuracy on the {cfg.emergence_suite} suite, and the "
        f"model's preference for the right continuation, every snapshot)")
    em = run_probe(ProbeConfig(suites=(cfg.emergence_suite,), head=head, over_checkpoints=True, device=cfg.device),
                   paths).report["emergence"]
    say(_emergence_lines(em))
    report["emergence"] = em
    report["showcase"] = showcase["head_detail"]
    saved = save_report(report, paths.probe_report)
    say(f"report: {saved}")
    heads = {h["head"]: h for h in report["heads"]}
    abl = report["ablation"]
    return {
        "head": head, "named": report["named_head"] is not None, "accuracy": heads[head]["accuracy"],
        "n": heads[head]["n"], "lower_bound": heads[head]["lower_bound"], "best_baseline": report["best_baseline"],
        "by_suite": {s["suite"]: s["accuracy"] for s in report["suites"]},
        "ablation": {"head": abl["head"], "zero_drop": abl.get("zero_drop"), "mean_drop": abl.get("mean_drop"),
                     "zero_drop_ci95": abl.get("zero_drop_ci95"),
                     "random_zero_drop_mean": abl["random"]["zero_drop"]["mean"] if abl["n"] else None,
                     "random_zero_drop_max": abl["random"]["zero_drop"]["max"] if abl["n"] else None,
                     "together": _together_summary(abl.get("together"))},
        "attribution": _attribution_summary(report["attribution"], head),
        "emerged_at": em["emerged_at"], "first_reached": em["first_reached"], "threshold": em["threshold"],
        "at_last_snapshot": em["at_last_snapshot"], "significant_from": em["significant_from"],
        "significant_at_last_snapshot": em["significant_at_last_snapshot"],
        "emergence_suite": cfg.emergence_suite, "showcase_accuracy": showcase["head_detail"]["totals"]["accuracy"],
        "both": heads[head].get("both"), "pairs": (report.get("twins") or {}).get("pairs"),
        "both_baseline": (report.get("twins") or {}).get("best_baseline"),
    }


def _attribution_summary(a: dict, head: str) -> dict | None:
    """Where the preference is written, in demo.json: the head's own direct effect, every layer's
    feed-forward's, all heads' together, and the preference they add up to (None: nothing to measure)."""
    if not a["n"]:
        return None
    layer, h = (int(x) for x in head.split("."))
    return {"head": head, "direct": a["grid"][layer][h], "heads_total": a["heads_total"],
            "feed_forward": a["feed_forward"], "preference": a["preference"]}


def _together_summary(t: dict | None) -> dict | None:
    """The joint ablation in demo.json: which heads, their drop, and random sets' (None: no partners)."""
    if not t:
        return None
    return {"heads": t["heads"], "zero_drop": t["zero_drop"], "mean_drop": t["mean_drop"],
            "zero_drop_alone": [a["zero_drop"] for a in t["alone"]],
            "random_zero_drop_mean": t["random"]["zero_drop"]["mean"], "random_zero_drop_max": t["random"]["zero_drop"]["max"]}


def _partners(report: dict, head: str, threshold: float) -> tuple[str, ...]:
    """Heads that share `head`'s task: the others above every baseline and at least as accurate as a head
    must be to have emerged. Removed one at a time they hide each other, so the demo also removes
    them together."""
    return tuple(h["head"] for h in report["heads"]
                 if h["head"] != head and h["significant"] and (h["accuracy"] or 0.0) >= threshold)


def _showcase_lines(report: dict) -> str:
    """Each sentence, then its pronoun -> true referent (? when ambiguous) and the head's attention
    from the pronoun summed over each candidate mention, referent first: what ✓ and ✗ compare."""
    d = report["head_detail"]
    lines = []
    for it in d["prompts"]:
        mark = "?" if it["ambiguous"] else {True: "✓", False: "✗", None: "·"}[it["correct"]]
        referent = "?" if it["ambiguous"] else it["referent"]
        weighed = "  ".join(f"{c['text']} {bar(c['mass'], 8)} {c['mass']:.2f}" for c in it["candidate_mass"])
        lines.append(f"  {mark} {it['text']}\n      {it['pronoun']} -> {referent:<16} attention: {weighed}")
    t = d["totals"]
    acc = "n/a" if t["accuracy"] is None else f"{t['accuracy']:.0%}"
    lines.append(f"  right on {acc} of {t['n']} sentences with a distractor: ✓ the true referent holds more of the "
                 f"pronoun's attention than any other mention before it, ✗ another does, · no other mention, "
                 f"? ambiguous by design")
    return "\n".join(lines)


def _emergence_lines(em: dict) -> str:
    prefs = any(r.get("preference") is not None for r in em["rows"])  # demo.json of earlier versions: none
    both = any(r.get("both") is not None for r in em["rows"])  # prompts with pronoun-swap twins
    rows = [f"  step {r['step']:>6,}  {bar(r['accuracy'] or 0.0, 20):<20} {100 * (r['accuracy'] or 0):5.1f}%"
            + (" *" if r["significant"] else "  ")
            + (f"  {100 * (r['both'] or 0):5.1f}%" if both else "")
            + (f"  {'n/a' if r.get('preference') is None else signed(r['preference']):>7}" if prefs else "")
            for r in em["rows"]]
    if both:
        rows.append("  the second figure: right on both versions of a pronoun-swap pair (she for he: the distractor "
                    "becomes the referent), where order or length is right on one version only")
    if prefs:
        rows.append("  the last column: the model's own choice, log p of the referent's continuation minus the "
                    "distractor's (nats)")
    if em["emerged_at"] is not None:
        last = UNPROVEN if em["at_last_snapshot"] else ""
        rows.append(f"  head {em['head']} crossed {100 * em['threshold']:g}% at step {em['first_reached']:,} "
                    f"and stayed above it from step {em['emerged_at']:,} on{last}")
    else:
        rows.append(f"  head {em['head']} did not stay above {100 * em['threshold']:g}%; train longer (--steps)")
    if any(r["significant"] for r in em["rows"]):
        rows.append("  * above every baseline with confidence, as a named head must be: "
                    + (f"from step {em['significant_from']:,} on{UNPROVEN if em['significant_at_last_snapshot'] else ''}"
                       if em["significant_from"] is not None
                       else f"first at step {em['significant_first']:,}, but not at every later snapshot"))
    return "\n".join(rows)


def _generate(paths: RunPaths, cfg: DemoConfig, say: Say) -> dict:
    say("\n== 6. The Inference Engine: the model tells its own stories")
    engine = load_engine(paths.latest, paths.tokenizer, cfg.device)
    out = []
    for i, prompt in enumerate(cfg.prompts):
        sample = SampleConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.8, top_k=40, seed=(cfg.seed + i) % SEED_LIMIT,
                              num_samples=cfg.samples, stop=("\n\n",))
        result = complete(engine, prompt, sample)
        for text in result.completions:
            say(f"  {prompt}{text}")
        out.append({"prompt": prompt, "completions": result.completions, "tokens_per_s": result.tokens_per_s})
    return {"samples": out}


def _ending(s: dict, say: Say) -> None:
    p = s["probe"]
    acc = "n/a" if p["accuracy"] is None else f"{p['accuracy']:.1%}"
    base = p["best_baseline"]
    base_text = "n/a" if base["accuracy"] is None else f"{base['accuracy']:.1%} ({base['name']})"
    verdict = "named" if p["named"] else "not named: it does not beat the baselines with confidence"
    a = p["ablation"]
    on = f" on the {p['emergence_suite']} suite" if p.get("emergence_suite") else ""  # demo.json of earlier versions
    when = (f"emerged{on} at step {p['emerged_at']:,}" if p["emerged_at"] is not None
            else f"has not yet stayed above {100 * p['threshold']:g}%{on}")
    if p.get("at_last_snapshot"):  # demo.json of earlier versions has neither key
        when += " (the last snapshot)"
    if p.get("significant_from") is not None:
        when += f", above every baseline there from step {p['significant_from']:,}"
        when += " (the last snapshot)" if p.get("significant_at_last_snapshot") else ""
    say("\n== The end")
    pairs = f"; right on both versions of {p['both']:.1%} of {p['pairs']:,} pronoun-swap pairs" if p.get("pairs") else ""
    say(f"head {p['head']} ({verdict}): {acc} of {p['n']:,} held-out prompts, best baseline {base_text}{pairs}; {when}")
    if a["zero_drop"] is not None:
        ci = a.get("zero_drop_ci95")  # demo.json of earlier versions has none
        ci = f" (95% CI {signed(ci[0])} to {signed(ci[1])})" if ci else ""
        say(f"ablating it lowers the first token of the referent's continuation by {signed(a['zero_drop'])} nats{ci} "
            f"against the distractor's; a random head's by "
            f"{signed(a['random_zero_drop_mean'])} on average (max {signed(a['random_zero_drop_max'])})")
    if (t := a.get("together")) and t["zero_drop"] is not None:
        size = len(t["heads"])
        say(f"heads {', '.join(t['heads'])} share the task: removed together they lower it by {signed(t['zero_drop'])} "
            f"nats (one at a time {', '.join(signed(d) for d in t['zero_drop_alone'])}); random sets of {size} heads by "
            f"{signed(t['random_zero_drop_mean'])} on average (max {signed(t['random_zero_drop_max'])})")
    if d := p.get("attribution"):  # demo.json of earlier versions has none
        ff = max(range(len(d["feed_forward"])), key=lambda i: d["feed_forward"][i])
        others = sum(d["feed_forward"]) - d["feed_forward"][ff]
        say(f"where the answer is written (direct logit attribution, of {signed(d['preference'])} nats): head "
            f"{d['head']} itself {signed(d['direct'])}, all heads {signed(d['heads_total'])}; the most, "
            f"{signed(d['feed_forward'][ff])}, by layer {ff}'s feed-forward, the other feed-forwards {signed(others)}")
    say(f"the whole life took {s['seconds']:.0f} s. Next: fabric probe --head {p['head']} --run {s['run']}")
