"""slimbert's BERT against Hugging Face `transformers`, the numerical reference.

Padded positions carry no meaning (they are masked out of every real token's attention), and
even HF's own eager and SDPA paths disagree there by ~4e-5 in fp32; so values are compared at
real tokens, and full tensors are compared between the same attention kernels.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import padded_batch, tiny_config

import slimbert
from slimbert import BertConfig, build_model, export_hf, load_model, load_tokenizer

transformers = pytest.importorskip("transformers")

SENTENCES = [
    "The movie was surprisingly good, with a plot that kept me guessing.",
    "Terrible.",
    "I wouldn't watch it again — not even for free!",
    "Naïve café owners in São Paulo serve crème brûlée.",
]
PAIRS = [
    ("A man is playing a guitar.", "Someone plays an instrument on stage."),
    ("Is it raining?", "The forecast says the sky stays clear all day, with no rain expected."),
]


def hf_model(directory, cls=None, attn="eager"):
    cls = cls or transformers.BertModel
    return cls.from_pretrained(directory, attn_implementation=attn).eval()


def assert_states_close(ours, theirs, mask, atol=1e-5):
    keep = mask.bool()
    torch.testing.assert_close(ours.last_hidden_state[keep], theirs.last_hidden_state[keep], atol=atol, rtol=0)
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        torch.testing.assert_close(a[keep], b[keep], atol=atol, rtol=0)
    assert len(ours.attentions) == len(theirs.attentions)
    for a, b in zip(ours.attentions, theirs.attentions):
        # rows of real query tokens; the columns of padded keys must be zero in both
        torch.testing.assert_close(a.transpose(1, 2)[keep], b.transpose(1, 2)[keep], atol=atol, rtol=0)


def assert_encoders_match(ours, theirs, ids, mask, types):
    """Every layer's hidden states and attention maps, and the pooler, within 1e-5."""
    with torch.no_grad():
        a = ours(ids, mask, types, output_hidden_states=True, output_attentions=True)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types,
                   output_hidden_states=True, output_attentions=True)
    assert_states_close(a, b, mask)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=1e-5, rtol=0)


def encode(tokenizer, texts, pairs=None):
    enc = tokenizer.encode(texts, pairs)
    ids, mask = padded_batch(enc.input_ids, tokenizer.pad_id)
    types, _ = padded_batch(enc.token_type_ids, 0)
    return ids, mask, types


@pytest.mark.parametrize("inputs", ["sentences", "pairs"])
def test_bundled_minilm_matches_transformers(minilm_dir, inputs):
    ours = load_model("bundled:minilm-l6")
    theirs = hf_model(minilm_dir)
    tok = load_tokenizer("bundled:minilm-l6")
    ids, mask, types = (encode(tok, SENTENCES) if inputs == "sentences"
                        else encode(tok, [a for a, _ in PAIRS], [b for _, b in PAIRS]))
    assert not mask.all(), "the batch must contain padding"
    assert_encoders_match(ours, theirs, ids, mask, types)


def test_bundled_minilm_sdpa_path_is_identical_to_transformers_sdpa(minilm_dir):
    ours = load_model("bundled:minilm-l6")
    theirs = hf_model(minilm_dir, attn="sdpa")
    ids, mask, types = encode(load_tokenizer("bundled:minilm-l6"), SENTENCES)
    with torch.no_grad():
        a = ours(ids, mask, types)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=0)


def random_hf_pair(tmp_path, cls, **config):
    """A randomly initialised HF model saved to disk, and slimbert's load of it."""
    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=3,
                                     num_attention_heads=4, intermediate_size=37,
                                     max_position_embeddings=40, **config)
    cls(hf_cfg).save_pretrained(tmp_path / "hf")
    return hf_model(tmp_path / "hf", cls), load_model(tmp_path / "hf", check_vocab=False)


def random_inputs(batch=4, length=17, vocab=99, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    lengths = torch.tensor([length, 3, 11, 8][:batch])
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    types = ((torch.arange(length)[None, :] >= (lengths[:, None] // 2)) & mask.bool()).long()
    return ids, mask, types


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_random_tiny_bert_matches_transformers(tmp_path, padded, act):
    theirs, ours = random_hf_pair(tmp_path, transformers.BertModel, hidden_act=act)
    ids, mask, types = random_inputs()
    if not padded:
        mask = torch.ones_like(mask)
    assert_encoders_match(ours, theirs, ids, mask, types)


def test_bf16_outputs_track_transformers_bf16(tmp_path):
    theirs, ours = random_hf_pair(tmp_path, transformers.BertModel)
    ids, mask, types = random_inputs()
    with torch.no_grad():
        a = ours.to(torch.bfloat16)(ids, mask, types).last_hidden_state.float()
        b = hf_model(tmp_path / "hf", attn="sdpa").to(torch.bfloat16)(
            input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state.float()
    keep = mask.bool()
    torch.testing.assert_close(a[keep], b[keep], atol=0.05, rtol=0.02)


@pytest.mark.parametrize("num_labels", [3, 1])
def test_sequence_classification_and_regression_logits_match(tmp_path, num_labels):
    theirs, ours = random_hf_pair(tmp_path, transformers.BertForSequenceClassification, num_labels=num_labels)
    assert ours.config.head == "classification" and ours.config.num_labels == num_labels
    assert ours.config.problem_type == ("regression" if num_labels == 1 else "single_label_classification")
    ids, mask, types = random_inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask, types).logits,
                                   theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
                                   atol=1e-5, rtol=0)


def test_masked_lm_logits_match_and_decoder_is_tied(tmp_path):
    theirs, ours = random_hf_pair(tmp_path, transformers.BertForMaskedLM)
    ids, mask, types = random_inputs()
    with torch.no_grad():
        a = ours(ids, mask, types).logits
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    keep = mask.bool()
    torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=0)
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


@pytest.mark.parametrize("head,cls", [("none", "BertModel"),
                                      ("classification", "BertForSequenceClassification"),
                                      ("mlm", "BertForMaskedLM")])
def test_exported_checkpoint_loads_in_transformers_with_same_outputs(tmp_path, head, cls):
    torch.manual_seed(0)
    model = build_model(tiny_config(head=head, num_labels=3)).eval()
    with torch.no_grad():  # move LayerNorm/bias off their init values so the test sees them
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    export_hf(model, None, tmp_path / "out")
    theirs = getattr(transformers, cls).from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    ids, mask, types = random_inputs(vocab=model.config.vocab_size)
    with torch.no_grad():
        a = model(ids, mask, types, output_hidden_states=True, output_attentions=True)
        b = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
                   output_attentions=True)
    keep = mask.bool()
    if head == "none":
        assert_states_close(a, b, mask)
    elif head == "classification":
        torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(a.logits[keep], b.logits[keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("head,cls", [("none", "RoFormerModel"), ("mlm", "RoFormerForMaskedLM")])
def test_rotary_bert_exports_as_a_roformer_with_the_same_outputs(tmp_path, head, cls):
    """RoFormer pairs rotary features (2i, 2i+1), slimbert (i, i+D/2): the export reorders q and k."""
    torch.manual_seed(0)
    model = build_model(tiny_config(head=head, position_embedding_type="rope")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    export_hf(model, None, tmp_path / "out")
    theirs, info = getattr(transformers, cls).from_pretrained(tmp_path / "out", attn_implementation="eager",
                                                              output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # every weight came from the file
    assert theirs.config.model_type == "roformer" and theirs.config.architectures == [cls]
    assert_same_as_roformer(model, theirs, head)


def assert_same_as_roformer(ours, theirs, head: str) -> None:
    """slimbert's rotary BERT and transformers' RoFormer give the same hidden states and attention
    maps (a bare encoder) or MLM logits at the real tokens, on random padded inputs."""
    ids, mask, types = random_inputs(vocab=ours.config.vocab_size)
    with torch.no_grad():
        a = ours.eval()(ids, mask, types, output_hidden_states=True, output_attentions=True)
        b = theirs.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
                          output_attentions=True)
    if head == "none":
        assert_states_close(a, b, mask)
    else:
        keep = mask.bool()
        torch.testing.assert_close(a.logits[keep], b.logits[keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("head,cls", [("none", "RoFormerModel"), ("mlm", "RoFormerForMaskedLM")])
def test_a_roformer_checkpoint_loads_into_slimbert_with_the_same_outputs(tmp_path, head, cls):
    """transformers' own RoFormer, saved by it, read by `load_model`: the same outputs; and a
    slimbert export read back is the model it came from, weight for weight."""
    torch.manual_seed(0)
    config = transformers.RoFormerConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=37, max_position_embeddings=64, embedding_size=32)
    theirs = getattr(transformers, cls)(config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    ours = slimbert.load_model(tmp_path / "hf")
    assert ours.config.position_embedding_type == "rope" and ours.config.head == head
    assert_same_as_roformer(ours, theirs, head)
    export_hf(ours, None, tmp_path / "again")
    back = slimbert.load_model(tmp_path / "again").state_dict()
    assert back.keys() == ours.state_dict().keys()
    # (a bare RoFormer has no pooler: slimbert's BertModel starts one fresh, both times)
    assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items() if not k.startswith("pooler."))


@pytest.mark.parametrize("changes,why", [
    (dict(rotary_value=True), "rotary_value=true"),
    (dict(embedding_size=16), "embedding_size 16 != hidden_size 32"),
    (dict(architectures=["RoFormerForSequenceClassification"]), "classifier differs"),
])
def test_roformers_slimbert_cannot_compute_are_refused_in_one_line(tmp_path, changes, why):
    config = transformers.RoFormerConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                         intermediate_size=37, embedding_size=32)
    transformers.RoFormerModel(config).save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**d, **changes}))
    with pytest.raises(slimbert.CheckpointError, match=why) as e:
        slimbert.load_model(tmp_path)
    assert "\n" not in str(e.value)


def test_interleaving_keeps_each_rotary_pair_together():
    from slimbert.compress.roformer import interleave_rows
    # 2 heads of D = 6: slimbert pairs (0, 3), (1, 4), (2, 5) in each; RoFormer wants them adjacent
    rows = torch.arange(12.0)[:, None].expand(12, 2)
    assert interleave_rows(rows, 2)[:, 0].tolist() == [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]
    assert interleave_rows(torch.arange(12.0), 2).tolist() == [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]


@pytest.mark.parametrize("changes,why", [
    (dict(head="classification"), "classification head"),
    (dict(norm_style="pre", head="mlm"), "norm_style='pre'"),
    (dict(attention_scale="log_n", head="mlm"), "attention_scale='log_n'"),
])
def test_rotary_models_roformer_cannot_compute_are_refused(tmp_path, changes, why):
    model = build_model(tiny_config(position_embedding_type="rope", **changes))
    with pytest.raises(slimbert.CheckpointError, match=why):
        export_hf(model, None, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_sdpa_and_explicit_attention_agree():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    ids, mask, types = random_inputs(vocab=model.config.vocab_size)
    with torch.no_grad():
        fast = model(ids, mask, types)
        explicit = model(ids, mask, types, output_attentions=True)
    torch.testing.assert_close(fast.last_hidden_state, explicit.last_hidden_state, atol=1e-6, rtol=0)
    probs = explicit.attentions[0]  # (B, N, T, T)
    assert probs.shape == (4, 4, ids.shape[1], ids.shape[1])
    assert torch.all(probs[1, :, :, 3:] == 0), "padded keys must get zero attention"


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(ids).last_hidden_state
        with_pad = model(padded, (padded != 0).long()).last_hidden_state[:, :5]
    torch.testing.assert_close(alone, with_pad, atol=1e-6, rtol=0)


def test_pre_norm_is_a_different_trainable_model_that_refuses_hf_export(tmp_path):
    torch.manual_seed(0)
    pre = build_model(tiny_config(norm_style="pre", head="classification"))
    assert pre.bert.encoder.final_norm is not None
    ids, mask, types = random_inputs(vocab=pre.config.vocab_size)
    loss = pre(ids, mask, types).logits.sum()
    loss.backward()
    assert all(p.grad is not None for p in pre.parameters())
    with pytest.raises(slimbert.CheckpointError, match="norm_style='pre'"):
        export_hf(pre, None, tmp_path / "x")
    slimbert.save_checkpoint(pre, None, tmp_path / "pre")
    again = load_model(tmp_path / "pre", check_vocab=False)
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask, types).logits, pre.eval()(ids, mask, types).logits)


def test_config_rejects_bad_values():
    with pytest.raises(slimbert.CheckpointError, match="hidden_size"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(slimbert.CheckpointError, match="hidden_act"):
        BertConfig(hidden_act="swishy")
