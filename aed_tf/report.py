"""The figures and tables of the evaluation report, computed from a run directory and an
`Evaluation`; `notebooks/03_evaluate.ipynb` shows them. Also the headline file of each report
(`summary.json`) that `reports/index.html` lists, and the held-out figures `aed-tf train` prints."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from aed_tf.baseline import cached_reference_matrix, fit_reference_baseline, predict_probabilities
from aed_tf.calibration import apply_temperature, expected_calibration_error
from aed_tf.config import Config
from aed_tf.evaluate import Evaluation, evaluate, grouped_metrics
from aed_tf.files import write_json
from aed_tf.metrics import classification_metrics, label_metrics
from aed_tf.partitions import TrainingData, load_training_data
from aed_tf.runs import FINISHED, HISTORY_FILE, Run
from aed_tf.splits import PROTOCOLS

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
    record = Run.load(run_dir)  # a UserError for a folder that is not a run
    if record.status != FINISHED:
        raise FileNotFoundError(
            f"{run_dir}: the run has not finished (status {record.status!r}); "
            "finish it with `aed-tf train --resume` and the same run id"
        )
    run = dict(record.record)
    run["metrics"] = record.metrics()
    run["history"] = pd.read_csv(record.path / HISTORY_FILE)
    run["run_dir"] = str(record.path)
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
    overall = pd.DataFrame(
        [
            {
                "clips": len(evaluation.predictions),
                **{name: evaluation.overall[name] for name in HEADLINE_METRICS},
            }
        ],
        index=["overall"],
    )
    per_corpus = evaluation.per_corpus.set_index("corpus")[["clips", *HEADLINE_METRICS]]
    return pd.concat([overall, per_corpus]).rename_axis("corpus")


def headline_figures(overall: Mapping[str, float], per_corpus: pd.DataFrame) -> dict[str, Any]:
    """Accuracy, UAR and macro-F1 of `overall`, and the UAR of each corpus of `per_corpus` (rows
    with columns corpus and uar): what summary.json and `aed-tf train` give of a model."""
    return {
        **{name: float(overall[name]) for name in HEADLINE_METRICS},
        "uar_per_corpus": {str(c): float(u) for c, u in zip(per_corpus["corpus"], per_corpus["uar"])},
    }


def format_per_corpus(uar_per_corpus: Mapping[str, float] | None, digits: int = 2) -> str:
    """UAR per corpus on one line, "ravdess 0.52 · tess 0.81"; empty where there are none (a
    summary.json older than the per-corpus figures)."""
    return " · ".join(f"{corpus} {uar:.{digits}f}" for corpus, uar in (uar_per_corpus or {}).items())


def run_card(run: dict[str, Any]) -> pd.DataFrame:
    """What produced the run, one row per item: model, weights, split protocol in words, data,
    hardware, versions, wall time."""
    config, split, metrics = run["config"], run["split"], run["metrics"]
    protocol = f"{split['protocol']}: " + (
        "speaker-independent, no speaker is in two partitions"
        if split["speaker_independent"]
        else "SPEAKER-DEPENDENT, the same speakers are in train and test"
    )
    best = metrics["best_epoch"]
    best = f"epoch {best['epoch']} of phase {best['phase']} (validation UAR {best['val_uar']:.3f})"
    rows = [
        ("run", Path(run["run_dir"]).name),
        # An audio-native backbone sees the log-mel itself: no image, no size.
        (
            "backbone",
            f"{config['train']['backbone']}" + (f" at {run['image_size']} px" if run["image_size"] else ""),
        ),
        ("weights", run["weights"]),
        ("split protocol", protocol),
        ("split", split["description"]),
        ("clips (train / val / test)", " / ".join(str(split["clips"][p]) for p in ("train", "val", "test"))),
        ("classes", ", ".join(run["classes"])),
        ("best epoch", best),
        (
            "training wall time",
            f"{metrics['epoch_seconds']:.0f} s over {len(run['history'])} epochs "
            f"({metrics['train_images_per_second']:.0f} training images/s)",
        ),
        ("temperature", f"{metrics['temperature']:.3f}" if "temperature" in metrics else "not fitted"),
        (
            "hardware",
            f"{run['hardware']['platform']}, {run['hardware']['cpus']} CPUs, "
            f"GPUs: {', '.join(run['hardware']['gpus']) or 'none'}",
        ),
        ("versions", ", ".join(f"{k} {v}" for k, v in run["versions"].items())),
        ("git commit", run.get("git_commit") or "unknown"),
        ("trained", run.get("written", "")),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


def parameters_table(run: dict[str, Any]) -> pd.DataFrame:
    """Every parameter of the run, by config section."""
    rows = [
        (section, name, value) for section, fields in run["config"].items() for name, value in fields.items()
    ]
    return pd.DataFrame(rows, columns=["section", "parameter", "value"]).set_index(["section", "parameter"])


def parameters_details(run: dict[str, Any]) -> str:
    """`parameters_table` as HTML folded in a <details> element: the end of a report, where it no
    longer pushes the figures screens down and is one click away."""
    table = parameters_table(run)
    return (
        f"<details><summary>All {len(table)} parameters of the run, by config section "
        f"(click to show)</summary>{table.to_html()}</details>"
    )


def corpus_overview(manifest: pd.DataFrame) -> pd.DataFrame:
    """Per corpus: clips, speakers, hours and the mean clip length."""
    table = manifest.groupby("corpus").agg(
        clips=("clip_id", "size"),
        speakers=("speaker", "nunique"),
        hours=("duration", lambda d: d.sum() / 3600),
        mean_seconds=("duration", "mean"),
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


def bootstrap_intervals(
    labels: Sequence[int],
    predicted: Sequence[int],
    num_classes: int,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
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
        [
            (name, point[name], np.percentile(draws[name], tail), np.percentile(draws[name], 100 - tail))
            for name in HEADLINE_METRICS
        ],
        columns=["metric", "value", "low", "high"],
    ).set_index("metric")


def per_class_table(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class."""
    precision, recall, f1, support = precision_recall_fscore_support(
        predictions["label"], predictions["predicted"], labels=np.arange(len(classes)), zero_division=0
    )
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "clips": support},
        index=pd.Index(classes, name="class"),
    )


def confusion(predictions: pd.DataFrame, classes: Sequence[str], normalize: bool = False) -> pd.DataFrame:
    """Confusion matrix, true class by row and predicted by column; `normalize` divides each row
    by its clips (a class with no clips keeps a row of zeros)."""
    matrix = confusion_matrix(predictions["label"], predictions["predicted"], labels=np.arange(len(classes)))
    table = pd.DataFrame(
        matrix, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted")
    )
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


def confused_clips(
    predictions: pd.DataFrame, classes: Sequence[str], true: str, predicted: str, count: int = 3
) -> pd.DataFrame:
    """The clips of class `true` predicted as `predicted`, the most confidently wrong first."""
    t, p = classes.index(true), classes.index(predicted)
    rows = predictions[(predictions["label"] == t) & (predictions["predicted"] == p)]
    return rows.sort_values(f"p_{predicted}", ascending=False).head(count)


def calibration_summary(
    val_labels: np.ndarray,
    val_probabilities: np.ndarray,
    test_labels: np.ndarray,
    test_probabilities: np.ndarray,
    temperature: float,
    evaluated: str = "test",
) -> pd.DataFrame:
    """Expected calibration error before and after temperature scaling, on validation (where the
    temperature was fitted) and on the evaluated partition (`evaluated`; one row when that is
    the validation partition itself)."""
    rows = []
    partitions = [("validation", val_labels, val_probabilities)]
    if evaluated != "val":
        partitions.append((evaluated, test_labels, test_probabilities))
    for name, labels, probs in partitions:
        rows.append(
            (
                name,
                expected_calibration_error(labels, probs),
                expected_calibration_error(labels, apply_temperature(probs, temperature)),
            )
        )
    return pd.DataFrame(rows, columns=["partition", "ECE before", "ECE after"]).set_index("partition")


def write_summary(
    report_dir: str | Path,
    run: dict[str, Any],
    evaluation: Evaluation,
    baseline: dict[str, Any] | None = None,
) -> Path:
    """The report's headline figures, overall and UAR per corpus, for `reports/index.html`.
    `baseline`: the baseline's figures, e.g. `headline_figures` of its predictions."""
    summary = {
        "run_id": Path(run["run_dir"]).name,
        "run_dir": run["run_dir"],
        "backbone": run["config"]["train"]["backbone"],
        "weights": run["weights"],
        "protocol": evaluation.protocol,
        "speaker_independent": evaluation.speaker_independent,
        "held_out_test": has_held_out_test(evaluation.protocol),
        "partition": evaluation.partition,
        "clips": int(len(evaluation.predictions)),
        **headline_figures(evaluation.overall, evaluation.per_corpus),
        "baseline": baseline,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    return write_json(Path(report_dir) / SUMMARY_FILE, summary)


def reference_baseline_probabilities(data: TrainingData, partition: str, config: Config) -> np.ndarray:
    """[clips, classes]: the reference baseline (`aed_tf.baseline`), trained on the training
    partition of `data`, on the clips of `partition`."""
    rate, cache, train = config.frontend.sample_rate, config.data.cache_dir, data.partitions["train"]
    model = fit_reference_baseline(
        cached_reference_matrix(train.waveforms, rate, cache), train.labels, seed=config.data.seed
    )
    features = cached_reference_matrix(data.partitions[partition].waveforms, rate, cache)
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
        "run_id": Path(run["run_dir"]).name,
        "backbone": run["config"]["train"]["backbone"],
        "protocol": evaluation.protocol,
        "held_out_test": has_held_out_test(evaluation.protocol),
        "partition": partition,
        "clips": int(len(evaluation.predictions)),
        **headline_figures(evaluation.overall, evaluation.per_corpus),
        "baseline": headline_figures(
            classification_metrics(evaluation.predictions["label"], probabilities),
            grouped_metrics(baseline_predictions, probabilities, ["corpus"]),
        ),
    }


def format_held_out(summary: Mapping[str, Any]) -> str:
    """The model's and the baseline's UAR, overall and per corpus, in a few lines for the terminal,
    from `held_out_summary` or a summary.json."""
    held_out = summary_has_held_out_test(summary)
    lines = [
        f"protocol {summary['protocol']}, {summary['partition']} partition ({summary['clips']} clips)"
        + ("" if held_out else ": no held-out test")
    ]
    if not held_out:
        lines.append(NO_HELD_OUT_TEST.format(protocol=summary["protocol"]))
    rows = [(summary.get("backbone", "model"), summary)]
    if summary.get("baseline"):
        rows.append((f"baseline {BASELINE_NAME} (same training partition)", summary["baseline"]))
    for name, figures in rows:
        per_corpus = format_per_corpus(figures.get("uar_per_corpus"), digits=3)
        lines.append(f"  {name}: UAR {figures['uar']:.3f}" + (f" ({per_corpus})" if per_corpus else ""))
    return "\n".join(lines)


# -- the headline block: what a reader of the evaluation report sees first --------------------

# Below these, the report says plainly that its figures are weak.
FEW_VALIDATION_SPEAKERS = 4  # fewer validation speakers than this choose the epoch and temperature
LOW_CLASS_RECALL = 0.2
DOMINANT_SPEAKER_SHARE = 0.5  # one speaker holding more than this share of the evaluated clips


def intervals_per_corpus(
    predictions: pd.DataFrame, num_classes: int, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """`bootstrap_intervals` over all clips (corpus "overall") and within each corpus: index
    (corpus, metric), columns clips, value, low and high."""
    groups = [("overall", predictions), *predictions.groupby("corpus")]
    tables = {
        corpus: bootstrap_intervals(
            rows["label"], rows["predicted"], num_classes, resamples, level, seed
        ).assign(clips=len(rows))
        for corpus, rows in groups
    }
    return pd.concat(tables, names=["corpus"])[["clips", "value", "low", "high"]]


def speakers_of(clips: pd.DataFrame) -> list[str]:
    """The distinct speakers of `clips` (rows with corpus and speaker), as "corpus speaker": speaker
    ids repeat across corpora."""
    pairs = clips[["corpus", "speaker"]].drop_duplicates().sort_values(["corpus", "speaker"])
    return [f"{corpus} {speaker}" for corpus, speaker in pairs.itertuples(index=False, name=None)]


def protocol_sentence(evaluation: Evaluation, validation_clips: pd.DataFrame) -> str:
    """The protocol of `evaluation` in one sentence: whose clips were evaluated, whether they were
    heard in training, and what chose the epoch. `validation_clips`: the validation partition's
    manifest (or predictions)."""
    clips, partition = len(evaluation.predictions), evaluation.partition
    speakers = len(speakers_of(evaluation.predictions))
    if not has_held_out_test(evaluation.protocol) and partition == "val":
        return (
            f"Split protocol {evaluation.protocol}, no held-out test: the {clips} clips are those of the "
            f"{speakers} validation speakers, which chose the epoch; every other speaker was "
            "used in training."
        )
    if not evaluation.speaker_independent:
        return (
            f"Split protocol {evaluation.protocol}, SPEAKER-DEPENDENT: the {speakers} speakers of the "
            f"{clips} {partition} clips were also heard in training, so the figures overstate "
            "what new voices get."
        )
    chose = (
        ", who also chose the epoch"
        if partition == "val"
        else f"; the epoch was chosen on {len(speakers_of(validation_clips))} other (validation) speakers"
    )
    return (
        f"Split protocol {evaluation.protocol}: the {clips} {partition} clips come "
        f"from {speakers} speakers never heard in training{chose}, and the baseline was trained "
        "on the same training clips."
    )


def normalization_sentence(evaluation: Evaluation) -> str:
    """Where a per-speaker run's statistics came from, in a sentence; "" for a clip-normalised run."""
    if evaluation.normalization != "speaker":
        return ""
    if evaluation.speaker_statistics == "training":
        return (
            "Normalised per speaker with the training clips' statistics, as a lone clip of an "
            "unknown speaker is."
        )
    return (
        f"Normalised per speaker: each {evaluation.partition} speaker's features are standardised "
        f"with the statistics of their own {evaluation.partition} clips (emotions unused), as "
        "EmotionRecognizer.for_speaker does with a speaker's recordings; a lone clip of an unknown "
        "speaker gets the training clips' statistics instead, which aed-tf bench cv measures apart "
        "(each clip alone)."
    ) + (
        f" Fused with the run's eGeMAPS head (its margins weighted {evaluation.fusion_weight:.2f} against "
        "the temperature-scaled log-probabilities: the setting's --fusion-weight over the "
        "temperature), each speaker's functionals standardised over the same clips, as "
        "EmotionRecognizer.for_speaker fuses them; a lone clip gets the model alone."
        if evaluation.fused
        else ""
    )


def weak_figure_warnings(
    predictions: pd.DataFrame, classes: Sequence[str], validation_clips: pd.DataFrame, partition: str = "test"
) -> list[str]:
    """Why the figures of `predictions` (the `partition` evaluated) may mislead, one plain
    sentence each: few validation speakers, a class the model almost never recognises, one
    speaker holding most of the clips. Empty when none applies."""
    warnings = (
        few_validation_speakers(validation_clips),
        classes_rarely_recognised(predictions, classes),
        dominant_speaker(predictions, partition),
    )
    return [warning for warning in warnings if warning]


def few_validation_speakers(validation_clips: pd.DataFrame) -> str | None:
    speakers = speakers_of(validation_clips)
    if len(speakers) >= FEW_VALIDATION_SPEAKERS:
        return None
    return (
        f"The validation set has only {len(speakers)} speaker(s) ({', '.join(speakers)}): the epoch "
        "and the temperature were chosen on so few voices that they may suit them more than new ones."
    )


def classes_rarely_recognised(predictions: pd.DataFrame, classes: Sequence[str]) -> str | None:
    """The classes with clips whose recall is below LOW_CLASS_RECALL (a class with no clips has no
    recall to speak of)."""
    per_class = per_class_table(predictions, classes)
    low = per_class[(per_class["clips"] > 0) & (per_class["recall"] < LOW_CLASS_RECALL)]
    if low.empty:
        return None
    hits = (low["recall"] * low["clips"]).round().astype(int)
    listed = ", ".join(
        f"{name} {low.loc[name, 'recall']:.2f} ({hits[name]} of {low.loc[name, 'clips']} clips)"
        for name in low.index
    )
    return (
        f"Recall below {LOW_CLASS_RECALL} for {listed}: the model almost never recognises these "
        "classes, which the averages hide."
    )


def dominant_speaker(predictions: pd.DataFrame, partition: str = "test") -> str | None:
    """The speaker with the most clips, where they hold over DOMINANT_SPEAKER_SHARE of them."""
    counts = predictions.groupby(["corpus", "speaker"]).size().sort_values(ascending=False, kind="stable")
    (corpus, speaker), most = counts.index[0], int(counts.iloc[0])
    if most / len(predictions) <= DOMINANT_SPEAKER_SHARE:
        return None
    return (
        f"One speaker, {corpus} {speaker}, has {most / len(predictions):.0%} of the {partition} clips "
        f"({most} of {len(predictions)}): the figures say more about that voice than about speakers "
        "in general."
    )


def _figure(intervals: pd.DataFrame, corpus: str, metric: str) -> str:
    """One figure of `intervals_per_corpus` with its interval, as HTML; empty where absent."""
    if (corpus, metric) not in intervals.index:
        return ""
    row = intervals.loc[(corpus, metric)]
    return f'{row["value"]:.3f} <span class="aed-ci">[{row["low"]:.2f}, {row["high"]:.2f}]</span>'


def _uar_difference(model: pd.DataFrame, baseline: pd.DataFrame, corpus: str) -> str:
    if (corpus, "uar") not in baseline.index:
        return ""
    return f"{model.loc[(corpus, 'uar'), 'value'] - baseline.loc[(corpus, 'uar'), 'value']:+.3f}"


def headline_table_html(model: pd.DataFrame, baseline: pd.DataFrame, model_name: str) -> str:
    """UAR, accuracy and macro-F1 with their intervals, overall then per corpus (rows), of the
    model and beside them of the baseline, and the model's UAR minus the baseline's.
    `model`, `baseline`: `intervals_per_corpus` of each."""
    metrics = (("uar", "UAR"), ("accuracy", "accuracy"), ("macro_f1", "macro-F1"))
    groups = "".join(
        f'<th colspan="{len(metrics)}" class="aed-group">{html.escape(name)}</th>'
        for name in (model_name, f"baseline {BASELINE_NAME}")
    )
    names = "".join(f"<th>{label}</th>" for _, label in metrics) * 2
    head = (
        f'<tr><th rowspan="2">corpus</th><th rowspan="2">clips</th>{groups}'
        f'<th rowspan="2">UAR minus<br>baseline</th></tr><tr>{names}</tr>'
    )
    rows = []
    for corpus in model.index.unique("corpus"):
        cells = [_figure(table, corpus, metric) for table in (model, baseline) for metric, _ in metrics]
        marked = ' class="aed-overall"' if corpus == "overall" else ""
        rows.append(
            f"<tr{marked}>"
            f"<th>{html.escape(str(corpus))}</th><td>{int(model.loc[(corpus, 'uar'), 'clips'])}</td>"
            + "".join(f"<td>{cell}</td>" for cell in cells)
            + f"<td>{_uar_difference(model, baseline, corpus)}</td></tr>"
        )
    return f'<table class="aed-figures"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


# Scoped to the block, so that the notebook's own tables keep their look.
_HEADLINE_STYLE = """<style>
.aed-headline{border:1px solid #ccd;border-radius:6px;padding:12px 16px;margin:4px 0 16px;max-width:1100px}
.aed-headline .aed-answer{font-size:1.35em;margin:0 0 8px}
.aed-headline .aed-protocol{margin:0 0 8px}
.aed-headline .aed-warnings{background:#fff4e0;border-left:4px solid #d98200;padding:6px 12px;margin:8px 0}
.aed-headline .aed-warnings ul{margin:4px 0;padding-left:1.2em}
.aed-headline .aed-fine{color:#2b6a2b;margin:8px 0}
.aed-headline table.aed-figures{border-collapse:collapse;margin:8px 0 4px}
.aed-headline table.aed-figures th,.aed-headline table.aed-figures td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
.aed-headline table.aed-figures th.aed-group{text-align:center;background:#f2f2f6}
.aed-headline tr.aed-overall{font-weight:bold;background:#f7f7fb}
.aed-headline .aed-ci{color:#666;font-weight:normal;font-size:.9em}
.aed-headline .aed-caption{color:#555;font-size:.9em;margin:0}
</style>"""


def headline_block(
    run: dict[str, Any],
    evaluation: Evaluation,
    baseline_predictions: pd.DataFrame,
    validation_clips: pd.DataFrame,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> str:
    """The top of the evaluation report, as HTML: the answer in one line (the model's UAR with its
    interval, the baseline's beside it), the protocol in one sentence, the warnings of
    `weak_figure_warnings`, and UAR, accuracy and macro-F1 with intervals overall and per corpus
    for the model and the baseline. `baseline_predictions`: the evaluated clips with the
    baseline's "predicted"; `validation_clips`: the validation partition's manifest."""
    classes = list(evaluation.classes)
    model = intervals_per_corpus(evaluation.predictions, len(classes), resamples, level, seed)
    baseline = intervals_per_corpus(baseline_predictions, len(classes), resamples, level, seed)
    name = run["config"]["train"]["backbone"]
    partition, clips = evaluation.partition, len(evaluation.predictions)
    corpora = sorted(evaluation.predictions["corpus"].unique())
    if len(corpora) > 1:
        # The mean over corpora leads: pooled, the largest corpus (or one speaker) would decide it.
        def per_corpus(intervals: pd.DataFrame) -> str:
            mean = np.mean([intervals.loc[(c, "uar"), "value"] for c in corpora])
            parts = ", ".join(f"{html.escape(c)} {intervals.loc[(c, 'uar'), 'value']:.3f}" for c in corpora)
            return f"{mean:.3f} ({parts})"

        answer = (
            f'<p class="aed-answer"><b>UAR, mean over corpora {per_corpus(model)}</b> for '
            f"{html.escape(name)} on the {clips} {partition} clips of run "
            f"<code>{html.escape(Path(run['run_dir']).name)}</code>; baseline "
            f"{html.escape(BASELINE_NAME)}: {per_corpus(baseline)}. Pooled over all clips: "
            f"{_figure(model, 'overall', 'uar')} against {_figure(baseline, 'overall', 'uar')}.</p>"
        )
    else:
        answer = (
            f'<p class="aed-answer"><b>UAR {_figure(model, "overall", "uar")}</b> for {html.escape(name)} '
            f"on the {clips} {partition} clips of run <code>{html.escape(Path(run['run_dir']).name)}</code>; "
            f"baseline {html.escape(BASELINE_NAME)}: {_figure(baseline, 'overall', 'uar')}.</p>"
        )
    warnings = weak_figure_warnings(evaluation.predictions, classes, validation_clips, partition)
    if not has_held_out_test(evaluation.protocol) and partition == "val":
        warnings.insert(0, NO_HELD_OUT_TEST.format(protocol=evaluation.protocol))
    if warnings:
        checks = (
            '<div class="aed-warnings"><b>Weak figures</b><ul>'
            + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
            + "</ul></div>"
        )
    else:
        checks = (
            f'<p class="aed-fine">No warning: at least {FEW_VALIDATION_SPEAKERS} validation speakers, '
            f"every class recalled at {LOW_CLASS_RECALL} or more, no speaker holds over "
            f"{DOMINANT_SPEAKER_SHARE:.0%} of the clips.</p>"
        )
    caption = (
        f'<p class="aed-caption">Brackets: {level:.0%} bootstrap interval over the clips of each row '
        f"({resamples} resamples, seed {seed}). UAR: unweighted average recall, the mean recall "
        "of the classes present.</p>"
    )
    normalized = normalization_sentence(evaluation)
    normalization = f'<p class="aed-protocol">{html.escape(normalized)}</p>' if normalized else ""
    return (
        f'{_HEADLINE_STYLE}<div class="aed-headline">{answer}'
        f'<p class="aed-protocol">{html.escape(protocol_sentence(evaluation, validation_clips))}</p>'
        f"{normalization}{checks}{headline_table_html(model, baseline, name)}{caption}</div>"
    )
