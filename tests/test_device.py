"""Device and dtype choice on CUDA machines, with torch.cuda's answers stood in for (CI has no GPU)."""

from __future__ import annotations

import pytest
import torch

from fabric_cli.device import choose_device, use_device
from fabric_cli.errors import InputError
from fabric_cli.trainstep import Dist


@pytest.fixture
def gpus(monkeypatch):
    """Two CUDA devices of a compute capability the test sets; records set_device calls."""
    state = {"capability": (9, 0), "current": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state["capability"])
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: state["current"].append(getattr(d, "index", d)))
    return state


def test_bf16_autocast_only_where_the_gpu_has_bf16_tensor_cores(gpus):
    assert choose_device("auto").dtype == "bfloat16"  # an H100: capability 9.0
    gpus["capability"] = (7, 5)  # a T4: is_bf16_supported() says yes, by emulation
    choice = choose_device("auto")
    assert (choice.device, choice.dtype) == ("cuda", "float32")
    assert "no bf16 tensor cores" in choice.reason
    with pytest.raises(InputError, match="cuda has no bf16 tensor cores"):
        choose_device("cuda", "bfloat16")


def test_a_named_gpu_is_made_current_by_the_command_that_uses_it_and_a_missing_one_is_refused(gpus):
    assert choose_device("cuda:1").device == "cuda:1"
    assert gpus["current"] == []  # choosing has no side effects: benchmarks and checks call it too
    assert use_device("cuda:1") == "cuda:1"
    assert gpus["current"] == [1]  # pinned memory and cuBLAS then go to GPU 1, not GPU 0
    use_device("cuda")
    assert gpus["current"] == [1]  # plain cuda leaves the current device as it is
    with pytest.raises(InputError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        choose_device("cuda:2")
    for bad in ("cuda:", "cuda1", "cudax", "cuda:²", "cuda:-1"):
        with pytest.raises(InputError, match="a GPU is named cuda or cuda:N"):
            choose_device(bad)


def test_torchrun_gives_each_rank_its_gpu_and_refuses_mps_or_a_named_gpu(gpus, monkeypatch):
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    groups = []
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: groups.append(kw))
    with pytest.raises(InputError, match="each rank takes the GPU of its LOCAL_RANK"):
        Dist.from_env("cuda:0")
    dist = Dist.from_env("cuda")
    assert (dist.device, gpus["current"], groups) == ("cuda:1", [1], [{"backend": "nccl"}])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    for asked in ("mps", "MPS"):
        with pytest.raises(InputError, match="MPS has no multi-process backend"):
            Dist.from_env(asked)
    assert Dist.from_env("auto").device == "cpu" and groups[-1] == {"backend": "gloo"}  # a Mac's auto: gloo
