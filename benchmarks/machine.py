"""The machine reference every benchmark prints beside its figures, so that a ratio can be read.

    from machine import load_average, matmul_gflops, sync   # benchmarks/ is on sys.path when a
                                                            # benchmark runs as a script
"""

from __future__ import annotations

import os
import time

import torch


def sync(device: str) -> None:
    """Wait for the device, so that a timing is the work's and not the queue's."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)  # that GPU's queue: the current device may be another one
    elif device == "mps":
        torch.mps.synchronize()


def matmul_gflops(device: str = "cpu", n: int = 2048, reps: int = 5, tries: int = 3,
                  dtype: torch.dtype = torch.float32) -> float:
    """n x n matmul GFLOP/s on `device` (fp32 unless `dtype`): the best of `tries` timings of `reps` products."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a  # warm up
    sync(device)
    best = 0.0
    for _ in range(tries):
        t = time.perf_counter()
        for _ in range(reps):
            a @ a
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: a shared machine's other work, named."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
