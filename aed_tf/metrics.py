"""Classification metrics. UAR (unweighted average recall = balanced accuracy) selects models."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss


def classification_metrics(labels: Sequence[int], probabilities: np.ndarray) -> dict[str, float]:
    """accuracy, UAR, macro-F1 and cross-entropy of predicted class probabilities.

    Recall and F1 are averaged over the classes present in ``labels``, so a class absent from a
    partition does not count as a zero.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities.argmax(axis=1)
    present = np.unique(labels)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "uar": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=present, average="macro", zero_division=0)),
        "loss": float(log_loss(labels, _clipped(probabilities), labels=np.arange(probabilities.shape[1]))),
    }


def _clipped(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities kept away from 0 (a float32 softmax can round to it) and summing to 1."""
    clipped = np.clip(probabilities, 1e-7, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)
