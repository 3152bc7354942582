"""`slimbert average`: checkpoint averaging. The weights of several checkpoints of one
architecture, averaged into one model: usually the last epochs of a run trained with
`--keep-epochs N` (or `train-seq2seq --average-last N`), as fairseq's `average_checkpoints.py`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from slimbert.checkpoint import average_checkpoints, load_tokenizer, save_checkpoint
from slimbert.errors import ConfigError, DataError, SlimbertError
from slimbert.recipes.common import positive
from slimbert.training.trainer import epoch_checkpoints

log = logging.getLogger(__name__)


@dataclass
class AverageConfig:
    # checkpoint directories, or one training run's OUT whose epochs/ holds the kept epoch models
    models: list[str] = field(metadata={"positional": True, "metavar": "MODEL"})
    out: str  # directory for the averaged checkpoint
    last: int | None = None  # with one run directory: its last N kept epochs (default: all of them)

    def __post_init__(self) -> None:
        positive(self, "last")


def checkpoints_to_average(config: AverageConfig) -> list[Path]:
    """The checkpoint directories `config` names: a run's kept epochs, or the models as given."""
    if len(config.models) == 1:
        run = Path(config.models[0])
        kept = epoch_checkpoints(run)
        if not kept:
            raise DataError(f"{run}: no epoch models in {run / 'epochs'} to average (train with "
                            "--keep-epochs N), and one checkpoint alone averages to itself")
        chosen = kept[-config.last:] if config.last else kept
        if config.last and len(chosen) < config.last:
            raise DataError(f"{run / 'epochs'}: {len(kept)} epoch models kept, fewer than --last {config.last}")
        return chosen
    if config.last:
        raise ConfigError("--last picks epochs of one run directory; with several models, all are averaged")
    return [Path(m) for m in config.models]


def average(config: AverageConfig) -> tuple[Path, list[Path]]:
    """Write the average of the checkpoints to OUT; returns OUT and the checkpoints averaged."""
    chosen = checkpoints_to_average(config)
    model = average_checkpoints(chosen)
    try:
        tokenizer = load_tokenizer(chosen[0])
    except SlimbertError as e:  # weights alone average as well; the copy has no tokenizer either
        log.warning("%s; the average is written without a tokenizer", e)
        tokenizer = None
    return save_checkpoint(model, tokenizer, config.out), chosen
