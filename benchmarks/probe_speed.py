"""How long `fabric probe` takes to score every head, and how that grows with the number of prompts.

    python benchmarks/probe_speed.py                 # cpu preset, 125 / 250 / 500 / 1000 prompts
    python benchmarks/probe_speed.py --threads 1     # on one thread (steadier on a shared machine)
    python benchmarks/probe_speed.py --device cuda
    python benchmarks/probe_speed.py --json

The model is the `cpu` preset (5 layers x 8 heads, width 128, context 128, vocabulary 4096) with
random weights (speed does not depend on them). The prompts are the bundled suites of data/probes
(every suite, shuffled with a fixed seed), tokenized by a 4096-token BPE trained on the first 2 MB of
the bundled Chronicles corpus, as `fabric demo` trains one. Timed: spans to tokens, batching, one
forward pass per batch of 64 with attention capture, and every head's scores with baselines and
confidence intervals; the best of 3 runs, sizes interleaved. The goal is under 5 s for 500 prompts
on a laptop CPU, and linear growth. Prints a machine reference (fp32 2048x2048 matmul GFLOP/s)
measured in the same run, and the load average: the machine may be shared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time

import torch

from fabric_cli.config import preset
from fabric_cli.model import GPT
from fabric_cli.probe.encode import encode_items
from fabric_cli.probe.score import head_scores, make_batches, score_items
from fabric_cli.probe.suites import ProbeItem, load_suites
from fabric_cli.rundir import bundled_corpus
from fabric_cli.tokenizer import train_tokenizer
from machine import load_average, matmul_gflops, sync


def suite_items(n: int, seed: int = 0) -> list[ProbeItem]:
    """n prompts from every bundled suite, shuffled (repeated if n is larger than all of them)."""
    items = load_suites()
    random.Random(seed).shuffle(items)
    return list(itertools.islice(itertools.cycle(items), n))


def chronicles_tokenizer(mb: float = 2.0):
    with open(bundled_corpus(), encoding="utf-8") as f:
        text = f.read(int(mb * 1e6))
    return train_tokenizer(text.split("\n\n"), vocab_size=4096)


def time_probe(model, tok, items: list[ProbeItem], device: str, batch_size: int) -> tuple[float, int]:
    """Seconds for one full scoring of `items` (encode, batch, forward passes, every head's
    scores), and how many prompts were probed."""
    sync(device)
    t = time.perf_counter()
    encoded, _ = encode_items(items, tok, model.config.block_size, tok.token_to_id("<|endoftext|>"))
    per_item = score_items(model, make_batches(encoded, batch_size, device), len(encoded))
    head_scores(per_item, encoded)
    sync(device)
    return time.perf_counter() - t, len(encoded)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="125,250,500,1000", help="numbers of prompts, comma-separated")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of every size, interleaved; the best counts")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    tok = chronicles_tokenizer()
    cfg = preset("cpu", vocab_size=4096)
    model = GPT(cfg).to(args.device).eval()
    items = suite_items(max(sizes))
    gflops, load_before = matmul_gflops(args.device), load_average()
    time_probe(model, tok, items[:64], args.device, args.batch_size)  # warm up
    best, probed = {n: float("inf") for n in sizes}, {}
    for _ in range(args.repeats):  # sizes interleaved, so a busy moment on a shared machine hits them all
        for n in sizes:
            seconds, probed[n] = time_probe(model, tok, items[:n], args.device, args.batch_size)
            best[n] = min(best[n], seconds)
    rows = [{"prompts": n, "probed": probed[n], "seconds": round(best[n], 4), "ms_per_prompt": round(1000 * best[n] / n, 3)}
            for n in sizes]
    upto = [len(tok.encode(it.text[: it.pronoun[1]]).ids) + 1 for it in items]  # what the model reads, BOS included
    result = {
        "device": args.device, "threads": torch.get_num_threads(),
        "model": f"cpu preset: {cfg.n_layer} layers x {cfg.n_head} heads, width {cfg.n_embd}, vocab {cfg.vocab_size}",
        "prompts": "bundled suites (data/probes), shuffled",
        "mean_prompt_tokens": round(sum(upto) / len(upto), 1), "batch_size": args.batch_size, "rows": rows,
        "growth": round(rows[-1]["seconds"] / rows[0]["seconds"], 2), "prompts_ratio": sizes[-1] / sizes[0],
        "matmul_gflops_fp32": round(gflops, 1), "load_before": load_before, "load_after": load_average(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"probe speed: {result['model']}, {args.device}, {result['threads']} threads, batch {args.batch_size}, "
          f"{result['prompts']}, ~{result['mean_prompt_tokens']} tokens a prompt up to its pronoun "
          f"(all heads scored, best of {args.repeats})")
    print("  prompts  probed   seconds   ms/prompt")
    for r in rows:
        print(f"  {r['prompts']:>7}  {r['probed']:>6}  {r['seconds']:>8.3f}  {r['ms_per_prompt']:>10.3f}")
    print(f"  growth: {result['growth']}x time for {result['prompts_ratio']:.0f}x prompts (linear would be "
          f"{result['prompts_ratio']:.0f}x)")
    at_500 = [r["seconds"] for r in rows if r["prompts"] == 500]
    if at_500:
        print(f"  500 prompts in {at_500[0]:.3f} s (goal under 5 s: {'met' if at_500[0] < 5 else 'NOT met'})")
    print(f"machine reference: fp32 2048x2048 matmul {result['matmul_gflops_fp32']} GFLOP/s, {result['threads']} "
          f"threads; {result['load_before']} before, {result['load_after'].removeprefix('load average ')} after")


if __name__ == "__main__":
    main()
