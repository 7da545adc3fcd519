"""Baselines on the same split: the reference projects' method, librosa MFCC, chroma and mel
statistics (each averaged over time) into a scikit-learn MLP; and eGeMAPS functionals (openSMILE)
into a standardised linear SVM. Either can first standardise each speaker's features over that
speaker's own clips (labels unused), which shows what speaker normalisation alone is worth.

It follows the widely copied speech-emotion-recognition recipe (40 MFCCs, 12 chroma bins and
128 mel bands at librosa's default STFT settings; a 300-unit MLP on standardised features). It
reads our decoded 16 kHz clips rather than librosa's 22.05 kHz reload, so both models hear the
same audio. On the shared-si protocol it gives UAR 0.33, on a random split 0.88.
"""

from __future__ import annotations

import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Sequence

import librosa
import numpy as np
import pandas as pd
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

REFERENCE_MFCCS = 40
# The recipe's classifier settings.
REFERENCE_MLP = dict(
    hidden_layer_sizes=(300,), alpha=0.01, batch_size=256, learning_rate="adaptive", max_iter=500
)


def reference_features(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """[180] time-averaged MFCC (40), chroma (12) and mel power (128) of one clip."""
    waveform = np.asarray(waveform, np.float32)
    stft = np.abs(librosa.stft(waveform))
    return np.concatenate(
        [
            librosa.feature.mfcc(y=waveform, sr=sample_rate, n_mfcc=REFERENCE_MFCCS).mean(axis=1),
            librosa.feature.chroma_stft(S=stft, sr=sample_rate).mean(axis=1),
            librosa.feature.melspectrogram(y=waveform, sr=sample_rate).mean(axis=1),
        ]
    ).astype(np.float32)


def reference_feature_matrix(
    waveforms: Sequence[np.ndarray], sample_rate: int, workers: int = 2
) -> np.ndarray:
    """[clips, 180] features; numpy's FFTs release the GIL, so threads share the work."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return np.stack(list(pool.map(lambda w: reference_features(w, sample_rate), waveforms)))


def fit_reference_baseline(features: np.ndarray, labels: Sequence[int], seed: int = 0) -> Pipeline:
    """Standardised features into the recipe's MLP, trained on `features` and `labels`."""
    settings = {**REFERENCE_MLP, "batch_size": min(REFERENCE_MLP["batch_size"], len(features))}
    model = make_pipeline(StandardScaler(), MLPClassifier(random_state=seed, **settings))
    return model.fit(features, np.asarray(labels))


def predict_probabilities(model: Pipeline, features: np.ndarray, num_classes: int) -> np.ndarray:
    """[clips, num_classes] probabilities, with zero columns for classes the MLP never saw."""
    probabilities = np.zeros((len(features), num_classes))
    probabilities[:, model.classes_] = model.predict_proba(features)
    return probabilities


def egemaps_features(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """[88] eGeMAPS v02 functionals of one clip (openSMILE's own extractor)."""
    return _egemaps().process_signal(np.asarray(waveform, np.float32), sample_rate).to_numpy()[0]


def egemaps_feature_matrix(waveforms: Sequence[np.ndarray], sample_rate: int, workers: int = 2) -> np.ndarray:
    """[clips, 88] eGeMAPS functionals. openSMILE's library is not thread-safe (two threads
    crash it), so `workers` processes share the clips."""
    if workers <= 1 or len(waveforms) < 2 * workers:
        return _egemaps_block(list(waveforms), sample_rate)
    blocks = np.array_split(np.arange(len(waveforms)), workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = pool.map(
            _egemaps_block, [[waveforms[i] for i in rows] for rows in blocks], [sample_rate] * workers
        )
        return np.concatenate(list(parts))


def _egemaps_block(waveforms: list[np.ndarray], sample_rate: int) -> np.ndarray:
    return np.stack([egemaps_features(w, sample_rate) for w in waveforms])


@functools.lru_cache(maxsize=1)
def _egemaps():
    import opensmile  # imported on first use: only this baseline needs it

    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )


def fit_egemaps_baseline(features: np.ndarray, labels: Sequence[int], seed: int = 0) -> Pipeline:
    """Standardised features into a linear SVM (scikit-learn's defaults, solved in the primal)
    with balanced class weights, as the CNN's training weights its classes."""
    model = make_pipeline(StandardScaler(), LinearSVC(dual=False, class_weight="balanced", random_state=seed))
    return model.fit(features, np.asarray(labels))


def decision_scores(model: Pipeline, features: np.ndarray, num_classes: int) -> np.ndarray:
    """[clips, num_classes] the linear SVM's one-vs-rest margins. A class it never saw gets each
    clip's lowest margin: it says nothing for that class, so it never favours it."""
    values = model.decision_function(features)
    if values.ndim == 1:  # two classes: one margin, the second class's
        values = np.stack([-values, values], axis=1)
    scores = np.repeat(values.min(axis=1, keepdims=True), num_classes, axis=1)
    scores[:, model.classes_] = values
    return scores


def standardize_per_speaker(features: np.ndarray, speakers: Sequence[str]) -> np.ndarray:
    """Each speaker's features standardised over that speaker's own clips: statistics of the
    clips alone, no labels (Busso et al. 2011; Nkululeko's ``scale = speaker``)."""
    features = np.asarray(features, np.float64)
    out = np.empty_like(features)
    for _, rows in pd.Series(np.arange(len(features))).groupby(np.asarray(speakers)):
        block = features[rows.to_numpy()]
        out[rows.to_numpy()] = (block - block.mean(axis=0)) / (block.std(axis=0) + 1e-8)
    return out
