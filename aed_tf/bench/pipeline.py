"""The pipeline benchmark (``aed-tf bench pipeline``): clips per second of the tf.data training
pipeline against the per-file librosa routes of the reference projects."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np

from aed_tf.bench import benchmark_environment, labelled_clips, write_result
from aed_tf.config import Config, FrontEndConfig
from aed_tf.labels import class_names
from aed_tf.pipeline import train_dataset

ROUTES = {
    "pipeline": "train_dataset on waveforms in memory: each clip's mel power once (not counted, "
    "see precompute_seconds), then per epoch crop, shift, gain, noise, log, normalisation, "
    "SpecAugment and mixup as configured, yielding log-mel features (the model draws the image)",
    "reference": "per file, as the reference projects: librosa.load(path) (resampled to 22050 Hz) "
    "-> librosa.feature.melspectrogram with its defaults -> librosa.power_to_db",
    "same_settings": "per file: librosa.load(path, sr=sample_rate) -> "
    "librosa.feature.melspectrogram at this front end's n_fft, hop, window, n_mels, fmin, fmax "
    "-> librosa.power_to_db",
}


def bench_pipeline(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    paths: Sequence[Path],
    config: Config,
    librosa_clips: int = 200,
    min_seconds: float = 10.0,
    speakers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Clips per second through `train_dataset` and through the per-file librosa routes of
    `ROUTES`, measured in one run, and the ratios of the pipeline's rate to theirs.

    The pipeline's one-off mel-power precompute is timed on its own (`precompute_seconds`); then
    whole epochs run until `min_seconds` have passed, after one warm-up batch that is not counted.
    Each librosa route featurises the same `librosa_clips` files spread evenly over `paths`, after
    one warm-up file. `speakers` (each clip's) are needed to normalise per speaker.
    """
    if not paths:
        raise ValueError("no paths for the librosa routes")
    if librosa_clips < 1:
        raise ValueError(f"librosa_clips = {librosa_clips}: must be >= 1")
    if min_seconds <= 0:
        raise ValueError(f"min_seconds = {min_seconds}: must be > 0")
    precompute_seconds, pipeline_clips, pipeline_seconds = _time_pipeline(
        waveforms, labels, config, min_seconds, speakers
    )
    spread = np.linspace(0, len(paths) - 1, min(librosa_clips, len(paths))).round().astype(int)
    chosen = [Path(paths[i]) for i in np.unique(spread)]
    reference_seconds = _time_files(chosen, _reference_features)
    same_settings_seconds = _time_files(chosen, lambda path: _same_settings_features(path, config.frontend))
    pipeline_rate = pipeline_clips / pipeline_seconds
    reference_rate = len(chosen) / reference_seconds
    same_settings_rate = len(chosen) / same_settings_seconds
    return {
        "pipeline_clips_per_second": pipeline_rate,
        "reference_clips_per_second": reference_rate,
        "ratio": pipeline_rate / reference_rate,
        "same_settings_clips_per_second": same_settings_rate,
        "same_settings_ratio": pipeline_rate / same_settings_rate,
        "precompute_seconds": precompute_seconds,
        "routes": ROUTES,
        "pipeline": {"clips": pipeline_clips, "seconds": pipeline_seconds},
        "reference": {"clips": len(chosen), "seconds": reference_seconds},
        "same_settings": {"clips": len(chosen), "seconds": same_settings_seconds},
        "clips_in_memory": len(waveforms),
        "settings": {
            "output": "log-mel features [batch, frames, n_mels]; the model draws the image",
            "batch_size": config.train.batch_size,
            "clip_seconds": config.frontend.clip_seconds,
            "n_mels": config.frontend.n_mels,
            "augment": config.augment.augment,
        },
        **benchmark_environment(),
    }


def _time_pipeline(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    config: Config,
    min_seconds: float,
    speakers: Sequence[str] | None = None,
) -> tuple[float, int, float]:
    """(precompute seconds, clips, seconds): making the dataset, then whole training epochs after
    one uncounted warm-up batch."""
    num_classes = len(class_names(config.data.calm))
    start = time.perf_counter()
    dataset = train_dataset(waveforms, labels, num_classes, config, seed=config.data.seed, speakers=speakers)
    precompute_seconds = time.perf_counter() - start
    batches = iter(dataset)
    next(batches)  # traces the functions and fills the buffers
    clips, start = 0, time.perf_counter()
    while True:
        for features, _ in batches:
            clips += int(features.shape[0])
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return precompute_seconds, clips, elapsed
        batches = iter(dataset)


def _reference_features(path: Path) -> np.ndarray:
    audio, sample_rate = librosa.load(path)
    return librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=sample_rate))


def _same_settings_features(path: Path, frontend: FrontEndConfig) -> np.ndarray:
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


def _time_files(paths: Sequence[Path], featurize: Callable[[Path], np.ndarray]) -> float:
    """Seconds to featurise each file, after one uncounted warm-up file."""

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


def run_pipeline_benchmark(config: Config, seconds: float, command: str, output: Path) -> dict[str, Any]:
    """`bench_pipeline` on every clip of the prepared corpora (prepared first if need be, with
    the calm policy of `config`), `seconds` in the pipeline, written to `output` with the
    `command` that made it."""
    clips = labelled_clips(config)
    result = bench_pipeline(
        clips.waveforms,
        clips.labels,
        [Path(p) for p in clips.manifest["path"]],
        config,
        min_seconds=seconds,
        speakers=clips.speakers,
    )
    result = {**result, "command": command}
    write_result(output, result)
    return result
