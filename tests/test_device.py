"""Device and dtype choice on CUDA machines, with torch.cuda's answers stood in for (CI has no GPU)."""

from __future__ import annotations

import pytest
import torch

from fabric_cli.device import choose_device
from fabric_cli.errors import InputError


@pytest.fixture
def gpus(monkeypatch):
    """Two CUDA devices of a compute capability the test sets; records set_device calls."""
    state = {"capability": (9, 0), "current": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state["capability"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: state["current"].append(i))
    return state


def test_bf16_autocast_only_where_the_gpu_has_bf16_tensor_cores(gpus):
    assert choose_device("auto").dtype == "bfloat16"  # an H100: capability 9.0
    gpus["capability"] = (7, 5)  # a T4: is_bf16_supported() says yes, by emulation
    choice = choose_device("auto")
    assert (choice.device, choice.dtype) == ("cuda", "float32")
    assert "no bf16 tensor cores" in choice.reason
    with pytest.raises(InputError, match="cuda has no bf16 tensor cores"):
        choose_device("cuda", "bfloat16")


def test_a_named_gpu_becomes_the_current_one_and_a_missing_one_is_refused(gpus):
    assert choose_device("cuda:1").device == "cuda:1"
    assert gpus["current"] == [1]  # pinned memory and cuBLAS then go to GPU 1, not GPU 0
    choose_device("cuda")
    assert gpus["current"] == [1]  # plain cuda leaves the current device as it is
    for bad in ("cuda:2", "cuda:x"):
        with pytest.raises(InputError, match=rf"--device {bad}: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
            choose_device(bad)
