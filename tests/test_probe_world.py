"""A toy world for the probe's tests: a tiny tokenizer, a suite with ground truth, and a model whose
weights are set by hand so that head 1.2 resolves pronouns by gender and number.

The planted model (2 layers, 4 heads, width 32, head width 8):
- every token embedding is a*(e[2f] - e[2f+1]) for its feature f (female noun, male noun, plural noun,
  she, he, they, other, and one "verb of a female / male / plural subject" feature per class):
  mean 0 and the same norm for every token, so LayerNorm (weight 1, bias 0) only rescales it;
- position embeddings, every attention and MLP write of layer 0, and layer 1's MLP write are zero;
  every head but 1.2 has zero query, key and value weights (uniform attention, no output);
- head 1.2: the query reads the pronoun features, the key the noun features, so q.k is large only
  from a pronoun to a noun of its gender/number; the value carries the noun's class and the output
  projection writes it into that class's verb feature, which the tied unembedding turns into a
  higher logit for the referent's continuation.
The tests below check this numerically, so the other test files can rely on it.
"""

from __future__ import annotations

import itertools
import json

import torch

from fabric_cli.checkpoint import CheckpointInfo, save_weights
from fabric_cli.config import Head, ModelConfig
from fabric_cli.model import GPT, Probe
from fabric_cli.tokenizer import tokenizer_sha256, train_tokenizer

NOUNS = {"fem": ["queen", "woman", "nurse", "girl"], "masc": ["king", "man", "farmer", "boy"],
         "plur": ["children", "sailors", "scientists"]}
PRONOUN = {"fem": "she", "masc": "he", "plur": "they"}
VERB = {"fem": "sang", "masc": "shouted", "plur": "danced"}
FEATURES = ["fem", "masc", "plur", "she", "he", "they", "other", "v_fem", "v_masc", "v_plur"]
TEMPLATES = ["The {x} greeted the {y} before {p} {v}.", "The {x} and the {y} waited, then {p} {v}."]
PLANTED = Head(1, 2)
WIDTH, HEADS = 32, 4


def items() -> list[dict]:
    """Unambiguous JSONL items: every ordered pair of nouns of different classes (referent first and
    second equally often), then a few ambiguous ones (two nouns of the pronoun's class)."""
    out = []
    pairs = [(a, b) for a, b in itertools.permutations(NOUNS, 2)]
    for n, ((cx, cy), t) in enumerate(itertools.product(pairs, range(len(TEMPLATES)))):
        for k, ref_first in enumerate((True, False)):
            x, y = NOUNS[cx][(n + k) % len(NOUNS[cx])], NOUNS[cy][(n + 2 * k) % len(NOUNS[cy])]
            ref, dis = (cx, cy) if ref_first else (cy, cx)
            out.append(_item(f"toy-{len(out):03d}", TEMPLATES[t], x, y, ref, dis, ref_first))
    for n, c in enumerate(NOUNS):
        a, b = NOUNS[c][0], NOUNS[c][1]
        out.append({**_item(f"amb-{n}", TEMPLATES[0], a, b, c, c, True), "ambiguous": True})
    return out


def _item(id_: str, template: str, x: str, y: str, ref: str, dis: str, ref_first: bool) -> dict:
    text = template.format(x=x, y=y, p=PRONOUN[ref], v=VERB[ref])
    sx, sy = text.index(f"The {x}"), text.index(f"the {y}")
    spans = [[sx, sx + 4 + len(x)], [sy, sy + 4 + len(y)]]
    p0 = text.index(f" {PRONOUN[ref]} ") + 1
    return {"id": id_, "text": text, "pronoun": [p0, p0 + len(PRONOUN[ref])],
            "referent": spans[0 if ref_first else 1], "distractors": [spans[1 if ref_first else 0]],
            "continuations": [" " + VERB[ref], " " + VERB[dis]], "ambiguous": False,
            **({"swap": PRONOUN[dis]} if dis != ref else {})}  # the twin: the pronoun that means the distractor


def write_suite(path) -> None:
    path.write_text("".join(json.dumps(it) + "\n" for it in items()), encoding="utf-8")


def make_tokenizer():
    """A byte-level BPE in which every word of the toy world is one token."""
    texts = [it["text"] for it in items()] * 20
    tok = train_tokenizer(texts, vocab_size=400)
    for word in [*(w for ws in NOUNS.values() for w in ws), *PRONOUN.values(), *VERB.values()]:
        assert len(tok.encode(" " + word).ids) == 1, word
    return tok


def config(vocab_size: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=HEADS, n_embd=WIDTH, n_ff=64)


def feature_of(tok, token_id: int) -> str:
    word = tok.decode([token_id]).strip()
    for c, ws in NOUNS.items():
        if word in ws:
            return c
    for c, p in PRONOUN.items():
        if word == p:
            return {"fem": "she", "masc": "he", "plur": "they"}[c]
    for c, v in VERB.items():
        if word == v:
            return "v_" + c
    return "other"


@torch.no_grad()
def planted_model(tok, strength: float = 2.5, gain: float = 1.0, heads: tuple[Head, ...] = (PLANTED,)) -> GPT:
    """Zero weights but the embedding's features and, in each of `heads`, the pronoun -> noun circuit."""
    cfg = config(tok.get_vocab_size())
    model = GPT(cfg)
    for p in model.parameters():
        p.zero_()
    for ln in (*(b.ln_1 for b in model.transformer.h), *(b.ln_2 for b in model.transformer.h), model.transformer.ln_f):
        ln.weight.fill_(1.0)
    wte = model.transformer.wte.weight
    for t in range(cfg.vocab_size):
        f = FEATURES.index(feature_of(tok, t))
        wte[t, 2 * f], wte[t, 2 * f + 1] = 1.0, -1.0
    for planted in heads:
        attn, hs = model.transformer.h[planted.layer].attn, cfg.head_size
        q0, k0, v0 = planted.head * hs, WIDTH + planted.head * hs, 2 * WIDTH + planted.head * hs
        for j, (noun, pron, verb) in enumerate(zip(("fem", "masc", "plur"), ("she", "he", "they"), ("v_fem", "v_masc", "v_plur"))):
            attn.c_attn.weight[q0 + j, 2 * FEATURES.index(pron)] = strength
            attn.c_attn.weight[k0 + j, 2 * FEATURES.index(noun)] = strength
            attn.c_attn.weight[v0 + j, 2 * FEATURES.index(noun)] = 1.0
            attn.c_proj.weight[2 * FEATURES.index(verb), planted.head * hs + j] = gain
    return model.eval()


def random_model(tok, seed: int = 0, std: float | None = None) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config(tok.get_vocab_size()))
    if std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, std)
    return model.eval()


def write_run(root, tok, model: GPT, step: int = 1000, snapshots: dict[int, GPT] | None = None) -> None:
    """A run directory as `fabric train` leaves it: tokenizer.json, latest and snapshots."""
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    sha = tokenizer_sha256(root / "tokenizer.json")
    save_weights(root / "checkpoints" / "latest.safetensors", model, CheckpointInfo(model.config, step, tokenizer_sha256=sha))
    for s, m in (snapshots or {}).items():
        save_weights(root / "checkpoints" / f"step-{s:06d}.safetensors", m, CheckpointInfo(m.config, s, tokenizer_sha256=sha))


# --------------------------------------------------------------------------- the world itself


def _encode(tok, text: str) -> torch.Tensor:
    return torch.tensor([[tok.token_to_id("<|endoftext|>"), *tok.encode(text).ids]])


def test_planted_head_looks_from_the_pronoun_to_the_matching_noun():
    tok = make_tokenizer()
    model = planted_model(tok)
    text = "The king greeted the queen before she sang."
    idx = _encode(tok, text)
    probe = Probe(capture_attention=True)
    model(idx, probe=probe)
    ids = idx[0].tolist()
    she, queen, king = (ids.index(tok.token_to_id("Ġ" + w)) for w in ("she", "queen", "king"))
    row = probe.attention[PLANTED.layer][0, PLANTED.head, she]
    assert row[queen] > 0.99 and row[king] < 0.005
    other = probe.attention[0][0, 1, she, : she + 1]  # an untouched head: uniform over the prefix
    assert torch.allclose(other, torch.full_like(other, 1 / (she + 1)), atol=1e-5)


def test_planted_head_raises_the_referents_continuation_and_ablation_removes_it():
    tok = make_tokenizer()
    model = planted_model(tok)
    idx = _encode(tok, "The king greeted the queen before she")
    sang, shouted = tok.token_to_id("Ġsang"), tok.token_to_id("Ġshouted")
    logits, _ = model(idx, probe=Probe(capture_attention=False))
    pref = (logits[0, -1, sang] - logits[0, -1, shouted]).item()
    ablated, _ = model(idx, probe=Probe(capture_attention=False, ablate={PLANTED: None}))
    assert pref > 3.0
    assert abs((ablated[0, -1, sang] - ablated[0, -1, shouted]).item()) < 1e-4


def test_toy_suite_is_balanced():
    its = [it for it in items() if not it["ambiguous"]]
    first = sum(it["referent"][0] < it["distractors"][0][0] for it in its)
    assert len(its) >= 24 and first * 2 == len(its)
    for it in its:
        assert it["text"][it["pronoun"][0] : it["pronoun"][1]] in PRONOUN.values()
