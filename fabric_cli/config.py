"""Configuration dataclasses, presets and head names. No torch here (the run directory: rundir.py).

Dataclass defaults are the CLI defaults, so `--help` shows the real values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from typing import NamedTuple

from fabric_cli.errors import InputError

MAX_STEPS = 10**9  # optimizer steps: a billion is past any run this trains
EOT = "<|endoftext|>"


# --------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """A GPT-2 style decoder. Head width is n_embd // n_head."""

    vocab_size: int = 4096
    block_size: int = 128  # context length in tokens
    n_layer: int = 5
    n_head: int = 8
    n_embd: int = 128
    n_ff: int = 0  # feed-forward width; 0 means 4 * n_embd
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_ff"):
            if type(getattr(self, name)) is not int:  # a hand-edited checkpoint's "n_layer": 2.5 or "5"
                raise InputError(f"model {name} must be an integer, got {getattr(self, name)!r}")
        if type(self.bias) is not bool:
            raise InputError(f"model bias must be true or false, got {self.bias!r}")
        if type(self.dropout) not in (int, float):
            raise InputError(f"model dropout must be a number, got {self.dropout!r}")
        if self.n_ff == 0:
            self.n_ff = 4 * self.n_embd
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_ff"):
            if getattr(self, name) < 1:
                raise InputError(f"model {name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise InputError(
                f"the model width (--width) {self.n_embd} is not divisible by the head count (--heads) "
                f"{self.n_head}; choose a width that is a multiple of the head count"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"--dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def matmul_params(self) -> int:
        """Weights that multiply every token's activations: per block q, k, v, the attention's
        output projection and the feed-forward's two matrices, and the LM head. The LM head is tied
        to the token embedding, so wte counts once, as the head's matmul (the embedding lookup is a
        gather). Position embeddings, biases and norms do no matmul and are left out.

        Example:
            >>> preset("tiny", vocab_size=256).matmul_params  # 2 x (4 x 16 x 16 + 2 x 16 x 64) + 256 x 16
            10240
        """
        return self.n_layer * self.matmul_params_per_block + self.vocab_size * self.n_embd

    @property
    def num_params(self) -> int:
        """Every parameter of GPT(config), by arithmetic: what a model costs before it is built.

        Example:
            >>> preset("tiny", vocab_size=256).num_params  # as GPT(config).num_params() counts them
            10944
        """
        c, b = self, int(self.bias)
        norm = c.n_embd * (1 + b)  # a LayerNorm: weight and bias
        block = 2 * norm + c.matmul_params_per_block + b * (3 * c.n_embd + c.n_embd + c.n_ff + c.n_embd)
        return (c.vocab_size + c.block_size) * c.n_embd + c.n_layer * block + norm

    @property
    def matmul_params_per_block(self) -> int:
        """q, k, v, the attention's output projection and the feed-forward's two matrices."""
        return 4 * self.n_embd * self.n_embd + 2 * self.n_embd * self.n_ff

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown model config keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)


# Presets: vocab_size is taken from the tokenizer at train time.
PRESETS: dict[str, ModelConfig] = {
    # tests: a model of a few thousand parameters
    "tiny": ModelConfig(block_size=16, n_layer=2, n_head=2, n_embd=16, vocab_size=512),
    # the demo: trains in minutes on a 2-core CPU; 5 layers x 8 heads so head 4.7 exists
    "cpu": ModelConfig(block_size=128, n_layer=5, n_head=8, n_embd=128, vocab_size=4096),
    # a laptop GPU or a patient CPU
    "small": ModelConfig(block_size=256, n_layer=6, n_head=8, n_embd=256, vocab_size=8192),
    # GPT-2 small (124M with a 50257 vocabulary)
    "gpt2": ModelConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768, vocab_size=50257),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A copy of a named preset with some fields replaced (None values are ignored)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    fields = PRESETS[name].to_dict()
    if overrides.get("n_embd") is not None and overrides.get("n_ff") is None:
        fields["n_ff"] = 0  # keep the 4x ratio when only the width changes
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(**fields)


# --------------------------------------------------------------------------- training


SEED_LIMIT = 2**64  # seeds are 0 .. 2**64 - 1: what torch's and numpy's generators both take


def check_seed(seed: int | None, flag: str = "--seed") -> None:
    """Refuse a seed the random generators cannot take (negative, or 2**64 and above)."""
    if seed is not None and not 0 <= seed < SEED_LIMIT:
        raise InputError(f"{flag} must be between 0 and 2**64 - 1 ({SEED_LIMIT - 1}), got {seed}")


@dataclass
class TrainConfig:
    """How `fabric train` trains. Field defaults are the CLI defaults; None means "from the preset"."""

    preset: str = "cpu"
    layers: int | None = None
    heads: int | None = None
    width: int | None = None
    context: int | None = None
    dropout: float | None = None
    ff_width: int | None = None  # feed-forward width; None: the preset's (4 x width)
    bias: bool | None = None  # biases in the linear layers and norms; None: the preset's (on)
    steps: int = 1000  # optimizer steps; the LR schedule spans them
    tokens: int | None = None  # a budget in tokens instead of --steps
    batch_size: int = 16  # sequences per micro-step, per rank
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 turns clipping off
    eval_interval: int = 100  # also when the latest checkpoint is written
    eval_batches: int = 20
    log_interval: int = 10
    snapshot_every: int = 0  # 0: no snapshots
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere; float32; bfloat16 (autocast)
    compile: bool = False

    # Changing these on --resume would change the model's shape.
    SHAPE_FIELDS = ("preset", "layers", "heads", "width", "context", "ff_width", "bias")

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "eval_interval", "eval_batches", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.steps > MAX_STEPS:  # 10**23 ran, with an ETA of 10**17 hours
            raise InputError(f"--steps must be at most {MAX_STEPS:,}, got {self.steps:,}")
        for name in ("tokens", "layers", "heads", "width", "context", "ff_width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if not 0 < self.lr < math.inf:  # `not` also refuses NaN
            raise InputError(f"--lr must be a number above 0, got {self.lr:g}: at 0 the weights never change")
        for name in ("min_lr", "weight_decay", "grad_clip", "warmup", "snapshot_every"):
            if not 0 <= getattr(self, name) < math.inf:
                raise InputError(f"--{name.replace('_', '-')} must be a number, 0 or more, got {getattr(self, name)}")
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise InputError(f"--dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        check_seed(self.seed)

    def check_schedule(self) -> None:
        """Refuse a learning-rate schedule that would rise as it "decays". Checked on the settings a
        run trains with (after --resume merges the saved ones), not on each part alone."""
        if self.min_lr > self.lr:
            raise InputError(
                f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}: the cosine decay runs from --lr down "
                f"to --min-lr (default {TrainConfig.min_lr:g}); give a --min-lr at or below --lr"
            )

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The preset with the command line's overrides; vocab_size comes from the tokenizer."""
        return preset(
            self.preset, n_layer=self.layers, n_head=self.heads, n_embd=self.width,
            block_size=self.context, dropout=self.dropout, n_ff=self.ff_width, bias=self.bias,
            vocab_size=vocab_size,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        d = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})  # a newer file's extra keys are ignored


# --------------------------------------------------------------------------- tokenizer


@dataclass
class TokenizeConfig:
    """`fabric tokenize` settings; checked by fabric_cli.encode.tokenize_corpus."""

    vocab_size: int = 4096  # byte alphabet (256) + specials + merges
    min_frequency: int = 2  # a pair seen fewer times is never merged
    val_fraction: float = 0.05  # share of documents held out for validation
    errors: str = "strict"  # "strict": refuse non-UTF-8 input; "replace": use U+FFFD


# --------------------------------------------------------------------------- probing


@dataclass
class ProbeConfig:
    """How `fabric probe` scores heads. Defaults are the CLI defaults; see fabric_cli/probe."""

    suites: tuple[str, ...] = ()  # names in data/probes (gender, number, ...); () means every suite
    # a user's files (.jsonl, or the [referent] {pronoun} <distractor> markup), folders of .jsonl, "-"
    prompts: tuple[str, ...] = ()
    head: str | None = None  # "4.7" or "L4H7": show this head prompt by prompt
    limit: int = 20  # prompts shown by --head
    top: int = 10  # heads in the ranking
    ablate: bool = False
    attribution: bool = False  # direct logit attribution of every head (fabric_cli/probe/attribution.py)
    random_heads: int = 10  # other heads ablated for comparison
    with_heads: tuple[str, ...] = ()  # ablated together with the studied head (--with-heads 0.5,0.7)
    seed: int = 0  # picks the random heads
    over_checkpoints: bool = False
    threshold: float = 0.8  # accuracy a head must keep, from some snapshot on, to have emerged
    batch_size: int = 64  # prompts per forward pass
    device: str = "auto"
    alpha: float = 0.05  # family-wise error rate for naming a head (Bonferroni over all heads)

    def __post_init__(self) -> None:
        self.suites = tuple(self.suites)
        self.prompts = (str(self.prompts),) if isinstance(self.prompts, (str, os.PathLike)) else tuple(map(str, self.prompts or ()))
        self.with_heads = tuple(self.with_heads)
        if self.with_heads and not self.ablate:
            raise InputError("--with-heads names heads to ablate together with the studied one; add --ablate")
        for name in ("limit", "top", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.random_heads < 0:
            raise InputError(f"--random-heads must be 0 or more, got {self.random_heads}")
        if not 0.0 < self.threshold <= 1.0:
            hint = f" (for {self.threshold:g}%, give {self.threshold / 100:g})" if 1 < self.threshold <= 100 else ""
            raise InputError(f"--threshold is an accuracy in (0, 1], got {self.threshold:g}{hint}")
        if not 0.0 < self.alpha < 1.0:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha}")
        check_seed(self.seed)


# --------------------------------------------------------------------------- heads


class Head(NamedTuple):
    """An attention head, zero-based: Head(4, 7) is written 4.7."""

    layer: int
    head: int

    def __str__(self) -> str:
        return f"{self.layer}.{self.head}"


_HEAD_RE = re.compile(r"^\s*(?:(\d+)\.(\d+)|[Ll](\d+)[Hh](\d+))\s*$", re.ASCII)  # ASCII: "٠.٠" is not 0.0


def parse_head(text: str) -> Head:
    """Parse `4.7` or `L4H7` into Head(4, 7).

    Example:
        >>> parse_head("4.7"), parse_head("L4H7")
        (Head(layer=4, head=7), Head(layer=4, head=7))
    """
    m = _HEAD_RE.match(text)
    if not m:
        raise InputError(f"head {text!r} is not of the form LAYER.HEAD (like 4.7) or L4H7")
    a, b, c, d = m.groups()
    return Head(int(a if a is not None else c), int(b if b is not None else d))


# --------------------------------------------------------------------------- sampling


@dataclass
class SampleConfig:
    """How `fabric generate` picks each next token. Defaults are the CLI defaults."""

    max_new_tokens: int = 200  # per sample
    temperature: float = 0.8  # 0 is greedy: always the most likely token, deterministic
    top_k: int = 0  # keep only the k most likely tokens; 0 keeps all
    top_p: float = 1.0  # nucleus: the fewest tokens whose probability sums to at least top_p
    seed: int | None = None  # same seed, same text; None draws a fresh one
    num_samples: int = 1  # completions of the same prompt, run as one batch
    stop: tuple[str, ...] = ()  # a completion ends before the first of these strings
    use_cache: bool = True  # False recomputes the whole window every step (for comparison)
    slide: int = 0  # tokens kept when the context fills; 0 means block_size // 2

    def __post_init__(self) -> None:
        self.stop = tuple(self.stop)
        if self.max_new_tokens < 0:
            raise InputError(f"--max-new-tokens must be 0 or more, got {self.max_new_tokens}")
        if not 0.0 <= self.temperature < math.inf:  # `not` also refuses NaN; inf would sample uniformly
            raise InputError(f"--temperature must be 0 (greedy) or a finite number above it, got {self.temperature}")
        if self.top_k < 0:
            raise InputError(f"--top-k must be 0 (off) or a positive number of tokens, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"--top-p must be in (0, 1] (1 turns nucleus sampling off), got {self.top_p}")
        if self.num_samples < 1:
            raise InputError(f"--num-samples must be 1 or more, got {self.num_samples}")
        if self.slide < 0:
            raise InputError(f"--slide must be 0 (half the context) or a positive number of tokens, got {self.slide}")
        check_seed(self.seed)
        if any(s == "" for s in self.stop):
            raise InputError("--stop got an empty string; give the text that should end a completion")

    def slide_for(self, block_size: int) -> int:
        """Tokens kept when the window slides: --slide, or half the context, and always < block_size."""
        keep = self.slide or block_size // 2
        if not 1 <= keep < block_size:
            raise InputError(f"--slide {keep} must be between 1 and the context length minus one ({block_size - 1})")
        return keep


@dataclass
class DemoConfig:
    """The demo's settings: the CPU preset and a schedule under which the pronoun head emerges."""

    preset: str = "cpu"
    context: int | None = None  # None: the preset's
    steps: int = 1500  # the pronoun head emerges near step 1,000 (see the README's demo section)
    lr: float = 3e-3
    warmup: int = 50
    batch_size: int = 16
    snapshot_every: int = 100
    seed: int = 1337
    emergence_suite: str = "gender"  # scored on every snapshot; the full probe uses every suite
    samples: int = 2  # generated continuations per prompt
    max_new_tokens: int = 60
    device: str = "auto"
    prompts: tuple[str, ...] = (
        "Once upon a time, the queen met the farmer at the market. She",
        "One morning, the sailors visited the old witch by the river. They",
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "samples", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.snapshot_every < 1 or self.snapshot_every > self.steps:
            raise InputError(f"--snapshot-every must be between 1 and --steps ({self.steps}), got {self.snapshot_every}")
        self.train_config()  # the preset and the rest are checked now, before anything is written

    def train_config(self) -> TrainConfig:
        return TrainConfig(preset=self.preset, context=self.context, steps=self.steps, lr=self.lr, warmup=min(self.warmup, self.steps // 2),
                           batch_size=self.batch_size, snapshot_every=self.snapshot_every, seed=self.seed,
                           device=self.device, eval_interval=max(1, self.steps // 5), log_interval=10)
