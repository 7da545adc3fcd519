"""Classification metrics. UAR (unweighted average recall = balanced accuracy) selects models."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import log_loss


def classification_metrics(labels: Sequence[int], probabilities: np.ndarray) -> dict[str, float]:
    """accuracy, UAR, macro-F1 (`label_metrics` of the most probable class) and cross-entropy
    of predicted class probabilities."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return {
        **label_metrics(labels, probabilities.argmax(axis=1), probabilities.shape[1]),
        "loss": float(log_loss(labels, _clipped(probabilities), labels=np.arange(probabilities.shape[1]))),
    }


def label_metrics(labels: Sequence[int], predicted: Sequence[int], num_classes: int) -> dict[str, float]:
    """accuracy, UAR and macro-F1 of predicted labels, from one confusion matrix (cheap enough to
    bootstrap). Recall and F1 are averaged over the classes present in ``labels``, so a class
    absent from a partition does not count as a zero."""
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    counts = np.bincount(labels * num_classes + predicted, minlength=num_classes**2)
    matrix = counts.reshape(num_classes, num_classes).astype(np.float64)
    support, predicted_count, hits = matrix.sum(1), matrix.sum(0), np.diag(matrix)
    present = support > 0
    recall = hits[present] / support[present]
    precision = np.divide(hits, predicted_count, out=np.zeros_like(hits), where=predicted_count > 0)[present]
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(recall), where=(precision + recall) > 0
    )
    return {
        "accuracy": float(hits.sum() / matrix.sum()),
        "uar": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }


def _clipped(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities kept away from 0 (a float32 softmax can round to it) and summing to 1."""
    clipped = np.clip(probabilities, 1e-7, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)
