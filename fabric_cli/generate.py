"""Sampling: temperature, top-k and nucleus filtering, a key/value-cached loop, streaming text.

- `sample_next(logits, cfg, generator)`: one next token per row of a (B, V) logits tensor;
  `draw(probs, generator)` is the draw itself (inverse CDF).
- `next_logits(model, idx, cache)`: one forward pass to the next token's logits; a pass too small
  to gain from threads (a decode step of a small model) runs on one CPU thread; on a CUDA GPU a
  cached step is replayed as a CUDA graph (fabric_cli.decodegraph).
- `generate(model, ids, cfg, ...)`: an iterator yielding each step's new tokens, (B,), so a caller
  can stream; with the cache each step costs one position. When the context fills, the window
  slides: the last `cfg.slide_for(block_size)` tokens are kept, the cache is rebuilt from them
  (positions are learned and absolute, so cached keys cannot simply be shifted), and it goes on.
- `StreamDecoder`: token ids in, only final text out (no half characters, no stop strings).
- `load_engine` and `complete`: what `fabric generate` calls.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch

from fabric_cli.checkpoint import CheckpointInfo, load_model_for, read_info
from fabric_cli.config import ModelConfig, SampleConfig
from fabric_cli.decodegraph import graph_step
from fabric_cli.device import choose_device, physical_memory, use_device
from fabric_cli.errors import InputError
from fabric_cli.model import GPT, KVCache
from fabric_cli.text import check_unicode
from fabric_cli.tokenizer import eot_id, load_tokenizer_for, tokenizer_path_for

# Cumulative sums of float probabilities land a hair either side of a hand-made boundary (0.5 + 0.3
# may come out as 0.79999995): a token whose predecessors already hold top_p, within this, is dropped.
_TOP_P_TOLERANCE = 1e-6


# --------------------------------------------------------------------------- one step


def filter_logits(logits: torch.Tensor, cfg: SampleConfig) -> torch.Tensor:
    """Scale (B, V) logits by 1/temperature and set tokens outside top-k / the nucleus to -inf.

    Example:
        >>> probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
        >>> kept = filter_logits(probs.log(), SampleConfig(temperature=1.0, top_p=0.8)).isfinite()
        >>> kept.tolist()
        [[True, True, False, False]]
    """
    logits = logits.float() / max(cfg.temperature, 1e-8)  # (B, V)
    if 0 < cfg.top_k < logits.size(-1):
        # exactly k tokens, by index: comparing with the k-th value would also keep every token tied
        # with it (bf16 logits tie often: top-k 1 kept two tokens at 2.6% of a model's positions)
        top = torch.topk(logits, cfg.top_k, dim=-1).indices  # (B, k)
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)  # (B, V)
        logits = logits.masked_fill(~keep, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each
        probs = sorted_logits.softmax(dim=-1)
        if probs.device.type == "mps":
            probs = probs.cpu()  # MPS has no float64
        probs = probs.double()  # float64: the boundary test below is exact enough
        before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
        drop_sorted = (before >= cfg.top_p - _TOP_P_TOLERANCE).to(logits.device)
        drop_sorted[:, 0] = False  # the most likely token always stays, however small top_p is
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, cfg: SampleConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of every row: (B, V) logits -> (B,) ids. Temperature 0 is argmax.

    Example:
        >>> sample_next(torch.tensor([[0.1, 2.0, 0.3]]), SampleConfig(temperature=0)).tolist()
        [1]
    """
    if cfg.temperature == 0 or cfg.top_k == 1:  # top-k 1 is greedy, ties included
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, cfg).softmax(dim=-1)  # (B, V), zeros outside the kept set
    return draw(probs, generator)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of (B, V) probabilities, drawn in proportion to them: inverse CDF.

    A uniform number scaled to the row's total finds its place in the cumulative sums. A token of
    probability 0 adds nothing to the sums, so it is never found. One uniform draw per row instead
    of torch.multinomial's work over the vocabulary: ~20 us against ~125 us a token on the CPU
    with 4096 tokens, a tenth of a cached decode step of the cpu preset.

    Example:
        >>> draw(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])).tolist()
        [1, 2]
    """
    cdf = probs.cumsum(dim=-1)  # (B, V), non-decreasing
    total = cdf[:, -1:]  # (B, 1)
    u = torch.rand(total.shape, dtype=cdf.dtype, device=cdf.device, generator=generator) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # below the total, even after rounding
    return torch.searchsorted(cdf, u, right=True).squeeze(1)  # (B,): the first index whose sum exceeds u


# --------------------------------------------------------------------------- the loop


# A forward pass under this many matmul FLOPs (_forward_flops) runs on one intra-op thread. A decode
# step of the cpu preset (3 MFLOP) is ~80 tiny kernels whose time is dispatch, not arithmetic: a
# second thread cannot make it faster, and every kernel waits for that thread, which stalls when the
# machine is busy (the other core taken). Measured on a shared 2-core CPU with
# benchmarks/generate_throughput.py, before this rule: 12.5 tokens/s on torch's 2 threads against
# 538 on one; in quiet moments 2 threads were no faster (1.9 against 1.8 ms a step). Below this
# figure a step's arithmetic is under ~0.3 ms of one core; a GPT-2-sized step (250 MFLOP) keeps
# every thread.
ONE_THREAD_FLOPS = 16e6


@contextlib.contextmanager
def _threads_for(flops: float, device: torch.device) -> Iterator[None]:
    """Run the block on one CPU thread when `flops` is under ONE_THREAD_FLOPS; restore afterwards."""
    before = torch.get_num_threads()
    if device.type != "cpu" or flops >= ONE_THREAD_FLOPS or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _forward_flops(config: ModelConfig, tokens: int) -> float:
    """Matmul FLOPs of a forward pass over `tokens` positions: 2 per matmul weight per token.
    Arithmetic on the config: walking the model's modules would cost a decode step of the cpu
    preset a fifth of its time."""
    return 2.0 * tokens * config.matmul_params


def next_logits(model: GPT, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
    """The logits of the token after `idx` (B, T) -> (B, V); a small pass runs on one thread.

    With `cache`, `idx` continues the cached positions (one new token per step when decoding).
    """
    if cache is not None and idx.size(1) == 1:
        logits = graph_step(model, idx, cache)  # on a GPU: one replay of a recorded CUDA graph
        if logits is not None:
            return logits[:, -1, :].float()
    with _threads_for(_forward_flops(model.config, idx.numel()), idx.device):
        logits, _ = model(idx, cache=cache, last_only=True)  # (B, 1, V): only the last position predicts the next token
    return logits[:, -1, :].float()  # (B, V)


@torch.inference_mode()  # wraps each resumption of the generator, not the caller's code between steps
def generate(
    model: GPT,
    ids: torch.Tensor,
    cfg: SampleConfig,
    generator: torch.Generator | None = None,
    eot_id: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the new token of every row, (B,), step by step, from prompt ids (B, T).

    Stops after cfg.max_new_tokens steps, or once every row has made `eot_id`. A caller may stop
    earlier by leaving the loop. Runs past the context length by sliding the window (see module doc);
    with cfg.use_cache False the same window is recomputed in full at every step, so both ways give
    the same tokens.

    Example:
        >>> from fabric_cli.config import preset
        >>> m = GPT(preset("tiny", vocab_size=50)).eval()
        >>> steps = list(generate(m, torch.zeros(2, 3, dtype=torch.long), SampleConfig(max_new_tokens=40)))
        >>> len(steps), tuple(steps[0].shape)
        (40, (2,))
    """
    if ids.dim() != 2 or ids.size(1) == 0:
        raise InputError(f"generate needs prompt ids of shape (batch, tokens) with at least one token, got {tuple(ids.shape)}")
    block = model.config.block_size
    keep = cfg.slide_for(block)
    window = ids[:, -block:]  # (B, T): the tokens the model sees; positions 0..T-1
    cache = None
    if cfg.use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(model.config, ids.size(0), device=ids.device, dtype=dtype)
    logits = next_logits(model, window, cache)  # prefill
    finished = torch.zeros(ids.size(0), dtype=torch.bool, device=ids.device)  # (B,)
    for step in range(cfg.max_new_tokens):
        nxt = sample_next(logits, cfg, generator)  # (B,)
        yield nxt
        if eot_id is not None:
            finished |= nxt == eot_id
            if bool(finished.all()):
                return
        if step + 1 == cfg.max_new_tokens:
            return  # no forward pass for a token nobody will sample
        window = torch.cat([window, nxt[:, None]], dim=1)  # (B, T+1)
        if window.size(1) > block:
            # The context is full. Keep the last `keep` tokens at positions 0..keep-1 and rebuild.
            window = window[:, -keep:]  # (B, keep)
            if cache is not None:
                cache.reset()
            logits = next_logits(model, window, cache)
        elif cache is not None:
            logits = next_logits(model, nxt[:, None], cache)  # one position: (B, 1)
        else:
            logits = next_logits(model, window, None)


# --------------------------------------------------------------------------- text


class StreamDecoder:
    """Token ids in, final text out: nothing that a later token could still change is returned.

    Decodes the tokens since the text was last wholly handed out and returns what became final.
    It holds back while the text ends in U+FFFD (a character whose bytes are split across tokens)
    and while its tail could be the start of a stop string; at a stop string it cuts the text
    there and sets `stopped`. Once everything decoded has been handed out (the last character
    whole, no tail held), the next push decodes from the last token on, its text counted as shown:
    each push costs the held tail, not the whole completion (which would make a long completion
    quadratic). The one token of context keeps decoders that treat a first piece differently
    (a Metaspace decoder drops its leading space) from changing the text.

    Example:
        >>> class Bytes:  # a stand-in tokenizer: one token per UTF-8 byte
        ...     def decode(self, ids): return bytes(ids).decode("utf-8", errors="replace")
        >>> d = StreamDecoder(Bytes(), stop=["!"])
        >>> [d.push([b]) for b in "é!".encode()]
        ['', 'é', '']
        >>> d.text, d.stopped
        ('é', True)
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] | list[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.pending: list[int] = []  # ids since everything decoded was last handed out
        self.shown = 0  # characters of the pending ids' text handed out already
        self.parts: list[str] = []  # what has been handed out, piece by piece
        self.stopped = False

    @property
    def text(self) -> str:
        """What has been handed out so far."""
        return "".join(self.parts)

    def push(self, ids: list[int]) -> str:
        """Add token ids; return the text that became final (possibly '')."""
        if self.stopped:
            return ""
        self.pending.extend(ids)
        tail = self.tokenizer.decode(self.pending)
        # A stop string starts in what was held back, never in what was handed out: a handed-out
        # text never ends in the start of a stop string (_could_start_stop holds that back).
        cut = self._stop_index(tail)
        if cut is not None:
            self.stopped = True
            return self._emit(tail, cut)
        if tail.endswith("\ufffd"):
            return ""  # the next token may complete the character
        new = self._emit(tail, len(tail) - self._could_start_stop(tail))
        self._keep_context(tail)  # the last character is whole here
        return new

    def _keep_context(self, tail: str) -> None:
        """Drop the pending tokens but the fewest last ones whose own text is whole, ends the tail,
        and reaches back past what is held (the start of a possible stop string) into what was
        shown. A character spans at most 4 bytes, so at most 4 tokens a character are looked at."""
        held = len(tail) - self.shown
        for k in range(1, min(4 * (held + 1), len(self.pending) - 1) + 1):
            context = self.tokenizer.decode(self.pending[-k:])
            if len(context) > held and not context.startswith("\ufffd") and tail.endswith(context):
                self.pending, self.shown = self.pending[-k:], len(context) - held
                return

    def finish(self) -> str:
        """The rest of the text at the end of generation (held-back tails included)."""
        if self.stopped:
            return ""
        tail = self.tokenizer.decode(self.pending)
        return self._emit(tail, len(tail))

    def _emit(self, tail: str, upto: int) -> str:
        new = tail[self.shown : upto]
        self.shown = max(self.shown, upto)
        if new:
            self.parts.append(new)
        return new

    def _stop_index(self, full: str) -> int | None:
        hits = [i for i in (full.find(s) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _could_start_stop(self, full: str) -> int:
        """Length of the longest tail of `full` that is a proper prefix of a stop string."""
        for n in range(min(max(map(len, self.stop), default=1) - 1, len(full)), 0, -1):
            if any(s.startswith(full[-n:]) for s in self.stop):
                return n
        return 0


# --------------------------------------------------------------------------- the command


@dataclass
class Engine:
    """A model and its tokenizer, loaded and checked against each other."""

    model: GPT
    tokenizer: object  # tokenizers.Tokenizer
    info: CheckpointInfo
    eot_id: int | None
    device: str


def load_engine(checkpoint: str | os.PathLike, tokenizer: str | os.PathLike | None, device: str = "auto",
                run_tokenizer: str | os.PathLike | None = None) -> Engine:
    """Load a checkpoint and its tokenizer; refuse a tokenizer the model was not trained with.

    `tokenizer` None: the tokenizer.json of the run the checkpoint lies in, else `run_tokenizer`.
    """
    info = read_info(checkpoint)  # a missing checkpoint is the first thing to report: run `fabric train`
    tokenizer = tokenizer_path_for(checkpoint, tokenizer, run_tokenizer)
    tok = load_tokenizer_for(tokenizer, checkpoint, info.tokenizer_sha256)
    choice = choose_device(device)
    model, info, _ = load_model_for(checkpoint, tok, tokenizer, use_device(choice.device))
    if choice.dtype == "bfloat16":
        model = model.to(torch.bfloat16)  # inference needs no fp32 master weights
    # None when the tokenizer has none: then only an empty prompt fails (encode_prompt says so)
    return Engine(model, tok, info, eot_id(tok), choice.device)


def encode_prompt(tokenizer, prompt: str, block_size: int, eot_id: int | None) -> tuple[list[int], int]:
    """The ids the model reads for `prompt`, and how many of the prompt's own were dropped.

    The end-of-text token goes in front, as every document follows one in training (and as the
    probe reads its prompts): a prompt is the start of a new document, and an empty one is that
    token alone. A prompt longer than the context keeps its last `block_size` tokens; one that
    fills the context exactly leaves the end-of-text token out.
    """
    ids = tokenizer.encode(check_unicode(prompt, "the prompt"), add_special_tokens=False).ids if prompt else []  # as training encodes
    if not ids and eot_id is None:
        raise InputError("the prompt is empty and the tokenizer has no end-of-text token to start from; give a prompt")
    dropped = max(0, len(ids) - block_size)
    front = [eot_id] if eot_id is not None and len(ids) < block_size else []
    return front + ids[dropped:], dropped


def generation_bytes(config: ModelConfig, batch: int, use_cache: bool = True) -> int:
    """A low estimate of the memory `batch` samples take at once, fp32: the key/value cache (two
    widths per layer per position of the context), the widest activation of a full-context pass
    (the feed-forward's), and the logits with sampling's copies of them (scaled, probabilities,
    cumulative sums)."""
    c = config
    kv = 2 * c.n_layer * c.block_size * c.n_embd if use_cache else 0
    return 4 * batch * (kv + c.block_size * c.n_ff + 4 * c.vocab_size)


def check_memory(config: ModelConfig, cfg: SampleConfig, device: str) -> None:
    """Refuse --num-samples whose batch cannot fit in this machine's memory, before allocating it:
    on the CPU the allocation fails with a C++ message, or the kernel kills the process. A batch
    that fits the machine but not its free memory fails later; complete() turns that into one line."""
    total = physical_memory() if device == "cpu" else None
    need = generation_bytes(config, cfg.num_samples, cfg.use_cache)
    if total is not None and need > total:
        raise InputError(
            f"--num-samples {cfg.num_samples:,} needs at least {need / 2**30:,.1f} GiB at context {config.block_size:,} "
            f"(the key/value cache and logits of every sample), more than this machine's {total / 2**30:,.1f} GiB; "
            f"lower --num-samples"
        )


@dataclass
class GenerationResult:
    prompt: str
    completions: list[str]
    finish_reasons: list[str]  # per completion: "length", "eot" or "stop"
    completion_tokens: list[int]  # per completion: tokens sampled, up to and including the one that ended it
    prompt_tokens: int  # as fed to the model: the end-of-text token in front, less what did not fit
    new_tokens: int  # sampled, over all completions, up to and including the one that ended each
    time_to_first_token_s: float
    seconds: float
    tokens_per_s: float
    seed: int | None  # None at temperature 0: greedy draws nothing
    device: str
    cache: bool

    def to_dict(self) -> dict:
        return asdict(self)


def complete(
    engine: Engine,
    prompt: str,
    cfg: SampleConfig,
    on_text: Callable[[int, str], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Complete `prompt` cfg.num_samples times in one batch.

    `on_text(sample, text)` receives each piece of final text as it is made (to stream it);
    `on_notice(message)` receives remarks for the person at the terminal (a prompt cut to fit).
    """
    check_memory(engine.model.config, cfg, engine.device)
    block = engine.model.config.block_size
    ids, dropped = encode_prompt(engine.tokenizer, prompt, block, engine.eot_id)
    if dropped and on_notice:
        on_notice(f"the prompt has {block + dropped} tokens, the context holds {block}: keeping the last {block}")
    if not prompt and on_notice:
        on_notice("the prompt is empty: starting from the end-of-text token, as a new document")
    n = cfg.num_samples
    if n > 1 and cfg.temperature == 0 and on_notice:
        on_notice(f"--temperature 0 is greedy: the {n} samples will be the same; raise --temperature to vary them")
    x = torch.tensor([ids] * n, dtype=torch.long, device=engine.device)  # (N, T): one row per sample
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(63)
    generator = torch.Generator(device=engine.device).manual_seed(seed)
    decoders = [StreamDecoder(engine.tokenizer, cfg.stop) for _ in range(n)]
    reasons: list[str | None] = [None] * n
    counts, first = [0] * n, None
    start = time.perf_counter()
    try:
        for step in generate(engine.model, x, cfg, generator, engine.eot_id):
            tokens = step.tolist()  # waits for the device: the timings below are real
            first = first if first is not None else time.perf_counter() - start
            for row, token in enumerate(tokens):
                if reasons[row]:
                    continue
                counts[row] += 1
                if token == engine.eot_id:
                    reasons[row] = "eot"
                    continue
                piece = decoders[row].push([token])
                if decoders[row].stopped:
                    reasons[row] = "stop"
                if piece and on_text:
                    on_text(row, piece)
            if all(reasons):
                break
    except RuntimeError as e:  # torch.OutOfMemoryError on CUDA; the CPU's and MPS's allocators raise RuntimeError
        if not (isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e) or "out of memory" in str(e)):
            raise
        raise InputError(f"out of memory on {engine.device} generating {n:,} samples at once: lower --num-samples") from None
    for row, dec in enumerate(decoders):
        piece = dec.finish()
        if piece and on_text:
            on_text(row, piece)
    seconds, made = time.perf_counter() - start, sum(counts)
    return GenerationResult(
        prompt=prompt,
        completions=[d.text for d in decoders],
        finish_reasons=[r or "length" for r in reasons],
        completion_tokens=counts,
        prompt_tokens=len(ids),
        new_tokens=made,
        time_to_first_token_s=round(first or 0.0, 6),
        seconds=round(seconds, 6),
        tokens_per_s=round(made / seconds, 2) if seconds > 0 else 0.0,
        seed=seed if cfg.temperature > 0 else None,
        device=engine.device,
        cache=cfg.use_cache,
    )
