"""What a training run will do, settled before its first step: its budget of steps, the settings a
resume keeps and the ones it changes, and the checks that the tokens, the tokenizer and the
checkpoint belong together. `train.Loop.setup` calls them before it builds anything it would have
to undo.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Collection

from fabric_cli import checkpoint as ckpt
from fabric_cli.config import MAX_STEPS, ModelConfig, TrainConfig
from fabric_cli.data import TokenData
from fabric_cli.device import choose_device
from fabric_cli.errors import CheckpointError, InputError
from fabric_cli.rundir import RunPaths
from fabric_cli.tokenizer import load_tokenizer, tokenizer_sha256
from fabric_cli.trainstep import lr_at


def setting_changes(saved: TrainConfig, now: TrainConfig) -> str:
    """The training settings a resumed run changes, as flags: "--lr 0.005 (was 0.001)"; "" if none.
    The device, --dtype and --compile are left out: each session takes them from its own command
    line (what is saved records the last session's); a change of precision gets its own note."""
    def shown(value) -> str:
        return "unset" if value is None else str(value)  # None: the preset's, or no --tokens budget

    return ", ".join(
        f"--{f.name.replace('_', '-')} {shown(getattr(now, f.name))} (was {shown(getattr(saved, f.name))})"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("device", "dtype", "compile") and getattr(now, f.name) != getattr(saved, f.name)
    )


def resume_config(saved: TrainConfig, given: TrainConfig, explicit: Collection[str] | None, model: ModelConfig) -> TrainConfig:
    """The saved settings, with the options given now (`explicit`) and the device choice applied."""
    changes = {k: getattr(given, k) for k in (explicit or ()) if hasattr(saved, k)}
    if "steps" in changes and "tokens" not in changes:
        changes["tokens"] = None  # a --steps given now replaces a --tokens budget the run started with
    has = {"preset": saved.preset, "layers": model.n_layer, "heads": model.n_head, "width": model.n_embd,
           "context": model.block_size, "ff_width": model.n_ff, "bias": model.bias}
    for k in TrainConfig.SHAPE_FIELDS:
        if k in changes and changes[k] != has[k]:
            flag = f"--{k.replace('_', '-')}" if k != "bias" else "--bias" if changes[k] else "--no-bias"
            given = f"{flag} differs from the checkpoint, which has {'biases' if has[k] else 'no biases'}" if k == "bias" \
                else f"{flag} {changes[k]} differs from the checkpoint's {has[k]}"
            raise InputError(f"{given}: a resumed run keeps its model's shape; drop {flag}, or use --restart to "
                             f"train a new model")
    changes.update(device=given.device, dtype=given.dtype, compile=given.compile)
    return dataclasses.replace(saved, **changes)


def resumed_data(paths: RunPaths) -> tuple[str | None, str | None]:
    """For --resume without --data: (the tokens folder to train on, None for the run's own; a note).

    A run trained on another folder's tokens (--data) records it in its checkpoint and goes on with
    them. Where the run has tokens of its own as well, they win, and the note says which it was
    trained on; where the folder is gone, it is an InputError naming it.
    """
    remembered = ckpt.read_info(paths.latest).extra.get("data")
    if not isinstance(remembered, str):
        return None, None
    if paths.meta.exists():
        return None, (f"note: training on {paths.tokens}, the run's own tokens; it was trained on {remembered} "
                      f"(--data {remembered} goes on with those)")
    if not Path(remembered, "meta.json").is_file():
        raise InputError(f"--resume: this run trained on the tokens in {remembered}, and they are not there now; "
                         f"pass --data with the folder they moved to")
    return remembered, f"note: training on {remembered}, the tokens this run was trained on (--data names others)"


def snapshot_step(path: Path) -> int:
    """The step in a snapshot's name, step-000200.safetensors -> 200 (-1 for a name not of that form)."""
    digits = path.stem.removeprefix("step-")
    return int(digits) if digits.isdigit() else -1


def budget(cfg: TrainConfig, block_size: int, world: int, step: int = 0, tokens_seen: int = 0) -> tuple[int, int]:
    """(tokens per optimizer step, steps in the run): --steps, or --tokens rounded up to whole steps.

    A run resumed at `step` with `tokens_seen` spends what is left of a --tokens budget at its
    tokens per step now, which a new --batch-size, --grad-accum or number of ranks may change.

    Example:
        >>> cfg = TrainConfig(tokens=5120, batch_size=8)
        >>> budget(cfg, 16, 1), budget(cfg, 16, 1, step=20, tokens_seen=2560)  # 128 then 256 a step: 20 + 10
        ((128, 40), (128, 40))
        >>> budget(dataclasses.replace(cfg, batch_size=16), 16, 1, step=20, tokens_seen=2560)
        (256, 30)
    """
    tokens_per_step = cfg.batch_size * block_size * cfg.grad_accum * world
    if not cfg.tokens:
        return tokens_per_step, cfg.steps
    steps = step + -(-max(0, cfg.tokens - tokens_seen) // tokens_per_step)  # integer ceiling: exact at any size
    if steps > MAX_STEPS:
        raise InputError(f"--tokens {cfg.tokens:,} is {steps:,} steps of {tokens_per_step:,} tokens; a run takes at most "
                         f"{MAX_STEPS:,} steps")
    return tokens_per_step, steps


def schedule_jump(saved: TrainConfig, now: TrainConfig, step: int, tokens_seen: int, max_steps: int, block_size: int,
                   ranks: int) -> str:
    """A note when a resumed run's next learning rate is well above its last: a larger --steps (or
    --tokens, or --lr) stretches the cosine, and the run takes up partway back up it; a longer --warmup
    starts it climbing again. The note names what changed. "" otherwise."""
    was_max = budget(saved, block_size, ranks, step, tokens_seen)[1]
    last, following = lr_at(step - 1, saved, was_max), lr_at(step, now, max_steps)
    planned = lr_at(step, saved, was_max)  # what the schedule unchanged gives: in the warm-up, it climbs anyway
    why = _schedule_changes(saved, now, step, was_max, max_steps)
    if following <= 1.5 * max(last, planned) or not why:
        return ""
    return (f"note: the learning rate rises from {last:.2e} (step {step:,}, the last trained) to {following:.2e} "
            f"(step {step + 1:,}): {'; '.join(why)}. The loss may rise for a while; a lower --lr keeps it down")


def _schedule_changes(saved: TrainConfig, now: TrainConfig, step: int, was_max: int, max_steps: int) -> list[str]:
    """What in the schedule moved the next step's learning rate: the warm-up, the peak, the floor,
    the cosine's length, each as it was and as it is."""
    why = []  # only what raises it: a lower --lr, say, is not why it rose
    if now.warmup != saved.warmup:
        back = f" (step {step + 1:,} is back in the warm-up)" if step < now.warmup else ""
        why.append(f"--warmup is now {now.warmup:,} steps where it was {saved.warmup:,}{back}")
    if now.lr > saved.lr:
        why.append(f"--lr is now {now.lr:.2e} where it was {saved.lr:.2e}")
    if now.min_lr > saved.min_lr:
        why.append(f"--min-lr is now {now.min_lr:.2e} where it was {saved.min_lr:.2e}")
    if max_steps > was_max and step >= now.warmup:
        why.append(f"the cosine now spans {max_steps:,} steps where it spanned {was_max:,}, and the run takes up "
                   f"partway back up it")
    return why


def check_budget(step: int, max_steps: int, stop_at: int | None) -> None:
    """Refuse a run with nothing to do: a resumed run at its end, or a --stop-at outside it."""
    if step >= max_steps:
        raise InputError(
            f"the run is already at step {step} of its {max_steps}-step budget; "
            f"pass a larger --steps (or --tokens) with --resume to train further"
        )
    if stop_at is not None and not step < stop_at < max_steps:
        raise InputError(
            f"--stop-at {stop_at} is outside the run: it goes from step {step} to {max_steps}; "
            f"give a step in between (the run ends at {max_steps} by itself), or change --steps"
        )


def tokenizer_to_copy(paths: RunPaths, data: TokenData) -> Path | None:
    """Generate and probe read a run's checkpoints with its tokenizer.json, so it must be the one
    the tokens were made with. Refuses a run that holds another; for a run with none (tokens from
    another run's --data), returns that run's tokenizer.json to copy in, when it is the one."""
    want = data.tokenizer_sha256
    if not want:
        return None
    if paths.tokenizer.exists() and not paths.tokenizer.is_file():
        raise InputError(f"this run's {paths.tokenizer} is not a file; put back the tokenizer.json that {data.folder} "
                         f"was made with (sha256 {want[:12]}...)")
    if paths.tokenizer.is_file():
        have = tokenizer_sha256(paths.tokenizer)
        if have != want:
            try:
                load_tokenizer(paths.tokenizer)
            except InputError as e:  # damaged, not another tokenizer: starting over is not the fix
                raise InputError(f"this run's tokenizer is damaged: {str(e).split('; pass ')[0]}; put back the tokenizer.json that "
                                 f"{data.folder} was made with (sha256 {want[:12]}...)") from None
            raise InputError(
                f"{data.folder} holds tokens of tokenizer sha256 {want[:12]}, but this run's {paths.tokenizer} is "
                f"{have[:12]}: its checkpoints would be read with the wrong tokenizer; train these tokens in "
                f"another --run, or tokenize this run's own corpus (fabric tokenize --force)"
            )
        return None
    source = Path(data.folder).parent / "tokenizer.json"  # the tokens of RUN are in RUN/tokens
    return source if source.is_file() and tokenizer_sha256(source) == want else None


def other_tokens_note(paths: RunPaths, info: ckpt.CheckpointInfo, data: TokenData) -> str | None:
    """A note when the tokens are not those the checkpoint was trained on, though their tokenizer
    is (tokenized again with --force, another --val-fraction or more files): training may go on
    with them, but not as the run would have gone on, and val loss moves to another split."""
    before, now = info.extra.get("tokens"), data.identity
    if not isinstance(before, dict) or before == now:
        return None  # the same tokens, or a checkpoint from before they were recorded
    def count(value) -> str:  # what the checkpoint recorded; an edited one may hold anything
        return f"{value:,}" if isinstance(value, int) else "an unknown count of"

    changes = [f"{name}.bin {count(before.get(name))} -> {now[name]:,} tokens" for name in ("train", "val")
               if before.get(name) != now[name]]
    if before.get("sources") != now["sources"]:
        changes.append("other source files")
    return (f"note: {data.folder} holds other tokens than {paths.latest} was trained on ({', '.join(changes)}): "
            f"training goes on with them, but it is no longer the run resumed exactly, and val loss from here "
            f"is measured on another split")


PRECISION = {"bfloat16": "bf16 autocast", "float32": "fp32"}


def precision(device: str, dtype: str) -> str | None:
    """The precision --dtype `dtype` gives on `device` now; None when it cannot run here."""
    try:
        return choose_device(device, dtype).dtype
    except InputError:
        return None


def check_same_data(paths: RunPaths, info: ckpt.CheckpointInfo, data: TokenData) -> None:
    """Resuming on other tokens than the run was trained on would silently change the run."""
    ours, theirs = data.tokenizer_sha256, info.tokenizer_sha256
    if ours and theirs and ours != theirs:
        raise CheckpointError(
            f"tokenizer mismatch: {paths.latest} was trained on tokens of tokenizer sha256 {theirs[:12]}, "
            f"{data.folder}/meta.json names {ours[:12]}; resume with the run's own tokens (--data) or --restart"
        )
    if data.vocab_size > info.config.vocab_size:
        raise CheckpointError(
            f"vocabulary mismatch: {paths.latest} has {info.config.vocab_size} token embeddings, the tokens in "
            f"{data.folder} come from a vocabulary of {data.vocab_size}; resume with the run's own tokens or --restart"
        )
