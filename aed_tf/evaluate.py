"""Evaluation of a trained run on one partition of its split: predictions and metrics overall,
per corpus and per speaker."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from aed_tf import functionals
from aed_tf.calibration import apply_temperature
from aed_tf.errors import InputError
from aed_tf.metrics import classification_metrics
from aed_tf.model import load_model
from aed_tf.partitions import TrainingData, load_training_data
from aed_tf.pipeline import eval_dataset
from aed_tf.pipeline import speaker_statistics as speaker_statistics_of
from aed_tf.runs import CLASSIFIER_FILE, SPLIT_FILE, Run
from aed_tf.splits import PARTITIONS, LeakageError, speaker_key

SpeakerStatistics = Literal["own clips", "training", "the clip itself"]


@dataclass
class Evaluation:
    partition: str
    protocol: str
    speaker_independent: bool
    classes: tuple[str, ...]
    predictions: pd.DataFrame  # one row per clip: manifest columns, label, predicted, p_<class>
    overall: dict[str, float]
    per_corpus: pd.DataFrame  # rows: corpus; columns: clips and the metrics
    per_speaker: pd.DataFrame
    normalization: str = "clip"  # the run's front end: "clip" or "speaker"
    speaker_statistics: str | None = None  # per speaker: "own clips" or "training"
    fusion_weight: float | None = None  # fused with the run's eGeMAPS head at this weight; None: not
    # [clips, classes] the classifier's own, before any fusion (calibration is the network's).
    network_probabilities: np.ndarray | None = None

    @property
    def fused(self) -> bool:
        return self.fusion_weight is not None

    @property
    def probabilities(self) -> np.ndarray:
        """[clips, classes]: the `p_<class>` columns of `predictions`."""
        return self.predictions[[f"p_{name}" for name in self.classes]].to_numpy()


def evaluate(
    run_dir: str | Path,
    partition: str = "test",
    progress: bool = False,
    data: TrainingData | None = None,
    speaker_statistics: SpeakerStatistics = "own clips",
    fusion: bool = True,
) -> Evaluation:
    """Runs the run's classifier over ``partition`` of ``data``: by default the run's own split
    and data, loaded here (`load_training_data` of the run's config).

    A run that normalises per speaker takes each speaker's statistics from their own clips in the
    partition (``"own clips"``: their labels unused), or, for a clip whose speaker has no other
    audio, the training clips' (``"training"``) or the clip's own (``"the clip itself"``).

    A run trained with ``--fusion egemaps`` is fused with its eGeMAPS head, as serving fuses it
    (`aed_tf.functionals`), where each speaker's own clips give the statistics (``fusion`` False:
    the model alone); its probabilities are then the serving model's (temperature-scaled)."""
    run_dir = Path(run_dir)
    run = Run.load(run_dir)
    config = run.config
    if data is None:
        data = load_training_data(config, progress=progress)
    part = data.partitions[partition]
    if not len(part.labels):
        raise InputError(f"{run_dir}: the {partition} partition of its split is empty")
    check_unheard(run, data, partition)
    classifier = load_model(run_dir / CLASSIFIER_FILE)
    if speaker_statistics not in typing.get_args(SpeakerStatistics):
        raise InputError(
            f"speaker_statistics {speaker_statistics!r}: choose one of "
            f"{', '.join(typing.get_args(SpeakerStatistics))}"
        )
    if config.frontend.normalization == "speaker" and speaker_statistics == "training":
        features = part.eval_dataset(len(data.classes), config, run.training_statistics())
    elif config.frontend.normalization == "speaker" and speaker_statistics == "the clip itself":
        each = speaker_statistics_of(part.waveforms, part.manifest["clip_id"], config.frontend)
        features = eval_dataset(part.waveforms, part.labels, len(data.classes), config, each)
    else:
        features = part.eval_dataset(len(data.classes), config)
    probabilities = network_probabilities = classifier.predict(features, verbose=0)
    head = run.fusion_head() if fusion and speaker_statistics == "own clips" else None
    if head is not None:
        standardized, _ = functionals.fusable_per_speaker(
            functionals.cached_egemaps_matrix(
                part.waveforms, config.frontend.sample_rate, config.data.cache_dir
            ),
            part.speakers,
        )
        calibrated = apply_temperature(probabilities, run.metrics()["temperature"])
        probabilities = functionals.fuse_heads(calibrated, [head], standardized)

    predictions = part.manifest.copy()
    predictions["label"] = part.labels
    predictions["predicted"] = probabilities.argmax(axis=1)
    for index, name in enumerate(data.classes):
        predictions[f"p_{name}"] = probabilities[:, index]
    return Evaluation(
        partition=partition,
        protocol=run.split["protocol"],
        speaker_independent=run.split["speaker_independent"],
        classes=tuple(data.classes),
        predictions=predictions,
        overall=classification_metrics(part.labels, probabilities),
        per_corpus=grouped_metrics(predictions, probabilities, ["corpus"]),
        per_speaker=grouped_metrics(predictions, probabilities, ["corpus", "speaker"]),
        normalization=config.frontend.normalization,
        speaker_statistics=speaker_statistics if config.frontend.normalization == "speaker" else None,
        fusion_weight=None if head is None else head.weight,
        network_probabilities=network_probabilities,
    )


def check_unheard(run: Run, data: TrainingData, partition: str) -> None:
    """Raises `LeakageError` when ``partition`` of ``data`` holds what the run trained on or chose
    its epoch by (the train and val partitions of the split it saved, `SPLIT_FILE`): speakers for
    a speaker-independent run, clips otherwise. The split is made afresh from the data, so it
    differs from the run's once speakers are added or removed (a reused `bench cv` run, say)."""
    saved = run.path / SPLIT_FILE
    if partition == "train" or not saved.is_file():
        return
    heard = pd.read_csv(saved, dtype={"clip_id": str, "partition": str})
    heard = set(heard.loc[heard["partition"].isin(PARTITIONS[: PARTITIONS.index(partition)]), "clip_id"])
    evaluated = data.partitions[partition].manifest
    if run.split["speaker_independent"]:
        clips = pd.concat([part.manifest for part in data.partitions.values()], ignore_index=True)
        speakers = set(speaker_key(clips[clips["clip_id"].isin(heard)]).dropna())
        leaked = evaluated[speaker_key(evaluated).isin(speakers)]
        what = "speakers"
    else:
        leaked = evaluated[evaluated["clip_id"].isin(heard)]
        what = "clips"
    if len(leaked):
        examples = sorted(set(speaker_key(leaked) if what == "speakers" else leaked["clip_id"]))
        raise LeakageError(
            f"{run.path}: the {partition} partition holds {what} the run trained on "
            f"({', '.join(examples[:5])}{', ...' if len(examples) > 5 else ''}): the data changed "
            f"since it trained (its split: {saved}); train it again"
        )


def grouped_metrics(predictions: pd.DataFrame, probabilities: np.ndarray, by: list[str]) -> pd.DataFrame:
    """Clips and metrics per group of `predictions` rows (index 0..n-1, aligned with
    `probabilities`), one row per value of the `by` columns."""
    rows = []
    for key, group in predictions.groupby(by):
        metrics = classification_metrics(group["label"].to_numpy(), probabilities[group.index])
        rows.append(
            {**dict(zip(by, key if isinstance(key, tuple) else (key,))), "clips": len(group), **metrics}
        )
    return pd.DataFrame(rows)
