"""The report's tables and figures, the baseline, on small hand-made predictions."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from aed_tf import plots, report
from aed_tf.baseline import fit_reference_baseline, predict_probabilities, reference_feature_matrix
from aed_tf.config import FrontEndConfig
from tests.synth import tone

CLASSES = ["angry", "happy", "sad"]


def predictions_of(labels, predicted, corpus="ravdess") -> pd.DataFrame:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    probabilities = np.full((len(labels), len(CLASSES)), 0.1)
    probabilities[np.arange(len(labels)), predicted] = 0.8
    frame = pd.DataFrame({"clip_id": [f"c{i}" for i in range(len(labels))], "corpus": corpus,
                          "speaker": "01", "label": labels, "predicted": predicted})
    for index, name in enumerate(CLASSES):
        frame[f"p_{name}"] = probabilities[:, index]
    return frame


def test_bootstrap_interval_brackets_the_point_estimates_which_match_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    predicted = np.where(rng.random(300) < 0.7, labels, rng.integers(0, 3, 300))
    table = report.bootstrap_intervals(labels, predicted, 3, resamples=300, seed=0)
    assert table.loc["accuracy", "value"] == pytest.approx(np.mean(labels == predicted))
    assert table.loc["uar", "value"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert table.loc["macro_f1", "value"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert (table["low"] < table["value"]).all() and (table["value"] < table["high"]).all()
    assert ((table["high"] - table["low"]) < 0.2).all()
    # A perfect model has no spread.
    perfect = report.bootstrap_intervals(labels, labels, 3, resamples=50)
    assert (perfect[["low", "value", "high"]] == 1.0).all().all()


def test_per_class_confusions_and_the_most_frequent_errors():
    frame = predictions_of([0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 2, 2, 1])
    per_class = report.per_class_table(frame, CLASSES)
    assert per_class.loc["angry", "precision"] == 1.0 and per_class.loc["angry", "recall"] == pytest.approx(1 / 3)
    assert list(per_class["clips"]) == [3, 2, 3]
    counts = report.confusion(frame, CLASSES)
    assert counts.loc["angry", "happy"] == 2 and counts.to_numpy().sum() == 8
    rows = report.confusion(frame, CLASSES, normalize=True)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    top = report.top_confusions(frame, CLASSES, 2)
    assert list(top.itertuples(index=False, name=None)) == [("angry", "happy", 2), ("happy", "sad", 1)]
    clips = report.confused_clips(frame, CLASSES, "angry", "happy")
    assert list(clips["clip_id"]) == ["c1", "c2"]


def test_corpus_and_speaker_overviews_count_every_clip():
    manifest = pd.DataFrame({
        "clip_id": list("abcde"), "corpus": ["ravdess"] * 3 + ["tess"] * 2, "speaker": ["01", "01", "02", "OAF", "OAF"],
        "gender": ["male", "male", "female", "female", "female"], "emotion": ["sad", "angry", "sad", "sad", "happy"],
        "duration": [3.0, 3.0, 3.0, 2.0, 2.0],
    })
    corpora = report.corpus_overview(manifest)
    assert corpora.loc["ravdess", "clips"] == 3 and corpora.loc["tess", "speakers"] == 1
    assert report.speaker_overview(manifest)["clips"].sum() == 5
    assert report.clips_per_corpus_and_emotion(manifest).loc["total", "total"] == 5
    examples = report.example_clips(manifest, per_emotion=1, seed=0)
    assert list(examples["emotion"]) == ["angry", "happy", "sad"]


def test_figures_draw_what_they_are_given():
    frame = predictions_of([0, 1, 2, 2], [0, 1, 1, 2])
    fig = plots.confusion_heatmaps(report.confusion(frame, CLASSES), report.confusion(frame, CLASSES, True))
    assert len(fig.axes) == 2 and "counts" in fig.axes[0].get_title()
    history = pd.DataFrame({"phase": ["head", "finetune", "finetune"], "loss": [2, 1, 0.5], "val_loss": [2, 1.5, 1],
                            "accuracy": [0.3, 0.5, 0.7], "val_accuracy": [0.3, 0.4, 0.5], "val_uar": [0.3, 0.4, 0.5]})
    fig = plots.learning_curves(history)
    assert len(fig.axes[0].lines) == 3  # train, validation and the phase boundary
    frontend = FrontEndConfig(n_mels=32)
    fig = plots.waveform_and_log_mel(tone(0.5), frontend, "a tone")
    assert fig.axes[0].get_title() == "a tone"
    assert fig.axes[1].collections  # specshow's mesh
    matplotlib.pyplot.close("all")


def test_the_reference_baseline_learns_separable_tones():
    rate = 16000
    waves = [tone(0.5, rate, freq, seed=i) for i in range(12) for freq in (150, 600, 2400)]
    labels = [k for _ in range(12) for k in range(3)]
    features = reference_feature_matrix(waves, rate)
    assert features.shape == (36, 180) and np.isfinite(features).all()
    model = fit_reference_baseline(features[:24], labels[:24])
    probabilities = predict_probabilities(model, features[24:], num_classes=4)
    assert probabilities.shape == (12, 4) and (probabilities[:, 3] == 0).all()
    assert (probabilities.argmax(1) == labels[24:]).mean() == 1.0
