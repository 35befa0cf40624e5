"""Checkpoints: safetensors weights with JSON metadata, atomic writes, checks on load, upgrades.

A weights file is enough to rebuild the model: its metadata holds the format version, the model
config, the step, tokens seen and the tokenizer's sha256. Nothing here unpickles.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fabric_cli.config import ModelConfig
from fabric_cli.errors import CheckpointError, InputError
from fabric_cli.files import atomic_path, file_sha256
from fabric_cli.model import GPT
from fabric_cli.rundir import DEFAULT_RUN, RunPaths

FORMAT = "fabric-checkpoint"
FORMAT_VERSION = 1
STATE_FORMAT = "fabric-train-state"  # the training state beside the weights (trainstate.py), told apart on load


@dataclass
class CheckpointInfo:
    """The metadata of a weights file."""

    config: ModelConfig
    step: int = 0
    tokens_seen: int = 0
    tokenizer_sha256: str | None = None
    extra: dict = field(default_factory=dict)  # e.g. last losses, train settings

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "config": self.config.to_json(),
            "step": str(self.step),
            "tokens_seen": str(self.tokens_seen),
            "tokenizer_sha256": self.tokenizer_sha256 or "",
            "extra": json.dumps(self.extra, sort_keys=True),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def save_weights(path: str | os.PathLike, model: GPT, info: CheckpointInfo) -> None:
    """Write the model's weights and metadata atomically (temp file, fsync, os.replace)."""
    with atomic_path(path) as tmp:
        save_file(_cpu_tensors(model), str(tmp), metadata=info.to_metadata())


def _cpu_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights as safetensors stores them, on the CPU, under the bare GPT's names."""
    model = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    model = getattr(model, "module", model)  # so does DistributedDataParallel
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def _version(path: Path, meta: dict[str, str]) -> int:
    """The format version a file's metadata gives (0 when it gives none), as an integer."""
    try:
        return int(meta.get("format_version", "0"))
    except ValueError:
        raise CheckpointError(f"{path}: format_version {meta['format_version']!r} is not a whole number; "
                              f"it was not written by fabric") from None


def upgrade_metadata(meta: dict[str, str]) -> dict[str, str]:
    """Bring an older format's metadata to the current version. Version 1 is the first one."""
    return meta


# what a checkpoint's config must name: the model's shape (fields added later have defaults)
SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


def read_info(path: str | os.PathLike) -> CheckpointInfo:
    """Read only the metadata of a weights file (fast: no tensor is loaded)."""
    meta = _metadata(path)
    try:
        extra = json.loads(meta.get("extra") or "{}")
        if not isinstance(extra, dict):
            raise TypeError(f"extra is {type(extra).__name__}, not an object")
        config = json.loads(meta["config"])
        if not isinstance(config, dict):
            raise TypeError(f"config is {type(config).__name__}, not an object")
        if missing := [k for k in SHAPE_KEYS if k not in config]:  # defaults would stand in for the model's shape
            raise KeyError(f"config lacks {', '.join(missing)}")
        info = CheckpointInfo(
            config=ModelConfig.from_dict(config),
            step=int(meta.get("step", 0)),
            tokens_seen=int(meta.get("tokens_seen", 0)),
            tokenizer_sha256=meta.get("tokenizer_sha256") or None,
            extra=extra,
        )
        if info.step < 0 or info.tokens_seen < 0:
            raise ValueError(f"step {info.step:,} and tokens_seen {info.tokens_seen:,} must be 0 or more")
        return info
    except (KeyError, ValueError, TypeError, InputError) as e:  # InputError: ModelConfig's own checks
        why = (e.args[0] if " " in str(e.args[0]) else f"no {e.args[0]!r} entry") if isinstance(e, KeyError) else e
        raise CheckpointError(f"checkpoint {path}: metadata is malformed ({why}); it was not written by fabric") from None


def _header(path: Path) -> dict[str, str]:
    """A safetensors file's metadata, read from its header (no tensor is loaded)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is not a safetensors file ({e})") from None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The weights file a CHECKPOINT argument names: a file itself, or the latest checkpoint of a run
    directory or of its checkpoints/ folder.

    Raises:
        CheckpointError: nothing at `path`, or a folder that holds no latest checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        latest = next((p for p in (RunPaths(path).latest, path / "latest.safetensors") if p.is_file()), None)
        if latest is None:
            raise CheckpointError(
                f"{path} is a folder without checkpoints/latest.safetensors; give a run directory "
                f"that `fabric train` has saved into, or a weights file such as RUN/checkpoints/step-000100.safetensors"
            )
        return latest
    if not path.exists():
        raise _not_found(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file; give a weights file or a run directory")
    return path


def _not_found(path: Path) -> CheckpointError:
    """A missing checkpoint; when it is a run's latest and the run directory itself is missing, says
    so: a mistyped --run (or $FABRIC_RUN) is likelier than a run never trained."""
    root = path.parent.parent
    if path.name == "latest.safetensors" and path.parent.name == "checkpoints" and not root.exists():
        if root == Path(DEFAULT_RUN):  # no --run given, and none trained here: a first step, likeliest
            return CheckpointError(f"no run directory {root} here (looking for its checkpoint {path}); `fabric demo` "
                                   f"makes one on the bundled corpus, or `fabric tokenize [FILES]` then `fabric train`; "
                                   f"a run elsewhere: pass --run (or set $FABRIC_RUN)")
        run = f"fabric --run {shlex.quote(str(root))}"
        return CheckpointError(f"no run directory {root} (looking for its checkpoint {path}); check --run "
                               f"(or $FABRIC_RUN); a new run starts with `{run} tokenize [FILES]` (none: the bundled "
                               f"corpus) then `{run} train`")
    return CheckpointError(f"checkpoint {path} does not exist; run `fabric train` first, "
                           f"or give a weights file or a run directory")


def _metadata(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        if not path.exists():
            raise _not_found(path)
        raise CheckpointError(f"checkpoint {path} is not a regular file; give a weights file or a run directory")
    meta = _header(path)
    if meta.get("format") == STATE_FORMAT:
        raise CheckpointError(
            f"{path} is the training state that --resume reads (optimizer and RNG), not model weights; "
            f"pass the weights file beside it, {path.with_name(path.name.replace('.state.', '.'))}"
        )
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format')!r}, expected {FORMAT!r}; pass a weights file "
            f"that `fabric train` wrote (RUN/checkpoints/latest.safetensors or a step-*.safetensors snapshot)"
        )
    version = _version(path, meta)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, this fabric reads up to {FORMAT_VERSION}; upgrade fabric"
        )
    return upgrade_metadata(meta)


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape, from the file's header alone (no tensor is read)."""
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def model_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors a checkpoint of `config` must hold, with their shapes (built on the meta device:
    no memory is allocated, nothing is initialised)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}


def check_config(path: str | os.PathLike, found: dict[str, tuple[int, ...]], config: ModelConfig) -> None:
    """A checkpoint's tensors (`found`, from tensor_shapes) must be those its config describes, name
    for name and shape for shape (check_fits). The layer count is compared first: the expected
    shapes come from a model built on the meta device, which costs nothing per parameter but some
    time per module, so a config edited to 10^11 layers is refused before it is built."""
    held = len({name.split(".")[2] for name in found if name.startswith("transformer.h.")})
    if held != config.n_layer:
        raise CheckpointError(
            f"checkpoint {path}: its config says {config.n_layer:,} layers but its tensors hold {held:,}; the file "
            f"was edited or cut: use another checkpoint (a snapshot in checkpoints/) or retrain"
        )
    check_fits(path, found, model_shapes(config))


def check_fits(path: str | os.PathLike, found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    """A checkpoint's tensors (`found`) must be exactly the model's (`expected`), name for name and
    shape for shape: a cut or edited file is refused, naming what is off."""
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for k, shape in expected.items():
        if found[k] != shape:
            raise CheckpointError(f"checkpoint {path}: tensor {k} has shape {found[k]}, the model expects {shape}")


def load_weights(path: str | os.PathLike, model: GPT) -> None:
    """Load weights into `model`, checking every tensor's name and shape first."""
    expected = model.state_dict()
    check_fits(path, tensor_shapes(path), {k: tuple(v.shape) for k, v in expected.items()})
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in expected}
    bad = nonfinite(tensors)
    if bad:  # fabric saves none (a non-finite loss stops training first): an edited or broken file
        raise CheckpointError(f"checkpoint {path}: tensor {bad[0]} holds NaN or infinite values; "
                              f"use another checkpoint (a snapshot in checkpoints/) or retrain")
    model.load_state_dict(tensors)


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors that hold a NaN or an infinity."""
    return [k for k, t in tensors.items() if not bool(torch.isfinite(t).all())]


def nonfinite_in(path: str | os.PathLike) -> list[str]:
    """nonfinite() of a checkpoint's tensors, read one at a time."""
    with safe_open(str(path), framework="pt") as f:
        return [k for k in f.keys() if nonfinite({k: f.get_tensor(k)})]


def load_model(
    path: str | os.PathLike, device: str = "cpu", tokenizer_sha256: str | None = None,
    tokenizer_path: str | os.PathLike | None = None,
) -> tuple[GPT, CheckpointInfo]:
    """Rebuild a model from one weights file, in eval mode.

    If `tokenizer_sha256` is given it must match the checkpoint's; a mismatch names both sides
    (the tokenizer by its file, `tokenizer_path`, when given).

    Example:
        >>> model, info = load_model("fabric-run/checkpoints/latest.safetensors")  # doctest: +SKIP
    """
    info = read_info(path)
    check_tokenizer(path, info, tokenizer_sha256, tokenizer_path)
    check_config(path, tensor_shapes(path), info.config)  # before building what the config asks for
    model = GPT(info.config)
    load_weights(path, model)
    return model.to(device).eval(), info


def load_model_for(path: str | os.PathLike, tokenizer, tokenizer_path: str | os.PathLike,
                   device: str = "cpu") -> tuple[GPT, CheckpointInfo, str]:
    """load_model for use with a tokenizer (what generate and probe load): the tokenizer file must
    be the one the checkpoint was trained with (when the checkpoint records it), and its vocabulary
    must fit the model's. Returns the model, its info, and the tokenizer file's sha256."""
    sha256 = file_sha256(tokenizer_path)
    model, info = load_model(path, device, sha256, tokenizer_path)
    if tokenizer.get_vocab_size() > info.config.vocab_size:
        raise CheckpointError(
            f"tokenizer {tokenizer_path} has {tokenizer.get_vocab_size():,} tokens but checkpoint {path} has a "
            f"vocabulary of {info.config.vocab_size:,}; pass the tokenizer the model was trained with (--tokenizer)"
        )
    return model, info, sha256


def check_tokenizer(path, info: CheckpointInfo, tokenizer_sha256: str | None,
                    tokenizer_path: str | os.PathLike | None = None) -> None:
    if tokenizer_sha256 and info.tokenizer_sha256 and tokenizer_sha256 != info.tokenizer_sha256:
        tokenizer = f"the tokenizer {tokenizer_path}" if tokenizer_path else "the tokenizer given"
        raise CheckpointError(
            f"tokenizer mismatch: checkpoint {path} was trained with tokenizer sha256 "
            f"{info.tokenizer_sha256[:12]}, {tokenizer} has {tokenizer_sha256[:12]}; "
            f"pass the run's own tokenizer.json with --tokenizer"
        )


def load_tensor_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file (used for training state)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
