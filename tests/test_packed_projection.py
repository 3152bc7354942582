"""The vocabulary projection served with its weight prepacked by oneDNN (`PackedLinear`,
`SharedEmbeddings.pack_output`): the same products as `F.linear` up to float rounding; the same
logits and the same greedy and beam translations as the plain model, for every seq2seq model;
the checkpoint untouched; int8 projections and unsupported machines left as they are; and the
commands that translate serve it packed by default, with a switch to turn it off."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_generation import CONFIGS, sources, tiny_model
from test_target_vocabulary import GERMAN, checkpoint  # noqa: F401  (a fixture)

from slimbert.cli import main
from slimbert.compress.quantize import quantize_int8
from slimbert.evaluation.bench_seq2seq import engines_for
from slimbert.generation import SearchConfig, generate, translate
from slimbert.modules import PackedLinear, packed_linear
from slimbert.recipes.translate import load_translator

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not PackedLinear.available(),
                                 reason="this torch build lacks oneDNN's packed linear operators")]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 24), (5, 24), (2, 3, 24), (0, 24)])
def test_packed_linear_equals_f_linear(bias, shape):
    g = torch.Generator().manual_seed(0)
    weight, b = torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    x = torch.randn(*shape, generator=g)
    layer = PackedLinear(weight, b if bias else None)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, weight, b if bias else None), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(copy.deepcopy(layer)(x), layer(x), rtol=0, atol=0)


def test_packed_linear_refuses_what_it_cannot_serve():
    layer = PackedLinear(torch.randn(4, 3))
    with pytest.raises(RuntimeError, match="inference only"):
        layer(torch.randn(2, 3, requires_grad=True))
    assert not PackedLinear.supports(torch.randn(4, 3, dtype=torch.float64))
    assert not PackedLinear.supports(torch.randn(4, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="fp32 CPU weight"):
        PackedLinear(torch.randn(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_packed_output_gives_the_same_logits_and_translations(name):
    model = tiny_model(name)
    input_ids, mask = sources()
    h = torch.randn(3, 5, model.embeddings.tokens.embedding_dim)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain_logits = model.embeddings.logits(h)
    searches = [SearchConfig(beam_size=k, max_len_a=0, max_len_b=8) for k in (1, 3)]
    plain = [[hyps[0].tokens for hyps in generate(model, input_ids, mask, s)] for s in searches]

    assert model.embeddings.pack_output() and model.embeddings.packed
    with torch.inference_mode():
        torch.testing.assert_close(model.embeddings.logits(h), plain_logits, rtol=1e-5, atol=1e-5)
    assert [[hyps[0].tokens for hyps in generate(model, input_ids, mask, s)] for s in searches] == plain
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(v, after[k]) for k, v in before.items())

    assert not model.embeddings.pack_output(False)
    assert torch.equal(model.embeddings.logits(h), plain_logits)


@pytest.mark.parametrize("name", ["transformer-post-sinusoidal", "transformer-pre-rope-untied"])
def test_packing_and_a_target_vocabulary_compose(name):
    model = tiny_model(name)
    h = torch.randn(2, 4, model.embeddings.tokens.embedding_dim)
    full = model.embeddings.logits(h)
    kept = list(range(0, model.config.vocab_size, 3)) + [model.config.eos_token_id]
    others = sorted(set(range(model.config.vocab_size)) - set(kept))
    embeddings = model.embeddings
    for pack_first in (True, False):
        embeddings.restrict_output(None)
        embeddings.pack_output(pack_first)
        embeddings.restrict_output(kept)
        embeddings.pack_output()
        assert model.embeddings.packed
        with torch.inference_mode():
            logits = model.embeddings.logits(h)
        kept_ids = sorted(set(kept))
        torch.testing.assert_close(logits[..., kept_ids], full[..., kept_ids], rtol=1e-5, atol=1e-5)
        assert torch.isneginf(logits[..., others]).all()
    model.embeddings.restrict_output(None)  # the full vocabulary again, still packed
    assert model.embeddings.packed
    with torch.inference_mode():
        torch.testing.assert_close(model.embeddings.logits(h), full, rtol=1e-5, atol=1e-5)


def test_an_int8_projection_and_a_machine_without_the_operators_stay_plain(monkeypatch):
    model = quantize_int8(tiny_model("transformer-post-sinusoidal"), "all")
    h = torch.randn(2, 4, model.embeddings.tokens.embedding_dim)
    expected = model.embeddings.logits(h)
    assert not model.embeddings.pack_output()
    assert model.embeddings.serving is None and torch.equal(model.embeddings.logits(h), expected)

    monkeypatch.setattr(packed_linear, "_operators_work", lambda: False)
    model = tiny_model("transformer-post-sinusoidal")
    assert not model.embeddings.pack_output() and model.embeddings.serving is None


def test_translate_serves_packed_unless_told_not_to(checkpoint, capsys):  # noqa: F811
    root, model_dir, _ = checkpoint
    model, _ = load_translator(model_dir, "cpu", pack_weights=True)
    assert model.embeddings.packed
    assert not load_translator(model_dir, "cpu")[0].embeddings.packed  # for training and distillation
    outputs = []
    for extra in ([], ["--no-pack-weights"]):
        argv = ["translate", "--model", str(model_dir), str(root / "test.de"), "--beam", "2", *extra]
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(GERMAN)


def test_bench_packs_a_copy_for_its_torch_backend(checkpoint, tmp_path):  # noqa: F811
    _, model_dir, tokenizer = checkpoint
    model, _ = load_translator(model_dir, "cpu")
    engines, skipped = engines_for(model_dir, ["torch", "torch-int8-all"], tmp_path, 1, "m", model, tokenizer)
    assert not skipped and [e.backend for e in engines] == ["torch", "torch-int8-all"]
    assert not model.embeddings.packed  # the int8 backend was built from the plain model
    search = SearchConfig(beam_size=1)
    assert engines[0].translate(GERMAN, search, 2).best == translate(model, tokenizer, GERMAN, search, 2).best
