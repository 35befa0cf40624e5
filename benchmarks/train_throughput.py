"""Training speed: tokens/s and achieved model GFLOP/s of `fabric train`'s step, beside fp32 matmul.

    python benchmarks/train_throughput.py                  # the fixed shape and the cpu preset, 3 rounds of 60 steps
    python benchmarks/train_throughput.py --steps 120
    python benchmarks/train_throughput.py --json
    python benchmarks/train_throughput.py --device cuda    # the gpt2 preset in bf16: model FLOP utilisation
    python benchmarks/train_throughput.py --device cuda --compile --batch-size 32

Shapes, trained on random tokens (speed does not depend on them):
- fixed: 4 layers, 4 heads, width 128, context 64, batch 12, vocabulary 512;
- cpu:   the `cpu` preset (5 layers, 8 heads, width 128, context 128, vocabulary 4096), batch 16;
- gpt2:  the `gpt2` preset (12 layers, 12 heads, width 768, context 1024), batch 16, vocabulary
         50304 (GPT-2's 50257 padded to a multiple of 64, as nanoGPT does; the model's vocabulary
         is the tokenizer's, so `fabric tokenize --vocab-size 50304` builds it). The default on CUDA,
         where `fabric train` runs bf16 autocast on GPUs with bf16 tensor cores (compute capability
         8.0 and later; fp32 on older ones); --shapes picks others.
Each runs through `fabric_cli.train.train` itself in a temporary run directory, so what is timed
is the step `fabric train` takes: the learning rate, the dropout seed, the batch drawn from the
token file, forward, backward, gradient norm and clipping, the fused AdamW step, and the host
read-back and metrics.jsonl line every 10 steps. The run logs tokens/s every 10 steps (evaluation
and checkpoint writes excluded); the first 10 steps (warm-up) are left out. Achieved GFLOP/s =
model FLOPs per token (GPT.flops_per_token: 6 per matmul weight, the tied LM head included, plus
attention over the whole context, the PaLM convention) x tokens/s. The reference is fp32
2048x2048 matmul GFLOP/s (torch) in the same process: the best of 3 timings of 5 products, taken
just before and just after each run. Beside it, the ceiling the step's own GEMMs set: every matrix
product of one step (forward, input and weight gradients, at the shape's sizes) run back to back
with nothing else, and the fraction of it the step reaches; what is left is attention, norms, GELU,
loss, optimizer and the calls around them. The shapes alternate over --rounds rounds, so that a busy moment of a shared
machine (this one's speed moves by a third within minutes) hits both. The goal on a 2-core CPU:
the fixed shape's step at 60% or more of the matmul figure, best interval against best matmul;
beside it, each round's median interval against that round's own matmul figures.

On CUDA the reference is bf16 8192x8192 matmul TFLOP/s (torch) measured the same way, and the
figure of merit is model FLOP utilisation (MFU): achieved model FLOP/s (the median interval)
against the GPU's dense bf16 peak from its data sheet (fabric_cli.device.PEAK_BF16; an unlisted GPU is measured
against the matmul figure instead, and says so). The goal there: the gpt2 shape at 40% MFU or more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import load_average, matmul_gflops, sync

from fabric_cli.config import ModelConfig, TrainConfig
from fabric_cli.device import choose_device, peak_bf16
from fabric_cli.metrics import read_metrics
from fabric_cli.model import GPT
from fabric_cli.rundir import RunPaths
from fabric_cli.train import train

LOG_INTERVAL = 10
SHAPES = {
    "fixed": dict(vocab=512, cfg=dict(preset="cpu", layers=4, heads=4, width=128, context=64, batch_size=12)),
    "cpu": dict(vocab=4096, cfg=dict(preset="cpu", batch_size=16)),
    "gpt2": dict(vocab=50304, cfg=dict(preset="gpt2", batch_size=16)),
}
def gpu_peak(device: str) -> tuple[str, float | None]:
    """(the GPU's name, its dense bf16 peak in FLOP/s, or None when it is not in PEAK_BF16)."""
    name = torch.cuda.get_device_name(torch.device(device))
    return name, peak_bf16(name)


def write_random_tokens(folder: Path, vocab: int, n_train: int = 400_000, n_val: int = 20_000) -> None:
    """train.bin, val.bin and meta.json as `fabric tokenize` writes them, holding uniform random ids."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    rng.integers(0, vocab, n_train).astype("<u2").tofile(folder / "train.bin")
    rng.integers(0, vocab, n_val).astype("<u2").tofile(folder / "val.bin")
    meta = {"dtype": "uint16", "vocab_size": vocab, "train_tokens": n_train, "val_tokens": n_val}
    (folder / "meta.json").write_text(json.dumps(meta))


def reference_gflops(device: str) -> float:
    """The machine reference: fp32 2048x2048 matmul on the CPU, bf16 8192x8192 on CUDA (GFLOP/s)."""
    if device.startswith("cuda"):
        return matmul_gflops(device, n=8192, reps=10, dtype=torch.bfloat16)
    return matmul_gflops(device)


def step_matmul_gflops(config: ModelConfig, batch: int, device: str, bf16: bool, reps: int = 5, tries: int = 3) -> float:
    """GFLOP/s of the matrix products one training step of this shape does, run back to back and
    nothing else (no attention, norms, GELU, loss or optimizer): the ceiling that the step's own
    GEMMs, at their own small sizes, set on this machine. Every Linear (in -> out) and the LM head,
    over N = batch x context rows, does three products in the layouts autograd uses: forward
    x @ W.T, the input's gradient dy @ W, the weight's gradient dy.T @ x. In bf16 when the step runs
    bf16 autocast (`bf16`), else fp32; the best of `tries` timings of `reps` steps' products."""
    c, n = config, batch * config.block_size
    dims = [(c.n_embd, 3 * c.n_embd), (c.n_embd, c.n_embd), (c.n_embd, c.n_ff), (c.n_ff, c.n_embd)] * c.n_layer
    dims.append((c.n_embd, c.vocab_size))  # the tied LM head
    dtype = torch.bfloat16 if bf16 else torch.float32
    operands = [(torch.randn(n, i, device=device, dtype=dtype), torch.randn(o, i, device=device, dtype=dtype),
                 torch.randn(n, o, device=device, dtype=dtype)) for i, o in dims]  # x (N, in), W (out, in), dy (N, out)

    def products() -> None:
        for x, w, dy in operands:
            x @ w.t(), dy @ w, dy.t() @ x

    products()  # warm up
    sync(device)
    best = 0.0
    for _ in range(tries):
        t = time.perf_counter()
        for _ in range(reps):
            products()
        sync(device)
        best = max(best, 6 * n * sum(i * o for i, o in dims) * reps / (time.perf_counter() - t) / 1e9)
    return best


def run_shape(name: str, steps: int, device: str, overrides: dict) -> dict:
    """Train one shape for `steps` steps with `fabric train`'s loop: tokens/s of each logged
    interval but the first (warm-up, and --compile's compilation), and the matmul reference just
    before and just after."""
    shape = SHAPES[name]
    before = reference_gflops(device)
    cfg = TrainConfig(**{**shape["cfg"], **overrides}, steps=steps, warmup=10, eval_interval=steps, eval_batches=1,
                      log_interval=LOG_INTERVAL, device=device)
    bf16 = choose_device(device, cfg.dtype).dtype == "bfloat16"  # what `fabric train` will run
    step_matmul = step_matmul_gflops(cfg.model_config(shape["vocab"]), cfg.batch_size, device, bf16)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = RunPaths(Path(tmp) / "run")
        write_random_tokens(paths.tokens, shape["vocab"])
        train(paths, cfg, progress=False)
        logged = [r["tokens_per_s"] for r in read_metrics(paths.metrics) if r["kind"] == "train"]
    memory = torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else None
    return {"intervals": logged[1:], "matmul": [before, reference_gflops(device)], "step_matmul": step_matmul,
            "peak_memory": memory}


def summarise(name: str, runs: list[dict], overrides: dict) -> dict:
    """One shape over the rounds: best interval against the best matmul figure, and the median
    of the rounds' own ratios (each round's median interval against its own matmul figures)."""
    cfg = TrainConfig(**{**SHAPES[name]["cfg"], **overrides})
    with torch.device("meta"):  # the shape only, no memory
        model = GPT(cfg.model_config(SHAPES[name]["vocab"]))
    c, flops = model.config, model.flops_per_token()
    best = max(t for r in runs for t in r["intervals"])
    reference = max(m for r in runs for m in r["matmul"])
    round_ratios = [flops * statistics.median(r["intervals"]) / 1e9 / statistics.mean(r["matmul"]) for r in runs]
    median = statistics.median(t for r in runs for t in r["intervals"])
    step_matmul = max(r["step_matmul"] for r in runs)
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
        "matmul_gflops": round(reference, 1),
        "matmul_all": [round(m, 1) for r in runs for m in r["matmul"]],
        "matmul_ratio": round(flops * best / 1e9 / reference, 3),
        "matmul_ratio_rounds": [round(x, 3) for x in round_ratios],
        "matmul_ratio_median": round(statistics.median(round_ratios), 3),
        "step_matmul_gflops": round(step_matmul, 1),
        "step_matmul_of_reference": round(step_matmul / reference, 3),
        "step_matmul_ratio": round(flops * best / 1e9 / step_matmul, 3),
        "peak_memory_gib": (round(max(r["peak_memory"] for r in runs) / 2**30, 2)
                            if runs[0]["peak_memory"] is not None else None),
    }


def model_flops_utilisation(r: dict, peak: float | None) -> dict:
    """MFU of a summarised shape: the median interval's model FLOP/s against the data-sheet peak,
    or against the measured matmul figure when the peak is unknown."""
    if peak is None:
        return {"mfu": round(r["matmul_ratio_median"], 3), "mfu_against": "measured bf16 matmul (GPU not in PEAK_BF16)"}
    return {"mfu": round(r["gflops_median"] * 1e9 / peak, 3), "mfu_against": f"data-sheet dense bf16 peak {peak / 1e12:.1f} TFLOP/s"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="steps per shape and round (a multiple of 10, at least 30)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each trains every shape once, between its matmul figures")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast where the GPU has bf16 tensor cores, as `fabric train` runs there)")
    ap.add_argument("--shapes", default=None, help=f"comma-separated, of {', '.join(SHAPES)} (default: fixed,cpu; gpt2 on CUDA)")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step for every shape (default: each shape's own)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model, as `fabric train --compile`")
    ap.add_argument("--dtype", default=None, help="as `fabric train --dtype`: auto, float32 or bfloat16 (default: auto)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.steps < 3 * LOG_INTERVAL:
        ap.error(f"--steps must be at least {3 * LOG_INTERVAL}: the first {LOG_INTERVAL} are warm-up")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available here")
    if args.device != "cpu" and not gpu:
        ap.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    names = (args.shapes or ("gpt2" if gpu else "fixed,cpu")).split(",")
    if unknown := [n for n in names if n not in SHAPES]:
        ap.error(f"unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    overrides = {k: v for k, v in (("batch_size", args.batch_size), ("compile", args.compile), ("dtype", args.dtype)) if v}

    load_before = load_average()
    runs = {name: [] for name in names}
    for _ in range(args.rounds):  # shapes alternate, so a busy moment on a shared machine hits both
        for name in names:
            runs[name].append(run_shape(name, args.steps, args.device, overrides))
    shapes = {name: summarise(name, r, overrides) for name, r in runs.items()}
    res = {
        "device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "compile": args.compile, "load": [load_before, load_average()],
        "reference": "bf16 8192x8192 matmul" if gpu else "fp32 2048x2048 matmul", "shapes": shapes,
    }
    # the precision the runs used; each goal is set for one: bf16 on CUDA, fp32 on the CPU
    res["dtype"] = choose_device(args.device, args.dtype or "auto").dtype
    bf16 = res["dtype"] == "bfloat16"
    if gpu:
        res["gpu"], peak = gpu_peak(args.device)
        for r in shapes.values():
            r.update(model_flops_utilisation(r, peak) if bf16 else
                     {"mfu": None, "mfu_against": "none: the run was fp32, and MFU is measured against the bf16 peak"})
        if "gpt2" in shapes and bf16:
            res["goal"] = "gpt2 shape at >= 0.40 model FLOP utilisation (median interval)"
            res["goal_met"] = shapes["gpt2"]["mfu"] >= 0.40
    elif "fixed" in shapes and not bf16:
        res["goal"] = "fixed shape at >= 0.60 of the matmul figure (best interval)"
        res["goal_met"] = shapes["fixed"]["matmul_ratio"] >= 0.60
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print_report(res)


def print_report(res: dict) -> None:
    gpu = res["device"].startswith("cuda")
    precision = "bf16 autocast" if res["dtype"] == "bfloat16" else "fp32"
    where = f"{res['gpu']}, {precision}" if gpu else f"cpu, {res['threads']} threads, {precision}"
    print(f"machine   {where}, torch {res['torch']}{', compiled' if res['compile'] else ''}; "
          f"{res['load'][0]} before, {res['load'][1]} after")
    reference = res["reference"]
    for name, r in res["shapes"].items():
        print(f"{name:<9} {r['shape']} ({r['params']:,} parameters)")
        if gpu:
            print(f"          {reference} {r['matmul_gflops'] / 1000:.1f} TFLOP/s best "
                  f"(all: {', '.join(f'{m / 1000:.1f}' for m in r['matmul_all'])}); peak memory {r['peak_memory_gib']} GiB")
            mfu = f"MFU {r['mfu']:.1%} against the {r['mfu_against']}" if r["mfu"] is not None else f"MFU {r['mfu_against']}"
            print(f"          {r['tokens_per_s_median']:>9,.0f} tokens/s median of the intervals = "
                  f"{r['gflops_median'] / 1000:.1f} TFLOP/s of model FLOPs: {mfu}; "
                  f"{r['matmul_ratio_median']:.0%} of the measured matmul")
            print(f"          {r['tokens_per_s']:>9,.0f} tokens/s best interval ({r['flops_per_token'] / 1e6:.1f} MFLOP/token, "
                  f"attention {r['attention_share']:.0%} of it)")
            print(f"          the step's own matrix products alone, at their sizes: {r['step_matmul_gflops'] / 1000:.1f} "
                  f"TFLOP/s; the best interval reaches {r['step_matmul_ratio']:.0%} of that")
            continue
        print(f"          {reference} {r['matmul_gflops']} GFLOP/s best (all: {', '.join(map(str, r['matmul_all']))})")
        print(f"          {r['tokens_per_s']:>9,.0f} tokens/s  {r['ms_per_step']:>7.2f} ms/step  "
              f"{r['gflops']:>6.1f} GFLOP/s = {r['matmul_ratio']:.0%} of matmul  "
              f"({r['flops_per_token'] / 1e6:.2f} MFLOP/token, attention {r['attention_share']:.0%} of it)")
        print(f"          {r['tokens_per_s_median']:>9,.0f} tokens/s median of the intervals, {r['gflops_median']:.1f} GFLOP/s; "
              f"each round against its own matmul: {', '.join(f'{x:.0%}' for x in r['matmul_ratio_rounds'])} "
              f"(median {r['matmul_ratio_median']:.0%})")
        print(f"          the step's own matrix products alone, at their sizes: {r['step_matmul_gflops']:.1f} GFLOP/s "
              f"({r['step_matmul_of_reference']:.0%} of the {r['matmul_gflops']} above); the step reaches "
              f"{r['step_matmul_ratio']:.0%} of that")
    if "goal" not in res:
        return
    verdict = "met" if res["goal_met"] else "NOT met"
    if gpu:
        print(f"goal      gpt2 at 40% model FLOP utilisation or more: {verdict} ({res['shapes']['gpt2']['mfu']:.1%})")
    else:
        fixed = res["shapes"]["fixed"]
        print(f"goal      fixed shape at 60% of matmul or more: {verdict} ({fixed['matmul_ratio']:.1%} best, "
              f"{fixed['matmul_ratio_median']:.1%} median of the rounds)")


if __name__ == "__main__":
    main()
