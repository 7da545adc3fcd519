"""Baselines on the same split: the reference projects' method, librosa MFCC, chroma and mel
statistics (each averaged over time) into a scikit-learn MLP; and eGeMAPS functionals (openSMILE)
into a standardised SVM, linear (`aed_tf.functionals`, whose head the model can be fused with)
or with an RBF kernel (the baseline the speaker-independence work set out to beat). Each can first
standardise each speaker's features over that speaker's own clips (labels unused), which shows
what speaker normalisation alone is worth.

It follows the widely copied speech-emotion-recognition recipe (40 MFCCs, 12 chroma bins and
128 mel bands at librosa's default STFT settings; a 300-unit MLP on standardised features). It
reads our decoded 16 kHz clips rather than librosa's 22.05 kHz reload, so both models hear the
same audio. On the shared-si protocol it gives UAR 0.33, on a random split 0.88.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import librosa
import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from aed_tf.audio import cached_clip_features

REFERENCE_MFCCS = 40
# Features per clip: the MFCCs, 12 chroma bins and 128 mel bands.
REFERENCE_SIZE = REFERENCE_MFCCS + 12 + 128
# The on-disk cache's folder under the decoded audio's cache root: new features, a new name.
REFERENCE_CACHE_VERSION = "reference-mfcc-chroma-mel-v1"
# The recipe's classifier settings.
REFERENCE_MLP = dict(
    hidden_layer_sizes=(300,), alpha=0.01, batch_size=256, learning_rate="adaptive", max_iter=500
)


def reference_features(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """[180] time-averaged MFCC (40), chroma (12) and mel power (128) of one clip: the recipe's
    three librosa calls (``mfcc(y=...)``, ``chroma_stft(S=|stft|)``, ``melspectrogram(y=...)``),
    which each take the same STFT, computed from one."""
    waveform = np.asarray(waveform, np.float32)
    magnitude = np.abs(librosa.stft(waveform))
    mel_power = librosa.feature.melspectrogram(S=magnitude**2, sr=sample_rate)
    return np.concatenate(
        [
            librosa.feature.mfcc(S=librosa.power_to_db(mel_power), n_mfcc=REFERENCE_MFCCS).mean(axis=1),
            librosa.feature.chroma_stft(S=magnitude, sr=sample_rate).mean(axis=1),
            mel_power.mean(axis=1),
        ]
    ).astype(np.float32)


def reference_feature_matrix(waveforms: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """[clips, 180] features, one clip after another: two threads were no faster (2,000 clips of
    the shared data in 10-12 s either way on 2 cores; librosa holds the GIL between its FFTs)."""
    return np.stack([reference_features(w, sample_rate) for w in waveforms])


def cached_reference_matrix(
    waveforms: Sequence[np.ndarray], sample_rate: int, cache_dir: str | Path | None = None
) -> np.ndarray:
    """`reference_feature_matrix`, each clip's row kept on disk under the key of its samples
    (`aed_tf.audio.cached_clip_features`, in `cache_dir`)."""
    return cached_clip_features(
        waveforms,
        lambda batch: reference_feature_matrix(batch, sample_rate),
        REFERENCE_SIZE,
        f"{REFERENCE_CACHE_VERSION}/{sample_rate}hz",
        cache_dir,
    )


def fit_reference_baseline(features: np.ndarray, labels: Sequence[int], seed: int = 0) -> Pipeline:
    """Standardised features into the recipe's MLP, trained on `features` and `labels`."""
    settings = {**REFERENCE_MLP, "batch_size": min(REFERENCE_MLP["batch_size"], len(features))}
    return _fit_standardised(MLPClassifier(random_state=seed, **settings), features, labels)


def predict_probabilities(model: Pipeline, features: np.ndarray, num_classes: int) -> np.ndarray:
    """[clips, num_classes] probabilities, with zero columns for classes the MLP never saw."""
    probabilities = np.zeros((len(features), num_classes))
    probabilities[:, model.classes_] = model.predict_proba(features)
    return probabilities


def fit_linear_svm_baseline(features: np.ndarray, labels: Sequence[int], seed: int = 0) -> Pipeline:
    """Standardised features into a linear SVM (scikit-learn's defaults, solved in the primal)
    with balanced class weights, as the CNN's training weights its classes: the eGeMAPS baseline
    and the fusion head (`aed_tf.functionals.FusionHead.from_pipeline`)."""
    return _fit_standardised(
        LinearSVC(dual=False, class_weight="balanced", random_state=seed), features, labels
    )


def fit_rbf_svm_baseline(features: np.ndarray, labels: Sequence[int], seed: int = 0) -> Pipeline:
    """Standardised features into an SVM with an RBF kernel (scikit-learn's defaults: C 1, gamma
    "scale") with balanced class weights. Stronger than the linear SVM where classes are not
    separated by a plane of the functionals; its support vectors make it no fusion head."""
    return _fit_standardised(SVC(kernel="rbf", class_weight="balanced", random_state=seed), features, labels)


def _fit_standardised(classifier: Any, features: np.ndarray, labels: Sequence[int]) -> Pipeline:
    """`classifier` fitted on `features` standardised over the training clips."""
    return make_pipeline(StandardScaler(), classifier).fit(features, np.asarray(labels))
