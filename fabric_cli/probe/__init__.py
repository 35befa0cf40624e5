"""Finding the pronoun heads: prompt suites with ground truth, head scores, ablation, attribution, emergence.

    suites.py     JSONL suites and the [referent] {pronoun} <distractor> markup -> ProbeItem
    encode.py     character spans -> token positions through the tokenizer's offsets
    score.py      one batched forward pass with attention capture -> [n_layer, n_head] scores
    ablate.py     zero and mean ablation of a head vs. random heads, and of heads together: the causal test
    attribution.py  direct logit attribution: what each head and feed-forward writes into the preference
    emergence.py  a head's scores on every snapshot, and when it crossed its threshold
    report.py     report.json and the terminal rendering
    plots.py      --plot pictures (matplotlib, optional)
    run.py        run_probe: all of the above for one checkpoint, as `fabric probe` does it

Example:
    >>> from fabric_cli.config import ProbeConfig
    >>> from fabric_cli.probe import run_probe, render_text
    >>> from fabric_cli.rundir import RunPaths
    >>> result = run_probe(ProbeConfig(head="4.7"), RunPaths.resolve("fabric-run"))  # doctest: +SKIP
    >>> print(render_text(result.report))  # doctest: +SKIP
"""

from fabric_cli.probe.ablate import ablation_study
from fabric_cli.probe.attribution import attribution_study
from fabric_cli.probe.emergence import crossing
from fabric_cli.probe.encode import Encoded, encode_items, span_tokens
from fabric_cli.probe.plots import picture_paths, require_matplotlib, write_plots
from fabric_cli.probe.render import render_text, scored_lines, study_lines
from fabric_cli.probe.run import ProbeResult, check_head, listed_plots, picture_prefix, read_report, probe_run, run_probe, replaced_study, save_report, save_scores, check_report_target, check_scores_target
from fabric_cli.probe.score import head_scores, make_batches, score_items
from fabric_cli.probe.suites import ProbeItem, load_file, load_suites, parse_jsonl_line, parse_markup_line

__all__ = [
    "ProbeItem", "Encoded", "ProbeResult", "load_suites", "load_file", "parse_jsonl_line", "parse_markup_line",
    "span_tokens", "encode_items", "make_batches", "score_items", "head_scores", "ablation_study", "attribution_study", "crossing",
    "run_probe", "probe_run", "check_head", "listed_plots", "read_report", "replaced_study", "save_report", "save_scores", "check_report_target", "check_scores_target", "render_text", "scored_lines", "study_lines", "write_plots", "picture_paths", "picture_prefix", "require_matplotlib",
]
