"""`slimbert evaluate` and `slimbert predict`: a fine-tuned classifier scored on a dev split, or
labelling new text."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from slimbert.checkpoint import load_model, load_tokenizer
from slimbert.data.batching import encode_examples
from slimbert.data.readers import Example
from slimbert.data.sources import TaskData
from slimbert.errors import DataError
from slimbert.hardware import resolve_device
from slimbert.inference import predict_logits
from slimbert.recipes.common import check_head, encode, positive, score


@dataclass
class EvaluateConfig:
    model: str  # fine-tuned checkpoint directory
    batch_size: int = 64  # examples per forward pass
    max_length: int = 128  # tokens per example
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype of the forward passes
    device: str = "auto"  # cpu, cuda, cuda:N or auto

    def __post_init__(self) -> None:
        positive(self, "batch_size", "max_length")


@dataclass
class PredictConfig:
    model: str  # fine-tuned checkpoint directory
    batch_size: int = 64  # examples per forward pass
    max_length: int = 128  # tokens per example
    device: str = "auto"  # cpu, cuda, cuda:N or auto

    def __post_init__(self) -> None:
        positive(self, "batch_size", "max_length")


def evaluate(config: EvaluateConfig, data: TaskData) -> dict[str, float]:
    """The task metrics of a fine-tuned checkpoint on the dev split of `data`."""
    if data.dev is None:
        raise DataError("evaluation needs a dev split")
    net = load_model(config.model).to(resolve_device(config.device))
    check_head(net, config.model, data.num_labels, data.name)
    tokenizer = load_tokenizer(config.model)
    dev = encode(data.dev, tokenizer, config.max_length, data.regression)
    return score(net, dev, data.metrics, tokenizer.pad_id, config.batch_size, config.precision)


def predict(config: PredictConfig, lines: Iterable[str]) -> tuple[list[str], list[dict]]:
    """Label and probabilities for each line; a tab in a line separates a sentence pair.

    Returns the column names and one record per line: {"label", "probs"} or {"score"}.
    """
    net = load_model(config.model).to(resolve_device(config.device))
    check_head(net, config.model)
    cfg = net.config
    tokenizer = load_tokenizer(config.model)
    examples = []
    for i, line in enumerate(lines, start=1):
        parts = line.rstrip("\n").split("\t")
        if len(parts) > 2:
            raise DataError(f"input line {i}: {len(parts)} tab-separated fields; expected a text "
                            "or a text pair")
        if not parts[0].strip():
            raise DataError(f"input line {i}: empty text")
        examples.append(Example(parts[0], parts[1] if len(parts) == 2 else None))
    if not examples:
        return [], []
    if len({e.text_pair is None for e in examples}) > 1:
        raise DataError("mixed input: some lines are sentence pairs (with a tab) and some are not")
    data = encode_examples(examples, tokenizer, config.max_length)
    logits = predict_logits(net, data, tokenizer.pad_id, config.batch_size)
    if cfg.num_labels == 1:
        return ["score"], [{"score": float(x)} for x in logits.view(-1)]
    names = cfg.label_names()
    probs = logits.softmax(-1)
    return names, [{"label": names[int(p.argmax())], "probs": {n: float(v) for n, v in zip(names, p)}}
                   for p in probs]
