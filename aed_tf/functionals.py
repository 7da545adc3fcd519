"""eGeMAPS functionals of a clip, and the linear head over them that the model is fused with.

The eGeMAPS v02 functionals (openSMILE: pitch, loudness, voice quality and spectral balance over
the whole clip, 88 numbers), standardised over each speaker's own clips, into a linear SVM are
the strongest baseline of `aed-tf bench cv`, and they err unlike the CNN. A run trained with
``--fusion egemaps`` fits that SVM on its training speakers (`FusionHead`) and serves

    softmax(log p + weight * margins)

p the CNN's (temperature-scaled) probabilities and margins the SVM's one-vs-rest margins of the
clip; the weight is the setting's (``--fusion-weight``, chosen on the cross-validation's
validation speakers) divided by the temperature, so that the fused prediction is the one
`aed-tf bench cv` measures on the network's own probabilities. It needs the speaker's
statistics of the functionals, so it applies only where the speaker's other recordings are
known (evaluation over a speaker's clips, `EmotionRecognizer.for_speaker`), for speakers with at
least `MIN_REFERENCE_WINDOWS` clips; a lone clip gets the CNN alone (fused with the training
clips' statistics instead, it was worse than the CNN alone in an exploratory measurement).

The head is plain arrays (JSON in the run folder and in an export's metadata) applied with
numpy: serving needs neither scikit-learn nor TensorFlow for it, only openSMILE, which runs in
child processes (see `egemaps_feature_matrix`).
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aed_tf.errors import UserError

# Functionals per clip in eGeMAPS v02.
EGEMAPS_SIZE = 88
# A speaker's functionals are standardised with their mean and deviation over this many clips
# (serving: speech windows of the references) at least; with fewer the deviations are too
# uncertain, and the CNN is served alone. The benchmark's speakers have 38 clips or more.
MIN_REFERENCE_WINDOWS = 10
# The on-disk cache's folder under the decoded audio's cache root: a new openSMILE feature set or
# version of the extraction gets a new name.
EGEMAPS_CACHE_VERSION = "egemaps-v02-functionals-v1"
# Added to a deviation before dividing by it: a functional constant over a speaker's clips.
_DEVIATION_FLOOR = 1e-8
# The scheduling niceness (Unix) of the processes that compute functionals in the background
# (`cache_in_background`): the lowest priority, so they take only the cycles others leave idle.
BACKGROUND_NICENESS = 19


def egemaps_features(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """[EGEMAPS_SIZE] eGeMAPS v02 functionals of one clip (openSMILE's own extractor), computed in
    this process: only where TensorFlow is not loaded (see `egemaps_feature_matrix`)."""
    return _egemaps().process_signal(np.asarray(waveform, np.float32), sample_rate).to_numpy()[0]


def egemaps_feature_matrix(
    waveforms: Sequence[np.ndarray], sample_rate: int, workers: int = 2, niceness: int = 0
) -> np.ndarray:
    """[clips, EGEMAPS_SIZE] eGeMAPS functionals, computed by `workers` child processes that stay
    up for the next call, their scheduling niceness raised by `niceness`. Never in this process:
    openSMILE's library corrupts the heap of a process that has loaded TensorFlow (malloc:
    invalid size), and two threads crash it. A clip too short for openSMILE (under about 0.1 s)
    gets NaN."""
    waveforms = list(waveforms)
    if not waveforms:
        return np.zeros((0, EGEMAPS_SIZE))
    workers = max(1, min(workers, len(waveforms)))
    blocks = [[waveforms[i] for i in rows] for rows in np.array_split(np.arange(len(waveforms)), workers)]
    pool = _pool(workers, niceness)
    try:
        return np.concatenate(list(pool.map(_egemaps_block, blocks, [sample_rate] * workers)))
    except BrokenProcessPool:
        pool.shutdown(wait=False)
        _pool.cache_clear()  # the next call starts new processes
        raise RuntimeError("openSMILE's process ended while computing eGeMAPS functionals") from None


def cached_egemaps_matrix(
    waveforms: Sequence[np.ndarray],
    sample_rate: int,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    niceness: int = 0,
) -> np.ndarray:
    """`egemaps_feature_matrix`, each clip's functionals kept on disk under the key of its samples
    (`aed_tf.audio.cached_clip_features`, in `cache_dir`): training, evaluation and the benchmark
    compute a clip's once."""
    from aed_tf.audio import cached_clip_features  # here: serving imports this module without caching

    return cached_clip_features(
        waveforms,
        lambda batch: egemaps_feature_matrix(batch, sample_rate, workers, niceness),
        EGEMAPS_SIZE,
        f"{EGEMAPS_CACHE_VERSION}/{sample_rate}hz",
        cache_dir,
    )


def cache_in_background(
    waveforms: Sequence[np.ndarray], sample_rate: int, cache_dir: str | Path | None = None
) -> Future:
    """Starts `cached_egemaps_matrix` of `waveforms` on a thread of its own, in worker processes
    at `BACKGROUND_NICENESS`, and returns its future (the matrix, or the error it raised).

    Training fills the fusion's functionals this way while the network trains: a small CNN keeps
    about 1.3 to 1.5 of 2 cores busy, and the workers take the rest without slowing its steps
    (measured on a 2-core EPYC: training at the same speed, the functionals at about a third of
    their speed alone). The thread is a daemon: a training that fails does not wait for it."""
    future: Future = Future()

    def compute() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(
                cached_egemaps_matrix(waveforms, sample_rate, cache_dir, niceness=BACKGROUND_NICENESS)
            )
        except BaseException as error:  # the caller's .result() raises it
            future.set_exception(error)

    threading.Thread(target=compute, name="egemaps-cache", daemon=True).start()
    return future


@functools.lru_cache(maxsize=None)
def _pool(workers: int, niceness: int = 0) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(niceness,),
    )


def _start_worker(niceness: int) -> None:
    # Ctrl-C (or papermill stopping a kernel) interrupts the whole process group: the parent
    # stops its pool, and idle children need not each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness and hasattr(os, "nice"):  # Unix; elsewhere the workers keep the parent's priority
        os.nice(niceness)


def _egemaps_block(waveforms: list[np.ndarray], sample_rate: int) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():  # "Segment too short, filling with NaN": the NaN says it
        warnings.simplefilter("ignore", UserWarning)
        return np.stack([egemaps_features(w, sample_rate) for w in waveforms])


@functools.lru_cache(maxsize=1)
def _egemaps():
    import opensmile  # imported on first use: only the fusion and the baselines need it

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )


def moments(features: np.ndarray) -> np.ndarray:
    """[2, features]: the mean and deviation of each functional over a speaker's clips."""
    features = np.asarray(features, np.float64)
    return np.stack([features.mean(axis=0), features.std(axis=0)])


def standardize(features: np.ndarray, speaker_moments: np.ndarray) -> np.ndarray:
    """`features` standardised with a speaker's `moments`."""
    return (np.asarray(features, np.float64) - speaker_moments[0]) / (speaker_moments[1] + _DEVIATION_FLOOR)


def fusable_per_speaker(
    features: np.ndarray, speakers: Sequence[str], min_clips: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The functionals standardised over each speaker's clips as the fusion uses them, and which
    clips it applies to: those with finite functionals (openSMILE gives NaN for a clip under
    about 0.1 s) of speakers with at least `min_clips` such clips (default MIN_REFERENCE_WINDOWS,
    as serving applies it: `EmotionRecognizer.for_speaker`). Rows it does not apply to are NaN."""
    min_clips = MIN_REFERENCE_WINDOWS if min_clips is None else max(2, min_clips)
    standardized = standardize_per_speaker(features, speakers, min_clips)
    return standardized, np.isfinite(standardized).all(axis=1)


def standardize_per_speaker(features: np.ndarray, speakers: Sequence[str], min_clips: int = 1) -> np.ndarray:
    """Each speaker's features standardised over that speaker's own clips: statistics of the
    clips alone, no labels (Busso et al. 2011; Nkululeko's ``scale = speaker``). Only clips whose
    features are all finite count, of speakers with at least `min_clips` of them; the other rows
    are NaN."""
    features = np.asarray(features, np.float64)
    speakers = np.asarray(speakers)
    finite = np.isfinite(features).all(axis=1)
    standardized = np.full_like(features, np.nan)
    for speaker in np.unique(speakers):
        rows = np.flatnonzero((speakers == speaker) & finite)
        if len(rows) >= max(1, min_clips):
            standardized[rows] = standardize(features[rows], moments(features[rows]))
    return standardized


@dataclasses.dataclass(frozen=True, eq=False)
class FusionHead:
    """A fitted standardiser and linear SVM over per-speaker standardised functionals, as arrays,
    and the weight of its margins against the model's log-probabilities."""

    num_classes: int
    classes_seen: tuple[int, ...]  # the SVM's classes (training may lack some)
    mean: np.ndarray  # [features] the standardiser's
    scale: np.ndarray  # [features]
    coef: np.ndarray  # [classes_seen, features]; one row for two classes
    intercept: np.ndarray  # [classes_seen]; one value for two classes
    weight: float = 0.0

    def __post_init__(self) -> None:
        seen, rows = len(self.classes_seen), 1 if len(self.classes_seen) == 2 else len(self.classes_seen)
        if not (
            2 <= seen <= self.num_classes
            and all(0 <= c < self.num_classes for c in self.classes_seen)
            and self.mean.shape == self.scale.shape == (EGEMAPS_SIZE,)
            and self.coef.shape == (rows, EGEMAPS_SIZE)
            and self.intercept.shape == (rows,)
            and all(np.isfinite(a).all() for a in (self.mean, self.scale, self.coef, self.intercept))
            and np.isfinite(self.weight)
        ):
            raise ValueError(
                f"not a fusion head of {EGEMAPS_SIZE} functionals: classes {list(self.classes_seen)} of "
                f"{self.num_classes}, coef {self.coef.shape}, intercept {self.intercept.shape}"
            )

    @classmethod
    def from_pipeline(cls, pipeline: Any, num_classes: int, weight: float = 0.0) -> FusionHead:
        """The head of a fitted scikit-learn pipeline of a StandardScaler and a LinearSVC
        (`aed_tf.baseline.fit_linear_svm_baseline`)."""
        scaler, svm = pipeline[0], pipeline[-1]
        return cls(
            num_classes,
            tuple(int(c) for c in svm.classes_),
            np.asarray(scaler.mean_, np.float64),
            np.asarray(scaler.scale_, np.float64),
            np.atleast_2d(np.asarray(svm.coef_, np.float64)),
            np.atleast_1d(np.asarray(svm.intercept_, np.float64)),
            float(weight),
        )

    def with_weight(self, weight: float) -> FusionHead:
        return dataclasses.replace(self, weight=float(weight))

    def margins(self, standardized: np.ndarray) -> np.ndarray:
        """[clips, num_classes] the SVM's one-vs-rest margins of per-speaker standardised
        functionals. A class it never saw gets each clip's lowest margin: it says nothing for
        that class, so it never favours it."""
        values = (
            (np.asarray(standardized, np.float64) - self.mean) / self.scale
        ) @ self.coef.T + self.intercept
        if len(self.classes_seen) == 2:  # one margin, the second class's
            values = np.concatenate([-values, values], axis=1)
        scores = np.repeat(values.min(axis=1, keepdims=True), self.num_classes, axis=1)
        scores[:, list(self.classes_seen)] = values
        return scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": "eGeMAPS v02 functionals (openSMILE), standardised over each speaker's clips",
            "num_classes": self.num_classes,
            "classes_seen": list(self.classes_seen),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "weight": self.weight,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | Path = "fusion head") -> FusionHead:
        """The head `to_dict` wrote; a UserError naming `source` (its file) for anything else."""
        try:
            return cls._from_dict(values)
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{source}: not a readable fusion head ({error})") from None

    @classmethod
    def _from_dict(cls, values: dict[str, Any]) -> FusionHead:
        return cls(
            int(values["num_classes"]),
            tuple(int(c) for c in values["classes_seen"]),
            np.asarray(values["mean"], np.float64),
            np.asarray(values["scale"], np.float64),
            np.atleast_2d(np.asarray(values["coef"], np.float64)),
            np.atleast_1d(np.asarray(values["intercept"], np.float64)),
            float(values["weight"]),
        )


def fuse(probabilities: np.ndarray, margins: np.ndarray, weight: float) -> np.ndarray:
    """softmax(log p + weight * margins): the model's class probabilities reweighted by the
    SVM's margins, a product of the two experts. A probability of 0 (or one kept at 4 decimals
    as 0) counts as 1e-6."""
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-6, 1.0)) + weight * margins
    logits -= logits.max(axis=1, keepdims=True)
    odds = np.exp(logits)
    return odds / odds.sum(axis=1, keepdims=True)


def fuse_heads(
    probabilities: np.ndarray, heads: Sequence[FusionHead], standardized: np.ndarray
) -> np.ndarray:
    """`probabilities` fused with every head at its own weight, their weighted margins averaged
    (an ensemble's runs each bring theirs): softmax(log p + mean of weight * margins). Rows of
    `standardized` that are not finite (`fusable_per_speaker`) keep `probabilities`."""
    fused = np.array(probabilities, np.float64)
    usable = np.isfinite(standardized).all(axis=1)
    if usable.any():
        offsets = np.mean([head.weight * head.margins(standardized[usable]) for head in heads], axis=0)
        fused[usable] = fuse(fused[usable], offsets, 1.0)
    return fused
