"""The emotion classes and how corpus labels map onto them."""

from __future__ import annotations

import pandas as pd

from aed_tf.errors import InputError

# The canonical classes, in the order of every model's output.
CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# RAVDESS's calm is kept as a fact in manifests; `calm` decides what training makes of it.
CALM = "calm"
MANIFEST_EMOTIONS: tuple[str, ...] = CLASSES + (CALM,)


def class_names(calm: str = "neutral") -> tuple[str, ...]:
    """The label list of a model trained with this calm policy."""
    if calm == "separate":
        return CLASSES + (CALM,)
    if calm in ("neutral", "drop"):
        return CLASSES
    raise InputError(f"calm policy {calm!r}: must be one of neutral, separate, drop")


def apply_calm_policy(manifest: pd.DataFrame, calm: str = "neutral") -> pd.DataFrame:
    """Returns the manifest with calm clips merged into neutral, kept, or dropped."""
    class_names(calm)  # validates the policy
    is_calm = manifest["emotion"] == CALM
    if calm == "drop":
        return manifest.loc[~is_calm].reset_index(drop=True)
    out = manifest.copy()
    if calm == "neutral":
        out.loc[is_calm, "emotion"] = "neutral"
    return out
