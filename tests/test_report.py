"""The report's tables and figures, the baseline, on small hand-made predictions; the held-out
summary of a tiny run, and the index of the reports."""

import json
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from aed_tf import plots, report
from aed_tf.baseline import fit_reference_baseline, predict_probabilities, reference_feature_matrix
from aed_tf.config import Config, FrontEndConfig
from aed_tf.evaluate import Evaluation, evaluate, grouped_metrics
from aed_tf.metrics import classification_metrics
from aed_tf.runner import write_index
from aed_tf.train import CONFIG_FILE, TrainResult, load_training_data
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


def evaluation_of(predictions: pd.DataFrame, protocol: str = "shared-si", partition: str = "test") -> Evaluation:
    probabilities = predictions[[f"p_{name}" for name in CLASSES]].to_numpy()
    return Evaluation(partition, protocol, True, tuple(CLASSES), predictions,
                      classification_metrics(predictions["label"], probabilities),
                      grouped_metrics(predictions, probabilities, ["corpus"]),
                      grouped_metrics(predictions, probabilities, ["corpus", "speaker"]))


TWO_CORPORA = predictions_of([0, 1, 2, 0, 1, 2, 0, 1], [0, 1, 2, 0, 2, 2, 1, 1],
                             corpus=["ravdess"] * 3 + ["tess"] * 5)


def test_a_run_without_a_test_partition_is_evaluated_on_validation_and_says_so():
    def run_of(protocol):
        return {"split": {"protocol": protocol}}

    assert report.partition_to_evaluate(run_of("shared-si")) == ("test", None)
    assert report.partition_to_evaluate(run_of("shared-si"), "val") == ("val", None)
    assert report.partition_to_evaluate(run_of("an-old-protocol")) == ("test", None)
    for asked in ("test", "val"):
        partition, note = report.partition_to_evaluate(run_of("all-speakers"), asked)
        assert partition == "val"
        assert note.startswith("This run has no held-out test (protocol all-speakers): every speaker but "
                               "the validation ones was used in training.")
        assert "overstate what new voices get" in note and "`aed-tf bench cv`" in note
    assert report.partition_to_evaluate(run_of("all-speakers"), "train") == ("train", None)


def test_the_headline_table_puts_the_uar_of_each_corpus_beside_the_overall_one():
    table = report.headline_per_corpus(evaluation_of(TWO_CORPORA))
    assert list(table.index) == ["overall", "ravdess", "tess"]
    assert list(table.columns) == ["clips", "accuracy", "uar", "macro_f1"]
    assert list(table["clips"]) == [8, 3, 5]
    assert table.loc["ravdess", "uar"] == 1.0
    tess = TWO_CORPORA[TWO_CORPORA["corpus"] == "tess"]
    assert table.loc["tess", "uar"] == pytest.approx(balanced_accuracy_score(tess["label"], tess["predicted"]))
    assert table.loc["overall", "uar"] == pytest.approx(
        balanced_accuracy_score(TWO_CORPORA["label"], TWO_CORPORA["predicted"]))


def summary_run(tmp_path: Path, name: str, protocol: str) -> dict:
    return {"run_dir": str(tmp_path / "runs" / name), "config": {"train": {"backbone": "mobilenetv3small"}},
            "weights": "from scratch (weights=None)", "split": {"protocol": protocol}}


def test_summary_and_index_give_the_uar_per_corpus_and_mark_a_run_without_held_out_test(tmp_path):
    reports = tmp_path / "reports"
    evaluation = evaluation_of(TWO_CORPORA, protocol="all-speakers", partition="val")
    baseline_predictions = TWO_CORPORA.assign(predicted=0)
    baseline_probabilities = np.eye(len(CLASSES))[np.zeros(len(TWO_CORPORA), int)]
    baseline = report.headline_figures(
        report.bootstrap_intervals(baseline_predictions["label"], baseline_predictions["predicted"], len(CLASSES),
                                   resamples=10)["value"],
        grouped_metrics(baseline_predictions, baseline_probabilities, ["corpus"]))
    path = report.write_summary(reports / "shipped", summary_run(tmp_path, "shipped", "all-speakers"),
                                evaluation, baseline=baseline)
    summary = json.loads(path.read_text())
    assert summary["partition"] == "val" and summary["held_out_test"] is False
    tess_uar = evaluation.per_corpus.set_index("corpus").loc["tess", "uar"]
    assert summary["uar_per_corpus"] == {"ravdess": 1.0, "tess": pytest.approx(tess_uar)}
    assert summary["baseline"]["uar_per_corpus"] == {"ravdess": pytest.approx(1 / 3), "tess": pytest.approx(1 / 3)}
    assert summary["uar"] == evaluation.overall["uar"] and summary["baseline"]["uar"] == pytest.approx(1 / 3)

    # A summary.json from before the per-corpus figures still gets its row, with empty cells.
    old = {key: summary[key] for key in ("backbone", "weights", "speaker_independent", "clips", "accuracy",
                                         "uar", "macro_f1")}
    old.update(run_id="old", protocol="shared-si", partition="test", baseline={"uar": 0.3},
               date="2020-01-01T00:00:00")
    (reports / "old").mkdir()
    (reports / "old" / report.SUMMARY_FILE).write_text(json.dumps(old))
    rows = [[cell.strip() for cell in re.findall(r"<td>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", write_index(reports).read_text())[1:]]
    header = re.findall(r"<th>(.*?)</th>", write_index(reports).read_text())
    shipped, older = (dict(zip(header, row)) for row in rows)
    assert shipped["run"] == "shipped" and shipped["partition"] == "val (no held-out test)"
    assert shipped["UAR per corpus"] == f"ravdess 1.00 · tess {tess_uar:.2f}"
    assert shipped["baseline UAR per corpus"] == "ravdess 0.33 · tess 0.33"
    assert older["partition"] == "test" and older["UAR per corpus"] == older["baseline UAR per corpus"] == ""
    assert older["baseline UAR"] == "0.300"

    printed = report.format_held_out(summary)
    assert "protocol all-speakers, val partition (8 clips): no held-out test" in printed
    assert report.NO_HELD_OUT_TEST.format(protocol="all-speakers") in printed
    assert f"ravdess 1.000 · tess {tess_uar:.3f}" in printed and "baseline" in printed
    assert "no held-out test" not in report.format_held_out(old)


def test_held_out_summary_gives_the_model_and_the_baseline_per_corpus(tiny_run, tmp_path):
    run = report.load_run(tiny_run)
    data = load_training_data(Config.from_dict(run["config"]), progress=False)
    summary = report.held_out_summary(tiny_run, data=data)
    test = evaluate(tiny_run, "test", data=data)
    assert summary["partition"] == "test" and summary["held_out_test"] is True
    assert summary["clips"] == len(test.predictions) and summary["uar"] == pytest.approx(test.overall["uar"])
    assert summary["uar_per_corpus"] == {"ravdess": pytest.approx(test.overall["uar"])}
    assert set(summary["baseline"]["uar_per_corpus"]) == {"ravdess"}
    assert 0 <= summary["baseline"]["uar"] <= 1

    # The same run as if its protocol had no test partition: the validation speakers, said so.
    shipped = tmp_path / "shipped"
    shutil.copytree(tiny_run, shipped)
    saved = json.loads((shipped / CONFIG_FILE).read_text())
    saved["split"]["protocol"] = "all-speakers"
    (shipped / CONFIG_FILE).write_text(json.dumps(saved))
    summary = report.held_out_summary(shipped, data=data)
    assert summary["partition"] == "val" and summary["held_out_test"] is False
    assert summary["clips"] == len(data.partitions["val"].labels)
    assert "no held-out test" in report.format_held_out(summary)


def test_train_ends_by_printing_the_held_out_uar_per_corpus_and_the_baseline(tiny_run, monkeypatch, capsys):
    import aed_tf.train
    from aed_tf.cli import main

    run = report.load_run(tiny_run)
    result = TrainResult(tiny_run, {"uar": 0.5, "accuracy": 0.5, "macro_f1": 0.5}, run["history"], 1.0, None)
    monkeypatch.setattr(aed_tf.train, "train", lambda config: result)  # the run is already trained
    assert main(["train", "--protocol", run["config"]["data"]["protocol"]]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"protocol speaker-independent, test partition \(\d+ clips\)\n"
                     r"  mobilenetv3small: UAR \d\.\d{3} \(ravdess \d\.\d{3}\)\n"
                     r"  baseline MFCC/chroma/mel \+ MLP \(same training partition\): UAR \d\.\d{3} "
                     r"\(ravdess \d\.\d{3}\)", printed), printed
