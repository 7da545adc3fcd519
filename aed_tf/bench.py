"""Benchmarks: the tf.data training pipeline against the per-file librosa route."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import tensorflow as tf

from aed_tf.config import Config, FrontEndConfig
from aed_tf.labels import class_names
from aed_tf.pipeline import train_dataset


def bench_pipeline(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    paths: Sequence[Path],
    config: Config,
    image_size: int = 224,
    librosa_clips: int = 200,
    min_seconds: float = 10.0,
) -> dict[str, Any]:
    """Clips per second through `train_dataset` (waveforms in memory, augmented as `config` says)
    and through the per-file librosa route of the reference projects, and their ratio.

    The pipeline runs whole epochs until `min_seconds` have passed, after one warm-up batch that
    is not counted. The librosa route loads and featurises `librosa_clips` files spread evenly
    over `paths`, after one warm-up file.
    """
    if not paths:
        raise ValueError("no paths for the librosa route")
    if librosa_clips < 1:
        raise ValueError(f"librosa_clips = {librosa_clips}: must be >= 1")
    if min_seconds <= 0:
        raise ValueError(f"min_seconds = {min_seconds}: must be > 0")
    pipeline_clips, pipeline_seconds = _time_pipeline(
        waveforms, labels, config, image_size, min_seconds
    )
    spread = np.linspace(0, len(paths) - 1, min(librosa_clips, len(paths))).round().astype(int)
    chosen = [Path(paths[i]) for i in np.unique(spread)]
    librosa_seconds = _time_librosa(chosen, config.frontend)
    pipeline_rate = pipeline_clips / pipeline_seconds
    librosa_rate = len(chosen) / librosa_seconds
    return {
        "pipeline_clips_per_second": pipeline_rate,
        "librosa_clips_per_second": librosa_rate,
        "speedup": pipeline_rate / librosa_rate,
        "pipeline": {"clips": pipeline_clips, "seconds": pipeline_seconds},
        "librosa": {"clips": len(chosen), "seconds": librosa_seconds},
        "clips_in_memory": len(waveforms),
        "settings": {
            "image_size": image_size,
            "batch_size": config.train.batch_size,
            "clip_seconds": config.frontend.clip_seconds,
            "n_mels": config.frontend.n_mels,
            "augment": config.augment.augment,
        },
        "cpu_count": _usable_cpus(),
        "tensorflow_version": tf.__version__,
        "librosa_version": librosa.__version__,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _time_pipeline(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    config: Config,
    image_size: int,
    min_seconds: float,
) -> tuple[int, float]:
    """(clips, seconds) through whole training epochs, after one uncounted warm-up batch."""
    num_classes = len(class_names(config.data.calm))
    dataset = train_dataset(
        waveforms, labels, num_classes, config, image_size, seed=config.data.seed
    )
    batches = iter(dataset)
    next(batches)  # traces the functions and fills the buffers
    clips, start = 0, time.perf_counter()
    while True:
        for images, _ in batches:
            clips += int(images.shape[0])
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return clips, elapsed
        batches = iter(dataset)


def _time_librosa(paths: Sequence[Path], frontend: FrontEndConfig) -> float:
    """Seconds to load and featurise each file, after one uncounted warm-up file."""

    def featurize(path: Path) -> np.ndarray:
        audio, sample_rate = librosa.load(path, sr=frontend.sample_rate)
        mel = librosa.feature.melspectrogram(
            y=audio,
            sr=sample_rate,
            n_fft=frontend.n_fft,
            hop_length=frontend.hop_length,
            win_length=frontend.window_length,
            n_mels=frontend.n_mels,
            fmin=frontend.fmin,
            fmax=frontend.fmax,
        )
        return librosa.power_to_db(mel)

    def featurize_or_explain(path: Path) -> None:
        try:
            featurize(path)
        except Exception as error:  # librosa raises a different type per backend and failure
            raise RuntimeError(f"librosa could not load {path}: {error!r}") from error

    featurize_or_explain(paths[0])  # librosa loads its modules and caches the filters on first use
    start = time.perf_counter()
    for path in paths:
        featurize_or_explain(path)
    return time.perf_counter() - start


def _usable_cpus() -> int:
    """The CPUs this process may run on: fewer than the machine has under taskset or cgroups."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
