"""WordPiece tokenization through the Rust `tokenizers` library.

`Tokenizer.from_dir` reads a BERT `vocab.txt` (+ `tokenizer_config.json` for casing) and builds
the same pipeline as `transformers`' BertTokenizerFast: BERT normalizer (clean text, Chinese
characters, lower-casing and accent stripping), BERT pre-tokenizer, WordPiece with `##`
continuations, and the [CLS] A [SEP] (B [SEP]) template with segment ids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from slimbert.config import read_json_object
from slimbert.errors import CheckpointError, DataError
from slimbert.io import atomic_write_text, read_utf8

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class Encoding:
    """Token ids and segment ids of a batch, unpadded (padding happens per batch in collate)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]


def read_vocab(vocab_file: str | Path) -> dict[str, int]:
    """token -> id of a `vocab.txt`: one UTF-8 token per line, its id the line's index. What is
    wrong with the file is a CheckpointError naming it (and the line)."""
    path = Path(vocab_file)
    lines = read_utf8(path, CheckpointError, "the vocabulary file (vocab.txt)").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for lineno, token in enumerate(lines, start=1):
        token = token.rstrip("\r")
        if token in vocab:
            raise CheckpointError(f"{path}:{lineno}: token '{token}' appears twice "
                                  f"(first on line {vocab[token] + 1})")
        vocab[token] = lineno - 1
    return vocab


class Tokenizer:
    """A BERT WordPiece tokenizer. Build it with `from_dir`, `from_vocab` or `train`."""

    def __init__(self, vocab: dict[str, int], lowercase: bool = True, strip_accents: bool | None = None,
                 handle_chinese_chars: bool = True, max_length: int = 512):
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise CheckpointError(f"vocabulary lacks the special tokens {missing}")
        self.vocab = vocab
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.handle_chinese_chars = handle_chinese_chars
        self.max_length = max_length  # the most tokens a sequence may have (the model's positions)
        self.segments = 2  # segment ids the model has embeddings for: 1 means single texts only
        self.model_name = "the model"  # the model `limit` fitted this tokenizer to, for messages
        self._said_capped = False
        tok = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=handle_chinese_chars,
            strip_accents=strip_accents, lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok.decoder = decoders.WordPiece(prefix="##")
        # As in BertTokenizerFast: "[MASK]" written in a text is the mask token, and decoding
        # can skip the special tokens.
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        self._tok = tok

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_vocab(cls, vocab_file: str | Path, **kwargs) -> Tokenizer:
        return cls(read_vocab(vocab_file), **kwargs)

    @classmethod
    def from_dir(cls, directory: str | Path) -> Tokenizer:
        """Load `vocab.txt` and the casing options of `tokenizer_config.json` (HF or slimbert)."""
        directory = Path(directory)
        opts = {}
        cfg_path = directory / "tokenizer_config.json"
        if cfg_path.exists():
            cfg = read_json_object(cfg_path)
            for key, allowed in (("do_lower_case", (bool,)), ("strip_accents", (bool, type(None))),
                                 ("tokenize_chinese_chars", (bool,))):
                if key in cfg and not isinstance(cfg[key], allowed):
                    raise CheckpointError(f"{cfg_path}: field '{key}': expected true or false"
                                          f"{' or null' if len(allowed) > 1 else ''}, got {cfg[key]!r}")
            opts["lowercase"] = cfg.get("do_lower_case", True)
            opts["strip_accents"] = cfg.get("strip_accents")
            opts["handle_chinese_chars"] = cfg.get("tokenize_chinese_chars", True)
            max_len = cfg.get("model_max_length")
            if isinstance(max_len, int) and 0 < max_len <= 1_000_000:
                opts["max_length"] = max_len
        return cls.from_vocab(directory / "vocab.txt", **opts)

    def save(self, directory: str | Path) -> None:
        """Write `vocab.txt` and a `tokenizer_config.json` that `transformers` also reads."""
        directory = Path(directory)
        tokens = sorted(self.vocab, key=self.vocab.__getitem__)
        atomic_write_text(directory / "vocab.txt", "\n".join(tokens) + "\n")
        cfg = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.handle_chinese_chars,
            "model_max_length": self.max_length,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]",
        }
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(cfg, indent=2) + "\n")

    # ----------------------------------------------------------------- training
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, lowercase: bool = True,
              min_frequency: int = 2, show_progress: bool = True) -> Tokenizer:
        """Learn a WordPiece vocabulary from an iterator of texts (Rust trainer, multi-threaded)."""
        tok = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress,
            special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##")
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok.get_vocab(), lowercase=lowercase)

    # ----------------------------------------------------------------- encoding
    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.vocab["[PAD]"]

    @property
    def mask_id(self) -> int:
        return self.vocab["[MASK]"]

    @property
    def cls_id(self) -> int:
        return self.vocab["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.vocab["[SEP]"]

    @property
    def special_ids(self) -> list[int]:
        return [self.vocab[t] for t in SPECIAL_TOKENS]

    def limit(self, max_length: int | None = None, segments: int | None = None,
              model: str | None = None) -> None:
        """Fit the tokenizer to a model (named `model` in messages): sequences of at most
        `max_length` tokens (its learned positions), segment ids below `segments` (its
        type_vocab_size; 1 means it reads single texts, never pairs)."""
        if max_length is not None:
            self.max_length = min(self.max_length, max_length)
        if segments is not None:
            self.segments = segments
        if model is not None:
            self.model_name = model

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
               max_length: int | None = None) -> Encoding:
        """Encode a batch of texts (or text pairs), truncated to `max_length` tokens in all.

        Pairs are truncated longest-first, as BERT's reference implementation does. A
        `max_length` above what the model takes is capped, and said once (a warning).
        """
        if pairs is not None and self.segments < 2:
            raise DataError(f"{self.model_name}: the model reads single texts (type_vocab_size="
                            f"{self.segments}), not sentence pairs; give one text per example")
        if max_length is not None and max_length > self.max_length and not self._said_capped:
            self._said_capped = True
            log.warning("max_length %d is more than %s takes: sequences are cut at %d tokens",
                        max_length, self.model_name, self.max_length)
        max_length = min(max_length or self.max_length, self.max_length)
        self._tok.enable_truncation(max_length=max_length, strategy="longest_first")
        if pairs is None:
            encs = self._tok.encode_batch(list(texts))
        else:
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
            encs = self._tok.encode_batch(list(zip(texts, pairs)))
        return Encoding([e.ids for e in encs], [e.type_ids for e in encs])

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text, without [CLS]/[SEP] and untruncated (one batched call, on the
        library's threads): what a pretraining corpus is turned into."""
        self._tok.no_truncation()
        # encode_batch_fast (tokenizers >= 0.20) skips the character offsets, unused here
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of `text`, without [CLS]/[SEP]."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
