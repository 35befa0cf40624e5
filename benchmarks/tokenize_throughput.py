"""Throughput and peak memory of `fabric tokenize` against calling `tokenizers` directly.

    python benchmarks/tokenize_throughput.py            # 20 MB for speed, 20 MB vs 80 MB for memory
    python benchmarks/tokenize_throughput.py --mb 5     # a quicker look

Speed: fabric's tokenize_corpus (file in, token files out: reading, UTF-8 checks, document
splitting, sha256, writing) with an existing tokenizer and with training, against encode_batch
(and encode_batch_fast) over the same documents already in memory. Memory: tokenize_corpus in a
fresh subprocess (ru_maxrss) on a corpus and on one 4x larger; flat means streaming works.
Prints a machine reference (fp32 matmul GFLOP/s) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fabric_cli import encode, sources, tokenizer as tk
from fabric_cli.config import TokenizeConfig
from fabric_cli.rundir import RunPaths

CHILD = """
import json, resource, sys
from fabric_cli import encode
from fabric_cli.config import TokenizeConfig
from fabric_cli.rundir import RunPaths
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tok = None if sys.argv[3] == "-" else sys.argv[3]
s = encode.tokenize_corpus([sys.argv[1]], RunPaths.resolve(sys.argv[2]), TokenizeConfig(), tokenizer=tok, progress=False)
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": s.seconds, "tokens": s.tokens}))
"""


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a  # warm up
    t = time.perf_counter()
    for _ in range(reps):
        a @ a
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def write_corpus(path: Path, mb: float, seed: int) -> list[str]:
    """English-like stories (Zipf-distributed made-up words), one per paragraph; returns them."""
    rng = np.random.default_rng(seed)
    syl = np.array(["ka", "lo", "mi", "ra", "ten", "so", "vel", "an", "dor", "pe", "qui", "un", "sha", "tor", "e"])
    words = np.array(sorted({"".join(rng.choice(syl, rng.integers(1, 4))) for _ in range(6000)}))
    p = 1 / np.arange(1, len(words) + 1)
    docs, size = [], 0
    while size < mb * 1e6:
        idx = rng.choice(len(words), size=20_000, p=p / p.sum())  # a batch of words, cut into stories
        for chunk in np.split(idx, np.cumsum(rng.integers(40, 200, size=200))[:-1])[:-1]:
            text = " ".join(words[chunk]).capitalize() + "."
            docs.append(text.replace(" ka ", ". Ka ").replace(" lo ", ", lo "))
            size += len(text) + 2
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return docs


def direct(tok, docs: list[str], fast: bool) -> float:
    """Seconds for tokenizers alone: encode_batch over batches of the same documents."""
    encode_batch = tok.encode_batch_fast if fast else tok.encode_batch
    t, batch, size = time.perf_counter(), [], 0
    for d in docs:
        batch.append(d)
        size += len(d)
        if size >= sources.BATCH_CHARS:
            encode_batch(batch, add_special_tokens=False)
            batch, size = [], 0
    encode_batch(batch, add_special_tokens=False)
    return time.perf_counter() - t


def peak_memory(corpus: Path, run: Path, tokenizer: str) -> dict:
    # Linux keeps the parent's high-water mark across fork and exec, so a small launcher process
    # starts the measured one: its ru_maxrss then counts only itself.
    launcher = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    cmd = [sys.executable, "-c", launcher, sys.executable, "-c", CHILD, str(corpus), str(run), tokenizer]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"the memory subprocess failed:\n{out.stderr}")
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=10.0, help="corpus size for the speed comparison")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions, interleaved; the best counts")
    ap.add_argument("--mem-mb", type=float, default=20.0, help="memory: this corpus against one 4x larger")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, fp32 matmul 2048x2048: {matmul_gflops():.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = write_corpus(tmp / "speed.txt", args.mb, seed=0)
        mb = (tmp / "speed.txt").stat().st_size / 1e6
        cfg = TokenizeConfig()
        trained = encode.tokenize_corpus([tmp / "speed.txt"], RunPaths(tmp / "a"), cfg, progress=False)
        tok_path = tmp / "a/tokenizer.json"
        tok = tk.load_tokenizer(tok_path)
        best = {"encode_batch": 1e9, "encode_batch_fast": 1e9, "fabric": 1e9}
        for _ in range(args.reps):  # interleaved, so a busy moment on a shared machine hits all three
            best["encode_batch"] = min(best["encode_batch"], direct(tok, docs, fast=False))
            best["encode_batch_fast"] = min(best["encode_batch_fast"], direct(tok, docs, fast=True))
            s = encode.tokenize_corpus([tmp / "speed.txt"], RunPaths(tmp / "b"), cfg, tokenizer=tok_path, progress=False)
            best["fabric"] = min(best["fabric"], s.seconds)
        print(f"\nspeed on {mb:.1f} MB, {len(docs):,} documents, {s.tokens:,} tokens (vocab {s.vocab_size}), "
              f"best of {args.reps}:")
        for name in ("encode_batch", "encode_batch_fast"):
            print(f"  tokenizers {name:19s} {mb / best[name]:6.2f} MB/s  {best[name]:6.2f} s")
        ratio = best["fabric"] / best["encode_batch"]
        print(f"  fabric, existing tokenizer    {mb / best['fabric']:6.2f} MB/s  {best['fabric']:6.2f} s   "
              f"{ratio:.2f}x the time of encode_batch ({best['fabric'] / best['encode_batch_fast']:.2f}x "
              f"encode_batch_fast); goal <= 1.25x: {'met' if ratio <= 1.25 else 'NOT met'}")
        print(f"  fabric, training + encoding   {trained.mb_per_s:6.2f} MB/s  {trained.seconds:6.2f} s   "
              f"(training {trained.train_seconds:.2f} s, once)")
        print("\npeak memory, each in a fresh process (ru_maxrss; 'after imports' is before any work):")
        for label, tok_arg, size in (("existing tokenizer", str(tok_path), args.mem_mb),
                                     ("training + encoding", "-", args.mem_mb / 2)):
            for factor in (1, 4):
                corpus = tmp / f"mem-{size * factor}.txt"
                if not corpus.exists():
                    write_corpus(corpus, size * factor, seed=factor)
                m = peak_memory(corpus, tmp / f"run-{label[:4]}-{factor}", tok_arg)
                real = corpus.stat().st_size / 1e6
                print(f"  {label:20s} {real:6.1f} MB corpus: peak {m['peak_kb'] / 1024:6.1f} MiB "
                      f"(after imports {m['base_kb'] / 1024:.1f} MiB; {real / m['seconds']:.2f} MB/s)")


if __name__ == "__main__":
    main()
