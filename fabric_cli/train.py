"""The training loop: AdamW, warm-up and cosine decay, accumulation, clipping, evaluation,
checkpoints with exact resume, faults, and DistributedDataParallel under torchrun.

Everything random is a function of (seed, step): batches (data.py) and dropout (the torch RNG is
reseeded from (seed, rank, step) before each step), and the learning rate is a pure function of
the step. So a run stopped at step k and resumed gives, on the CPU, bitwise the weights and
losses of a run that never stopped. Host syncs happen only on log, eval and save steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

import torch

from fabric_cli import checkpoint as ckpt
from fabric_cli import trainstate
from fabric_cli.config import TrainConfig
from fabric_cli.data import load_tokens
from fabric_cli.device import choose_device, model_flops_utilisation, usable_cpus, use_device
from fabric_cli.errors import InputError, TrainingError
from fabric_cli.rundir import RunPaths
from fabric_cli.runlock import holding
from fabric_cli.runplan import (
    PRECISION, budget, check_budget, check_same_data, other_tokens_note, precision, resume_config, resumed_data, schedule_jump,
    setting_changes, snapshot_step, tokenizer_to_copy,
)
from fabric_cli.text import plural
from fabric_cli.files import atomic_path
from fabric_cli.metrics import LayerGroups, MetricsLog
from fabric_cli.model import GPT
from fabric_cli.trainstep import (
    LR_SCHEDULE, ONE_THREAD_STEP_FLOPS, Dist, StepStats, StopFlag, amp_for, build_model, check_memory, evaluate, keep_freed_memory, lr_at, make_optimizer,
    progress_bar, step_seed, train_step,
)


@dataclass
class TrainResult:
    step: int
    max_steps: int
    tokens_seen: int
    train_loss: float | None
    val_loss: float | None
    seconds: float  # wall time of this session's loop
    train_seconds: float  # the part of it spent in training steps (evaluation and saving excluded)
    tokens_per_s: float  # this session's training tokens / train_seconds
    flops_per_s: float  # model FLOPs per token x tokens/s
    params: int
    device: str
    world_size: int
    checkpoint: str | None
    stopped_by: str | None = None  # "SIGINT", "SIGTERM", "stop-at" or None when the budget was spent
    dtype: str = "float32"  # the precision this session ran: "bfloat16" (autocast) or "float32"
    val_step: int | None = None  # the step val_loss was evaluated at
    compile_seconds: float = 0.0  # --compile: the first step, compiling; left out of train_seconds and tokens/s
    gpu: str | None = None  # the CUDA device's name
    mfu: float | None = None  # bf16 on CUDA: model FLOP/s per GPU against its data-sheet dense bf16 peak
    settings: dict = dataclasses.field(default_factory=dict)  # the TrainConfig the run used (a resume's included)
    model: dict = dataclasses.field(default_factory=dict)  # the ModelConfig trained
    is_main: bool = True
    threads: int | None = None  # CPU threads the steps ran on (None off the CPU)
    epochs: float | None = None  # tokens seen / the tokens of train.bin: passes over the training data

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("is_main")
        return d

    def stop_reason(self) -> str | None:
        """What cut the run short, as the user would name it: SIGINT, SIGTERM or --stop-at."""
        return "--stop-at" if self.stopped_by == "stop-at" else self.stopped_by

    def summary(self) -> str:
        loss = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        return "\n".join([
            f"step          {self.step:,} / {self.max_steps:,}" + (f" (stopped by {self.stop_reason()})" if self.stopped_by else ""),
            f"train loss    {loss(self.train_loss)} (the last step's batch)",
            f"val loss      {loss(self.val_loss)}" + (f" (evaluated at step {self.val_step:,})" if self.val_step is not None else ""),
            f"tokens seen   {self.tokens_seen:,}" + (f" ({self.epochs:,.2f} passes over train.bin)" if self.epochs is not None else ""),
            f"time          {self.seconds:.1f} s ({self.train_seconds:.1f} s of training steps; the rest evaluation and saving"
            + (f", and {self.compile_seconds:.1f} s compiling in the first step)" if self.compile_seconds else ")"),
            f"tokens/s      {self.tokens_per_s:,.0f} in the training steps" + (f" over {self.world_size} ranks" if self.world_size > 1 else ""),
            f"model FLOP/s  {flop_rate(self.flops_per_s)} ({self.params:,} parameters, {self.device}"
            f"{', ' + plural(self.threads, 'thread') if self.threads else ''}"
            f"{', bf16 autocast' if self.dtype == 'bfloat16' else ''})"
            + (f"; MFU {self.mfu:.1%} of the {self.gpu}'s dense bf16 peak" if self.mfu is not None else ""),
            f"checkpoint    {self.checkpoint}",
        ])


def train(
    paths: RunPaths,
    config: TrainConfig,
    *,
    data_dir: str | os.PathLike | None = None,
    resume: bool = False,
    restart: bool = False,
    explicit: Collection[str] | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    auto_threads: bool = True,
) -> TrainResult:
    """Train the GPT on the run's tokens and write checkpoints, snapshots and metrics.jsonl.

    Args:
        paths: the run directory.
        config: the training settings. On `resume` the run's saved settings are used instead,
            except the fields named in `explicit` (the options given on the command line) and
            `device`/`dtype`/`compile`; the model's shape cannot change on resume.
        data_dir: a folder with train.bin, val.bin and meta.json (default: the run's tokens/).
        resume / restart: continue the run's checkpoint, or delete it and start over. A run
            directory that has a checkpoint is refused without one of them.
        stop_at: stop (saving a checkpoint) once this step is reached, as if interrupted; the
            schedule still spans the whole budget, so `--resume` continues where it left off.
        progress: show the tqdm bar and log lines on stderr (rank 0 only).
        auto_threads: let train choose the CPU thread count: a resume takes the count the run was
            saved on (its sums then round as before: bitwise exact), a new run with a step under
            ONE_THREAD_STEP_FLOPS takes one; torch's count is restored at the end. False keeps
            torch's count (the user gave `--threads`).
    Returns:
        a TrainResult; `stopped_by` says whether a signal (SIGINT, SIGTERM) cut the run short.
    Raises:
        TrainingError on a non-finite loss (the last good checkpoint is kept) or out of memory.
    """
    if resume and restart:
        raise InputError("can't use both --resume and --restart: --resume continues the run, --restart starts over")
    if {"steps", "tokens"} <= set(explicit or ()):
        raise InputError("give --steps or --tokens, not both: each sets the length of the run")
    dist = Dist.from_env(config.device)
    threads = torch.get_num_threads()
    try:
        with holding(paths.root, "fabric train") if dist.is_main else contextlib.nullcontext():
            loop = Loop.setup(paths, config, dist, data_dir=data_dir, resume=resume, restart=restart,
                              explicit=explicit, stop_at=stop_at, progress=progress,
                              auto_threads=auto_threads)
            result = loop.run(stop_at)
        # Every rank waits for the others (rank 0 writes the last checkpoint) before the group is torn
        # down: a rank destroying gloo's group while its peer still used it aborted in C++ now and then
        # ("terminate called without an active exception"), failing a finished run.
        dist.barrier()
        return result
    except torch.OutOfMemoryError:
        raise TrainingError(
            "out of memory on the device: lower --batch-size (raise --grad-accum to keep the same "
            "tokens per step), or lower --context"
        ) from None
    finally:
        torch.set_num_threads(threads)  # Loop.setup may have chosen one for a small model
        dist.close()



class Loop:
    """One training session: the model, optimizer and data, and the step counter they share."""

    def __init__(self, paths, cfg, dist, data, model, optimizer, step, tokens_seen, device, dtype, progress):
        self.paths, self.cfg, self.dist, self.data = paths, cfg, dist, data
        self.model, self.optimizer = model, optimizer  # model: the bare GPT
        self.mc = model.config
        self.step = self.saved_step = step
        self.start_step, self.tokens_seen, self.device = step, tokens_seen, device
        self.progress = progress and dist.is_main
        self.dtype, self.amp = dtype, amp_for(device, dtype)
        self.groups = LayerGroups(model, self.mc.n_layer)
        self.tokens_per_step, self.max_steps = budget(cfg, self.mc.block_size, dist.world, step, tokens_seen)
        self.metrics = MetricsLog(paths.metrics, enabled=dist.is_main)
        self.pending: list[tuple[int, StepStats]] = []  # steps whose numbers are not read back yet
        self.train_loss: float | None = None
        self.val_loss: float | None = None
        self.val_step: int | None = None
        self.paused = 0.0  # seconds spent in evaluation, saving and compiling (not training)
        self.compile_seconds = 0.0

        self.net = model  # what the step runs: the GPT, wrapped for DDP and/or compiled
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(model, device_ids=[dist.local_rank] if device.startswith("cuda") else None)
        if cfg.compile:
            self.net = torch.compile(self.net)

    @classmethod
    def setup(cls, paths: RunPaths, config: TrainConfig, dist: Dist, *, data_dir, resume, restart, explicit, stop_at,
              progress, auto_threads: bool = True) -> "Loop":
        data_note = None
        if resume and data_dir is None and paths.latest.exists():  # a --data run goes on with its tokens
            data_dir, data_note = resumed_data(paths)
        data = load_tokens(data_dir or paths.tokens)
        tokenizer_source = tokenizer_to_copy(paths, data)
        has_checkpoint = paths.latest.exists() or paths.latest_state.exists() or bool(paths.snapshots())
        if has_checkpoint and not paths.latest.exists() and not restart:
            # snapshots alone: a run stopped (a second Ctrl-C, a kill) before its first save; nothing to resume
            held = "snapshots" if paths.snapshots() else paths.latest_state.name
            raise InputError(
                f"{paths.checkpoints} holds {held} but no {paths.latest.name} to resume (a run stopped before its "
                f"first save): pass --restart to start over (deletes them and metrics.jsonl)"
            )
        if has_checkpoint and not (resume or restart):
            raise InputError(
                f"{paths.checkpoints} already holds a checkpoint (step {ckpt.read_info(paths.latest).step}); pass "
                f"--resume to continue that run, or --restart to start over (deletes its checkpoints, snapshots, "
                f"metrics.jsonl, and the probe report and demo summary made from them)"
            )
        if resume and not paths.latest.exists():
            raise InputError(f"--resume: there is no checkpoint at {paths.latest}; drop --resume to start a new run")

        choice = choose_device(config.device, config.dtype)
        device = dist.device if dist.enabled else use_device(choice.device)
        if device == "cpu":
            keep_freed_memory()
        if resume:
            info = ckpt.read_info(paths.latest)
            state, meta = trainstate.load_train_state(paths.latest_state, paths.latest)
            saved_cfg = trainstate.saved_train_config(paths.latest_state, meta)
            cfg = resume_config(saved_cfg, config, explicit, info.config)
            check_same_data(paths, info, data)
            other_tokens = other_tokens_note(paths, info, data)
            model_cfg = info.config
            if cfg.dropout is not None:
                model_cfg = dataclasses.replace(model_cfg, dropout=cfg.dropout)
            ckpt.check_config(paths.latest, ckpt.tensor_shapes(paths.latest), info.config)
            step, tokens_seen = info.step, info.tokens_seen
        else:
            cfg, step, tokens_seen, other_tokens = config, 0, 0, None
            model_cfg = cfg.model_config(data.vocab_size)
        data.check_context(model_cfg.block_size)
        check_memory(model_cfg, cfg.batch_size, cfg.grad_accum, device)  # before a model too big is built
        if resume:
            model = GPT(model_cfg)
            ckpt.load_weights(paths.latest, model)
        else:
            model = build_model(model_cfg, cfg.seed)
        model.to(device)
        optimizer = make_optimizer(model, cfg)
        cfg.check_schedule()
        check_budget(step, budget(cfg, model.config.block_size, dist.world, step, tokens_seen)[1], stop_at)
        # Every setting has been checked and the model built: only now may --restart delete the old run.
        if dist.is_main and (restart or not resume):
            paths.remove_training_outputs()  # --restart, or metrics left by a run killed before its first save
        if dist.is_main and tokenizer_source:
            with atomic_path(paths.tokenizer) as tmp:
                shutil.copyfile(tokenizer_source, tmp)
        dist.barrier()
        later = [p for p in paths.snapshots() if snapshot_step(p) > step] if resume else []
        if resume:
            trainstate.restore_optimizer(model, optimizer, state)
            trainstate.restore_rng(state)
            MetricsLog(paths.metrics, enabled=dist.is_main).keep_until(step)
        loop = cls(paths, cfg, dist, data, model, optimizer, step, tokens_seen, device, choice.dtype, progress)
        if dist.is_main:  # the unsaved stretch after the checkpoint is replaced: its snapshots go, as its metrics did
            for p in later:
                p.unlink(missing_ok=True)
        if data.tokenizer_sha256 and not tokenizer_source and not paths.tokenizer.is_file():
            loop.say(f"note: {paths.root} has no tokenizer.json and none matching these tokens lies beside "
                     f"{data.folder}; generate and probe will need --tokenizer with the one they were made with")
        if cfg.warmup >= loop.max_steps - 1:
            loop.say(
                f"note: --warmup {cfg.warmup} leaves no steps for the cosine decay in a run of {loop.max_steps}: "
                f"the learning rate rises to {lr_at(loop.max_steps - 1, cfg, loop.max_steps):.2e} "
                f"(--lr {cfg.lr:g}) and never decays; lower --warmup for a short run"
            )
        left = cfg.tokens - tokens_seen if cfg.tokens else 0  # a resumed run spends what is left, at today's rate
        if left > 0 and left % loop.tokens_per_step:
            planned = tokens_seen + (loop.max_steps - step) * loop.tokens_per_step
            loop.say(f"note: --tokens {cfg.tokens:,} is not a whole number of steps of {loop.tokens_per_step:,} tokens"
                     f"{f' from the {tokens_seen:,} seen' if tokens_seen else ''}: training {plural(loop.max_steps, 'step')}, "
                     f"{planned:,} tokens")
        if other_tokens:
            loop.say(other_tokens)
        if data_note:
            loop.say(data_note)
        if resume and (was := precision(config.device, saved_cfg.dtype)) and was != choice.dtype:
            loop.say(f"note: the run trained in {PRECISION[was]} until step {step:,}; this session runs "
                     f"{PRECISION[choice.dtype]} (--dtype {saved_cfg.dtype} then, {config.dtype} now)")
        if resume and (ranks := meta.get("world_size", "1")).isdigit() and int(ranks) != dist.world:
            was_per_step = saved_cfg.batch_size * model_cfg.block_size * saved_cfg.grad_accum * int(ranks)
            loop.say(f"note: the run trained over {plural(int(ranks), 'process', 'processes')} until step {step:,}, "
                     f"{was_per_step:,} tokens a step; this session runs {plural(dist.world, 'process', 'processes')}, "
                     f"{loop.tokens_per_step:,} tokens a step (each process draws --batch-size x --grad-accum), so "
                     f"the resume is not exact; launch as many processes to keep the batch")
        if later:
            loop.say(f"note: removed {plural(len(later), 'snapshot')} past step {step:,} "
                     f"({', '.join(p.name for p in later)}), left by steps after the checkpoint that were never "
                     f"saved: this run replaces that stretch")
        if resume and meta.get("lr_schedule") != LR_SCHEDULE:
            loop.say(f"note: the run was saved by an earlier fabric, whose learning-rate schedule differed by a step "
                     f"at each end; this session follows the current one ({LR_SCHEDULE}), so the resume is not "
                     f"bitwise exact")
        one_thread = ""
        step_flops = model.flops_per_token(model_cfg.block_size) * cfg.batch_size * model_cfg.block_size
        saved_threads = meta.get("threads", "") if resume else ""
        if auto_threads and device == "cpu" and saved_threads.isdigit():
            torch.set_num_threads(min(int(saved_threads), usable_cpus()))  # as saved: the resume rounds as before
        elif auto_threads and device == "cpu" and torch.get_num_threads() > 1 and step_flops < ONE_THREAD_STEP_FLOPS:
            torch.set_num_threads(1)
            one_thread = "; 1 CPU thread, as a step this small gains nothing from more (--threads N to choose)"
        if (resume and device == "cpu" and (threads := meta.get("threads", "")).isdigit()
                and int(threads) != torch.get_num_threads()):
            loop.say(f"note: the run trained on {plural(int(threads), 'CPU thread')} until step {step:,}; this session "
                     f"runs {torch.get_num_threads()}, whose kernels round sums differently, so the resume is not "
                     f"bitwise exact; --threads {threads} keeps it so")
        if resume and (changed := setting_changes(saved_cfg, cfg)):
            loop.say(f"resuming with {changed} (the rest as saved with the checkpoint)")
        if resume and step and (jump := schedule_jump(saved_cfg, cfg, step, tokens_seen, loop.max_steps, model_cfg.block_size,
                                                       int(meta.get("world_size", "1") or 1))):
            loop.say(jump)
        loop.say(
            f"training {model.num_params():,} parameters ({model_cfg_line(model)}) on {device} "
            f"[{choice.reason}]; {loop.tokens_per_step:,} tokens/step"
            + (f" over {dist.world} ranks" if dist.enabled else "")
            + one_thread
            + (f"; resuming at step {step}" if resume else "")
        )
        return loop

    # ------------------------------------------------------------------ the loop

    def run(self, stop_at: int | None) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        stopped_by = None
        t_start = time.perf_counter()
        self.t_log, self.tokens_at_log, self.paused_at_log = t_start, self.tokens_seen, 0.0
        when = "at the next logged step, when the ranks agree" if dist.enabled else "after this step"
        with StopFlag(announce=dist.is_main, when=when) as flag, progress_bar(self.max_steps, self.step, self.progress) as bar:
            self.bar = bar
            if cfg.snapshot_every and self.step == 0:
                self.snapshot()  # emergence tables start from the untrained model
            while self.step < self.max_steps and not (stop_at is not None and self.step >= stop_at):
                lr = lr_at(self.step, cfg, self.max_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                torch.manual_seed(step_seed(cfg.seed, dist.rank, self.step))  # dropout: a function of the step
                batches = [
                    self.data.batch("train", self.step, m, cfg.batch_size, self.mc.block_size, cfg.seed,
                                    dist.rank, dist.world, self.device)
                    for m in range(cfg.grad_accum)
                ]
                s = self.step + 1
                log_now = s % cfg.log_interval == 0 or s == self.max_steps
                compiling = cfg.compile and self.step == self.start_step  # torch.compile works in the first call
                t_first = time.perf_counter() if compiling else 0.0
                stats = train_step(self.net, self.optimizer, batches, self.groups, cfg.grad_clip, self.amp, log_now)
                if compiling:  # not a training step's time: left out of tokens/s, with the step's tokens
                    self.compile_seconds = time.perf_counter() - t_first
                    self.paused += self.compile_seconds
                    self.tokens_at_log += self.tokens_per_step
                self.step, self.tokens_seen = s, self.tokens_seen + self.tokens_per_step
                self.pending.append((s, stats))
                bar.update(1)

                eval_now = s % cfg.eval_interval == 0 or s == self.max_steps
                snap_now = cfg.snapshot_every > 0 and (s % cfg.snapshot_every == 0 or s == self.max_steps)
                want_stop = (flag.signum is not None and not dist.enabled) or s == stop_at
                if log_now or eval_now or snap_now or want_stop:
                    if self.sync(lr if log_now else None, stop_flag=flag.signum is not None):
                        want_stop = True  # under DDP: some rank was signalled
                if eval_now:
                    self.evaluate_and_save()
                if snap_now:
                    self.snapshot()
                if want_stop:
                    stopped_by = flag.name or ("stop-at" if s == stop_at else "SIGTERM")
                    break
            if self.step != self.saved_step:
                self.save()  # stopped by a signal or --stop-at between evaluations
        seconds = time.perf_counter() - t_start
        train_time = max(seconds - self.paused, 1e-9)
        timed_steps = self.step - self.start_step - (1 if self.compile_seconds else 0)
        tps = max(timed_steps, 0) * self.tokens_per_step / train_time
        flops = self.model.flops_per_token() * tps
        gpu = torch.cuda.get_device_name(torch.device(self.device)) if self.device.startswith("cuda") else None
        if self.device == "cpu" and (busy := _busy_note(torch.get_num_threads())):
            self.say(busy)
        return TrainResult(
            step=self.step, max_steps=self.max_steps, tokens_seen=self.tokens_seen,
            train_loss=self.train_loss, val_loss=self.val_loss, val_step=self.val_step, seconds=seconds,
            train_seconds=train_time, tokens_per_s=tps, compile_seconds=round(self.compile_seconds, 3),
            flops_per_s=flops, params=self.model.num_params(), gpu=gpu,
            mfu=model_flops_utilisation(flops, gpu, self.dtype, dist.world),
            device=self.device, dtype=self.dtype, world_size=dist.world, checkpoint=str(self.paths.latest),
            stopped_by=stopped_by, settings=dataclasses.asdict(self.cfg), model=self.model.config.to_dict(),
            is_main=dist.is_main, threads=torch.get_num_threads() if self.device == "cpu" else None,
            epochs=round(self.tokens_seen / max(len(self.data.train), 1), 4),
        )

    def sync(self, lr: float | None, stop_flag: bool) -> bool:
        """Read back the pending steps' numbers (one host sync), stop on a non-finite one, log.

        Under DDP this is also where the ranks agree to stop; returns True when one was signalled.
        """
        pending, self.pending = self.pending, []
        parts = [torch.stack([st.loss.float() for _, st in pending]), torch.stack([st.grad_norm.float() for _, st in pending])]
        last = pending[-1][1]
        if last.layer_grad_norms is not None:
            parts.append(last.layer_grad_norms.float())
        flat = torch.cat(parts)
        if self.dist.enabled:
            flat = self.dist.mean(torch.cat([flat, torch.tensor([float(stop_flag)], device=flat.device)]))
        values = flat.tolist()
        k = len(pending)
        for i, (s, _) in enumerate(pending):
            if not (math.isfinite(values[i]) and math.isfinite(values[k + i])):
                what = "loss" if not math.isfinite(values[i]) else "gradient norm"
                raise TrainingError(self._nonfinite_message(s, what, values[i] if what == "loss" else values[k + i]))
        self.train_loss = values[k - 1]
        if lr is not None:
            now = time.perf_counter()
            busy = now - self.t_log - (self.paused - self.paused_at_log)
            tps = (self.tokens_seen - self.tokens_at_log) / max(busy, 1e-9)
            self.t_log, self.tokens_at_log, self.paused_at_log = now, self.tokens_seen, self.paused
            layers = values[2 * k : 2 * k + self.mc.n_layer + 1] if last.layer_grad_norms is not None else []
            self.metrics.write({
                "kind": "train", "step": self.step, "loss": self.train_loss, "lr": lr, "tokens_per_s": round(tps, 1),
                "tokens_seen": self.tokens_seen, "grad_norm": values[2 * k - 1], "grad_norm_layers": layers,
            })
            self.bar.set_postfix(loss=f"{self.train_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}", refresh=False)
        return self.dist.enabled and values[-1] > 0

    def _nonfinite_message(self, step: int, what: str, value: float) -> str:
        kept = (
            f"the last good checkpoint, {self.paths.latest} (step {self.saved_step}), is kept"
            if self.saved_step > 0 or self.paths.latest.exists()
            else "no checkpoint had been saved yet"
        )
        return (
            f"the {what} became non-finite ({value}) at step {step}; training stopped without saving, "
            f"{kept}. Lower --lr (it is {self.cfg.lr:g}), keep --grad-clip on, or check the tokens"
        )

    # ------------------------------------------------------------------ evaluation and saving

    def evaluate_and_save(self) -> None:
        t = time.perf_counter()
        result = evaluate(self.model, self.data, self.cfg, self.dist, self.device, self.amp)
        self.val_loss, self.val_step = result["val_loss"], self.step
        self.metrics.write({"kind": "eval", "step": self.step, **result})
        self.say(f"step {self.step}: train loss {result['train_loss']:.4f}, val loss {result['val_loss']:.4f}")
        self.paused += time.perf_counter() - t
        self.save()

    def info(self) -> ckpt.CheckpointInfo:
        extra = {"train_loss": self.train_loss, "val_loss": self.val_loss, "preset": self.cfg.preset,
                 "tokens": self.data.identity}
        if Path(self.data.folder).resolve() != self.paths.tokens.resolve():  # --data: --resume finds them again
            extra["data"] = str(Path(self.data.folder).resolve())
        return ckpt.CheckpointInfo(self.mc, self.step, self.tokens_seen, self.data.tokenizer_sha256, extra)

    def save(self) -> None:
        t = time.perf_counter()
        if self.dist.is_main:
            state = {**trainstate.optimizer_tensors(self.model, self.optimizer), **trainstate.rng_tensors()}
            meta = {
                "train_config": self.cfg.to_json(),
                "tokens_seen": str(self.tokens_seen),
                "world_size": str(self.dist.world),
                "threads": str(torch.get_num_threads()),  # CPU kernels split sums by thread: another count rounds otherwise
                "lr_schedule": LR_SCHEDULE,  # lr_at's formula: a resume under another would not be exact
                # the sampler is stateless: a step's batches are a function of (seed, step)
                "data": json.dumps({"folder": str(self.data.folder), "sampler": "seeded-per-step", "cursor": self.step}),
            }
            trainstate.save_checkpoint_pair(self.paths.latest, self.paths.latest_state, self.model, self.info(), state, meta)
        self.saved_step = self.step
        self.paused += time.perf_counter() - t

    def snapshot(self) -> None:
        t = time.perf_counter()
        if self.dist.is_main:
            ckpt.save_weights(self.paths.snapshot(self.step), self.model, self.info())
        self.paused += time.perf_counter() - t

    def say(self, msg: str) -> None:
        if self.progress:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)


def _busy_note(threads: int) -> str | None:
    """A hint when more threads ran than the machine had cores free: other programs held them."""
    cores = usable_cpus()
    try:
        load = os.getloadavg()[0]  # the last minute, this run's own threads included
    except (AttributeError, OSError):  # not POSIX
        return None
    if threads < 2 or threads > cores or load <= cores + 0.5:  # more threads than cores: the run's own doing
        return None
    return (f"note: the machine was busy (load average {load:.1f} on {plural(cores, 'core')}): with other programs "
            f"holding cores, each of this run's {threads} threads waits for the slowest, and --threads 1 can be "
            f"many times faster")


def flop_rate(flops_per_s: float) -> str:
    """GFLOP/s as a CPU reaches them, TFLOP/s from a thousand of them on (a GPU's: '404.6 TFLOP/s').

    Example:
        >>> flop_rate(140.18e9), flop_rate(404.6e12), flop_rate(999.996e9)
        ('140.18 GFLOP/s', '404.6 TFLOP/s', '1.0 TFLOP/s')
    """
    giga = round(flops_per_s / 1e9, 2)
    return f"{giga:.2f} GFLOP/s" if giga < 1000 else f"{flops_per_s / 1e12:,.1f} TFLOP/s"


def model_cfg_line(model: GPT) -> str:
    c = model.config
    ff = "" if c.n_ff == 4 * c.n_embd else f", feed-forward {c.n_ff}"
    return (f"{c.n_layer} layers, {c.n_head} heads, width {c.n_embd}{ff}, context {c.block_size}, vocab {c.vocab_size}"
            + ("" if c.bias else ", no biases"))
