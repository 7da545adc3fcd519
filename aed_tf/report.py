"""The figures and tables of the evaluation report, computed from a run directory and an
`Evaluation`; `notebooks/03_evaluate.ipynb` shows them. Also the headline file of each report
(`summary.json`) that `reports/index.html` lists, and the held-out figures `aed-tf train` prints."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from aed_tf.baseline import fit_reference_baseline, predict_probabilities, reference_feature_matrix
from aed_tf.calibration import apply_temperature, expected_calibration_error
from aed_tf.config import Config
from aed_tf.evaluate import Evaluation, evaluate, grouped_metrics
from aed_tf.files import write_json
from aed_tf.metrics import classification_metrics, label_metrics
from aed_tf.splits import PROTOCOLS
from aed_tf.train import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, TrainingData, load_training_data

SUMMARY_FILE = "summary.json"
HEADLINE_METRICS = ("accuracy", "uar", "macro_f1")
BASELINE_NAME = "MFCC/chroma/mel + MLP"
# Said wherever the figures of a run without a test partition are shown: they are not what new
# voices get, and where the honest figures are.
NO_HELD_OUT_TEST = (
    "This run has no held-out test (protocol {protocol}): every speaker but the validation ones "
    "was used in training. The figures below are on the validation speakers, which chose the "
    "epoch, so they overstate what new voices get; the speaker-independent figures of this "
    "setting come from `aed-tf bench cv`."
)


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """A run's config.json with its metrics.json under "metrics" and history.csv under "history"."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE}")
    run = json.loads((run_dir / CONFIG_FILE).read_text())
    if run.get("status") != "finished":
        raise FileNotFoundError(f"{run_dir}: the run has not finished (status {run.get('status')!r}); "
                                "finish it with `aed-tf train --resume` and the same run id")
    run["metrics"] = json.loads((run_dir / METRICS_FILE).read_text())
    run["history"] = pd.read_csv(run_dir / HISTORY_FILE)
    run["run_dir"] = str(run_dir)
    return run


def has_held_out_test(protocol: str) -> bool:
    """Whether the protocol's split has a test partition (a protocol this version does not know,
    from an older run, is taken to have one)."""
    return protocol not in PROTOCOLS or PROTOCOLS[protocol].has_test


def summary_has_held_out_test(summary: Mapping[str, Any]) -> bool:
    """A summary's "held_out_test", or for a summary.json older than that key, its protocol's."""
    return summary.get("held_out_test", has_held_out_test(summary["protocol"]))


def partition_to_evaluate(run: dict[str, Any], partition: str = "test") -> tuple[str, str | None]:
    """The partition a report of `run` evaluates when asked for `partition`, and the note to show
    with it: a run whose protocol has no test partition (all-speakers) is evaluated on its
    validation speakers instead, with a note that says what those figures are worth."""
    protocol = run["split"]["protocol"]
    if has_held_out_test(protocol) or partition not in ("test", "val"):
        return partition, None
    return "val", NO_HELD_OUT_TEST.format(protocol=protocol)


def headline_per_corpus(evaluation: Evaluation) -> pd.DataFrame:
    """Clips, accuracy, UAR and macro-F1 overall (row "overall") and per corpus, the overall
    figure beside the corpora it averages over."""
    overall = pd.DataFrame([{"clips": len(evaluation.predictions),
                             **{name: evaluation.overall[name] for name in HEADLINE_METRICS}}],
                           index=["overall"])
    per_corpus = evaluation.per_corpus.set_index("corpus")[["clips", *HEADLINE_METRICS]]
    return pd.concat([overall, per_corpus]).rename_axis("corpus")


def headline_figures(overall: Mapping[str, float], per_corpus: pd.DataFrame) -> dict[str, Any]:
    """Accuracy, UAR and macro-F1 of `overall`, and the UAR of each corpus of `per_corpus` (rows
    with columns corpus and uar): what summary.json and `aed-tf train` give of a model."""
    return {**{name: float(overall[name]) for name in HEADLINE_METRICS},
            "uar_per_corpus": {str(c): float(u) for c, u in zip(per_corpus["corpus"], per_corpus["uar"])}}


def format_per_corpus(uar_per_corpus: Mapping[str, float] | None, digits: int = 2) -> str:
    """UAR per corpus on one line, "ravdess 0.52 · tess 0.81"; empty where there are none (a
    summary.json older than the per-corpus figures)."""
    return " · ".join(f"{corpus} {uar:.{digits}f}" for corpus, uar in (uar_per_corpus or {}).items())


def run_card(run: dict[str, Any]) -> pd.DataFrame:
    """What produced the run, one row per item: model, weights, split protocol in words, data,
    hardware, versions, wall time."""
    config, split, metrics = run["config"], run["split"], run["metrics"]
    protocol = (f"{split['protocol']}: "
                + ("speaker-independent, no speaker is in two partitions" if split["speaker_independent"]
                   else "SPEAKER-DEPENDENT, the same speakers are in train and test"))
    best = metrics["best_epoch"]
    best = f"epoch {best['epoch']} of phase {best['phase']} (validation UAR {best['val_uar']:.3f})"
    rows = [
        ("run", Path(run["run_dir"]).name),
        ("backbone", f"{config['train']['backbone']} at {run['image_size']} px"),
        ("weights", run["weights"]),
        ("split protocol", protocol),
        ("split", split["description"]),
        ("clips (train / val / test)", " / ".join(str(split["clips"][p]) for p in ("train", "val", "test"))),
        ("classes", ", ".join(run["classes"])),
        ("best epoch", best),
        ("training wall time", f"{metrics['epoch_seconds']:.0f} s over {len(run['history'])} epochs "
                               f"({metrics['train_images_per_second']:.0f} training images/s)"),
        ("temperature", f"{metrics['temperature']:.3f}" if "temperature" in metrics else "not fitted"),
        ("hardware", f"{run['hardware']['platform']}, {run['hardware']['cpus']} CPUs, "
                     f"GPUs: {', '.join(run['hardware']['gpus']) or 'none'}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in run["versions"].items())),
        ("git commit", run.get("git_commit") or "unknown"),
        ("trained", run.get("written", "")),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def parameters_table(run: dict[str, Any]) -> pd.DataFrame:
    """Every parameter of the run, by config section."""
    rows = [(section, name, value) for section, fields in run["config"].items()
            for name, value in fields.items()]
    return pd.DataFrame(rows, columns=["section", "parameter", "value"]).set_index(["section", "parameter"])


def corpus_overview(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per corpus: clips, speakers, hours and the mean clip length."""
    table = manifest.groupby("corpus").agg(
        clips=("clip_id", "size"), speakers=("speaker", "nunique"),
        hours=("duration", lambda d: d.sum() / 3600), mean_seconds=("duration", "mean"),
    )
    return table.round({"hours": 2, "mean_seconds": 2})


def speaker_overview(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per speaker: corpus, gender and clips per emotion."""
    table = pd.crosstab([manifest["corpus"], manifest["speaker"], manifest["gender"]], manifest["emotion"])
    table["clips"] = table.sum(axis=1)
    return table


def example_clips(manifest: pd.DataFrame, per_emotion: int = 1, seed: int = 0) -> pd.DataFrame:
    """`per_emotion` clips of each emotion, drawn with `seed`, in emotion order."""
    shuffled = manifest.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("emotion").head(per_emotion).sort_values("emotion", kind="stable")


def clips_per_corpus_and_emotion(manifest: pd.DataFrame) -> pd.DataFrame:
    """Clip counts, corpus by emotion, with totals."""
    return pd.crosstab(manifest["corpus"], manifest["emotion"], margins=True, margins_name="total")


def bootstrap_intervals(labels: Sequence[int], predicted: Sequence[int], num_classes: int,
                        resamples: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Accuracy, UAR and macro-F1 with a percentile bootstrap interval over clips (resampled
    with replacement, `resamples` times)."""
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    if not len(labels):
        raise ValueError("bootstrap_intervals needs at least one clip")
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(resamples) for name in HEADLINE_METRICS}
    for i in range(resamples):
        sample = rng.integers(0, len(labels), len(labels))
        for name, value in label_metrics(labels[sample], predicted[sample], num_classes).items():
            draws[name][i] = value
    point = label_metrics(labels, predicted, num_classes)
    tail = (1 - level) / 2 * 100
    return pd.DataFrame(
        [(name, point[name], np.percentile(draws[name], tail), np.percentile(draws[name], 100 - tail))
         for name in HEADLINE_METRICS],
        columns=["metric", "value", "low", "high"],
    ).set_index("metric")


def per_class_table(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class."""
    precision, recall, f1, support = precision_recall_fscore_support(
        predictions["label"], predictions["predicted"], labels=np.arange(len(classes)), zero_division=0
    )
    return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "clips": support},
                        index=pd.Index(classes, name="class"))


def confusion(predictions: pd.DataFrame, classes: Sequence[str], normalize: bool = False) -> pd.DataFrame:
    """Confusion matrix, true class by row and predicted by column; `normalize` divides each row
    by its clips (a class with no clips keeps a row of zeros)."""
    matrix = confusion_matrix(predictions["label"], predictions["predicted"], labels=np.arange(len(classes)))
    table = pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted"))
    if normalize:
        rows = table.sum(axis=1).replace(0, 1)
        table = table.div(rows, axis=0)
    return table


def top_confusions(predictions: pd.DataFrame, classes: Sequence[str], count: int = 3) -> pd.DataFrame:
    """The most frequent (true, predicted) pairs among the errors, most frequent first."""
    errors = predictions[predictions["label"] != predictions["predicted"]]
    pairs = errors.groupby(["label", "predicted"]).size().sort_values(ascending=False, kind="stable")
    return pd.DataFrame(
        [(classes[t], classes[p], int(n)) for (t, p), n in pairs.head(count).items()],
        columns=["true", "predicted", "clips"],
    )


def confused_clips(predictions: pd.DataFrame, classes: Sequence[str], true: str, predicted: str,
                   count: int = 3) -> pd.DataFrame:
    """The clips of class `true` predicted as `predicted`, the most confidently wrong first."""
    t, p = classes.index(true), classes.index(predicted)
    rows = predictions[(predictions["label"] == t) & (predictions["predicted"] == p)]
    return rows.sort_values(f"p_{predicted}", ascending=False).head(count)


def calibration_summary(val_labels: np.ndarray, val_probabilities: np.ndarray, test_labels: np.ndarray,
                        test_probabilities: np.ndarray, temperature: float,
                        evaluated: str = "test") -> pd.DataFrame:
    """Expected calibration error before and after temperature scaling, on validation (where the
    temperature was fitted) and on the evaluated partition (`evaluated`; one row when that is
    the validation partition itself)."""
    rows = []
    partitions = [("validation", val_labels, val_probabilities)]
    if evaluated != "val":
        partitions.append((evaluated, test_labels, test_probabilities))
    for name, labels, probs in partitions:
        rows.append((name, expected_calibration_error(labels, probs),
                     expected_calibration_error(labels, apply_temperature(probs, temperature))))
    return pd.DataFrame(rows, columns=["partition", "ECE before", "ECE after"]).set_index("partition")


def write_summary(report_dir: str | Path, run: dict[str, Any], evaluation: Evaluation,
                  baseline: dict[str, Any] | None = None) -> Path:
    """The report's headline figures, overall and UAR per corpus, for `reports/index.html`.
    `baseline`: the baseline's figures, e.g. `headline_figures` of its predictions."""
    summary = {
        "run_id": Path(run["run_dir"]).name, "run_dir": run["run_dir"],
        "backbone": run["config"]["train"]["backbone"], "weights": run["weights"],
        "protocol": evaluation.protocol, "speaker_independent": evaluation.speaker_independent,
        "held_out_test": has_held_out_test(evaluation.protocol),
        "partition": evaluation.partition, "clips": int(len(evaluation.predictions)),
        **headline_figures(evaluation.overall, evaluation.per_corpus),
        "baseline": baseline,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    return write_json(Path(report_dir) / SUMMARY_FILE, summary)


def reference_baseline_probabilities(data: TrainingData, partition: str, config: Config) -> np.ndarray:
    """[clips, classes]: the reference baseline (`aed_tf.baseline`), trained on the training
    partition of `data`, on the clips of `partition`."""
    rate, train = config.frontend.sample_rate, data.partitions["train"]
    model = fit_reference_baseline(reference_feature_matrix(train.waveforms, rate), train.labels,
                                   seed=config.data.seed)
    features = reference_feature_matrix(data.partitions[partition].waveforms, rate)
    return predict_probabilities(model, features, len(data.classes))


def held_out_summary(run_dir: str | Path, data: TrainingData | None = None) -> dict[str, Any]:
    """UAR overall and per corpus of the run and of the reference baseline trained on the same
    training partition, on the test partition (the validation one where the protocol has no
    test), with the keys of summary.json. `data`: the run's `load_training_data`, loaded here
    when not given."""
    run = load_run(run_dir)
    config = Config.from_dict(run["config"])
    if data is None:
        data = load_training_data(config, progress=False)
    partition, _ = partition_to_evaluate(run, "test")
    evaluation = evaluate(run_dir, partition, data=data)
    probabilities = reference_baseline_probabilities(data, partition, config)
    baseline_predictions = evaluation.predictions.assign(predicted=probabilities.argmax(axis=1))
    return {
        "run_id": Path(run["run_dir"]).name, "backbone": run["config"]["train"]["backbone"],
        "protocol": evaluation.protocol, "held_out_test": has_held_out_test(evaluation.protocol),
        "partition": partition, "clips": int(len(evaluation.predictions)),
        **headline_figures(evaluation.overall, evaluation.per_corpus),
        "baseline": headline_figures(classification_metrics(evaluation.predictions["label"], probabilities),
                                     grouped_metrics(baseline_predictions, probabilities, ["corpus"])),
    }


def format_held_out(summary: Mapping[str, Any]) -> str:
    """The model's and the baseline's UAR, overall and per corpus, in a few lines for the terminal,
    from `held_out_summary` or a summary.json."""
    held_out = summary_has_held_out_test(summary)
    lines = [f"protocol {summary['protocol']}, {summary['partition']} partition ({summary['clips']} clips)"
             + ("" if held_out else ": no held-out test")]
    if not held_out:
        lines.append(NO_HELD_OUT_TEST.format(protocol=summary["protocol"]))
    rows = [(summary.get("backbone", "model"), summary)]
    if summary.get("baseline"):
        rows.append((f"baseline {BASELINE_NAME} (same training partition)", summary["baseline"]))
    for name, figures in rows:
        per_corpus = format_per_corpus(figures.get("uar_per_corpus"), digits=3)
        lines.append(f"  {name}: UAR {figures['uar']:.3f}" + (f" ({per_corpus})" if per_corpus else ""))
    return "\n".join(lines)
