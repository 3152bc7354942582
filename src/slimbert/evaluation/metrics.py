"""GLUE metrics (accuracy, F1, Matthews correlation, Pearson/Spearman), via scikit-learn and SciPy."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

METRICS = ("accuracy", "f1", "matthews_corr", "pearson", "spearman")


def compute_metrics(names: tuple[str, ...] | list[str], logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics from raw model outputs: logits (N, C) for classes, (N, 1) for regression."""
    out: dict[str, float] = {}
    if logits.shape[-1] == 1:
        preds = logits.reshape(-1)
    else:
        preds = logits.argmax(-1)
    for name in names:
        if name == "accuracy":
            out[name] = float(accuracy_score(labels, preds))
        elif name == "f1":  # of the positive class (index 1), as GLUE reports it
            out[name] = float(f1_score(labels, preds))
        elif name == "matthews_corr":
            out[name] = float(matthews_corrcoef(labels, preds))
        elif name == "pearson":
            out[name] = float(pearsonr(preds, labels)[0])
        elif name == "spearman":
            out[name] = float(spearmanr(preds, labels)[0])
        else:
            raise ValueError(f"unknown metric '{name}'; known: {METRICS}")
    return out
