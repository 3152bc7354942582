"""WordPiece tokenization: identical ids to transformers' BertTokenizerFast, and vocabulary training."""

from __future__ import annotations

import pytest

from slimbert import CheckpointError, Tokenizer, load_tokenizer
from slimbert.cli import main
from slimbert.data.tasks import load_task

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair_of_tokenizers(minilm_dir):
    return load_tokenizer("bundled:minilm-l6"), transformers.BertTokenizerFast.from_pretrained(minilm_dir)


def test_all_sst2_dev_sentences_match_bert_tokenizer_fast(pair_of_tokenizers, glue_dir):
    ours, theirs = pair_of_tokenizers
    texts = [e.text for e in load_task("sst2", "dev", glue_dir).examples]
    assert len(texts) == 872
    enc = ours.encode(texts, max_length=512)
    ref = theirs(texts, truncation=True, max_length=512)
    assert enc.input_ids == ref["input_ids"]
    assert enc.token_type_ids == ref["token_type_ids"]


def test_all_mrpc_dev_pairs_match_bert_tokenizer_fast(pair_of_tokenizers, glue_dir):
    ours, theirs = pair_of_tokenizers
    examples = load_task("mrpc", "dev", glue_dir).examples
    assert len(examples) == 408
    a, b = [e.text for e in examples], [e.text_pair for e in examples]
    for max_length in (512, 32):  # 32 forces longest-first truncation of the pairs
        enc = ours.encode(a, b, max_length=max_length)
        ref = theirs(a, b, truncation=True, max_length=max_length)
        assert enc.input_ids == ref["input_ids"]
        assert enc.token_type_ids == ref["token_type_ids"]


def test_casing_follows_the_checkpoint(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    assert Tokenizer.from_dir(tmp_path).tokenize("Hello") == ["Hello"]
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    assert Tokenizer.from_dir(tmp_path).tokenize("Hello") == ["hello"]


def test_duplicate_vocabulary_entry_names_the_line(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncat\ncat\n")
    with pytest.raises(CheckpointError, match=r"vocab\.txt:7: token 'cat' appears twice"):
        Tokenizer.from_dir(tmp_path)


def test_vocabulary_without_special_tokens_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(CheckpointError, match="special tokens"):
        Tokenizer.from_dir(tmp_path)


def test_train_vocabulary_from_the_cli(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    sentences = ["the cat sat on the mat", "the dog chased the cat", "a cat and a dog are friends",
                 "unbelievably, the cats were sitting"] * 50
    corpus.write_text("\n".join(sentences) + "\n")
    assert main(["vocab", "--corpus", str(corpus), "--size", "120", "--out", str(tmp_path / "v")]) == 0
    assert "WordPiece vocabulary" in capsys.readouterr().out
    tok = Tokenizer.from_dir(tmp_path / "v")
    assert 40 < len(tok) <= 120
    assert tok.vocab["[PAD]"] == 0 and "[MASK]" in tok.vocab
    assert "cat" in tok.vocab
    pieces = tok.tokenize("the cats sat")
    assert "[UNK]" not in pieces and tok.decode(tok.encode(["the cats sat"]).input_ids[0]) == "the cats sat"
