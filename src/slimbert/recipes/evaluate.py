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
from slimbert.hardware import check_device, resolve_device
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
        check_device(self.device, self.precision)


@dataclass
class PredictConfig:
    model: str  # fine-tuned checkpoint directory
    batch_size: int = 64  # examples per forward pass
    max_length: int = 128  # tokens per example
    device: str = "auto"  # cpu, cuda, cuda:N or auto

    def __post_init__(self) -> None:
        positive(self, "batch_size", "max_length")
        check_device(self.device)


def evaluate(config: EvaluateConfig, data: TaskData) -> dict[str, float]:
    """The task metrics of a fine-tuned checkpoint on the dev split of `data`."""
    if data.dev is None:
        raise DataError("evaluation needs a dev split")
    net = load_model(config.model).to(resolve_device(config.device))
    check_head(net, config.model, data.num_labels, data.name)
    tokenizer = load_tokenizer(config.model)
    dev = encode(data.dev, tokenizer, config.max_length, data.regression)
    return score(net, dev, data.metrics, tokenizer.pad_id, config.batch_size, config.precision)


def predict(config: PredictConfig, lines: Iterable[str], source: str = "input"
            ) -> tuple[list[str], list[dict]]:
    """Label and probabilities for each line; a tab in a line separates a sentence pair.

    Returns the column names and one record per line, in order, each with its 1-based "line":
    {"line", "label", "probs"} for a classifier, {"line", "score"} for a regression model, and
    {"line", "empty": True} for a line with no text, so that output i answers input line i.
    Errors name `source` (the file, or stdin) and the line.
    """
    items: list[tuple[int, Example]] = []
    records: list[dict] = []
    first_kind: tuple[int, bool] | None = None  # (line, is a pair) of the first text
    for i, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        records.append({"line": i})
        if not line.strip():
            records[-1]["empty"] = True
            continue
        parts = line.split("\t")
        if len(parts) > 2:
            raise DataError(f"{source}:{i}: {len(parts)} tab-separated fields; expected a text or a "
                            "text pair")
        if not all(part.strip() for part in parts):
            raise DataError(f"{source}:{i}: empty text {'before' if not parts[0].strip() else 'after'} "
                            "the tab")
        pair = len(parts) == 2
        if first_kind is None:
            first_kind = (i, pair)
        elif first_kind[1] != pair:
            kinds = ("a single text", "a sentence pair (with a tab)")
            raise DataError(f"{source}:{i}: {kinds[pair]}, but line {first_kind[0]} is "
                            f"{kinds[first_kind[1]]}; give one kind of input per run")
        items.append((i - 1, Example(parts[0], parts[1] if pair else None)))
    net = load_model(config.model).to(resolve_device(config.device))
    check_head(net, config.model)
    cfg = net.config
    names = ["score"] if cfg.num_labels == 1 else cfg.label_names()
    if not items:
        return names, records
    tokenizer = load_tokenizer(config.model)
    data = encode_examples([e for _, e in items], tokenizer, config.max_length)
    logits = predict_logits(net, data, tokenizer.pad_id, config.batch_size)
    if cfg.num_labels == 1:
        for (k, _), x in zip(items, logits.view(-1)):
            records[k]["score"] = float(x)
        return names, records
    for (k, _), p in zip(items, logits.softmax(-1)):
        records[k].update(label=names[int(p.argmax())], probs={n: float(v) for n, v in zip(names, p)})
    return names, records
