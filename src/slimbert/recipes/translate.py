"""`slimbert translate`: lines of text translated by a model of `slimbert train-seq2seq`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from slimbert.checkpoint import load_model, resolve
from slimbert.compress.export_ctranslate2 import CTranslate2Translator, is_ctranslate2_dir
from slimbert.config import Seq2SeqConfig
from slimbert.data.parallel import read_text_lines
from slimbert.errors import CheckpointError, ConfigError, DataError
from slimbert.generation import SearchConfig, Translations, target_vocabulary, translate
from slimbert.hardware import resolve_device
from slimbert.recipes.common import positive
from slimbert.subword import SubwordTokenizer

log = logging.getLogger(__name__)


@dataclass
class TranslateConfig:
    model: str  # translation checkpoint directory (from slimbert train-seq2seq)
    beam: int = 5  # beam size (1: greedy search)
    nbest: int = 1  # hypotheses printed per line, best first: "LINE<TAB>SCORE<TAB>TEXT" when more than 1
    length_penalty: float = 1.0  # alpha: hypotheses ranked by log p / length^alpha (as fairseq and Marian)
    min_length: int = 1  # fewest tokens before </s>
    max_len_a: float = 1.5  # a translation has at most max_len_a * source tokens + max_len_b tokens
    max_len_b: int = 10  # (see --max-len-a)
    batch_size: int = 32  # sentences decoded together (sorted by length)
    kv_cache: bool = True  # reuse keys/values across steps (off: recompute the prefix every step, slow)
    device: str = "auto"  # cpu, cuda, cuda:N or auto
    # torch: a slimbert checkpoint; ctranslate2: a directory from slimbert export --format ctranslate2
    backend: Literal["torch", "ctranslate2"] = "torch"
    # ctranslate2: "default" (the weights as exported), "float32", "int8" (quantized on load), "bfloat16"...
    compute_type: str = "default"
    # torch: restrict the output to the pieces this file of target-language text uses (e.g. the
    # training targets): a smaller vocabulary projection, faster decoding (a CTranslate2 model
    # takes it at export)
    target_vocabulary: str | None = None
    # torch on the CPU in fp32: the vocabulary projection runs with its weight prepacked by
    # oneDNN (the same logits up to float rounding, faster); --no-pack-weights: plain torch
    pack_weights: bool = True

    def __post_init__(self) -> None:
        positive(self, "beam", "nbest", "batch_size")
        if self.compute_type != "default" and self.backend != "ctranslate2":
            raise ConfigError("--compute-type applies to --backend ctranslate2 (for torch int8, "
                              "write the model with slimbert quantize)")
        if self.backend == "ctranslate2" and not self.kv_cache:
            raise ConfigError("--no-kv-cache applies to --backend torch")
        if self.backend == "ctranslate2" and self.target_vocabulary:
            raise ConfigError("--target-vocabulary applies to --backend torch; a CTranslate2 model takes it "
                              "at export (slimbert export --format ctranslate2 --target-vocabulary FILE)")
        self.search()

    def load(self) -> tuple[nn.Module | CTranslate2Translator, SubwordTokenizer]:
        """The model and tokenizer these options name (see `load_translator`)."""
        return load_translator(self.model, self.device, self.backend, self.compute_type,
                               self.target_vocabulary, self.pack_weights)

    def search(self) -> SearchConfig:
        try:
            return SearchConfig(beam_size=self.beam, length_penalty=self.length_penalty,
                                min_length=self.min_length, max_len_a=self.max_len_a,
                                max_len_b=self.max_len_b, nbest=self.nbest, use_cache=self.kv_cache)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def load_translator(spec: str | Path, device: str = "auto", backend: str = "torch",
                    compute_type: str = "default", target_vocabulary: str | None = None,
                    pack_weights: bool = False) -> tuple[nn.Module | CTranslate2Translator, SubwordTokenizer]:
    """A translation model and its joint vocabulary: a slimbert checkpoint directory (`torch`),
    or an exported CTranslate2 directory (`ctranslate2`). `target_vocabulary`: a file of
    target-language text whose pieces the torch model's output is restricted to.
    `pack_weights`: serve the torch model's vocabulary projection prepacked by oneDNN where it
    can be (`SharedEmbeddings.pack_output`), for a model that will only translate."""
    directory = resolve(spec)
    if backend == "ctranslate2":
        engine = CTranslate2Translator(directory, "cuda" if resolve_device(device).type == "cuda" else "cpu",
                                       compute_type)
        return engine, engine.tokenizer
    if is_ctranslate2_dir(directory):
        raise CheckpointError(f"{directory}: a CTranslate2 model; translate it with --backend ctranslate2")
    model = load_model(directory)
    if not isinstance(model.config, Seq2SeqConfig):
        raise CheckpointError(f"{directory}: a {model.config.MODEL_TYPE} model does not translate; "
                              "train one with slimbert train-seq2seq")
    tokenizer = SubwordTokenizer.from_dir(directory)
    if len(tokenizer) != model.config.vocab_size:
        raise CheckpointError(f"{directory}: tokenizer.json has {len(tokenizer)} pieces but config.json "
                              f"says vocab_size={model.config.vocab_size}: the vocabulary does not belong "
                              "to this model")
    model = model.to(resolve_device(device))
    if target_vocabulary:
        model.embeddings.restrict_output(read_target_vocabulary(target_vocabulary, tokenizer))
    if pack_weights and model.embeddings.pack_output():
        log.info("the vocabulary projection runs with its weight prepacked by oneDNN "
                 "(--no-pack-weights: off)")
    return model, tokenizer


def read_target_text(path: str | Path) -> list[str]:
    """The lines of a file of target-language text for a target vocabulary; no text is an error."""
    lines = read_text_lines(path)
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: no text to take a target vocabulary from")
    return lines


def read_target_vocabulary(path: str | Path, tokenizer: SubwordTokenizer) -> list[int]:
    """The pieces of a file of target-language text (see `generation.target_vocabulary`)."""
    ids = target_vocabulary(tokenizer, read_target_text(path))
    log.info("%s: the output is restricted to its %d pieces of %d", path, len(ids), len(tokenizer))
    return ids


def translate_lines(config: TranslateConfig, lines: Sequence[str],
                    model: nn.Module | CTranslate2Translator | None = None,
                    tokenizer: SubwordTokenizer | None = None, progress: str | None = None) -> Translations:
    """Translate `lines` (an empty line gives an empty translation)."""
    if model is None or tokenizer is None:
        model, tokenizer = config.load()
    if isinstance(model, CTranslate2Translator):
        result = model.translate(lines, config.search(), config.batch_size, progress)
    else:
        result = translate(model, tokenizer, lines, config.search(), config.batch_size, progress)
    if result.truncated:
        log.warning("%d input lines were longer than the model's %d tokens and were cut",
                    result.truncated, model.config.max_source_length)
    return result
