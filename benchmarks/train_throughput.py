"""Training speed: tokens/s and achieved model GFLOP/s of `fabric train`'s step, beside fp32 matmul.

    python benchmarks/train_throughput.py                  # the fixed shape and the cpu preset, 3 rounds of 60 steps
    python benchmarks/train_throughput.py --steps 120
    python benchmarks/train_throughput.py --json

Two shapes, trained on random tokens (speed does not depend on them):
- fixed: 4 layers, 4 heads, width 128, context 64, batch 12, vocabulary 512;
- cpu:   the `cpu` preset (5 layers, 8 heads, width 128, context 128, vocabulary 4096), batch 16.
Each runs through `fabric_cli.train.train` itself in a temporary run directory, so what is timed
is the step `fabric train` takes: the learning rate, the dropout seed, the batch drawn from the
token file, forward, backward, gradient norm and clipping, the fused AdamW step, and the host
read-back and metrics.jsonl line every 10 steps. The run logs tokens/s every 10 steps (evaluation
and checkpoint writes excluded); the first 10 steps (warm-up) are left out. Achieved GFLOP/s =
model FLOPs per token (GPT.flops_per_token: 6 per matmul weight, the tied LM head included, plus
attention over the whole context, the PaLM convention) x tokens/s. The reference is fp32
2048x2048 matmul GFLOP/s (torch) in the same process: the best of 3 timings of 5 products, taken
just before and just after each run. The shapes alternate over --rounds rounds, so that a busy moment of a shared
machine (this one's speed moves by a third within minutes) hits both. The goal on a 2-core CPU:
the fixed shape's step at 60% or more of the matmul figure, best interval against best matmul;
beside it, each round's median interval against that round's own matmul figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from machine import load_average, matmul_gflops

from fabric_cli.config import RunPaths, TrainConfig
from fabric_cli.metrics import read_metrics
from fabric_cli.model import GPT
from fabric_cli.train import train

LOG_INTERVAL = 10
SHAPES = {
    "fixed": dict(vocab=512, cfg=dict(preset="cpu", layers=4, heads=4, width=128, context=64, batch_size=12)),
    "cpu": dict(vocab=4096, cfg=dict(preset="cpu", batch_size=16)),
}


def write_random_tokens(folder: Path, vocab: int, n_train: int = 400_000, n_val: int = 20_000) -> None:
    """train.bin, val.bin and meta.json as `fabric tokenize` writes them, holding uniform random ids."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    rng.integers(0, vocab, n_train).astype("<u2").tofile(folder / "train.bin")
    rng.integers(0, vocab, n_val).astype("<u2").tofile(folder / "val.bin")
    meta = {"dtype": "uint16", "vocab_size": vocab, "train_tokens": n_train, "val_tokens": n_val}
    (folder / "meta.json").write_text(json.dumps(meta))


def run_shape(name: str, steps: int) -> dict:
    """Train one shape for `steps` steps with `fabric train`'s loop: tokens/s of each logged
    interval but the first (warm-up), and the matmul reference just before and just after."""
    shape = SHAPES[name]
    before = matmul_gflops()
    cfg = TrainConfig(**shape["cfg"], steps=steps, warmup=10, eval_interval=steps, eval_batches=1,
                      log_interval=LOG_INTERVAL, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(Path(tmp) / "run")
        write_random_tokens(paths.tokens, shape["vocab"])
        train(paths, cfg, progress=False)
        logged = [r["tokens_per_s"] for r in read_metrics(paths.metrics) if r["kind"] == "train"]
    return {"intervals": logged[1:], "matmul": [before, matmul_gflops()]}


def summarise(name: str, runs: list[dict]) -> dict:
    """One shape over the rounds: best interval against the best matmul figure, and the median
    of the rounds' own ratios (each round's median interval against its own matmul figures)."""
    cfg = TrainConfig(**SHAPES[name]["cfg"])
    with torch.device("meta"):  # the shape only, no memory
        model = GPT(cfg.model_config(SHAPES[name]["vocab"]))
    c, flops = model.config, model.flops_per_token()
    best = max(t for r in runs for t in r["intervals"])
    reference = max(m for r in runs for m in r["matmul"])
    round_ratios = [flops * statistics.median(r["intervals"]) / 1e9 / statistics.mean(r["matmul"]) for r in runs]
    median = statistics.median(t for r in runs for t in r["intervals"])
    return {
        "shape": f"{c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, context {c.block_size}, "
                 f"batch {cfg.batch_size}, vocab {c.vocab_size}",
        "params": model.num_params(),
        "flops_per_token": int(flops),
        "attention_share": round(12 * c.n_layer * c.n_embd * c.block_size / flops, 3),
        "ms_per_step": round(1000 * cfg.batch_size * c.block_size / best, 2),
        "tokens_per_s": round(best, 1),
        "gflops": round(flops * best / 1e9, 2),
        "tokens_per_s_median": round(median, 1),
        "gflops_median": round(flops * median / 1e9, 2),
        "matmul_fp32_gflops": round(reference, 1),
        "matmul_all": [round(m, 1) for r in runs for m in r["matmul"]],
        "matmul_ratio": round(flops * best / 1e9 / reference, 3),
        "matmul_ratio_rounds": [round(x, 3) for x in round_ratios],
        "matmul_ratio_median": round(statistics.median(round_ratios), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="steps per shape and round (a multiple of 10, at least 30)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each trains every shape once, between its matmul figures")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.steps < 3 * LOG_INTERVAL:
        ap.error(f"--steps must be at least {3 * LOG_INTERVAL}: the first {LOG_INTERVAL} are warm-up")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    load_before = load_average()
    runs = {name: [] for name in SHAPES}
    for _ in range(args.rounds):  # shapes alternate, so a busy moment on a shared machine hits both
        for name in SHAPES:
            runs[name].append(run_shape(name, args.steps))
    shapes = {name: summarise(name, r) for name, r in runs.items()}
    res = {
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "load": [load_before, load_average()],
        "shapes": shapes,
        "goal": "fixed shape at >= 0.60 of the matmul figure (best interval)", "goal_met": shapes["fixed"]["matmul_ratio"] >= 0.60,
    }
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"machine   cpu, {res['threads']} threads, torch {res['torch']}; {res['load'][0]} before, {res['load'][1]} after")
    for name, r in shapes.items():
        print(f"{name:<9} {r['shape']} ({r['params']:,} parameters)")
        print(f"          fp32 2048x2048 matmul {r['matmul_fp32_gflops']} GFLOP/s best (all: {', '.join(map(str, r['matmul_all']))})")
        print(f"          {r['tokens_per_s']:>9,.0f} tokens/s  {r['ms_per_step']:>7.2f} ms/step  "
              f"{r['gflops']:>6.1f} GFLOP/s = {r['matmul_ratio']:.0%} of matmul  "
              f"({r['flops_per_token'] / 1e6:.2f} MFLOP/token, attention {r['attention_share']:.0%} of it)")
        print(f"          {r['tokens_per_s_median']:>9,.0f} tokens/s median of the intervals, {r['gflops_median']:.1f} GFLOP/s; "
              f"each round against its own matmul: {', '.join(f'{x:.0%}' for x in r['matmul_ratio_rounds'])} "
              f"(median {r['matmul_ratio_median']:.0%})")
    verdict = "met" if res["goal_met"] else "NOT met"
    print(f"goal      fixed shape at 60% of matmul or more: {verdict} ({shapes['fixed']['matmul_ratio']:.1%} best, "
          f"{shapes['fixed']['matmul_ratio_median']:.1%} median of the rounds)")


if __name__ == "__main__":
    main()
