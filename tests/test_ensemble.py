"""Several runs (one setting trained with several seeds) served as one model, their ensemble: the
recognizer, `aed-tf predict`, the exports and the web API all answer the mean of the runs'
probabilities, as `aed-tf bench cv` measures the ensemble of a setting's seeds."""

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from aed_tf.audio import decode
from aed_tf.cli import main
from aed_tf.errors import UserError
from aed_tf.runs import CONFIG_FILE, TRAINING_STATISTICS_FILE
from aed_tf.serving.export import export
from aed_tf.serving.recognizer import EmotionRecognizer, pooled_statistics
from tests.conftest import RAVDESS_DIR, TESS_DIR
from tests.responsive import make_responsive_run
from tests.servers import aed_tf_serve

CLIPS = [
    RAVDESS_DIR / "Actor_01" / "03-01-05-01-01-01-01.flac",
    RAVDESS_DIR / "Actor_02" / "03-01-03-01-01-01-02.flac",
    TESS_DIR / "OAF_angry" / "OAF_bar_angry.flac",
    TESS_DIR / "YAF_fear" / "YAF_bath_fear.flac",
]
# An export against the Keras ensemble: float32 rounding and the formats' own FFTs (as in
# tests/test_export.py).
EXPORT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def members(tiny_run, tmp_path_factory) -> list[Path]:
    """Two runs of the tiny run's classes and front end whose models answer differently."""
    root = tmp_path_factory.mktemp("ensemble")
    return [make_responsive_run(tiny_run, root / f"seed{seed}", seed=seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def speaker_members(speaker_run, tmp_path_factory) -> list[Path]:
    """Two per-speaker runs whose training clips had other statistics (as runs trained on
    other speakers would)."""
    root = tmp_path_factory.mktemp("speaker-ensemble")
    runs = [make_responsive_run(speaker_run, root / f"seed{seed}", seed=seed) for seed in (0, 1)]
    path = runs[1] / TRAINING_STATISTICS_FILE
    statistics = json.loads(path.read_text())
    statistics["mean"] = [value + 1.0 for value in statistics["mean"]]
    statistics["deviation"] = [value * 1.5 for value in statistics["deviation"]]
    path.write_text(json.dumps(statistics))
    return runs


def probabilities(predictions, classes) -> np.ndarray:
    return np.array([[p.probabilities[c] for c in classes] for p in predictions])


def answers(recognizer: EmotionRecognizer) -> np.ndarray:
    return probabilities(recognizer.predict_many(CLIPS, progress=False), recognizer.classes)


def test_an_ensemble_answers_the_mean_of_its_runs(members, shared_datasets):
    ensemble = EmotionRecognizer.load(members)
    alone = [EmotionRecognizer.load(run) for run in members]
    assert ensemble.classes == alone[0].classes and ensemble.frontend == alone[0].frontend
    each = [answers(recognizer) for recognizer in alone]
    assert np.abs(each[0] - each[1]).max() > 1e-3  # the runs disagree: the mean is neither
    np.testing.assert_allclose(answers(ensemble), np.mean(each, axis=0), rtol=0, atol=1e-6)

    # Over a recording of several clips and silences: every window, smoothed, is the mean.
    gap = np.zeros(8000, np.float32)
    recording = np.concatenate([part for path in CLIPS for part in (decode(path).samples, gap)])
    timeline = ensemble.timeline(recording, sample_rate=16000)
    expected = np.mean([r.timeline(recording, sample_rate=16000).window_probabilities for r in alone], axis=0)
    assert np.isnan(expected[:, 0]).any() and (~np.isnan(expected[:, 0])).sum() >= 4
    np.testing.assert_allclose(timeline.window_probabilities, expected, rtol=0, atol=1e-6)

    # A list of one run is that run.
    np.testing.assert_array_equal(answers(EmotionRecognizer.load(members[:1])), each[0])


def test_a_per_speaker_ensemble_pools_the_training_statistics_and_takes_references(
    speaker_members, shared_datasets
):
    ensemble = EmotionRecognizer.load(speaker_members)
    alone = [EmotionRecognizer.load(run) for run in speaker_members]
    assert np.abs(alone[0].speaker_statistics - alone[1].speaker_statistics).max() > 0.5
    np.testing.assert_array_equal(
        ensemble.speaker_statistics, pooled_statistics([r.speaker_statistics for r in alone])
    )
    # With a speaker's references every member normalises with the same statistics: theirs.
    references = CLIPS[:2]
    each = [answers(recognizer.for_speaker(references)) for recognizer in alone]
    assert np.abs(each[0] - each[1]).max() > 1e-3
    np.testing.assert_allclose(
        answers(ensemble.for_speaker(references)), np.mean(each, axis=0), rtol=0, atol=1e-6
    )


def test_pooled_statistics_are_those_of_the_runs_frames_together():
    rng = np.random.default_rng(0)
    frames = [rng.normal(loc, scale, (500, 8)) for loc, scale in ((0.0, 1.0), (2.0, 3.0))]
    statistics = [np.stack([f.mean(axis=0), f.std(axis=0)]) for f in frames]
    together = np.concatenate(frames)
    np.testing.assert_allclose(
        pooled_statistics(statistics), np.stack([together.mean(axis=0), together.std(axis=0)]), rtol=1e-5
    )
    np.testing.assert_allclose(pooled_statistics([statistics[0]] * 3), statistics[0], rtol=1e-6)


def _edited_copy(run: Path, dest: Path, edit) -> Path:
    shutil.copytree(run, dest)
    record = json.loads((dest / CONFIG_FILE).read_text())
    edit(record)
    (dest / CONFIG_FILE).write_text(json.dumps(record))
    return dest


def test_runs_that_make_no_ensemble_are_refused_naming_the_run(members, tmp_path):
    first, second = members
    reordered = _edited_copy(second, tmp_path / "reordered", lambda r: r["classes"].reverse())
    other_front_end = _edited_copy(second, tmp_path / "fmin", lambda r: r["frontend"].update(fmin=123.0))
    for paths, reason in (
        ([], "needs two or more run folders, got 0"),
        ([first, first], f"{first}: given twice"),
        ([first, tmp_path / "missing"], f"{tmp_path / 'missing'}: no such run folder"),
        (
            [first, tmp_path / "model.onnx"],
            f"{tmp_path / 'model.onnx'}: an export; an ensemble is made of run",
        ),
        ([first, reordered], f"{reordered}: classes .*the same classes in the same order"),
        ([first, other_front_end], f"{other_front_end}: another front end: fmin 123.0"),
    ):
        with pytest.raises(UserError, match=reason):
            EmotionRecognizer.load(paths)


def test_an_ensemble_exports_as_one_model_that_answers_as_the_ensemble(members, tmp_path, shared_datasets):
    out = tmp_path / "ensemble.onnx"
    exported = export(members, "onnx", out)
    assert exported.metadata["ensemble_of"] == [run.name for run in members]
    assert exported.metadata["run"] is None and "mean of the 2 runs" in exported.metadata["check"]["against"]
    assert 0 <= exported.max_abs_difference <= EXPORT_TOLERANCE
    ensemble, from_export = EmotionRecognizer.load(members), EmotionRecognizer.load(out)
    np.testing.assert_allclose(answers(from_export), answers(ensemble), rtol=0, atol=EXPORT_TOLERANCE)
    with pytest.raises(UserError, match="an ensemble of 2 runs needs --out"):
        export(members, "onnx")


def test_a_per_speaker_ensemble_exports_with_the_pooled_training_statistics(
    speaker_members, tmp_path, shared_datasets
):
    out = tmp_path / "ensemble.tflite"
    exported = export(speaker_members, "tflite", out)
    ensemble, from_export = EmotionRecognizer.load(speaker_members), EmotionRecognizer.load(out)
    np.testing.assert_allclose(
        exported.metadata["training_statistics"], ensemble.speaker_statistics, atol=1e-6
    )
    for keras_route, route in (
        (ensemble, from_export),
        (ensemble.for_speaker(CLIPS[:2]), from_export.for_speaker(CLIPS[:2])),
    ):
        np.testing.assert_allclose(answers(route), answers(keras_route), rtol=0, atol=EXPORT_TOLERANCE)


def test_the_cli_predicts_exports_and_serves_an_ensemble(members, tmp_path, capsys, shared_datasets):
    ensemble = EmotionRecognizer.load(members)
    expected = ensemble.predict(CLIPS[0]).probabilities
    assert main(["predict", str(CLIPS[0]), "--run-dir", *map(str, members)]) == 0
    assert json.loads(capsys.readouterr().out)["probabilities"] == pytest.approx(expected, abs=1e-6)

    out = tmp_path / "ensemble.tflite"
    assert main(["export", *map(str, members), "--format", "tflite", "--out", str(out)]) == 0
    assert json.loads((tmp_path / "ensemble.tflite.json").read_text())["ensemble_of"] == [
        r.name for r in members
    ]
    capsys.readouterr()
    assert main(["export", *map(str, members), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.strip() == (
        "aed-tf export: error: an ensemble of 2 runs needs --out: it has no run folder of its own"
    )

    # aed-tf serve RUN RUN: the API answers the ensemble's probabilities.
    with aed_tf_serve([str(run) for run in members], tmp_path) as child:
        answer = httpx.post(
            child.url + "api/predict", files={"file": (CLIPS[0].name, CLIPS[0].read_bytes())}, timeout=120
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["probabilities"] == pytest.approx(expected, abs=1e-6)
