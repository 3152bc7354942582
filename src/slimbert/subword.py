"""A joint subword vocabulary for translation: BPE over the source and target languages together.

One vocabulary for both languages (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909)
lets the encoder, the decoder and the output projection share one embedding matrix, and names,
numbers and cognates get the same pieces on both sides. Text is kept as it is (cased, accents
and punctuation untouched, Unicode NFC only); spaces become the "▁" marker at the start of
a piece (SentencePiece's Metaspace, as Marian's vocabularies do), so decoding puts every space
back where it was: detokenized output is normal text, ready for sacreBLEU. A character the
training text never showed is spelled in UTF-8 bytes, <0xC3> <0xA4>, and decoded back
(byte fallback, as SentencePiece's and Llama's vocabularies do), so there is no <unk>.

The tokenizer is saved as `tokenizer.json` (the `tokenizers` format, which `transformers`'
PreTrainedTokenizerFast also reads) beside a checkpoint's config.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from slimbert.errors import CheckpointError
from slimbert.io import atomic_write_text

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3 in every vocabulary trained here
TOKENIZER_FILE = "tokenizer.json"
BYTES = tuple(f"<0x{b:02X}>" for b in range(256))  # byte-fallback pieces


class SubwordTokenizer:
    """BPE pieces with a "▁" word-start marker. Build it with `train`, `from_dir` or `from_file`.

    `encode` gives pieces without special tokens; a model's data adds </s> (and <s> for the
    decoder's input) itself.
    """

    def __init__(self, tok: HFTokenizer):
        vocab = tok.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise CheckpointError(f"subword vocabulary lacks the special tokens {missing}")
        self._tok = tok
        self.vocab = vocab

    # ------------------------------------------------------------------ building
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
              show_progress: bool = False) -> SubwordTokenizer:
        """Learn BPE merges from `texts` (both languages' training sentences, together).

        `vocab_size` counts the 4 special tokens and the 256 byte pieces; a vocabulary smaller
        than those and the training text's characters gets no merges."""
        tok = HFTokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=max(vocab_size - len(BYTES), 0), min_frequency=min_frequency,
                                      special_tokens=list(SPECIAL_TOKENS), show_progress=show_progress)
        tok.train_from_iterator(texts, trainer=trainer)
        # The same pieces and merges, plus the 256 bytes for whatever else a text holds.
        learned = json.loads(tok.to_str())["model"]
        vocab = dict(learned["vocab"])
        for piece in BYTES:
            vocab.setdefault(piece, len(vocab))
        tok.model = models.BPE(vocab=vocab, merges=[tuple(m) for m in learned["merges"]], unk_token=UNK,
                               byte_fallback=True)
        tok.decoder = decoders.Sequence([decoders.ByteFallback(),
                                         decoders.Metaspace(replacement="▁", prepend_scheme="always")])
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> SubwordTokenizer:
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{path}: no such tokenizer file")
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # the Rust library's parse errors carry no Python type of their own
            raise CheckpointError(f"{path}: not a readable tokenizer.json ({e})") from None

    @classmethod
    def from_dir(cls, directory: str | Path) -> SubwordTokenizer:
        """The tokenizer saved in a checkpoint directory."""
        return cls.from_file(Path(directory) / TOKENIZER_FILE)

    def save(self, directory: str | Path) -> None:
        atomic_write_text(Path(directory) / TOKENIZER_FILE, self._tok.to_str(pretty=True))

    # ------------------------------------------------------------------ ids
    def __len__(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def pad_id(self) -> int:
        return self.vocab[PAD]

    @property
    def unk_id(self) -> int:
        return self.vocab[UNK]

    @property
    def bos_id(self) -> int:
        return self.vocab[BOS]

    @property
    def eos_id(self) -> int:
        return self.vocab[EOS]

    # ------------------------------------------------------------ text <-> ids
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Piece ids of each text (no special tokens, no truncation: the data layer truncates)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def tokenize(self, text: str) -> list[str]:
        return self._tok.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int]) -> str:
        """Normal text: special tokens dropped, pieces joined, "▁" turned back into spaces."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return self._tok.decode_batch([list(ids) for ids in batch], skip_special_tokens=True)
