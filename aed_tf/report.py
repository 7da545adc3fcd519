"""The figures and tables of the evaluation report, computed from a run directory and an
`Evaluation`; `notebooks/03_evaluate.ipynb` shows them. Also the headline file of each report
(`summary.json`) that `reports/index.html` lists."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from aed_tf.calibration import apply_temperature, expected_calibration_error
from aed_tf.evaluate import Evaluation
from aed_tf.files import write_json
from aed_tf.metrics import label_metrics
from aed_tf.train import CONFIG_FILE, HISTORY_FILE, METRICS_FILE

SUMMARY_FILE = "summary.json"
HEADLINE_METRICS = ("accuracy", "uar", "macro_f1")


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
                        test_probabilities: np.ndarray, temperature: float) -> pd.DataFrame:
    """Expected calibration error before and after temperature scaling, on validation (where the
    temperature was fitted) and on test."""
    rows = []
    for name, labels, probs in (("validation", val_labels, val_probabilities),
                                ("test", test_labels, test_probabilities)):
        rows.append((name, expected_calibration_error(labels, probs),
                     expected_calibration_error(labels, apply_temperature(probs, temperature))))
    return pd.DataFrame(rows, columns=["partition", "ECE before", "ECE after"]).set_index("partition")


def write_summary(report_dir: str | Path, run: dict[str, Any], evaluation: Evaluation,
                  baseline: dict[str, float] | None = None) -> Path:
    """The report's headline figures, for `reports/index.html`."""
    summary = {
        "run_id": Path(run["run_dir"]).name, "run_dir": run["run_dir"],
        "backbone": run["config"]["train"]["backbone"], "weights": run["weights"],
        "protocol": evaluation.protocol, "speaker_independent": evaluation.speaker_independent,
        "partition": evaluation.partition, "clips": int(len(evaluation.predictions)),
        **{name: evaluation.overall[name] for name in HEADLINE_METRICS},
        "baseline": baseline,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    return write_json(Path(report_dir) / SUMMARY_FILE, summary)
