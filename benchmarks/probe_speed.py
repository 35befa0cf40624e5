"""How long `fabric probe` takes to score every head, and how that grows with the number of prompts.

    python benchmarks/probe_speed.py                 # cpu preset, 125 / 250 / 500 / 1000 prompts
    python benchmarks/probe_speed.py --device cuda
    python benchmarks/probe_speed.py --json

The model is the `cpu` preset (5 layers x 8 heads, width 128, vocabulary 4096) with random weights
(speed does not depend on them). The prompts are generated sentences of 12 to 40 tokens with a
referent, a distractor and a pronoun, in the [referent] {pronoun} <distractor> markup. Timed: spans
to tokens, batching, one forward pass per batch of 64 with attention capture, and every head's
scores with baselines and confidence intervals; the best of 3 runs. The goal is under 5 s for 500
prompts on a laptop CPU, and linear growth. Prints a machine reference (fp32 2048x2048 matmul
GFLOP/s) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

from fabric_cli.config import preset
from fabric_cli.model import GPT
from fabric_cli.probe.encode import encode_items
from fabric_cli.probe.score import head_scores, make_batches, score_items
from fabric_cli.probe.suites import parse_markup_line
from fabric_cli.tokenizer import train_tokenizer

WOMEN = ["queen", "professor", "nurse", "duchess", "grandmother", "actress"]
MEN = ["king", "farmer", "janitor", "baker", "wizard", "shepherd"]
FILLERS = ["in the morning", "near the old mill", "after the long winter", "without a word",
           "while the rain fell on the roofs of the village", "at the edge of the forest"]


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w, m = rng.choice(WOMEN), rng.choice(MEN)
        she = rng.random() < 0.5
        first, second = (f"[The {w}]", f"<the {m}>") if she else (f"<The {w}>", f"[the {m}]")
        filler = " ".join(rng.sample(FILLERS, rng.randint(0, 3)))
        out.append(f"{first} greeted {second} {filler} before {{{'she' if she else 'he'}}} left. || left | stayed")
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device: str, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    a @ a  # warm up
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def time_probe(model, tok, lines: list[str], device: str, batch_size: int, repeats: int) -> float:
    items = [parse_markup_line(x, suite="bench", default_id=f"b{i}") for i, x in enumerate(lines)]
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        encoded, skipped = encode_items(items, tok, model.config.block_size, tok.token_to_id("<|endoftext|>"))
        per_item = score_items(model, make_batches(encoded, batch_size, device), len(encoded))
        scores = head_scores(per_item, encoded)
        sync(device)
        best = min(best, time.perf_counter() - t)
    assert not skipped and scores.n == len(lines)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="125,250,500,1000", help="numbers of prompts, comma-separated")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    tok = train_tokenizer(prompts(2000, seed=1), vocab_size=4096)
    cfg = preset("cpu", vocab_size=4096)
    model = GPT(cfg).to(args.device).eval()
    lines = prompts(max(sizes))
    time_probe(model, tok, lines[:64], args.device, args.batch_size, 1)  # warm up
    rows = []
    for n in sizes:
        s = time_probe(model, tok, lines[:n], args.device, args.batch_size, args.repeats)
        rows.append({"prompts": n, "seconds": round(s, 4), "ms_per_prompt": round(1000 * s / n, 3)})
    tokens = sum(len(tok.encode(x).ids) for x in [parse_markup_line(y).text for y in lines[: sizes[-1]]]) / sizes[-1]
    result = {
        "device": args.device, "threads": torch.get_num_threads(),
        "model": f"cpu preset: {cfg.n_layer} layers x {cfg.n_head} heads, width {cfg.n_embd}, vocab {cfg.vocab_size}",
        "mean_prompt_tokens": round(tokens, 1), "batch_size": args.batch_size, "rows": rows,
        "growth": round(rows[-1]["seconds"] / rows[0]["seconds"], 2), "prompts_ratio": sizes[-1] / sizes[0],
        "matmul_gflops_fp32": round(matmul_gflops(args.device), 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"probe speed: {result['model']}, {args.device}, {result['threads']} threads, batch {args.batch_size}, "
          f"~{result['mean_prompt_tokens']} tokens a prompt (all heads scored, best of {args.repeats})")
    print("  prompts   seconds   ms/prompt")
    for r in rows:
        print(f"  {r['prompts']:>7}  {r['seconds']:>8.3f}  {r['ms_per_prompt']:>10.3f}")
    print(f"  growth: {result['growth']}x time for {result['prompts_ratio']:.0f}x prompts (linear would be "
          f"{result['prompts_ratio']:.0f}x)")
    print(f"machine reference: fp32 {2048}x{2048} matmul {result['matmul_gflops_fp32']} GFLOP/s")


if __name__ == "__main__":
    main()
