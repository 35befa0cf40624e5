"""Training state: the optimizer's moments, the RNG states and the training settings beside a
weights file (RUN/checkpoints/latest.state.safetensors), so a run resumes exactly. Saved and read
with its weights as a pair; safetensors and JSON metadata, nothing unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from fabric_cli.checkpoint import (STATE_FORMAT, CheckpointInfo, _cpu_tensors, _header, _version, load_tensor_file,
                                   read_info)
from fabric_cli.config import TrainConfig
from fabric_cli.errors import CheckpointError, InputError
from fabric_cli.files import atomic_paths
from fabric_cli.model import GPT

STATE_FORMAT_VERSION = 1


def save_checkpoint_pair(
    weights_path: str | os.PathLike,
    state_path: str | os.PathLike,
    model: GPT,
    info: CheckpointInfo,
    state: dict[str, torch.Tensor],
    state_meta: dict[str, str],
) -> None:
    """Write the weights and the training state together (files.atomic_paths): both are complete
    on disk before either moves into place, and a Ctrl-C or SIGTERM cannot fall between the two
    moves. Both carry the step, and `load_train_state` refuses a pair whose steps differ (a kill -9
    or power cut in the instant between the moves), so a resume never mixes two moments of a run.
    """
    tensors = _cpu_tensors(model)
    meta = {"format": STATE_FORMAT, "format_version": str(STATE_FORMAT_VERSION), "step": str(info.step), **state_meta}
    with atomic_paths(state_path, weights_path) as (tmp_s, tmp_w):
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(tmp_s), metadata=meta)
        save_file(tensors, str(tmp_w), metadata=info.to_metadata())


def read_train_config(state_path: str | os.PathLike) -> TrainConfig | None:
    """The settings a run trains with, from its training state's header alone (no tensor is
    loaded); None when the run has no training state."""
    path = Path(state_path)
    if not path.is_file():
        return None
    meta = _header(path)
    _check_state_format(path, meta)
    return saved_train_config(path, meta)


def _check_state_format(path: Path, meta: dict[str, str]) -> None:
    if meta.get("format") != STATE_FORMAT or "train_config" not in meta:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
    if _version(path, meta) > STATE_FORMAT_VERSION:
        raise CheckpointError(f"{path} has a newer format version {meta['format_version']}; upgrade fabric")


def load_train_state(state_path: str | os.PathLike, weights_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The training state's tensors and metadata, checked against the weights file beside it."""
    state_path = Path(state_path)
    if not state_path.is_file():
        raise CheckpointError(
            f"{state_path} is missing: {weights_path} has no training state to resume from; "
            f"use --restart to start over"
        )
    tensors, meta = load_tensor_file(state_path)
    _check_state_format(state_path, meta)
    info = read_info(weights_path)
    try:
        state_step = int(meta.get("step", -1))
    except ValueError:
        raise CheckpointError(f"{state_path}: its step {meta.get('step')!r} is not a number; the file was edited: "
                              f"use --restart to start over") from None
    if state_step != info.step:
        raise CheckpointError(
            f"{weights_path} is at step {info.step} but {state_path} is at step {meta.get('step')} "
            f"(the run was killed while saving); the weights still load for generate, probe and inspect, "
            f"but training cannot resume exactly from them: use --restart to start over"
        )
    return tensors, meta


def saved_train_config(state_path: str | os.PathLike, meta: dict[str, str]) -> TrainConfig:
    """The settings a training state was saved with (load_train_state's metadata)."""
    try:
        return TrainConfig.from_json(meta["train_config"])
    except (KeyError, ValueError, TypeError, AttributeError, InputError) as e:
        raise CheckpointError(f"{state_path}: its train_config is malformed ({e}); the file was edited: "
                              f"use --restart to start over") from None


def optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state (AdamW: step, exp_avg, exp_avg_sq), keyed by parameter name."""
    out = {}
    for name, p in model.named_parameters():
        for key, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value):
                out[f"optim.{name}.{key}"] = value
            else:  # a plain number (older optimizers keep `step` as an int)
                out[f"optim.{name}.{key}"] = torch.tensor(float(value), dtype=torch.float32)
    return out


def restore_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Put per-parameter state saved by `optimizer_tensors` back, on each parameter's device."""
    fused = any(g.get("fused") or g.get("capturable") for g in optimizer.param_groups)
    names = dict(model.named_parameters())
    found = {k[len("optim.") :].rsplit(".", 1)[0] for k in tensors if k.startswith("optim.")}
    if found and found != set(names):
        raise CheckpointError(
            f"the training state's optimizer covers {len(found)} parameters, the model has {len(names)}; "
            f"the state belongs to another model: use --restart"
        )
    for name, p in names.items():
        state = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"optim.{name}.{key}")
            if t is None:
                continue
            # AdamW keeps `step` on the CPU unless fused/capturable, the moments beside the parameter
            on = p.device if (key != "step" or fused) else torch.device("cpu")
            state[key] = t.to(on).clone()
        if state:
            optimizer.state[p] = state


def rng_tensors() -> dict[str, torch.Tensor]:
    """Every torch RNG state as uint8 tensors (the CPU one, and each CUDA device's if in use)."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    n = sum(k.startswith("rng.cuda.") for k in tensors)
    if n and torch.cuda.is_available() and n == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(n)])
