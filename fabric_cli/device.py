"""Device and dtype choice, with the reason for it."""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from fabric_cli.errors import InputError


class DeviceChoice(NamedTuple):
    device: str  # "cuda", "cuda:1", "mps" or "cpu"
    dtype: str  # autocast dtype: "bfloat16" on CUDA GPUs with bf16 tensor cores, "float32" elsewhere
    reason: str


DTYPES = ("auto", "float32", "bfloat16")  # --dtype: auto is bf16 autocast on CUDA (compute capability 8.0+), fp32 elsewhere


def choose_device(requested: str = "auto", dtype: str = "auto") -> DeviceChoice:
    """Pick a device: `auto` takes cuda, then mps, then cpu; and the autocast dtype, `auto` being
    bf16 on CUDA GPUs with bf16 tensor cores and fp32 elsewhere. No side effects: the command that
    runs on the device makes it current (use_device).

    Example:
        >>> choose_device("cpu").dtype, choose_device("cpu", "bfloat16").dtype
        ('float32', 'bfloat16')
    """
    choice = _choose_device(requested)
    if dtype == "auto" or dtype == choice.dtype:
        return choice
    if dtype == "float32":
        return DeviceChoice(choice.device, "float32", f"{choice.reason.split(';')[0]}; fp32, as --dtype asks")
    if dtype != "bfloat16":
        raise InputError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if choice.device == "mps":
        raise InputError("--dtype bfloat16 runs on cuda or cpu, not on mps; leave --dtype out (fp32 there)")
    if choice.device.startswith("cuda"):  # _cuda chose fp32: this GPU has no bf16 tensor cores
        raise InputError(f"--dtype bfloat16: {choice.device} has no bf16 tensor cores (compute capability below 8.0), "
                         f"where bf16 is emulated and slower than fp32; leave --dtype out (fp32)")
    return DeviceChoice(choice.device, "bfloat16", f"{choice.reason.split(';')[0]}; bf16 autocast, as --dtype asks "
                        f"(fast on CPUs with AMX, such as Xeon Sapphire Rapids; slow on most others)")


def _choose_device(requested: str) -> DeviceChoice:
    import torch

    if requested is not None and not requested.strip():
        raise InputError("--device is empty; give auto (the default), cpu, cuda, cuda:N or mps")
    req = (requested or "auto").lower()
    if req == "auto":
        if torch.cuda.is_available():
            return _cuda("cuda", "auto: CUDA is available")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return DeviceChoice("mps", "float32", "auto: Apple MPS is available, no CUDA")
        return DeviceChoice("cpu", "float32", "auto: no CUDA or MPS found; fp32 on the CPU")
    if req.startswith("cuda"):
        if not re.fullmatch(r"cuda(:[0-9]+)?", req):
            raise InputError(f"--device {requested!r}: a GPU is named cuda or cuda:N (cuda:0, cuda:1, ...)")
        if not torch.cuda.is_available():
            raise InputError(f"--device {requested}: CUDA is not available here; use --device cpu or auto")
        return _cuda(req, "asked for")
    if req == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("--device mps: MPS is not available here; use --device cpu or auto")
        return DeviceChoice("mps", "float32", "asked for")
    if req == "cpu":
        return DeviceChoice("cpu", "float32", "asked for; fp32 (bf16 is slow on most CPUs)")
    raise InputError(f"--device {requested!r} is not one of auto, cpu, cuda, cuda:N, mps")


def _cuda(dev: str, why: str) -> DeviceChoice:
    """`cuda` (the current GPU) or `cuda:N`, which must exist."""
    import torch

    index = dev.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise InputError(f"--device {dev}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    # bf16 tensor cores from compute capability 8.0 (A100, RTX 30xx) on. is_bf16_supported() also
    # says yes on older GPUs (V100, T4) that emulate bf16, where it is slower than fp32.
    bf16 = torch.cuda.get_device_capability(torch.device(dev)) >= (8, 0)
    dtype = "bfloat16" if bf16 else "float32"  # fp16 would need loss scaling
    return DeviceChoice(dev, dtype, f"{why}; {dtype} autocast" if bf16 else f"{why}; fp32 (no bf16 tensor cores)")


def use_device(device: str) -> str:
    """Make a named GPU (`cuda:N`) the current one, so that what is made without a device (pinned
    memory's CUDA context, cuBLAS handles) goes there and not to GPU 0. Returns `device`."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(torch.device(device))
    return device


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the system does not say (not POSIX)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


# Dense bf16 tensor-core peaks, FLOP/s, from NVIDIA's data sheets (without sparsity), by the first
# name that torch.cuda.get_device_name contains: longer names first (L40S before L40 before L4).
PEAK_BF16 = {"H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989.4e12, "H200 NVL": 835e12, "H200": 989.4e12,
             "H800 PCIe": 756e12, "H800": 989.4e12, "A100": 312e12, "A10G": 70e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12}


def peak_bf16(gpu_name: str) -> float | None:
    """A GPU's dense bf16 peak in FLOP/s by its name, or None when it is not in PEAK_BF16.

    Example:
        >>> peak_bf16("NVIDIA H100 80GB HBM3"), peak_bf16("NVIDIA L40S"), peak_bf16("Tesla V100-SXM2-16GB")
        (989400000000000.0, 362000000000000.0, None)
    """
    return next((peak for key, peak in PEAK_BF16.items() if key in gpu_name), None)


def model_flops_utilisation(flops_per_s: float, gpu_name: str | None, dtype: str, world: int = 1) -> float | None:
    """Model FLOP/s per GPU against its dense bf16 peak; None off CUDA, outside bf16, or for a GPU not
    in PEAK_BF16.

    Example:
        >>> model_flops_utilisation(2 * 400e12, "NVIDIA H100 80GB HBM3", "bfloat16", world=2)
        0.4043
        >>> model_flops_utilisation(400e12, "NVIDIA H100 80GB HBM3", "float32") is None
        True
    """
    peak = peak_bf16(gpu_name) if gpu_name and dtype == "bfloat16" else None
    return round(flops_per_s / (peak * world), 4) if peak else None
