"""The cached decode step as one CUDA graph: on a GPU a whole step is replayed with one call.

A decode step of a small model is about seventy kernels of a few microseconds each, and on a GPU
its time is the launching of them from Python: 0.94 ms a token for the cpu preset on an H200,
against 1.2 ms recomputing the whole window (benchmarks/generate_throughput.py). A CUDA graph
records the step's kernels once and replays them together. A graph replays fixed shapes at fixed
addresses, so the step recorded is a static one: the new position comes from a tensor on the GPU,
its key and value are written with `index_copy_`, and attention runs over the whole cache under a
mask of the positions filled so far. It calls the blocks' own modules, so it follows a change to
them; tests/test_model.py holds it to the fast path on the CPU and, where a GPU is found, replayed.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from fabric_cli.model import GPT, KVCache


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
    """The cached decode step of one model over one KVCache on a CUDA GPU, recorded as a graph on
    its first call and replayed on every later one. A cache serves one model whose weights hold
    still (as for GPT._decode_step): the graph reads them where they were when it was recorded.
    Where recording fails (an old driver, a kernel that cannot be captured), `failed` holds why
    and the caller takes the step without a graph."""

    def __init__(self, model: GPT, cache: KVCache):
        device = cache.k.device
        # the cache holds this (KVCache.graph); a weak reference back lets both go, and the graph's
        # memory with them, when the caller drops the cache, without waiting for the cycle collector
        self.model, self.cache = model, weakref.proxy(cache)
        with torch.inference_mode():
            self.idx = torch.zeros(cache.k.size(1), 1, dtype=torch.long, device=device)  # (B, 1)
            self.pos = torch.zeros((), dtype=torch.long, device=device)
            self.positions = torch.arange(cache.max_len, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # the graph's output, overwritten by each replay
        self.failed: str | None = None

    @torch.inference_mode()
    def __call__(self, idx: torch.Tensor) -> torch.Tensor | None:
        """idx (B, 1) at the cache's next position -> logits (B, 1, vocab), the cache advanced by
        one; None, with the cache as it was, where the graph could not be recorded."""
        start, end = self.cache.span(1)
        self.idx.copy_(idx)
        self.pos.fill_(start)
        if self.graph is None:
            try:
                self._record()
            except RuntimeError as e:
                self.failed = str(e).splitlines()[0] if str(e) else type(e).__name__
                return None
        self.graph.replay()
        self.cache.pos = end
        return self.logits.clone()  # the next replay overwrites self.logits

    def _record(self) -> None:
        args = (self.model, self.idx, self.pos, self.positions, self.cache)
        device = self.idx.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            # two runs outside the graph first: kernels' first calls set things up (cuBLAS
            # workspaces, lazy loading) that a graph cannot. They write this position's keys and
            # values, as the replay will again.
            for _ in range(2):
                static_decode_step(*args)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = static_decode_step(*args)
        self.graph = graph
