"""The cached decode step as one CUDA graph: on a GPU a whole step is replayed with one call.

A decode step of a small model is about seventy kernels of a few microseconds each, and on a GPU
its time is the launching of them from Python: for the cpu preset on an H200, 0.94-1.21 ms a token
(GPT._decode_step), no faster than recomputing the whole window (1.20-2.07 ms); replayed as a
graph, 0.25 ms (benchmarks/generate_throughput.py). A CUDA graph records the step's kernels once
and replays them together, with fixed shapes at fixed addresses, so the step recorded is a static
one: the new position comes from a tensor on the GPU, its key and value are written with
`index_copy_`, and attention runs over the whole cache under a mask of the positions filled so far.
It calls the blocks' norms, Linears and MLP, and writes out the attention and the residual wiring
as GPT._decode_step does (a change to Block's arithmetic is made in both; tests/test_model.py
holds them to the fast path on the CPU, and the recorded graph where a GPU is found).
"""

from __future__ import annotations

import functools
import warnings
import weakref

import torch
import torch.nn.functional as F

from fabric_cli.errors import FabricWarning
from fabric_cli.model import GPT, KVCache

ENABLED = True  # False: every cached step as on the CPU (benchmarks/generate_throughput.py compares)
DEVICES = ("cuda",)  # where a cached step is recorded (the tests add "cpu", with a stand-in for the recording)

# The static step reads the whole cache at every position where the eager step reads the filled
# part: for a small cache nothing next to the launches it saves, for a large one (the gpt2 preset
# at batch 8: 300 MB a step) more than they cost. Caches above this size take the eager step.
MAX_CACHE_BYTES = 256 * 2**20

_FAILED: dict[str, str] = {}  # device -> why recording failed there: later caches do not try again


def graph_step(model: GPT, idx: torch.Tensor, cache: KVCache) -> torch.Tensor | None:
    """The next logits (B, 1, vocab) of a cached decode step of idx (B, 1), replayed as a CUDA graph
    (recorded on the cache's first step); None where no graph serves (not on a GPU, the model in
    training mode, a large cache, or recording failed), for the caller to take the eager step."""
    if not ENABLED or idx.device.type not in DEVICES or model.training or str(idx.device) in _FAILED:
        return None
    if cache.graph is None:
        big = 2 * cache.k.numel() * cache.k.element_size() > MAX_CACHE_BYTES
        cache.graph = False if big else GraphedDecode(model, cache)
    return cache.graph(idx) if cache.graph and cache.graph.failed is None else None


def static_decode_step(model: GPT, idx: torch.Tensor, pos: torch.Tensor, positions: torch.Tensor,
                       cache: KVCache) -> torch.Tensor:
    """One new position per row, at `pos` (a 0-d long tensor): idx (B, 1) -> logits (B, 1, vocab).

    Writes the position's keys and values into `cache` (not its `pos`, which the caller keeps) and
    attends to every position up to `pos`; `positions` is arange(cache.max_len). No shape or
    address depends on `pos`, which is what a CUDA graph needs. Eval only (no dropout).
    """
    B, C = idx.size(0), model.config.n_embd
    nh, hs = model.config.n_head, model.config.head_size
    tr = model.transformer
    at = pos.view(1)
    seen = (positions <= pos).view(1, 1, 1, -1)  # (1, 1, 1, max_len): the positions filled, this one included
    x = tr.wte(idx[:, 0]) + tr.wpe(pos)  # (B, C)
    for i, block in enumerate(tr.h):
        attn = block.attn
        q, k, v = attn.c_attn(block.ln_1(x)).view(B, 3, nh, 1, hs).unbind(1)  # (B, nh, 1, hs) each
        cache.k[i].index_copy_(2, at, k)  # (B, nh, max_len, hs): this layer's cache
        cache.v[i].index_copy_(2, at, v)
        y = F.scaled_dot_product_attention(q, cache.k[i], cache.v[i], attn_mask=seen)  # (B, nh, 1, hs)
        x = x + attn.resid_dropout(attn.c_proj(y.reshape(B, C)))  # heads side by side, then the residual
        x = x + block.mlp(block.ln_2(x))
    return F.linear(tr.ln_f(x), tr.wte.weight)[:, None]  # (B, 1, vocab)


class GraphedDecode:
    """The cached decode step of one model over one KVCache, recorded as a CUDA graph on its first
    call and replayed on every later one. A cache serves one model whose weights hold still (as for
    GPT._decode_step): the graph reads them where they were when it was recorded, and keeps that
    memory alive. Where recording fails (an old driver, a kernel that cannot be recorded), or the
    graph does not reproduce the step, `failed` says why, a warning says so, and the caller (and
    every later cache on that device) takes the eager step."""

    def __init__(self, model: GPT, cache: KVCache):
        device = cache.k.device
        # the cache holds this (KVCache.graph); a weak reference back lets both go, and the graph's
        # memory with them, when the caller drops the cache, without waiting for the cycle collector
        self.model, self.cache = model, weakref.proxy(cache)
        with torch.inference_mode(False):  # plain tensors: a caller outside inference mode writes them too
            self.idx = torch.zeros(cache.k.size(1), 1, dtype=torch.long, device=device)  # (B, 1)
            self.pos = torch.zeros((), dtype=torch.long, device=device)
            self.positions = torch.arange(cache.max_len, device=device)
        self.replay = None  # the recorded graph's replay
        self.logits: torch.Tensor | None = None  # what each replay writes
        self.weights: list[torch.Tensor] = []  # the weights' storage, alive as long as the graph reads it
        self.failed: str | None = None

    def __call__(self, idx: torch.Tensor) -> torch.Tensor | None:
        """idx (B, 1) at the cache's next position -> logits (B, 1, vocab), the cache advanced by
        one; None, with the cache as it was, where the graph could not be recorded."""
        if idx.shape != self.idx.shape:  # a graph would broadcast a single row over the batch
            raise ValueError(f"a cached step of batch {self.idx.size(0)} was given ids of shape {tuple(idx.shape)}")
        start, end = self.cache.span(1)
        self.idx.copy_(idx)
        self.pos.fill_(start)
        if self.replay is None:
            try:
                self._record()  # replays once, checked against the step run before recording
            except RuntimeError as e:
                self.failed = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                _FAILED[str(self.idx.device)] = self.failed
                warnings.warn(f"generating without a CUDA graph ({self.failed}): each token's kernels are "
                              f"launched one by one, several times slower", FabricWarning, stacklevel=2)
                return None
        else:
            self.replay()
        self.cache.pos = end
        return self.logits.clone()  # the next replay overwrites self.logits

    def _record(self) -> None:
        step = functools.partial(static_decode_step, self.model, self.idx, self.pos, self.positions, self.cache)
        self.weights = [p.detach() for p in self.model.parameters()]
        with torch.inference_mode():
            replay, out, before = self._capture(step, self.idx.device)
            out.fill_(float("nan"))  # a graph that recorded nothing (its kernels ran elsewhere) leaves this
            replay()
            if not torch.allclose(out.float(), before.float(), rtol=2e-2, atol=1e-2):
                raise RuntimeError("the recorded graph did not reproduce the step")
        self.replay, self.logits = replay, out

    @staticmethod
    def _capture(step, device: torch.device):
        """Record `step` on `device` as a CUDA graph: (its replay, the tensor each replay writes, the
        step's own output from a run before recording)."""
        with torch.cuda.device(device):  # the device of every stream below, whichever is current
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                # two runs outside the graph first: kernels' first calls set things up (cuBLAS
                # workspaces, lazy loading) that a graph cannot. They write this position's keys
                # and values, as each replay does again.
                for _ in range(2):
                    before = step()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):
                out = step()

        def replay() -> None:  # on that device's current stream, where the inputs were written
            with torch.cuda.device(device):
                graph.replay()

        return replay, out, before
