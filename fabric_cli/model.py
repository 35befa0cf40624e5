"""The GPT: a GPT-2 style pre-LayerNorm decoder with three paths through the same weights.

- `forward(idx, targets)`: training and scoring, fused `scaled_dot_product_attention`.
- `forward(idx, probe=Probe(...))`: the same attention computed explicitly so every head's pattern
  (and output) can be read, and any head ablated (zeroed or replaced by a given vector).
- `forward(idx, cache=KVCache(...))`: generation; each new token costs one position (one new
  position in eval mode takes `_decode_step`, the same arithmetic with fewer calls around it; on a
  CUDA GPU generation replays that step as a CUDA graph instead: fabric_cli.decodegraph).
Tests hold the three to the same numbers. Parameter names follow GPT-2 / nanoGPT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from fabric_cli.config import Head, ModelConfig


@dataclass
class Probe:
    """What the probing path records and changes. Filled in by each forward pass, afresh.

    ablate: head -> None (zero its output) or a tensor broadcastable to (B, T, hs) to put in its place
    (for mean ablation, or patching in another prompt's output). Heads are zero-based `Head(layer,
    head)` (a plain (layer, head) tuple is taken too); one the model lacks is a ValueError.
    head_outputs: each head's output before the heads are joined and projected by c_proj (the
    attention-weighted values: TransformerLens's `z`), which is what `ablate` replaces; recorded as
    passed on, so an ablated head's is its replacement (zeros, or the vector given).
    """

    capture_attention: bool = True
    capture_head_outputs: bool = False
    ablate: dict[Head, torch.Tensor | None] = field(default_factory=dict)
    attention: list[torch.Tensor] = field(default_factory=list)  # per layer (B, nh, T, T)
    head_outputs: list[torch.Tensor] = field(default_factory=list)  # per layer (B, T, nh, hs)

    def start(self, n_layer: int, n_head: int) -> None:
        """Called by the forward pass: forget the last pass's records, and check the heads to ablate."""
        self.attention.clear()
        self.head_outputs.clear()
        heads = {}
        for h, replacement in self.ablate.items():
            layer, head = h
            if not (0 <= layer < n_layer and 0 <= head < n_head):
                raise ValueError(f"cannot ablate head {layer}.{head}: the model has {n_layer} layers of {n_head} heads, "
                                 f"numbered from 0")
            heads[Head(layer, head)] = replacement
        self.ablate = heads


class KVCache:
    """Preallocated keys and values for every layer; `pos` is how many positions are filled."""

    def __init__(self, config: ModelConfig, batch_size: int, device=None, dtype=torch.float32):
        self.max_len = config.block_size
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, config.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0
        # GPT._decode_step's per-block tensors and its LM head, gathered on first use (on the CPU
        # transposed copies: see _matmul_operand). A cache serves one model whose weights hold still.
        self.weights: list[tuple] | None = None
        self.graph = None  # on a CUDA GPU, the decode step recorded as a graph (decodegraph.graph_step); False: none

    def reset(self) -> None:
        self.pos = 0

    def span(self, T: int) -> tuple[int, int]:
        """(start, end) of the next T positions; a full cache is an error (the caller slides first)."""
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > {self.max_len}")
        return self.pos, end


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v together
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, probe: Probe | None = None, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)

        if probe is not None:
            y = self._explicit(q, k, v, probe)
        elif cache is not None:
            y = self._cached(q, k, v, cache)
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _explicit(self, q, k, v, probe: Probe) -> torch.Tensor:
        """Attention written out, so patterns can be read and heads ablated (eval only: no dropout)."""
        T, hs = q.size(2), q.size(3)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = att @ v  # (B, nh, T, hs)
        if probe.capture_attention:
            probe.attention.append(att)
        heads = [(h.head, r) for h, r in probe.ablate.items() if h.layer == self.layer]
        if heads:
            y = y.clone()
            for h, replacement in heads:
                y[:, h] = 0.0 if replacement is None else replacement.to(y.dtype).expand_as(y[:, h])
        if probe.capture_head_outputs:
            probe.head_outputs.append(y.transpose(1, 2))  # (B, T, nh, hs): as passed on, ablation included
        return y

    def _cached(self, q, k, v, cache: KVCache) -> torch.Tensor:
        T = q.size(2)
        start, end = cache.span(T)
        cache.k[self.layer, :, :, start:end] = k
        cache.v[self.layer, :, :, start:end] = v
        k_all, v_all = cache.k[self.layer, :, :, :end], cache.v[self.layer, :, :, :end]  # (B, nh, end, hs)
        if T == 1:
            return F.scaled_dot_product_attention(q, k_all, v_all)  # one query sees every cached key
        if start == 0:
            return F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
        # a chunk after a prefix: query i (absolute start+i) sees keys 0..start+i
        mask = torch.ones(T, end, dtype=torch.bool, device=q.device).tril(diagonal=start)
        return F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)


class MLP(nn.Module):
    """The Feed-Forward filter: widen, GELU, narrow."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.n_ff, bias=config.bias)
        self.c_proj = nn.Linear(config.n_ff, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    # The exact (erf) GELU, as nanoGPT uses; GPT-2's tanh approximation differs by < 5e-4 and its
    # CPU kernels are over twice as slow (benchmarks/train_throughput.py). GPT._decode_step calls it
    # too: change the activation here and cached generation follows.
    act = staticmethod(F.gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, probe: Probe | None = None, cache: KVCache | None = None):
        x = x + self.attn(self.ln_1(x), probe=probe, cache=cache)  # residual: the gradient's highway
        x = x + self.mlp(self.ln_2(x))
        return x


def _norm_args(ln: nn.LayerNorm) -> tuple:
    """F.layer_norm's arguments after the input: what `ln(x)` computes."""
    return ln.normalized_shape, ln.weight, ln.bias, ln.eps


def _matmul_operand(weight: torch.Tensor) -> torch.Tensor:
    """A Linear's weight (out, in) as the right operand of `x @ w`: (in, out).

    On the CPU a contiguous copy. A decode step multiplies one row by each matrix, a pass over the
    weights that memory bandwidth decides; MKL's kernel for `x @ w` with w (in, out) contiguous
    runs 1.2-1.5x faster than `F.linear`'s `x @ weight.T` over the same numbers (4096 x 128 LM
    head 57 against 77 us; a decode step of the cpu preset 0.80 against 0.96 ms, median). Elsewhere
    the transposed view: GPU kernels take either layout, and the weights are not stored twice.
    """
    return weight.t().contiguous() if weight.device.type == "cpu" else weight.t()


def _affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x @ w + b, w (in, out) from _matmul_operand: F.linear with the weight already transposed."""
    return x @ w if b is None else torch.addmm(b, x, w)


def _block_tensors(block: Block) -> tuple:
    """A block's norms and weights in the order GPT._decode_step takes them, matrices as (in, out)."""
    a, m = block.attn, block.mlp
    return (_norm_args(block.ln_1), _norm_args(block.ln_2), _matmul_operand(a.c_attn.weight), a.c_attn.bias,
            _matmul_operand(a.c_proj.weight), a.c_proj.bias, _matmul_operand(m.c_fc.weight), m.c_fc.bias,
            _matmul_operand(m.c_proj.weight), m.c_proj.bias)


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        # The LM head is tied to the token embedding (F.linear with wte.weight): one matrix reads
        # and writes the vocabulary, fewer parameters, and one tensor in the checkpoint.
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual writes by depth
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        probe: Probe | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        at: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, vocab) and the mean cross-entropy if targets given.

        With `cache`, positions continue from cache.pos and the cache advances by T. `last_only`
        (generation) applies the LM head to the last position alone, `at` (B,) (probing) to one
        position of each row: logits (B, 1, vocab). The LM head is a third of a small model's
        forward pass; a probe reads the logits of the pronoun's position only.
        """
        B, T = idx.shape
        if (last_only or at is not None) and targets is not None:
            raise ValueError("last_only and at compute one position's logits; the loss needs every position's")
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens > context length {self.config.block_size}")
        if (probe is not None or cache is not None) and self.training and self.config.dropout > 0:
            # the probing and cached paths compute attention without its dropout: call model.eval()
            raise ValueError("the probing and cached paths are for evaluation: call model.eval() first (dropout is on)")
        if cache is not None and T == 1 and probe is None and targets is None and not self.training:
            return self._decode_step(idx, cache), None
        if probe is not None:
            probe.start(self.config.n_layer, self.config.n_head)
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, probe=probe, cache=cache)
        if last_only:
            x = x[:, -1:]  # (B, 1, C): the only position whose next token is wanted
        elif at is not None:
            x = x[torch.arange(B, device=x.device), at][:, None]  # (B, 1, C): one position per row
        x = self.transformer.ln_f(x)
        if cache is not None:
            cache.pos += T
        logits = F.linear(x, self.transformer.wte.weight)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-1)
        return logits, loss

    def _decode_step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The cached path for one new position per row (eval): idx (B, 1) -> logits (B, 1, vocab).

        The same arithmetic as the blocks' modules, on their weights, written as one loop of
        functional calls. A decode step of a small model is ~100 kernels of a few microseconds, so
        what it costs is the calls around them: module calls and attribute look-ups (~5 us each),
        head-splitting views, a separate residual add. This makes far fewer and runs in about half
        the time on the cpu preset (benchmarks/generate_throughput.py); the matrices, read once a
        step, are taken in the layout the CPU reads fastest (_matmul_operand). Tests hold it to the
        fast path (tests/test_model.py): a change to Block's arithmetic other than MLP.act (a new
        norm, RoPE, another MLP) is made here too, and in decodegraph.static_decode_step (the step
        a GPU records), or those tests fail.
        """
        B, C = idx.size(0), self.config.n_embd
        nh, hs = self.config.n_head, self.config.head_size
        pos, end = cache.span(1)
        tr = self.transformer
        if cache.weights is None:
            cache.weights = [_block_tensors(block) for block in tr.h] + [_matmul_operand(tr.wte.weight)]
        *blocks, lm_head = cache.weights
        act = tr.h[0].mlp.act
        x = tr.wte.weight[idx[:, 0]] + tr.wpe.weight[pos]  # (B, C)
        # On the CPU, F.gelu of a float tensor goes to oneDNN, which sets up a primitive on every
        # call: ~10 us whatever the size, against ~2 us for ATen's own kernel on a few rows. Worth
        # it for a training batch, not here (a tenth of the step). Restored before returning.
        onednn = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            for i, (ln_1, ln_2, qkv_w, qkv_b, proj_w, proj_b, fc_w, fc_b, out_w, out_b) in enumerate(blocks):
                k_all, v_all = cache.k[i], cache.v[i]  # (B, nh, max_len, hs): this layer's cache
                q, k, v = _affine(torch.layer_norm(x, *ln_1), qkv_w, qkv_b).view(B, 3, nh, 1, hs).unbind(1)  # (B, nh, 1, hs)
                k_all[:, :, pos:end] = k
                v_all[:, :, pos:end] = v
                y = F.scaled_dot_product_attention(q, k_all[:, :, :end], v_all[:, :, :end])  # (B, nh, 1, hs)
                x = _affine(y.reshape(B, C), proj_w, proj_b).add_(x)  # heads side by side, then the residual
                h = act(_affine(torch.layer_norm(x, *ln_2), fc_w, fc_b))  # MLP.act, as MLP.forward
                x = _affine(h, out_w, out_b).add_(x)
        finally:
            torch.backends.mkldnn.enabled = onednn
        x = torch.layer_norm(x, *_norm_args(tr.ln_f))
        cache.pos = end
        return (x @ lm_head)[:, None]  # (B, 1, vocab)

    # ------------------------------------------------------------------ accounting

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def matmul_params(self) -> int:
        """Weights that multiply every token's activations (ModelConfig.matmul_params)."""
        return self.config.matmul_params

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward) in the PaLM convention (appendix B).

        6 per matmul weight (2 forward, 4 backward), plus attention's QK^T and AV: 12 x layers x
        width x context, counted over the whole context as PaLM and nanoGPT do (a causal kernel
        that skips the masked half does about half of this attention work).
        """
        cfg, T = self.config, seq_len or self.config.block_size
        return 6 * self.matmul_params() + 12 * cfg.n_layer * cfg.n_embd * T

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on matrices of Linear layers; none on biases, norms, embeddings."""
        decay, no_decay = [], []
        for mname, module in self.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                (decay if isinstance(module, nn.Linear) and pname == "weight" else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
