"""Confidence calibration: temperature scaling fitted on validation, expected calibration error
and the reliability diagram's bins.

The classifier ends in a softmax, so its log-probabilities are its logits up to a constant per
clip, which a softmax ignores: dividing them by a temperature T > 1 softens over-confident
probabilities without changing any prediction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

# The search range of log(T): T from 1/20 to 20 covers any softmax a trained network gives.
_LOG_TEMPERATURE_BOUNDS = (-np.log(20.0), np.log(20.0))
# Probabilities are clipped here before the log, so a hard 0 stays finite.
_PROBABILITY_FLOOR = 1e-12
RELIABILITY_BINS = 15


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T) per row: the probabilities a model gives with temperature T."""
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), _PROBABILITY_FLOOR, None))
    scaled = logits / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
    picked = np.asarray(probabilities)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(picked, _PROBABILITY_FLOOR, None))))


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` (the validation
    clips'), found by a bounded scalar search over log(T)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("fit_temperature needs at least one labelled clip")
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(labels, apply_temperature(probabilities, np.exp(log_t))),
        bounds=_LOG_TEMPERATURE_BOUNDS,
        method="bounded",
    )
    return float(np.exp(result.x))


def reliability_table(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = RELIABILITY_BINS
) -> pd.DataFrame:
    """Clips binned by confidence (the top probability) into `bins` equal-width bins: per bin the
    clip count, the mean confidence and the accuracy. Empty bins are left out."""
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 joins bin 0.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    table = pd.DataFrame({"bin": index, "confidence": confidence, "correct": correct})
    table = (
        table.groupby("bin")
        .agg(clips=("correct", "size"), confidence=("confidence", "mean"), accuracy=("correct", "mean"))
        .reset_index()
    )
    table["lower"] = table["bin"] / bins
    table["upper"] = (table["bin"] + 1) / bins
    return table[["lower", "upper", "clips", "confidence", "accuracy"]]


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = RELIABILITY_BINS
) -> float:
    """Sum over confidence bins of (share of clips) * |accuracy - mean confidence|."""
    table = reliability_table(labels, probabilities, bins)
    weights = table["clips"] / table["clips"].sum()
    return float(np.sum(weights * np.abs(table["accuracy"] - table["confidence"])))
