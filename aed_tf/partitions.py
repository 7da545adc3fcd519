"""The partitions of a prepared split, decoded and labelled: what training fits on and what
evaluation, the benchmarks and the evaluation notebook score.

    data = load_training_data(config)       # prepare (idempotent, cached) + the split
    data.partitions["test"].eval_dataset(len(data.classes), config)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf

from aed_tf.config import Config
from aed_tf.errors import InputError
from aed_tf.labels import apply_calm_policy, class_names
from aed_tf.pipeline import eval_dataset, speaker_statistics
from aed_tf.prepare import prepare, speaker_keys
from aed_tf.splits import load_split


@dataclass
class Partition:
    """The clips of one partition, decoded, with integer labels."""

    manifest: pd.DataFrame
    waveforms: list[np.ndarray]
    labels: np.ndarray

    @property
    def speakers(self) -> np.ndarray:
        """Each clip's speaker, named apart across corpora (`speaker_keys`)."""
        return speaker_keys(self.manifest)

    def eval_dataset(
        self, num_classes: int, config: Config, statistics: np.ndarray | None = None
    ) -> tf.data.Dataset:
        """The clips as evaluation batches. Per-speaker normalisation uses `statistics` [2, n_mels]
        for every clip if given, else those of each speaker's own clips in this partition (their
        labels unused)."""
        if config.frontend.normalization == "speaker":
            statistics = (
                speaker_statistics(self.waveforms, self.speakers, config.frontend)
                if statistics is None
                else np.repeat(statistics[None], len(self.labels), axis=0)
            )
        return eval_dataset(self.waveforms, self.labels, num_classes, config, statistics)


@dataclass
class TrainingData:
    classes: tuple[str, ...]
    split: pd.DataFrame
    partitions: dict[str, Partition]


def load_training_data(config: Config, progress: bool = True) -> TrainingData:
    """The prepared manifest (prepare is idempotent and cached), the split and decoded clips."""
    prepared = prepare(config, progress=progress)
    if prepared.split_path is None:  # prepare splits nothing when no file could be used
        raise InputError(
            f"no usable clips in {', '.join(config.data.data_roots) or 'the default data roots'}: "
            f"every file was rejected; {prepared.manifest_path.parent / 'rejected.csv'} says why"
        )
    classes = class_names(config.data.calm)
    manifest = apply_calm_policy(prepared.manifest, config.data.calm)
    split = load_split(prepared.split_path, prepared.manifest)
    split = split[split["clip_id"].isin(manifest["clip_id"])]
    joined = manifest.merge(split[["clip_id", "partition"]], on="clip_id")
    waveforms = [prepared.waveforms[clip] for clip in joined["clip_id"]]
    partitions = {}
    for name in ("train", "val", "test"):
        rows = np.flatnonzero(joined["partition"].to_numpy() == name)
        if name != "test" and not len(rows):
            raise InputError(f"the {name} partition of {prepared.split_path} is empty")
        part = joined.iloc[rows].reset_index(drop=True)
        partitions[name] = Partition(
            part,
            [waveforms[i] for i in rows],
            np.array([classes.index(e) for e in part["emotion"]], dtype=np.int32),
        )
    return TrainingData(classes, split, partitions)
