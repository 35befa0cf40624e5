"""The model's three paths agree, checkpoints round-trip and refuse what does not fit, layering holds."""

import ast
import stat
from pathlib import Path

import pytest
import torch

from fabric_cli.checkpoint import CheckpointInfo, load_model, read_info, save_weights
from fabric_cli.config import PRESETS, Head, ModelConfig, SampleConfig, parse_head, preset
from fabric_cli.decodegraph import static_decode_step
from fabric_cli.errors import CheckpointError, InputError
from fabric_cli.generate import generate, next_logits
from fabric_cli.model import GPT, MLP, KVCache, Probe


# The paths' agreement is checked on every device torch finds here: the CPU, and on a machine with a
# GPU (never CI's) CUDA too, in fp32 (TF32 off, torch's default for matrix products).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(preset("tiny", vocab_size=97)).eval()


@pytest.mark.parametrize("device", DEVICES)
def test_probe_path_matches_fast_path(model, device):
    model = model.to(device)
    idx = torch.randint(0, 97, (3, 16), device=device)
    fast, _ = model(idx)
    probe = Probe(capture_head_outputs=True)
    slow, _ = model(idx, probe=probe)
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=0)
    assert len(probe.attention) == 2 and probe.attention[0].shape == (3, 2, 16, 16)
    assert probe.head_outputs[1].shape == (3, 16, 2, 8)
    att = probe.attention[0]
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 2, 16, device=device))  # rows are distributions
    assert att.triu(diagonal=1).abs().max() == 0  # causal: nothing from the future


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False])
def test_kv_cache_path_matches_fast_path(bias, device):
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=97, bias=bias)).eval().to(device)  # one token at a time: GPT._decode_step
    idx = torch.randint(0, 97, (2, 16), device=device)
    fast, _ = model(idx)
    cache = KVCache(model.config, batch_size=2, device=device)
    parts = [model(idx[:, :5], cache=cache)[0], model(idx[:, 5:9], cache=cache)[0]]  # prefill, then a chunk
    parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(9, 16)]  # one token at a time
    torch.testing.assert_close(torch.cat(parts, dim=1), fast, atol=1e-5, rtol=0)
    assert cache.pos == 16
    with pytest.raises(ValueError):
        model(idx[:, :1], cache=cache)  # full: the caller must slide


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False])
def test_the_static_decode_step_matches_the_fast_path_after_a_slide_too(bias, device):
    """The step a CUDA graph records (fabric_cli.decodegraph): the position is a tensor and attention
    spans the whole cache under a mask, so keys left past the position by a slide must not count."""
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=97, bias=bias)).eval().to(device)
    idx = torch.randint(0, 97, (2, 16), device=device)
    cache = KVCache(model.config, batch_size=2, device=device)
    positions = torch.arange(cache.max_len, device=device)
    model(torch.randint(0, 97, (2, 16), device=device), cache=cache)  # another window fills every slot
    cache.reset()  # a slide: the stale keys stay where they were
    with torch.inference_mode():
        parts = [model(idx[:, :5], cache=cache)[0]]
        for t in range(5, 16):
            parts.append(static_decode_step(model, idx[:, t : t + 1], torch.tensor(t, device=device), positions, cache))
            cache.pos += 1
    torch.testing.assert_close(torch.cat(parts, dim=1), model(idx)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False])
def test_next_logits_cached_steps_match_the_fast_path(bias, device):
    """generate's cached steps (next_logits): the same logits as the fast path, a slide included, and
    the same greedy tokens as recomputing the window. On a GPU they replay one recorded CUDA graph."""
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=97, bias=bias)).eval().to(device)
    idx = torch.randint(0, 97, (2, 16), device=device)
    cache = KVCache(model.config, batch_size=2, device=device)
    with torch.inference_mode():  # as generate runs
        model(torch.randint(0, 97, (2, 16), device=device), cache=cache)
        cache.reset()
        parts = [next_logits(model, idx[:, :5], cache)]
        parts += [next_logits(model, idx[:, t : t + 1], cache) for t in range(5, 16)]
    assert cache.pos == 16
    if device == "cuda":
        assert cache.graph.failed is None and cache.graph.replay is not None  # recorded, and replayed since
    else:
        assert cache.graph is None  # the CPU takes GPT._decode_step
    full = model(idx)[0].float()
    torch.testing.assert_close(torch.stack(parts, dim=1), full[:, 4:], atol=1e-5, rtol=0)  # positions 4 to 15
    greedy = SampleConfig(max_new_tokens=40, temperature=0)  # past the context of 16: slides
    prompt = idx[:, :3]
    cached = torch.stack(list(generate(model, prompt, greedy)))
    recomputed = torch.stack(list(generate(model, prompt, SampleConfig(max_new_tokens=40, temperature=0, use_cache=False))))
    assert torch.equal(cached, recomputed)


def test_the_decode_step_follows_the_mlps_activation(model, monkeypatch):
    """Swapping the activation (nanoGPT users' first edit) changes cached generation with it."""
    monkeypatch.setattr(MLP, "act", staticmethod(torch.nn.functional.silu))
    idx = torch.randint(0, 97, (1, 6))
    fast, _ = model(idx)
    cache = KVCache(model.config, batch_size=1)
    model(idx[:, :5], cache=cache)
    step, _ = model(idx[:, 5:], cache=cache)  # one position: GPT._decode_step
    torch.testing.assert_close(step[:, 0], fast[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("onednn", [True, False])
def test_decode_step_leaves_the_onednn_setting_as_it_found_it(model, onednn, monkeypatch):
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn
    try:
        cache = KVCache(model.config, batch_size=1)
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)  # GPT._decode_step turns oneDNN off inside
        assert torch.backends.mkldnn.enabled is onednn

        def fail(*args, **kwargs):
            raise RuntimeError("a kernel failed")

        monkeypatch.setattr(MLP, "act", staticmethod(fail))  # fails inside the step's loop
        with pytest.raises(RuntimeError, match="a kernel failed"):
            model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
        assert torch.backends.mkldnn.enabled is onednn
    finally:
        torch.backends.mkldnn.enabled = before


def test_at_gives_one_row_of_the_full_logits_per_sequence(model):
    idx = torch.randint(0, model.config.vocab_size, (3, 12))
    at = torch.tensor([11, 0, 5])
    full, _ = model(idx)
    some, _ = model(idx, at=at, probe=Probe())  # the probing path, as fabric probe calls it
    assert some.shape == (3, 1, model.config.vocab_size)
    torch.testing.assert_close(some[:, 0], full[torch.arange(3), at], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="loss needs every position"):
        model(idx, targets=idx, at=at)


def test_last_only_is_the_last_row_of_the_full_logits(model):
    idx = torch.randint(0, 97, (2, 12))
    full, _ = model(idx)
    last, _ = model(idx, last_only=True)
    assert last.shape == (2, 1, 97)
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=0)
    cache = KVCache(model.config, batch_size=2)
    prefill, _ = model(idx[:, :8], cache=cache, last_only=True)
    torch.testing.assert_close(prefill[:, 0], model(idx[:, :8])[0][:, -1], atol=1e-5, rtol=0)
    assert cache.pos == 8  # the cache still holds every position
    with pytest.raises(ValueError):
        model(idx, targets=idx, last_only=True)


def test_ablation_zero_and_replacement(model):
    idx = torch.randint(0, 97, (2, 16))
    base, _ = model(idx)
    probe = Probe(capture_head_outputs=True)
    model(idx, probe=probe)
    seen = Probe(capture_head_outputs=True, ablate={Head(1, 1): None})
    zeroed, _ = model(idx, probe=seen)
    assert (zeroed - base).abs().max() > 1e-4
    # head outputs are recorded as passed on: the ablated head's are zeros, the others' untouched
    assert not seen.head_outputs[1][:, :, 1].any() and torch.equal(seen.head_outputs[1][:, :, 0], probe.head_outputs[1][:, :, 0])
    # replacing a head by its own output changes nothing: the hook is exact
    same = probe.head_outputs[1][:, :, 1]  # (B, T, hs)
    kept, _ = model(idx, probe=Probe(ablate={Head(1, 1): same}))
    torch.testing.assert_close(kept, base, atol=1e-5, rtol=0)
    # ablating a head in layer 1 leaves layer 0's patterns alone
    p0, p1 = Probe(), Probe(ablate={Head(1, 0): None})
    model(idx, probe=p0), model(idx, probe=p1)
    torch.testing.assert_close(p0.attention[0], p1.attention[0])
    as_tuple, _ = model(idx, probe=Probe(ablate={(1, 1): None}))  # a plain (layer, head) is a Head
    torch.testing.assert_close(as_tuple, zeroed, atol=0, rtol=0)
    for bad in (Head(2, 0), Head(0, 2), Head(-1, 0)):  # the tiny model has 2 layers of 2 heads
        with pytest.raises(ValueError, match=f"cannot ablate head {bad.layer}.{bad.head}: the model has 2 layers of 2 heads"):
            model(idx, probe=Probe(ablate={bad: None}))


def test_a_probe_used_again_holds_the_last_pass_only(model):
    a, b = torch.randint(0, 97, (1, 8)), torch.randint(0, 97, (1, 8))
    probe = Probe(capture_head_outputs=True)
    model(a, probe=probe)
    model(b, probe=probe)
    fresh = Probe(capture_head_outputs=True)
    model(b, probe=fresh)
    assert len(probe.attention) == len(probe.head_outputs) == 2  # one per layer, not per layer per pass
    for got, want in zip(probe.attention + probe.head_outputs, fresh.attention + fresh.head_outputs):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_loss_and_training_signal(model):
    idx = torch.randint(0, 97, (2, 16))
    _, loss = model.train()(idx, targets=idx)
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5  # near chance at init
    loss.backward()
    assert model.transformer.wte.weight.grad is not None


def test_weight_decay_groups(model):
    decay, no_decay = model.param_groups(0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for p in decay["params"])
    assert any("wte" in names[id(p)] for p in no_decay["params"])  # embeddings: no decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_config_validation_and_presets():
    with pytest.raises(InputError, match="divisible"):
        ModelConfig(n_embd=30, n_head=4)
    cfg = preset("cpu", n_embd=64)
    assert cfg.n_ff == 256 and cfg.n_layer >= 5 and cfg.n_head >= 8  # head 4.7 exists in the demo model
    assert preset("gpt2").n_layer == 12 and preset("gpt2").head_size == 64
    assert parse_head("4.7") == parse_head("L4H7") == Head(4, 7) and str(Head(4, 7)) == "4.7"
    for text in ("four.seven", "\u0664.\u0667"):  # Arabic-Indic digits are digits to \d, not to a user typing 4.7
        with pytest.raises(InputError):
            parse_head(text)


def test_checkpoint_round_trip_and_checks(model, tmp_path):
    path = tmp_path / "ck.safetensors"
    save_weights(path, model, CheckpointInfo(model.config, step=7, tokenizer_sha256="ab" * 32))
    loaded, info = load_model(path)
    assert info.step == 7 and info.config == model.config
    idx = torch.randint(0, 97, (1, 16))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0], atol=0, rtol=0)
    assert read_info(path).tokenizer_sha256 == "ab" * 32
    with pytest.raises(CheckpointError, match="tokenizer mismatch"):
        load_model(path, tokenizer_sha256="cd" * 32)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_model(tmp_path / "junk.safetensors")
    # no temporary files left behind by the atomic write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors", "junk.safetensors"]


def test_atomic_writes_get_the_permissions_of_a_plain_write(model, tmp_path, monkeypatch):
    monkeypatch.setattr("fabric_cli.files._UMASK", 0o022)  # the umask the process started with
    path = tmp_path / "ck.safetensors"
    save_weights(path, model, CheckpointInfo(model.config))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0600
    path.chmod(0o640)
    save_weights(path, model, CheckpointInfo(model.config))  # a file that exists keeps its own
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_checkpoint_shape_mismatch_is_named(model, tmp_path):
    from fabric_cli.checkpoint import load_weights

    path = tmp_path / "ck.safetensors"
    save_weights(path, model, CheckpointInfo(model.config))
    other = GPT(preset("tiny", vocab_size=98))
    with pytest.raises(CheckpointError, match="wte.weight"):
        load_weights(path, other)


# Dependencies point one way (STYLE.md): a module imports only modules of a strictly lower layer, so
# nothing imports cli, and the stages (train, probe, generate, inspect) never import each other.
LAYER = {
    "errors": 0,
    "config": 1, "files": 1, "text": 1, "rundir": 1,
    "device": 2, "lexicon": 2, "grammar": 2, "runlock": 2,
    "sources": 2,
    "tokenizer": 3, "model": 3, "story": 3, "data": 3, "metrics": 3,
    "decodegraph": 3.5,  # the model's cached step as a CUDA graph: above model, below generate
    "checkpoint": 4, "corpus": 4, "trainstep": 4, "encode": 4,
    "trainstate": 4.2,  # the training state beside a checkpoint's weights: above checkpoint
    "runplan": 4.5,  # below train (which it plans), above trainstep (whose schedule it reads)
    "train": 5, "probe": 5, "generate": 5, "inspection": 5,
    "demo": 6,
    "cli": 7,
}


def _imported_modules(node) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fabric_cli."):
        return [node.module.split(".")[1]]
    if isinstance(node, ast.ImportFrom) and node.module == "fabric_cli":  # from fabric_cli import grammar
        return [a.name for a in node.names if a.name in LAYER]
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] for a in node.names if a.name.startswith("fabric_cli.")]
    return []


def test_imports_point_one_way():
    pkg = Path(__file__).resolve().parent.parent / "fabric_cli"
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg).with_suffix("")
        mod = rel.parts[0]
        if mod in ("__init__", "__main__"):
            continue
        assert mod in LAYER, f"{rel}: give the new module a layer in this test"
        for node in ast.walk(ast.parse(path.read_text())):
            for other in _imported_modules(node):
                if other == mod:  # inside a package (probe/) its modules may import each other
                    continue
                assert other in LAYER, f"{rel} imports fabric_cli.{other}, which has no layer here"
                assert LAYER[other] < LAYER[mod], f"{rel} (layer {LAYER[mod]}) imports {other} (layer {LAYER[other]})"


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", ["tiny", "cpu", "small", "gpt2"])
def test_num_params_by_arithmetic_counts_what_the_model_holds(name, bias):
    """train refuses a model too big for memory from this count, before building it."""
    cfg = preset(name, vocab_size=300, bias=bias, n_layer=2, n_ff=3 * PRESETS[name].n_embd)
    assert cfg.num_params == GPT(cfg).num_params()


def test_probing_and_cached_paths_refuse_training_mode_with_dropout():
    """Both compute attention without its dropout: in train mode they would quietly differ from forward."""
    m = GPT(preset("tiny", vocab_size=32, dropout=0.1)).train()
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        m(idx, probe=Probe())
    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        m(idx, cache=KVCache(m.config, 1))
    m.eval()
    assert m(idx, probe=Probe())[0].shape == (1, 4, 32)
    still = GPT(preset("tiny", vocab_size=32)).train()  # no dropout: train mode computes the same numbers
    assert still(idx, probe=Probe())[0].shape == (1, 4, 32)


def test_activation_estimate_follows_the_feed_forward_width():
    from fabric_cli.trainstep import activation_bytes

    usual = preset("tiny", vocab_size=32)
    wide = ModelConfig(**{**usual.to_dict(), "n_ff": 8 * usual.n_embd})
    per_unit = 4 * 3 * usual.block_size * usual.n_layer  # fp32 bytes of one hidden unit, batch 3, every position and layer
    assert activation_bytes(usual, 3) == 4 * 3 * usual.block_size * (16 * usual.n_layer * usual.n_embd + 2 * 32)
    assert activation_bytes(wide, 3) - activation_bytes(usual, 3) == per_unit * 2 * (wide.n_ff - usual.n_ff)  # kept before and after GELU
