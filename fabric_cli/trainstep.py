"""The pieces training is built from: the step, the schedule, evaluation, the process group
under torchrun, signal handling and the allocator setting. fabric_cli.train puts them together
into the loop, which benchmarks/train_throughput.py times.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from fabric_cli.config import ModelConfig, TrainConfig
from fabric_cli.data import EVAL_STREAM, TokenData
from fabric_cli.errors import InputError
from fabric_cli.device import choose_device, physical_memory
from fabric_cli.metrics import LayerGroups
from fabric_cli.model import GPT


@dataclass
class StepStats:
    loss: torch.Tensor  # mean over the micro-steps, 0-d, still on the device
    grad_norm: torch.Tensor  # total, before clipping
    layer_grad_norms: torch.Tensor | None  # (n_layer + 1,) on log steps


LR_SCHEDULE = "nanogpt"  # lr_at's formula, as the training state records it: a change must rename it


# On the CPU a training step under this many model FLOPs (forward and backward of one micro-batch)
# runs on one thread unless --threads says otherwise. Measured on a 2-core CPU, quiet: the tiny
# preset's step at vocabulary 512 (24 MFLOP) took 2.19 ms on one thread and 2.18 on two; width 32
# at context 64 (300 MFLOP) gained 1.2x from the second thread, the cpu preset (20 GFLOP) 1.8x.
# The LM head grows with the vocabulary: tiny on the Chronicles' 3,319 tokens is 93 MFLOP, under;
# at 4,096 it is over (and gained 1.17x). Busy, with another program on one core, the tiny preset
# ran at 784 tokens/s on two threads against 89,061 on one: every kernel waits for the thread whose
# core is taken.
ONE_THREAD_STEP_FLOPS = 1e8


def lr_at(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """The learning rate of step `step` (0-based) of a run of `max_steps` steps, as nanoGPT's.

    Linear warm-up over steps 0..warmup-1 (lr x (step+1)/(warmup+1)), the peak `lr` at step
    `warmup`, then cosine decay that reaches `min_lr` at the last step, max_steps - 1.

    Example:
        >>> cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup=1)
        >>> [round(lr_at(s, cfg, 4), 3) for s in range(4)]
        [0.5, 1.0, 0.55, 0.1]
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / (cfg.warmup + 1)
    progress = min(1.0, (step - cfg.warmup) / max(1, max_steps - 1 - cfg.warmup))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    groups: LayerGroups,
    grad_clip: float,
    amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    layer_grad_norms: bool = False,
) -> StepStats:
    """One optimizer step over `batches` (the micro-steps). No host sync: results stay tensors."""
    no_sync = getattr(model, "no_sync", None)  # DDP: all-reduce gradients on the last micro-step only
    loss_sum = None
    for i, (x, y) in enumerate(batches):
        last = i == len(batches) - 1
        with (contextlib.nullcontext() if last or no_sync is None else no_sync()):
            with amp():
                _, loss = model(x, y)
            (loss / len(batches)).backward()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    grads = [p.grad for p in groups.params]
    if layer_grad_norms:
        total, layers = groups.norms(grads)
    else:
        # foreach=None: torch's foreach kernels where the device has them (CUDA, CPU), a loop over
        # the tensors on MPS, where foreach=True is an error
        total, layers = torch.nn.utils.get_total_norm(grads, foreach=None), None
    if grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(groups.params, grad_clip, total, foreach=None)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(loss_sum / len(batches), total, layers)


def make_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    # fused AdamW: one kernel for all parameters on CUDA and on the CPU
    return torch.optim.AdamW(
        model.param_groups(cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True
    )


@torch.no_grad()
def evaluate(model: GPT, data: TokenData, cfg: TrainConfig, dist: "Dist", device: str, amp) -> dict:
    """Mean loss on the same `eval_batches` windows of each split every time (comparable over steps)."""
    model.eval()
    out = {}
    for split in ("val", "train"):
        losses = []
        for i in range(cfg.eval_batches):
            x, y = data.batch(split, EVAL_STREAM, i, cfg.batch_size, model.config.block_size, cfg.seed, dist.rank, dist.world, device)
            with amp():
                losses.append(model(x, y)[1].float())
        out[split] = dist.mean(torch.stack(losses).mean()).item()
    model.train()
    return {"val_loss": out["val"], "train_loss": out["train"]}


# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    """The process group under torchrun (RANK and WORLD_SIZE set), or a single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives' tensors live (nccl needs CUDA tensors)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, requested_device: str) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if "RANK" not in os.environ or world <= 1:
            return cls()
        import torch.distributed as td

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        choice = choose_device(requested_device)
        asked = (requested_device or "auto").lower()
        if choice.device == "mps" and asked != "auto":
            raise InputError(f"--device {requested_device} under torchrun: MPS has no multi-process backend; DDP runs "
                             f"on cuda (nccl) or cpu (gloo): pass --device cpu, or train in one process")
        if choice.device.startswith("cuda:"):
            raise InputError(f"--device {requested_device} under torchrun: each rank takes the GPU of its LOCAL_RANK; "
                             f"pass --device cuda (or leave --device out), and pick GPUs with CUDA_VISIBLE_DEVICES")
        device = f"cuda:{local}" if choice.device == "cuda" else "cpu"  # auto on a Mac: gloo on the CPU
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        # No device_id= for nccl: on torch 2.7.0 it turns on NCCL's non-blocking start-up, which
        # can hang collectives (pytorch#153960); barrier() names the GPU instead.
        td.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return cls(rank, world, local, device)

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of `t` over ranks (gloo has no AVG, so SUM then divide)."""
        if not self.enabled:
            return t
        import torch.distributed as td

        t = t.to(self.device).clone()
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t / self.world

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as td

            # nccl: on this rank's GPU, which the group does not know before its first collective
            td.barrier(device_ids=[self.local_rank] if self.device.startswith("cuda") else None)

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()


# --------------------------------------------------------------------------- signals


class StopFlag:
    """SIGINT / SIGTERM ask the loop to save and stop at the next step; a second Ctrl-C aborts."""

    def __init__(self, announce: bool = True, when: str = "after this step") -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self.announce, self.when = announce, when  # said by one process; when the loop will stop

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, without saving
        if self.signum is None and self.announce:  # said at once: an evaluation under way can take a while
            again = "; Ctrl-C again stops at once, without saving" if signum == signal.SIGINT else ""
            print(f"\nfabric: {signal.Signals(signum).name} received: stopping {self.when}, with a checkpoint{again}",
                  file=sys.stderr, flush=True)
        self.signum = signum

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch RNG seed (dropout) for one step of one rank."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)


def keep_freed_memory() -> None:
    """Let glibc keep the memory a step frees for the next step, instead of returning it to the OS.

    Each step allocates and frees the same activations. By default glibc maps large blocks afresh
    and gives the top of its heap back once a few MB are free, so every step pays page faults and
    the kernel's zeroing again: about 5% of a small model's CPU step. This does what the variables
    MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ do (left alone if either is set); elsewhere
    than glibc on Linux it does nothing.
    """
    if not sys.platform.startswith("linux") or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another libc
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest: blocks up to 32 MiB come from the heap
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def activation_bytes(config: ModelConfig, batch_size: int) -> int:
    """A low estimate of the memory one micro-step's forward pass keeps for the backward pass, fp32:
    per token and layer, about 8 widths (norm outputs, q/k/v, attention output, residuals) and the
    feed-forward's hidden layer twice (before and after GELU: 8 more widths at the usual 4x), and
    the logits twice (with their log-softmax)."""
    c = config
    return 4 * batch_size * c.block_size * (c.n_layer * (8 * c.n_embd + 2 * c.n_ff) + 2 * c.vocab_size)


def check_memory(config: ModelConfig, batch_size: int, grad_accum: int, device: str) -> None:
    """Refuse, before anything is built, a run this machine's memory cannot hold: the model is made
    in host memory (fp32) before it moves to its device, and every micro-batch's token ids are made
    before the step. On the CPU the weights' gradients and AdamW's two moments, and one micro-step's
    activations, count too. Past memory the kernel's out-of-memory killer ends a CPU run with a bare
    'Killed' and no checkpoint; an absurd --context or --layers would fail inside torch's allocator."""
    total = physical_memory()
    if total is None:
        return
    gib = lambda n: f"{n / 2**30:,.1f} GiB"  # noqa: E731
    on_cpu = device == "cpu"
    weights = config.num_params * 4 * (4 if on_cpu else 1)
    if weights > total:
        what = "its weights, gradients and AdamW moments" if on_cpu else "its fp32 weights, made in host memory first,"
        raise InputError(
            f"a model of {config.num_params:,} parameters ({config.n_layer:,} layers, width {config.n_embd:,}, "
            f"context {config.block_size:,}, vocabulary {config.vocab_size:,}) needs {gib(weights)} for {what} "
            f"more than this machine's {gib(total)}; choose a smaller --preset, --layers, --width or --context"
        )
    need = activation_bytes(config, batch_size)
    if on_cpu and need > total:
        raise InputError(
            f"--batch-size {batch_size:,} at context {config.block_size:,} needs at least {gib(need)} "
            f"for one micro-step's activations, more than this machine's {gib(total)}; lower "
            f"--batch-size (and raise --grad-accum to keep the batch)"
        )
    ids = 16 * grad_accum * batch_size * config.block_size  # x and y, int64
    if ids > total:
        raise InputError(
            f"--grad-accum {grad_accum:,} x --batch-size {batch_size:,} at context {config.block_size:,} needs "
            f"{gib(ids)} for one step's token ids alone, more than this machine's {gib(total)}; lower --grad-accum or --batch-size"
        )


def amp_for(device: str, dtype: str) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CUDA or the CPU (choose_device allows it nowhere else), else nothing: fp32."""
    if dtype == "bfloat16":
        kind = "cuda" if device.startswith("cuda") else "cpu"
        return lambda: torch.autocast(kind, dtype=torch.bfloat16)
    return contextlib.nullcontext


def build_model(model_cfg: ModelConfig, seed: int) -> GPT:
    torch.manual_seed(seed)  # the initial weights are a function of the seed
    return GPT(model_cfg)


def progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    # On a terminal the bar redraws ten times a second; into a file (a cluster job's log) that
    # would be a frame every 0.1 s for hours, so there it is drawn at most once a minute.
    return tqdm(total=total, initial=initial, disable=not enabled, file=sys.stderr, unit="step",
                dynamic_ncols=True, leave=True, desc="train", mininterval=0.1 if sys.stderr.isatty() else 60.0)
