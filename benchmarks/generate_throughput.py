"""Generation speed with the key/value cache against recomputing the whole window each token.

    python benchmarks/generate_throughput.py                  # cpu preset, context 512, 256 new tokens
    python benchmarks/generate_throughput.py --device cuda    # the same on a GPU
    python benchmarks/generate_throughput.py --json

The model is the `cpu` preset (5 layers, 8 heads, width 128, vocabulary 4096) with its context
raised to 512 so that position 480 exists, with random weights (speed does not depend on them).
Measured at batch 1:
- tokens/s for 256 new tokens through `generate` (sampling included), with the cache and with
  --no-cache, after a short prompt (16 tokens: the window grows from 16 to 272) and after a long
  one (240 tokens: the 256 new tokens fill the context to 496);
- the time to make one token at position 32 and at position 480: with the cache one forward pass
  of one position over a cache holding that many; without it, a forward pass over the whole window.
  With the cache it should be nearly flat; without it, it grows with the position.
Prints a machine reference (fp32 2048x2048 matmul GFLOP/s, torch) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from fabric_cli.config import SampleConfig, preset
from fabric_cli.generate import generate
from fabric_cli.model import GPT, KVCache


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


def tokens_per_s(model: GPT, prompt: torch.Tensor, new: int, use_cache: bool, repeats: int) -> float:
    cfg = SampleConfig(max_new_tokens=new, use_cache=use_cache, seed=0)
    best = float("inf")
    for r in range(repeats):
        g = torch.Generator(device=prompt.device).manual_seed(r)
        t = time.perf_counter()
        made = 0
        for step in generate(model, prompt, cfg, g):
            step.tolist()  # wait for the token, as streaming does
            made += 1
        best = min(best, time.perf_counter() - t)
    assert made == new
    return new / best


@torch.inference_mode()
def per_token_ms(model: GPT, position: int, use_cache: bool, device: str, repeats: int) -> float:
    """Median ms to make the token that follows `position` earlier tokens."""
    vocab = model.config.vocab_size
    context = torch.randint(0, vocab, (1, position + 1), device=device)  # (1, position + 1)
    cache = KVCache(model.config, 1, device=device) if use_cache else None
    if cache is not None:
        model(context[:, :position], cache=cache)  # fill the cache up to `position`
    times = []
    for _ in range(repeats + 2):  # the first two warm up
        sync(device)
        t = time.perf_counter()
        if cache is not None:
            cache.pos = position  # overwrite the same slot each time
            logits, _ = model(context[:, position:], cache=cache)  # one position: (1, 1, V)
        else:
            logits, _ = model(context)  # the whole window: (1, position + 1, V)
        logits[:, -1].argmax(-1).item()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:]) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", default="16,240", help="prompt lengths, comma-separated")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the 256 tokens (best is kept)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT(preset("cpu", block_size=512)).to(args.device).eval()
    gflops = matmul_gflops(args.device)
    tokens_per_s(model, torch.zeros(1, 16, dtype=torch.long, device=args.device), 16, True, 1)  # warm up
    res = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": f"cpu preset, context 512, {model.num_params():,} parameters, random weights",
        "matmul_fp32_gflops": round(gflops, 1),
        "new_tokens": args.new_tokens,
        "throughput": [],
    }
    for n in map(int, args.prompt_tokens.split(",")):
        prompt = torch.randint(0, model.config.vocab_size, (1, n), device=args.device)  # (1, n)
        cached = tokens_per_s(model, prompt, args.new_tokens, True, args.repeats)
        recomputed = tokens_per_s(model, prompt, args.new_tokens, False, args.repeats)
        res["throughput"].append({"prompt_tokens": n, "tokens_per_s_cache": round(cached, 1),
                                  "tokens_per_s_no_cache": round(recomputed, 1), "speedup": round(cached / recomputed, 2)})
    for pos in (32, 480):
        for use_cache in (True, False):
            key = f"ms_per_token_at_{pos}_{'cache' if use_cache else 'no_cache'}"
            res[key] = round(per_token_ms(model, pos, use_cache, args.device, 20), 3)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"machine        {res['device']}, {res['threads']} threads, torch {res['torch']}: "
          f"fp32 matmul {res['matmul_fp32_gflops']} GFLOP/s")
    print(f"model          {res['model']}")
    for t in res["throughput"]:
        print(f"{args.new_tokens} new after {t['prompt_tokens']:<3}  with cache {t['tokens_per_s_cache']:>8.1f} tokens/s   "
              f"recomputing {t['tokens_per_s_no_cache']:>8.1f} tokens/s   speed-up {t['speedup']}x")
    for pos in (32, 480):
        print(f"at position {pos:<4}   with cache {res[f'ms_per_token_at_{pos}_cache']:>8.3f} ms/token   "
              f"recomputing {res[f'ms_per_token_at_{pos}_no_cache']:>8.3f} ms/token")


if __name__ == "__main__":
    main()
