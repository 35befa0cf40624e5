"""Generation speed with the key/value cache against recomputing the whole window each token.

    python benchmarks/generate_throughput.py                  # cpu preset, 256 new tokens, batch 1
    python benchmarks/generate_throughput.py --threads 1      # both ways on one thread
    python benchmarks/generate_throughput.py --device cuda    # the same on a GPU
    python benchmarks/generate_throughput.py --json

The model is the `cpu` preset (5 layers, 8 heads, width 128, vocabulary 4096) with random weights
(speed does not depend on them), in the dtype `fabric generate` would use on the device (bf16 on
CUDA GPUs with bf16 tensor cores, else fp32): with its context raised to 512 so that position 480 exists, and
as shipped (context 128, so 256 new tokens slide the window three times). Measured at batch 1:
- tokens/s for 256 new tokens through `generate` (sampling included), with the cache and with
  --no-cache, after a short prompt (16 tokens: the window grows from 16 to 272) and after a long
  one (240 tokens: the 256 new tokens fill the context to 496); the two ways alternate, best of
  --repeats each, so a busy moment on a shared machine hits both;
- the time to make one token at position 32 and at position 480 (`next_logits`, as `generate`
  calls it): with the cache one forward pass of one position over a cache holding that many;
  without it, a forward pass over the whole window. With the cache it should be nearly flat.
On CUDA, where each cached step replays as a CUDA graph (fabric_cli.decodegraph), the cached
figures of the eager step (GPT._decode_step, decodegraph.ENABLED off) are given beside them, the
two alternating. On the CPU, the bytes of weight matrices a cached step reads (each once: at batch 1 a step is a
pass over the weights, so memory bandwidth, not arithmetic, sets its pace; recomputing multiplies
every matrix by the whole window and gains from the arithmetic). Prints a machine reference (fp32
2048x2048 matmul GFLOP/s, torch, on the threads used) measured in the same run, and the load
average before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from fabric_cli import decodegraph
from fabric_cli.config import SampleConfig, preset
from fabric_cli.device import choose_device
from fabric_cli.generate import generate, next_logits
from fabric_cli.model import GPT, KVCache
from machine import load_average, matmul_gflops, sync


def run_seconds(model: GPT, prompt: torch.Tensor, new: int, use_cache: bool, seed: int) -> float:
    """Seconds for `new` tokens through `generate`, each one waited for, as streaming does."""
    cfg = SampleConfig(max_new_tokens=new, use_cache=use_cache, seed=0)
    g = torch.Generator(device=prompt.device).manual_seed(seed)
    t, made = time.perf_counter(), 0
    for step in generate(model, prompt, cfg, g):
        step.tolist()
        made += 1
    assert made == new
    return time.perf_counter() - t


def throughput(model: GPT, prompt: torch.Tensor, new: int, repeats: int) -> tuple[float, float]:
    """Tokens/s with the cache and recomputing: the two alternate, the best of each counts."""
    best = {True: float("inf"), False: float("inf")}
    for r in range(repeats):
        for use_cache in best:
            best[use_cache] = min(best[use_cache], run_seconds(model, prompt, new, use_cache, r))
    return new / best[True], new / best[False]


@torch.inference_mode()
def per_token_ms(model: GPT, position: int, use_cache: bool, device: str, repeats: int) -> float:
    """Median ms to make the token that follows `position` earlier tokens."""
    vocab = model.config.vocab_size
    context = torch.randint(0, vocab, (1, position + 1), device=device)  # (1, position + 1)
    cache = KVCache(model.config, 1, device=device, dtype=model.transformer.wte.weight.dtype) if use_cache else None
    if cache is not None:
        model(context[:, :position], cache=cache)  # fill the cache up to `position`
    times = []
    for _ in range(repeats + 2):  # the first two warm up
        sync(device)
        t = time.perf_counter()
        if cache is not None:
            cache.pos = position  # overwrite the same slot each time
            logits = next_logits(model, context[:, position:], cache)  # one position: (1, V)
        else:
            logits = next_logits(model, context)  # the whole window: (1, V)
        logits.argmax(-1).item()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:]) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", default="16,240", help="prompt lengths, comma-separated")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each way, alternating (best is kept)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # in the dtype `fabric generate` runs: bf16 weights where choose_device picks bf16 (CUDA with
    # bf16 tensor cores), as load_engine casts them
    dtype = torch.bfloat16 if choose_device(args.device).dtype == "bfloat16" else torch.float32
    models = {512: GPT(preset("cpu", block_size=512)).to(args.device, dtype).eval()}
    models[128] = GPT(preset("cpu")).to(args.device, dtype).eval()  # the preset as shipped
    res = {
        "device": args.device,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_before": load_average(),
        "matmul_fp32_gflops": round(matmul_gflops(args.device), 1),
        "model": f"cpu preset, {models[512].num_params():,} parameters (context 512), random weights",
        "new_tokens": args.new_tokens,
        "throughput": [],
    }
    run_seconds(models[512], torch.zeros(1, 16, dtype=torch.long, device=args.device), 16, True, 0)  # warm up
    cases = [(512, int(n)) for n in args.prompt_tokens.split(",")] + [(128, 16)]
    for block, n in cases:
        prompt = torch.randint(0, models[block].config.vocab_size, (1, n), device=args.device)  # (1, n)
        cached, recomputed = throughput(models[block], prompt, args.new_tokens, args.repeats)
        res["throughput"].append({"context": block, "prompt_tokens": n, "tokens_per_s_cache": round(cached, 1),
                                  "tokens_per_s_no_cache": round(recomputed, 1),
                                  "speedup": round(cached / recomputed, 2)})
    for pos in (32, 480):
        for use_cache in (True, False):
            key = f"ms_per_token_at_{pos}_{'cache' if use_cache else 'no_cache'}"
            res[key] = round(per_token_ms(models[512], pos, use_cache, args.device, 20), 3)
    if args.device.startswith("cuda"):  # the cached step with its CUDA graph and without (the eager step)
        prompt = torch.randint(0, models[512].config.vocab_size, (1, 16), device=args.device)
        best = {True: float("inf"), False: float("inf")}
        try:
            for r in range(args.repeats):
                for graph in best:  # alternating, as the two ways above
                    decodegraph.ENABLED = graph
                    best[graph] = min(best[graph], run_seconds(models[512], prompt, args.new_tokens, True, r))
            decodegraph.ENABLED = False
            for pos in (32, 480):
                res[f"ms_per_token_at_{pos}_cache_eager"] = round(per_token_ms(models[512], pos, True, args.device, 20), 3)
        finally:
            decodegraph.ENABLED = True
        res["graph_against_eager"] = {"context": 512, "prompt_tokens": 16, "tokens_per_s_graph": round(args.new_tokens / best[True], 1),
                                      "tokens_per_s_eager": round(args.new_tokens / best[False], 1)}
    weights = models[128].matmul_params() * models[128].transformer.wte.weight.element_size()
    res["weight_mb_read_per_token"] = round(weights / 1e6, 2)
    res["cached_gb_per_s_at_32"] = round(weights / res["ms_per_token_at_32_cache"] / 1e6, 1)
    res["load_after"] = load_average()
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"machine        {res['device']} ({res['dtype']} weights), {res['threads']} threads, torch {res['torch']}: "
          f"fp32 matmul {res['matmul_fp32_gflops']} GFLOP/s; {res['load_before']}")
    print(f"model          {res['model']}")
    for t in res["throughput"]:
        print(f"{args.new_tokens} new after {t['prompt_tokens']:<3} (context {t['context']}) with cache "
              f"{t['tokens_per_s_cache']:>7.1f} tokens/s   recomputing {t['tokens_per_s_no_cache']:>7.1f} tokens/s"
              f"   speed-up {t['speedup']}x (goal >= 5x: {'met' if t['speedup'] >= 5 else 'NOT met'})")
    if "graph_against_eager" in res:
        g = res["graph_against_eager"]
        print(f"{args.new_tokens} new after 16  (context 512) with cache: the CUDA graph {g['tokens_per_s_graph']:.1f} tokens/s, "
              f"the eager step {g['tokens_per_s_eager']:.1f} tokens/s")
    for pos in (32, 480):
        print(f"at position {pos:<4}   with cache {res[f'ms_per_token_at_{pos}_cache']:>8.3f} ms/token   "
              f"recomputing {res[f'ms_per_token_at_{pos}_no_cache']:>8.3f} ms/token"
              + (f"   eager cached step {res[f'ms_per_token_at_{pos}_cache_eager']:.3f}"
                 if f"ms_per_token_at_{pos}_cache_eager" in res else ""))
    if res["device"] == "cpu":  # on a GPU a step this small waits on launches, not on memory
        print(f"weights        a cached step reads every matrix once, {res['weight_mb_read_per_token']} MB: "
              f"{res['cached_gb_per_s_at_32']} GB/s at position 32 (at batch 1 memory, not arithmetic, sets its pace)")
    print(f"after          {res['load_after']}")


if __name__ == "__main__":
    main()
