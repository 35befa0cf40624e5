"""The CUDA-graph decode step's bookkeeping (fabric_cli.decodegraph), on the CPU.

CI has no GPU, so the recording itself is stood in for (`eager_capture`: each "replay" runs the
step into the same output tensor, as a graph writes the same memory); everything around it runs
as on a GPU: positions, the slide, the batch check, the fallback when recording fails or a graph
does not reproduce the step, and the memory. tests/test_model.py replays real graphs where a GPU
is found.
"""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
import warnings
import weakref

import pytest
import torch

from fabric_cli import decodegraph
from fabric_cli.config import SampleConfig, preset
from fabric_cli.decodegraph import GraphedDecode, graph_step
from fabric_cli.errors import FabricWarning
from fabric_cli.generate import generate, next_logits
from fabric_cli.model import GPT, KVCache


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(preset("tiny", vocab_size=97)).eval()  # context 16


@pytest.fixture
def recorded(monkeypatch):
    """Cached steps on the CPU go through GraphedDecode, with the recording stood in for."""
    counts = {"recorded": 0, "replayed": 0}

    def eager_capture(step, device):
        counts["recorded"] += 1
        before, out = step(), step()

        def replay():  # a graph's replay is no torch operation: no autograd, no inference-mode rules
            counts["replayed"] += 1
            with torch.inference_mode():
                out.copy_(step())

        return replay, out, before

    monkeypatch.setattr(decodegraph, "DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(decodegraph, "_FAILED", {})
    monkeypatch.setattr(GraphedDecode, "_capture", staticmethod(eager_capture))
    return counts


def tokens(model, prompt, use_cache, temperature):
    cfg = SampleConfig(max_new_tokens=60, temperature=temperature, use_cache=use_cache)
    return torch.stack(list(generate(model, prompt, cfg, torch.Generator().manual_seed(1))))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_replayed_steps_give_the_tokens_recomputing_gives(model, recorded, temperature):
    prompt = torch.randint(0, 97, (3, 3))  # a batch of 3; 60 new tokens slide the context of 16 four times
    assert torch.equal(tokens(model, prompt, True, temperature), tokens(model, prompt, False, temperature))
    # recorded once for the generate call's cache, and replayed at every cached step after the
    # first (slides rebuild the cache through the eager path, and the same graph goes on)
    assert recorded["recorded"] == 1 and recorded["replayed"] > 40


def test_a_failed_recording_warns_once_and_takes_the_eager_step(model, monkeypatch):
    tries = []

    def fail(step, device):
        tries.append(device)
        raise RuntimeError("operation not permitted when stream is capturing\n(more detail)")

    monkeypatch.setattr(decodegraph, "DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(decodegraph, "_FAILED", {})
    monkeypatch.setattr(GraphedDecode, "_capture", staticmethod(fail))
    prompt = torch.randint(0, 97, (2, 3))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cached = tokens(model, prompt, True, 1.0)
        again = tokens(model, prompt, True, 1.0)  # a new cache: the device is not tried again
    assert [(w.category, str(w.message)) for w in seen] == [(FabricWarning,
        "generating without a CUDA graph (operation not permitted when stream is capturing): each token's kernels "
        "are launched one by one, several times slower")]
    assert len(tries) == 1 and decodegraph._FAILED == {"cpu": "operation not permitted when stream is capturing"}
    assert torch.equal(cached, tokens(model, prompt, False, 1.0)) and torch.equal(again, cached)


def test_a_graph_that_does_not_reproduce_the_step_is_not_used(model, monkeypatch):
    """A graph that recorded nothing (the step's kernels went to another device's stream, and ran
    there at once) would hand back the first step's logits at every replay and never write the
    cache: its output is poisoned before the first replay, which is checked against the step."""
    def empty(step, device):
        before = step()
        out = step()  # run, not recorded: right this once
        return (lambda: None), out, before

    monkeypatch.setattr(decodegraph, "DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(decodegraph, "_FAILED", {})
    monkeypatch.setattr(GraphedDecode, "_capture", staticmethod(empty))
    prompt = torch.randint(0, 97, (1, 3))
    with pytest.warns(FabricWarning, match=r"without a CUDA graph \(the recorded graph did not reproduce the step\)"):
        cached = tokens(model, prompt, True, 0.0)
    assert torch.equal(cached, tokens(model, prompt, False, 0.0))


def test_the_batch_must_be_the_caches(model, recorded):
    cache = KVCache(model.config, batch_size=3)
    with torch.inference_mode():
        model(torch.randint(0, 97, (3, 4)), cache=cache)
        with pytest.raises(ValueError, match=r"a cached step of batch 3 was given ids of shape \(1, 1\)"):
            graph_step(model, torch.zeros(1, 1, dtype=torch.long), cache)  # a graph would broadcast the row
    assert cache.pos == 4


def test_the_logits_and_the_position_as_the_eager_step_leaves_them(model, recorded):
    idx = torch.randint(0, 97, (2, 9))
    cache = KVCache(model.config, batch_size=2)
    model(idx[:, :6], cache=cache)
    first = next_logits(model, idx[:, 6:7], cache)  # outside inference mode: recorded, then replayed
    second = next_logits(model, idx[:, 7:8], cache)
    assert cache.pos == 8 and recorded == {"recorded": 1, "replayed": 2}
    full, _ = model(idx[:, :8])
    torch.testing.assert_close(torch.stack([first, second], dim=1), full[:, 6:8], atol=1e-5, rtol=0)
    assert not first.is_inference()  # as the eager step's: the caller may write it in place
    first.mul_(2.0)
    assert not torch.equal(first, second)  # a copy, not the graph's output (which the next replay overwrites)


def test_the_graph_goes_with_its_cache(model, recorded):
    gc.disable()  # no cycle collector: plain reference counting frees both
    try:
        cache = KVCache(model.config, batch_size=1)
        with torch.inference_mode():
            model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
            next_logits(model, torch.zeros(1, 1, dtype=torch.long), cache)
        gone_cache, gone_graph = weakref.ref(cache), weakref.ref(cache.graph)
        del cache
        assert gone_cache() is None and gone_graph() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("over", [0, 1])
def test_a_large_cache_takes_the_eager_step(model, recorded, monkeypatch, over):
    """Above MAX_CACHE_BYTES the static step's reads of the whole cache cost more than the launches saved."""
    cache = KVCache(model.config, batch_size=1)  # keys and values: 2 x 2 layers x 16 positions x 16 wide x 4 bytes
    monkeypatch.setattr(decodegraph, "MAX_CACHE_BYTES", 2 * 2 * 16 * 16 * 4 - over)
    with torch.inference_mode():
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
        next_logits(model, torch.zeros(1, 1, dtype=torch.long), cache)
    assert cache.pos == 4 and recorded["recorded"] == (1 - over)
    assert (cache.graph is False) == bool(over)  # at the limit recorded, a byte over not


def test_a_model_in_training_mode_takes_the_eager_step(model, recorded):
    model.train()
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
        assert graph_step(model, torch.zeros(1, 1, dtype=torch.long), cache) is None
    assert cache.graph is None and recorded["recorded"] == 0


def test_recorded_in_inference_mode_then_stepped_outside_it(model, recorded):
    """generate records inside inference mode; a caller may step the same cache outside it."""
    cache = KVCache(model.config, batch_size=1)
    model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with torch.inference_mode():
        next_logits(model, torch.zeros(1, 1, dtype=torch.long), cache)
    next_logits(model, torch.ones(1, 1, dtype=torch.long), cache)
    assert cache.pos == 5 and recorded == {"recorded": 1, "replayed": 2}


def test_no_graph_off_the_devices_or_when_turned_off(model, monkeypatch):
    cache = KVCache(model.config, batch_size=1)
    model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    assert graph_step(model, torch.zeros(1, 1, dtype=torch.long), cache) is None and cache.graph is None  # the CPU
    monkeypatch.setattr(decodegraph, "DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(decodegraph, "ENABLED", False)
    assert graph_step(model, torch.zeros(1, 1, dtype=torch.long), cache) is None and cache.graph is None


def test_the_cli_prints_fabrics_warnings_as_one_line():
    """The fallback's warning reaches a `fabric generate` user as one line, not as a file, line and
    source line; torch's warnings keep where they come from."""
    said = "generating without a CUDA graph (x): each token's kernels are launched one by one, several times slower"
    code = ("import warnings, torch\n"
            "from fabric_cli import decodegraph\n"
            "from fabric_cli.cli import shell\n"
            "from fabric_cli.errors import FabricWarning\n"
            "def app():\n"
            f"    warnings.warn_explicit({said!r}, FabricWarning, decodegraph.__file__, 90)\n"
            "    warnings.warn_explicit('TypedStorage is deprecated', UserWarning, torch.__file__, 3)\n"
            "    # torch's C++ warnings point at the Python line that called torch, in fabric's files\n"
            "    warnings.warn_explicit('The given NumPy array is not writable', UserWarning, decodegraph.__file__, 5)\n"
            "shell.app = app\n"
            "shell.main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()  # Python's own format adds the source line under the file and line
    assert lines[0] == f"fabric: warning: {said}" and sum(line.startswith("fabric:") for line in lines) == 1
    assert f"{torch.__file__}:3: UserWarning: TypedStorage is deprecated" in lines
    assert f"{decodegraph.__file__}:5: UserWarning: The given NumPy array is not writable" in lines


def test_the_recording_protocol_with_torch_cuda_stood_in_for(monkeypatch):
    """GraphedDecode._capture, which only a GPU runs: on the cache's device, warm-up twice on a side
    stream that waits for the current one, the graph recorded on that side stream, and each replay on
    that device (left to defaults, a cache on cuda:1 while cuda:0 is current recorded an empty graph)."""
    events = []

    class Stream:
        def __init__(self, device=None, name="side"):
            self.name = name
            if name == "side":
                events.append(f"side stream on {device}")

        def wait_stream(self, other):
            events.append(f"{self.name} waits for {other.name}")

    current = Stream(name="current")

    @contextlib.contextmanager
    def on_device(device):
        events.append(f"device {device}")
        yield
        events.append("device done")

    @contextlib.contextmanager
    def on_stream(stream):
        events.append(f"work on {stream.name}")
        yield
        events.append("stream done")

    @contextlib.contextmanager
    def recording(graph, stream=None):
        events.append(f"record on {stream.name if stream else 'a stream of its own'}")
        yield
        events.append("recorded")

    class Graph:
        def replay(self):
            events.append("replay")

    for name, stand_in in (("Stream", Stream), ("current_stream", lambda device=None: current), ("device", on_device),
                           ("stream", on_stream), ("graph", recording), ("CUDAGraph", Graph)):
        monkeypatch.setattr(torch.cuda, name, stand_in)

    def step():
        events.append("step")
        return torch.full((1, 1, 3), float(events.count("step")))

    replay, out, before = GraphedDecode._capture(step, "cuda:1")
    replay()
    assert events == ["device cuda:1", "side stream on cuda:1", "side waits for current", "work on side", "step", "step",
                      "stream done", "current waits for side", "record on side", "step", "recorded", "device done",
                      "device cuda:1", "replay", "device done"]
    assert (before[0, 0, 0].item(), out[0, 0, 0].item()) == (2.0, 3.0)  # the second warm-up's, the recorded run's
