"""The report's tables and figures, the baseline, on small hand-made predictions; the held-out
summary of a tiny run, and the index of the reports."""

import dataclasses
import html
import json
import re
import shutil
from html.parser import HTMLParser
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
from aed_tf.partitions import load_training_data
from aed_tf.runner import CHART_BAR_WIDTH, write_index
from aed_tf.runs import CONFIG_FILE
from aed_tf.train import TrainResult
from tests.synth import tone

CLASSES = ["angry", "happy", "sad"]


def predictions_of(labels, predicted, corpus="ravdess") -> pd.DataFrame:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    probabilities = np.full((len(labels), len(CLASSES)), 0.1)
    probabilities[np.arange(len(labels)), predicted] = 0.8
    frame = pd.DataFrame(
        {
            "clip_id": [f"c{i}" for i in range(len(labels))],
            "corpus": corpus,
            "speaker": "01",
            "label": labels,
            "predicted": predicted,
        }
    )
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
    assert per_class.loc["angry", "precision"] == 1.0 and per_class.loc["angry", "recall"] == pytest.approx(
        1 / 3
    )
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
    manifest = pd.DataFrame(
        {
            "clip_id": list("abcde"),
            "corpus": ["ravdess"] * 3 + ["tess"] * 2,
            "speaker": ["01", "01", "02", "OAF", "OAF"],
            "gender": ["male", "male", "female", "female", "female"],
            "emotion": ["sad", "angry", "sad", "sad", "happy"],
            "duration": [3.0, 3.0, 3.0, 2.0, 2.0],
        }
    )
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
    history = pd.DataFrame(
        {
            "phase": ["head", "finetune", "finetune"],
            "loss": [2, 1, 0.5],
            "val_loss": [2, 1.5, 1],
            "accuracy": [0.3, 0.5, 0.7],
            "val_accuracy": [0.3, 0.4, 0.5],
            "val_uar": [0.3, 0.4, 0.5],
        }
    )
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


def evaluation_of(
    predictions: pd.DataFrame, protocol: str = "shared-si", partition: str = "test"
) -> Evaluation:
    probabilities = predictions[[f"p_{name}" for name in CLASSES]].to_numpy()
    return Evaluation(
        partition,
        protocol,
        True,
        tuple(CLASSES),
        predictions,
        classification_metrics(predictions["label"], probabilities),
        grouped_metrics(predictions, probabilities, ["corpus"]),
        grouped_metrics(predictions, probabilities, ["corpus", "speaker"]),
    )


TWO_CORPORA = predictions_of(
    [0, 1, 2, 0, 1, 2, 0, 1], [0, 1, 2, 0, 2, 2, 1, 1], corpus=["ravdess"] * 3 + ["tess"] * 5
)


def test_a_run_without_a_test_partition_is_evaluated_on_validation_and_says_so():
    def run_of(protocol):
        return {"split": {"protocol": protocol}}

    assert report.partition_to_evaluate(run_of("shared-si")) == ("test", None)
    assert report.partition_to_evaluate(run_of("shared-si"), "val") == ("val", None)
    assert report.partition_to_evaluate(run_of("an-old-protocol")) == ("test", None)
    for asked in ("test", "val"):
        partition, note = report.partition_to_evaluate(run_of("all-speakers"), asked)
        assert partition == "val"
        assert note.startswith(
            "This run has no held-out test (protocol all-speakers): every speaker but "
            "the validation ones was used in training."
        )
        assert "overstate what new voices get" in note and "`aed-tf bench cv`" in note
    assert report.partition_to_evaluate(run_of("all-speakers"), "train") == ("train", None)


def test_the_headline_table_puts_the_uar_of_each_corpus_beside_the_overall_one():
    table = report.headline_per_corpus(evaluation_of(TWO_CORPORA))
    assert list(table.index) == ["overall", "ravdess", "tess"]
    assert list(table.columns) == ["clips", "accuracy", "uar", "macro_f1"]
    assert list(table["clips"]) == [8, 3, 5]
    assert table.loc["ravdess", "uar"] == 1.0
    tess = TWO_CORPORA[TWO_CORPORA["corpus"] == "tess"]
    assert table.loc["tess", "uar"] == pytest.approx(
        balanced_accuracy_score(tess["label"], tess["predicted"])
    )
    assert table.loc["overall", "uar"] == pytest.approx(
        balanced_accuracy_score(TWO_CORPORA["label"], TWO_CORPORA["predicted"])
    )


def summary_run(tmp_path: Path, name: str, protocol: str) -> dict:
    return {
        "run_dir": str(tmp_path / "runs" / name),
        "config": {"train": {"backbone": "mobilenetv3small"}},
        "weights": "from scratch (weights=None)",
        "split": {"protocol": protocol},
    }


def test_summary_and_index_give_the_uar_per_corpus_and_mark_a_run_without_held_out_test(tmp_path):
    reports = tmp_path / "reports"
    evaluation = evaluation_of(TWO_CORPORA, protocol="all-speakers", partition="val")
    baseline_predictions = TWO_CORPORA.assign(predicted=0)
    baseline_probabilities = np.eye(len(CLASSES))[np.zeros(len(TWO_CORPORA), int)]
    baseline = report.headline_figures(
        report.bootstrap_intervals(
            baseline_predictions["label"], baseline_predictions["predicted"], len(CLASSES), resamples=10
        )["value"],
        grouped_metrics(baseline_predictions, baseline_probabilities, ["corpus"]),
    )
    path = report.write_summary(
        reports / "shipped", summary_run(tmp_path, "shipped", "all-speakers"), evaluation, baseline=baseline
    )
    summary = json.loads(path.read_text())
    assert summary["partition"] == "val" and summary["held_out_test"] is False
    tess_uar = evaluation.per_corpus.set_index("corpus").loc["tess", "uar"]
    assert summary["uar_per_corpus"] == {"ravdess": 1.0, "tess": pytest.approx(tess_uar)}
    assert summary["baseline"]["uar_per_corpus"] == {
        "ravdess": pytest.approx(1 / 3),
        "tess": pytest.approx(1 / 3),
    }
    assert summary["uar"] == evaluation.overall["uar"] and summary["baseline"]["uar"] == pytest.approx(1 / 3)

    # A summary.json from before the per-corpus figures still gets its row, with empty cells.
    old = {
        key: summary[key]
        for key in ("backbone", "weights", "speaker_independent", "clips", "accuracy", "uar", "macro_f1")
    }
    old.update(
        run_id="old",
        protocol="shared-si",
        partition="test",
        baseline={"uar": 0.3},
        date="2020-01-01T00:00:00",
    )
    (reports / "old").mkdir()
    (reports / "old" / report.SUMMARY_FILE).write_text(json.dumps(old))
    shipped, older = index_page(write_index(reports)).records
    assert shipped["run"] == "shipped" and shipped["partition"] == "valno held-out test"
    assert shipped["UAR ravdess"] == "1.000" and shipped["UAR tess"] == f"{tess_uar:.3f}"
    assert shipped["baseline UAR"] == "0.333ravdess 0.33 · tess 0.33"
    assert older["partition"] == "test" and older["UAR ravdess"] == older["UAR tess"] == ""
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
    assert re.search(
        r"protocol speaker-independent, test partition \(\d+ clips\)\n"
        r"  mobilenetv3small: UAR \d\.\d{3} \(ravdess \d\.\d{3}\)\n"
        r"  baseline MFCC/chroma/mel \+ MLP \(same training partition\): UAR \d\.\d{3} "
        r"\(ravdess \d\.\d{3}\)",
        printed,
    ), printed


class Page(HTMLParser):
    """An HTML fragment or page: every start tag with its attributes, every table row as its cells
    (tag, attributes, text), the text, and the scripts' source."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.rows, self.text, self.scripts = [], [], [], []
        self._cell, self._in_script = None, False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = [tag, attrs, ""]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell:
            self.rows[-1].append((self._cell[0], self._cell[1], self._cell[2].strip()))
            self._cell = None
        self._in_script = False

    def handle_data(self, data):
        self.text.append(data)
        if self._cell:
            self._cell[2] += data
        if self._in_script:
            self.scripts.append(data)

    @property
    def header(self) -> list[tuple[str, dict]]:
        """The first row's cells, (text, attributes)."""
        return [(text, attrs) for _, attrs, text in self.rows[0]]

    @property
    def records(self) -> list[dict[str, str]]:
        """The rows after the first, as {header: cell text}."""
        names = [text for text, _ in self.header]
        return [dict(zip(names, (text for _, _, text in row))) for row in self.rows[1:]]


def index_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def clips_of(speakers, labels, predicted, corpus="ravdess") -> pd.DataFrame:
    return predictions_of(labels, predicted, corpus).assign(speaker=speakers)


def speakers_frame(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["corpus", "speaker"])


FOUR_VALIDATION_SPEAKERS = speakers_frame(*(("ravdess", s) for s in ("05", "06", "07", "08")))
# Eight clips, two per speaker of four, every class recalled at 2/3 or more.
FAIR = clips_of(
    ["01", "01", "02", "02", "03", "03", "04", "04"], [0, 1, 2, 0, 1, 2, 0, 1], [0, 1, 2, 0, 1, 2, 1, 1]
)


def test_intervals_per_corpus_give_the_headline_figures_with_intervals_resampled_within_each_corpus():
    table = report.intervals_per_corpus(TWO_CORPORA, len(CLASSES), resamples=200, seed=0)
    headline = report.headline_per_corpus(evaluation_of(TWO_CORPORA))
    assert list(table.index.unique("corpus")) == ["overall", "ravdess", "tess"]
    for corpus in headline.index:
        for metric in report.HEADLINE_METRICS:
            row = table.loc[(corpus, metric)]
            assert row["value"] == pytest.approx(headline.loc[corpus, metric])
            assert row["low"] <= row["value"] <= row["high"] and row["clips"] == headline.loc[corpus, "clips"]
    # Ravdess is all right: resampled among its own clips it has no spread, the whole set has.
    assert (table.loc["ravdess", ["low", "high"]] == 1.0).all().all()
    assert table.loc[("overall", "uar"), "low"] < table.loc[("overall", "uar"), "high"]
    pd.testing.assert_frame_equal(
        table, report.intervals_per_corpus(TWO_CORPORA, len(CLASSES), resamples=200, seed=0)
    )


def test_fair_figures_get_no_warning():
    assert report.weak_figure_warnings(FAIR, CLASSES, FOUR_VALIDATION_SPEAKERS) == []


def test_few_validation_speakers_are_warned_of_counting_a_speaker_id_once_per_corpus():
    validation = speakers_frame(("ravdess", "01"), ("ravdess", "02"), ("ravdess", "02"), ("tess", "01"))
    warnings = report.weak_figure_warnings(FAIR, CLASSES, validation)
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "The validation set has only 3 speaker(s) (ravdess 01, ravdess 02, tess 01)"
    )


def test_a_class_recalled_below_a_fifth_is_named_with_its_clips_and_an_absent_class_is_not():
    never_sad = FAIR.assign(predicted=[0, 1, 0, 0, 1, 1, 0, 1])
    assert report.weak_figure_warnings(never_sad, CLASSES, FOUR_VALIDATION_SPEAKERS) == [
        "Recall below 0.2 for sad 0.00 (0 of 2 clips): the model almost never recognises these "
        "classes, which the averages hide."
    ]
    no_sad_clips = clips_of(["01", "02", "03", "04"], [0, 1, 0, 1], [0, 1, 0, 1])
    assert report.weak_figure_warnings(no_sad_clips, CLASSES, FOUR_VALIDATION_SPEAKERS) == []


def test_a_speaker_with_over_half_the_clips_is_warned_of():
    half = FAIR.assign(speaker=["01"] * 4 + ["02", "03", "04", "05"])
    assert report.weak_figure_warnings(half, CLASSES, FOUR_VALIDATION_SPEAKERS) == []
    most = FAIR.assign(speaker=["01"] * 5 + ["02", "03", "04"])
    assert report.weak_figure_warnings(most, CLASSES, FOUR_VALIDATION_SPEAKERS) == [
        "One speaker, ravdess 01, has 62% of the test clips (5 of 8): the figures say more about that "
        "voice than about speakers in general."
    ]


def test_the_protocol_in_one_sentence_says_whose_clips_were_heard_in_training():
    validation = speakers_frame(("ravdess", "05"), ("tess", "05"))
    independent = report.protocol_sentence(evaluation_of(FAIR), validation)
    assert independent == (
        "Split protocol shared-si: the 8 test clips come from 4 speakers never heard in "
        "training; the epoch was chosen on 2 other (validation) speakers, and the baseline "
        "was trained on the same training clips."
    )
    dependent = dataclasses.replace(evaluation_of(FAIR, protocol="random"), speaker_independent=False)
    assert report.protocol_sentence(dependent, validation).startswith(
        "Split protocol random, SPEAKER-DEPENDENT: the 4 speakers of the 8 test clips were also heard in training"
    )
    shipped = report.protocol_sentence(
        evaluation_of(FAIR, protocol="all-speakers", partition="val"), validation
    )
    assert shipped.startswith(
        "Split protocol all-speakers, no held-out test: the 8 clips are those of the "
        "4 validation speakers, which chose the epoch"
    )
    for sentence in (independent, shipped):
        assert sentence.count(". ") == 0 and sentence.endswith(".")


def test_the_headline_block_leads_with_the_uar_then_the_protocol_the_warnings_and_the_figures(tmp_path):
    run = summary_run(tmp_path, "shipped", "shared-si")
    baseline_predictions = TWO_CORPORA.assign(predicted=0)
    block = report.headline_block(
        run, evaluation_of(TWO_CORPORA), baseline_predictions, FOUR_VALIDATION_SPEAKERS, resamples=100, seed=3
    )
    model = report.intervals_per_corpus(TWO_CORPORA, len(CLASSES), resamples=100, seed=3)
    baseline = report.intervals_per_corpus(baseline_predictions, len(CLASSES), resamples=100, seed=3)
    text = "".join(Page(block).text)
    uar = model.loc[("overall", "uar")]

    def per_corpus(table):  # two corpora: the mean over corpora leads, the pooled figure follows
        r, t = table.loc[("ravdess", "uar"), "value"], table.loc[("tess", "uar"), "value"]
        return f"{(r + t) / 2:.3f} (ravdess {r:.3f}, tess {t:.3f})"

    answer = (
        f"UAR, mean over corpora {per_corpus(model)} for mobilenetv3small on the 8 "
        f"test clips of run shipped; baseline {report.BASELINE_NAME}: {per_corpus(baseline)}. "
        f"Pooled over all clips: {uar['value']:.3f} [{uar['low']:.2f}, {uar['high']:.2f}]"
    )
    assert answer in text
    # One speaker ("01") holds every clip of TWO_CORPORA's ravdess and tess.
    order = [
        text.index(part)
        for part in (
            answer,
            "Split protocol shared-si",
            "Weak figures",
            "One speaker",
            "95% bootstrap interval",
        )
    ]
    assert order == sorted(order)

    rows = Page(block).rows[2:]  # after the two header rows
    assert [row[0][2] for row in rows] == ["overall", "ravdess", "tess"]
    for row, corpus in zip(rows, ["overall", "ravdess", "tess"]):
        cells = [text for _, _, text in row]
        figures = [
            f"{table.loc[(corpus, m), 'value']:.3f} [{table.loc[(corpus, m), 'low']:.2f}, "
            f"{table.loc[(corpus, m), 'high']:.2f}]"
            for table in (model, baseline)
            for m in ("uar", "accuracy", "macro_f1")
        ]
        difference = model.loc[(corpus, "uar"), "value"] - baseline.loc[(corpus, "uar"), "value"]
        assert cells == [
            corpus,
            str(int(model.loc[(corpus, "uar"), "clips"])),
            *figures,
            f"{difference:+.3f}",
        ]


def test_a_headline_without_weak_figures_says_what_was_checked_and_a_run_without_test_says_so(tmp_path):
    run = summary_run(tmp_path, "shipped", "shared-si")
    fair = report.headline_block(run, evaluation_of(FAIR), FAIR, FOUR_VALIDATION_SPEAKERS, resamples=20)
    assert "No warning: at least 4 validation speakers" in fair and "Weak figures" not in fair
    shipped = report.headline_block(
        run,
        evaluation_of(FAIR, protocol="all-speakers", partition="val"),
        FAIR,
        FOUR_VALIDATION_SPEAKERS,
        resamples=20,
    )
    warnings = [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", shipped)]
    assert warnings == [report.NO_HELD_OUT_TEST.format(protocol="all-speakers")]


def test_the_parameters_fold_into_a_closed_details_element():
    run = {"config": {"data": {"seed": 7, "protocol": "shared-si"}, "train": {"epochs": 12}}}
    details = report.parameters_details(run)
    page = Page(details)
    assert page.tags[0] == ("details", {}) and details.endswith("</details>")
    assert "All 3 parameters" in " ".join(page.text)
    cells = [[text for _, _, text in row] for row in page.rows]
    assert (
        ["data", "seed", "7"] in cells
        and ["protocol", "shared-si"] in cells
        and ["train", "epochs", "12"] in cells
    )


def index_summary(run_id: str, uar: float, clips: int, date: str, **changes) -> dict:
    return {
        "run_id": run_id,
        "backbone": "audiocnn",
        "weights": "from scratch (weights=None)",
        "protocol": "shared-si",
        "speaker_independent": True,
        "held_out_test": True,
        "partition": "test",
        "clips": clips,
        "accuracy": uar + 0.01,
        "uar": uar,
        "macro_f1": uar - 0.01,
        "date": date,
        **changes,
    }


INDEX_RUNS = {
    "bench-audiocnn-0123456789abcdef0123456789abcdef": index_summary(
        "a",
        0.6,
        9,
        "2026-01-03T10:00:00",
        uar_per_corpus={"ravdess": 0.5, "tess": 0.7},
        baseline={"uar": 0.4, "uar_per_corpus": {"ravdess": 0.35, "tess": 0.45}},
    ),
    "shipped": index_summary(
        "b",
        0.45,
        700,
        "2026-01-02T10:00:00",
        protocol="all-speakers",
        held_out_test=False,
        partition="val",
        uar_per_corpus={"ravdess": 0.3, "tess": 0.6},
        baseline={"uar": 0.5, "uar_per_corpus": {"ravdess": 0.4}},
    ),
    "old": index_summary("c", 0.52, 80, "2026-01-01T10:00:00", baseline={"uar": 0.3}),
}


def write_index_of(reports: Path, runs: dict) -> Path:
    for run_id, summary in runs.items():
        (reports / run_id).mkdir(parents=True)
        (reports / run_id / report.SUMMARY_FILE).write_text(json.dumps(summary))
        (reports / run_id / "03_evaluate.html").write_text("<html></html>")
    return write_index(reports)


def test_the_index_headers_are_buttons_that_sort_numbers_as_numbers_and_the_page_has_no_network(tmp_path):
    page = index_page(write_index_of(tmp_path / "reports", INDEX_RUNS))
    header = page.header
    assert [text for text, _ in header] == [
        "run",
        "backbone",
        "weights",
        "protocol",
        "partition",
        "clips",
        "accuracy",
        "UAR",
        "macro-F1",
        "UAR ravdess",
        "UAR tess",
        "baseline UAR",
        "date",
        "pages",
    ]
    numeric = {text for text, attrs in header if attrs["data-type"] == "number"}
    assert numeric == {"clips", "accuracy", "UAR", "macro-F1", "UAR ravdess", "UAR tess", "baseline UAR"}
    buttons = [tag for tag, _ in page.tags if tag == "button"]
    assert len(buttons) == len(header)
    assert 'addEventListener("click"' in "".join(page.scripts)
    # Nothing is fetched: no script, image or style sheet from elsewhere, no link off the reports.
    assert not [
        attrs
        for _, attrs in page.tags
        if "src" in attrs or (attrs.get("href") or "").startswith(("http:", "https:", "//"))
    ]
    assert [row["run"] for row in page.records] == list(INDEX_RUNS)  # newest first
    assert [row["pages"] for row in page.records] == ["evaluate"] * 3


def test_the_index_charts_one_bar_per_run_highest_uar_first_with_the_baseline_as_a_tick(tmp_path):
    page = index_page(write_index_of(tmp_path / "reports", INDEX_RUNS))
    bars = [attrs for tag, attrs in page.tags if tag == "rect" and attrs.get("class") == "bar"]
    assert [bar["data-run"] for bar in bars] == [
        "bench-audiocnn-0123456789abcdef0123456789abcdef",
        "old",
        "shipped",
    ]
    assert [float(bar["data-uar"]) for bar in bars] == [0.6, 0.52, 0.45]
    assert [float(bar["width"]) for bar in bars] == pytest.approx(
        [0.6 * CHART_BAR_WIDTH, 0.52 * CHART_BAR_WIDTH, 0.45 * CHART_BAR_WIDTH]
    )
    held_out_fill = bars[0]["fill"]
    assert bars[1]["fill"] == held_out_fill and bars[2]["fill"] != held_out_fill  # shipped: no held-out test
    ticks = [attrs for tag, attrs in page.tags if tag == "line" and attrs.get("class") == "baseline"]
    left = float(bars[0]["x"])
    assert [float(t["x1"]) - left for t in ticks] == pytest.approx(
        [0.4 * CHART_BAR_WIDTH, 0.3 * CHART_BAR_WIDTH, 0.5 * CHART_BAR_WIDTH]
    )
    assert "shipped (val)" in page.text


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_the_index_fits_1300_px_and_clicking_a_header_sorts_by_it(tmp_path):
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's chromium is not at {CHROMIUM}: apt-get install chromium (make test does)")
    index = write_index_of(tmp_path / "reports", INDEX_RUNS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(index.as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") <= 1300
        table = page.locator("table.runs").bounding_box()
        assert table["x"] + table["width"] <= 1300

        def order_after_clicking(column: str) -> list[str]:
            page.get_by_role("button", name=column, exact=True).click()
            return page.eval_on_selector_all(
                "table.runs tbody tr", "rows => rows.map(r => r.cells[0].textContent)"
            )

        long, shipped, old = INDEX_RUNS
        assert order_after_clicking("clips") == [long, old, shipped]  # 9, 80, 700: as numbers, not text
        assert order_after_clicking("clips") == [shipped, old, long]
        assert order_after_clicking("UAR ravdess") == [shipped, long, old]  # the empty cell last
        assert order_after_clicking("UAR ravdess") == [long, shipped, old]  # and still last
        assert order_after_clicking("run") == [long, old, shipped]
        assert page.locator("th", has_text="run").get_attribute("aria-sort") == "ascending"
        browser.close()


def test_a_per_speaker_runs_headline_says_whose_statistics_normalised_the_clips(tmp_path):
    import dataclasses

    run = summary_run(tmp_path, "shipped", "shared-si")
    plain = report.headline_block(run, evaluation_of(FAIR), FAIR, FOUR_VALIDATION_SPEAKERS, resamples=20)
    assert "Normalised per speaker" not in plain and report.normalization_sentence(evaluation_of(FAIR)) == ""
    own = dataclasses.replace(evaluation_of(FAIR), normalization="speaker", speaker_statistics="own clips")
    block = report.headline_block(run, own, FAIR, FOUR_VALIDATION_SPEAKERS, resamples=20)
    text = html.unescape(block)
    assert "each test speaker's features are standardised with the statistics of their own test clips" in text
    assert text.index("Split protocol") < text.index("Normalised per speaker")
    assert "eGeMAPS" not in text
    alone = dataclasses.replace(own, speaker_statistics="training")
    assert report.normalization_sentence(alone).startswith("Normalised per speaker with the training clips'")
    fused = report.normalization_sentence(dataclasses.replace(own, fusion_weight=1.5))
    assert (
        "Fused with the run's eGeMAPS head (its margins weighted 1.50 against the temperature-scaled" in fused
    )
