"""The shared-si benchmark (``aed-tf bench train``): every backbone trained from scratch and tested
on the held-out speakers of the ``shared-si`` protocol, overall, per corpus and per class, with the
ensemble of every row and what the input pipeline costs a training step."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from aed_tf.bench import (
    bench_run_id,
    benchmark_environment,
    format_environment,
    read_result,
    table_head,
    write_result,
)
from aed_tf.config import Config
from aed_tf.evaluate import Evaluation, evaluate, grouped_metrics
from aed_tf.metrics import classification_metrics
from aed_tf.model import build_classifier
from aed_tf.partitions import load_training_data
from aed_tf.pipeline import train_dataset
from aed_tf.runs import CONFIG_FILE, FINISHED, HISTORY_FILE, Run
from aed_tf.splits import PROTOCOLS, SHARED_SI
from aed_tf.train import clip_weights, run_directory, train


def run_train_benchmark(
    config: Config,
    backbones: Sequence[str] | None,
    command: str,
    output: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """`bench_train` of `backbones` (default: every registered one), keeping the rows of the
    result already at `output` for other backbones; writes the result there and its
    `format_train_table` beside it (.md)."""
    if not backbones:
        from aed_tf.backbones import BACKBONES

        backbones = list(BACKBONES)
    result = bench_train(config, backbones, command, read_result(output), progress=progress)
    write_result(output, result, format_train_table(result))
    return result


def bench_train(
    config: Config,
    backbones: Sequence[str],
    command: str,
    previous: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains each backbone from scratch on the shared-si protocol (or reuses its finished run
    with the same settings, or resumes a killed one), tests it on the held-out speakers overall,
    per corpus and per class, and measures what the input pipeline costs a step.

    Rows of `previous` (an earlier result) for other backbones are kept, each with the command
    that made it, so the slow backbones can be run apart with settings of their own; the
    ensemble averages every row's test probabilities."""
    rows = {row["backbone"]: row for row in (previous or {}).get("results", [])}
    for name in backbones:
        run_config = config.replace(backbone=name, weights="none", protocol=SHARED_SI)
        run_config = run_config.replace(run_id=bench_run_id(run_config))
        run_dir = run_directory(run_config)
        status = Run.load(run_dir).status if (run_dir / CONFIG_FILE).is_file() else None
        if status != FINISHED:
            train(run_config.replace(resume=status is not None), progress=progress)
        rows[name] = {"backbone": name, **_bench_row(run_dir), "command": command}
    results = list(rows.values())
    evaluations = _test_evaluations([Path(row["run_dir"]) for row in results])
    for row, test in zip(results, evaluations):
        row.update(
            test=test.overall,
            test_per_corpus=test.per_corpus.set_index("corpus").to_dict(orient="index"),
            test_recall_per_class=recall_per_class(test.predictions, test.classes),
        )
    ensemble = None
    if len(evaluations) > 1:
        ensemble = {"backbones": [row["backbone"] for row in results], **ensemble_metrics(evaluations)}
    return {
        "protocol": SHARED_SI,
        "protocol_description": PROTOCOLS[SHARED_SI].description,
        "weights": "none: every backbone trained from scratch",
        "results": results,
        "ensemble": ensemble,
        "pipeline_cost": pipeline_cost(config.replace(backbone=backbones[0], protocol=SHARED_SI)),
        **benchmark_environment(),
    }


def _test_evaluations(run_dirs: Sequence[Path]) -> list[Evaluation]:
    """Each run on its test partition, the clips loaded once per data setting rather than once
    per run."""
    data_by_setting: dict[Any, Any] = {}
    evaluations = []
    for run_dir in run_dirs:
        config = Run.load(run_dir).config
        if config.data not in data_by_setting:
            data_by_setting[config.data] = load_training_data(config, progress=False)
        evaluations.append(evaluate(run_dir, "test", data=data_by_setting[config.data]))
    return evaluations


def _bench_row(run_dir: Path) -> dict[str, Any]:
    """What a finished run says of itself: settings, speed and validation metrics."""
    run = Run.load(run_dir)
    saved, metrics = run.record, run.metrics()
    return {
        "run_dir": str(run_dir),
        "image_size": saved["image_size"],
        "epochs": len(pd.read_csv(run_dir / HISTORY_FILE)),
        "train_seconds": metrics["epoch_seconds"],
        "train_images_per_second": metrics["train_images_per_second"],
        "val": metrics["val"],
        "git_commit": saved.get("git_commit", ""),
    }


def recall_per_class(predictions: pd.DataFrame, classes: Sequence[str]) -> dict[str, float]:
    """Where the errors are: the share of each class's clips that are recognised."""
    hits = predictions["label"] == predictions["predicted"]
    return {
        classes[label]: float(hits[predictions["label"] == label].mean())
        for label in sorted(predictions["label"].unique())
    }


def ensemble_metrics(evaluations: Sequence[Evaluation]) -> dict[str, Any]:
    """Metrics of the mean of several models' probabilities on the same clips (one of the
    issue's levers): overall, per corpus and recall per class."""
    first = evaluations[0]
    if any(not e.predictions["clip_id"].equals(first.predictions["clip_id"]) for e in evaluations):
        raise ValueError("an ensemble needs every model's predictions on the same clips, in order")
    mean = np.mean([e.probabilities for e in evaluations], axis=0)
    predictions = first.predictions.assign(predicted=mean.argmax(axis=1))
    return {
        "test": classification_metrics(predictions["label"], mean),
        "test_per_corpus": grouped_metrics(predictions, mean, ["corpus"])
        .set_index("corpus")
        .to_dict(orient="index"),
        "test_recall_per_class": recall_per_class(predictions, first.classes),
    }


def pipeline_cost(config: Config, steps: int = 30, rounds: int = 2) -> dict[str, float]:
    """Training images/s of one model fed by the real pipeline and fed one batch already in
    memory, alternated `rounds` times; the cost is the share of speed the pipeline takes."""
    data = load_training_data(config, progress=False)
    part = data.partitions["train"]
    weights = clip_weights(config.train.balance, part.manifest["corpus"], part.labels, len(data.classes))
    dataset = train_dataset(  # what training feeds: the clips' loss weights travel with them
        part.waveforms,
        part.labels,
        len(data.classes),
        config,
        seed=config.data.seed,
        speakers=part.speakers,
        clip_weights=weights,
    ).repeat()
    in_memory = tf.data.Dataset.from_tensors(next(iter(dataset))).repeat()
    model = build_classifier(config.replace(weights="none").train, len(data.classes), config.frontend.n_mels)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rates: dict[str, list[float]] = {"pipeline": [], "in_memory": []}
    for source in (dataset, in_memory):  # traces the step for both inputs before timing
        model.fit(source, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
    for _ in range(rounds):
        for name, source in (("pipeline", dataset), ("in_memory", in_memory)):
            start = time.perf_counter()
            model.fit(source, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
            rates[name].append(steps * config.train.batch_size / (time.perf_counter() - start))
    pipeline, memory = float(np.mean(rates["pipeline"])), float(np.mean(rates["in_memory"]))
    return {
        "pipeline_images_per_second": pipeline,
        "in_memory_images_per_second": memory,
        "cost": 1.0 - pipeline / memory,
    }


def format_train_table(result: dict[str, Any]) -> str:
    """The markdown table kept beside train.json: per corpus first, since the pooled figure is
    mostly the largest corpus's when the corpora differ in size."""
    first = result["results"][0]
    corpora = sorted(first["test_per_corpus"])
    clips = {c: int(first["test_per_corpus"][c]["clips"]) for c in corpora}
    largest = max(corpora, key=clips.get)
    lines = [
        f"# Accuracy on held-out speakers: protocol `{result['protocol']}`",
        "",
        result["protocol_description"],
        "",
        f"Weights: {result['weights']}.",
        "",
        f"Per corpus first: {clips[largest]:,} of the {sum(clips.values()):,} test clips are "
        f"{largest}'s, so the pooled figure is mostly {largest}'s. The cross-validation benchmark "
        "(`cv.md`) measures many more speakers, and the baselines on the same folds.",
        "",
        *table_head(
            "model",
            *(f"test UAR {c}" for c in corpora),
            "mean of the corpora",
            "pooled test UAR",
            "test acc",
            "test macro-F1",
            "val UAR",
            "images/s (train)",
            "training s",
        ),
    ]

    def corpus_cells(per_corpus: dict[str, Any]) -> str:
        uars = [per_corpus.get(c, {}).get("uar", float("nan")) for c in corpora]
        return " | ".join(f"{uar:.3f}" for uar in uars) + f" | {np.mean(uars):.3f}"

    for r in result["results"]:
        lines.append(
            f"| {r['backbone']} ({r['image_size']} px, {r['epochs']} epochs) | {corpus_cells(r['test_per_corpus'])} "
            f"| {r['test']['uar']:.3f} | {r['test']['accuracy']:.3f} | {r['test']['macro_f1']:.3f} "
            f"| {r['val']['uar']:.3f} | {r['train_images_per_second']:.0f} | {r['train_seconds']:.0f} |"
        )
    ensemble = result.get("ensemble")
    if ensemble:
        lines.append(
            f"| ensemble: mean probabilities of {', '.join(ensemble['backbones'])} "
            f"| {corpus_cells(ensemble['test_per_corpus'])} | {ensemble['test']['uar']:.3f} "
            f"| {ensemble['test']['accuracy']:.3f} | {ensemble['test']['macro_f1']:.3f} | | | |"
        )
    classes = list(first["test_recall_per_class"])
    lines += [
        "",
        "Test recall per class (where the errors are):",
        "",
        *table_head("model", *classes),
    ]
    for name, row in [(r["backbone"], r["test_recall_per_class"]) for r in result["results"]] + (
        [("ensemble", ensemble["test_recall_per_class"])] if ensemble else []
    ):
        lines.append(f"| {name} | " + " | ".join(f"{row.get(c, float('nan')):.2f}" for c in classes) + " |")
    lines += ["", "Commands:", ""]
    for command in dict.fromkeys(r["command"] for r in result["results"]):
        made = ", ".join(r["backbone"] for r in result["results"] if r["command"] == command)
        lines.append(f"- {made}: `{command}`")
    cost = result["pipeline_cost"]
    lines += [
        "",
        f"Input pipeline cost: {cost['cost']:.1%} of training speed "
        f"({cost['pipeline_images_per_second']:.0f} images/s from the pipeline, "
        f"{cost['in_memory_images_per_second']:.0f} from a batch in memory).",
        "",
        format_environment(result),
    ]
    return "\n".join(lines) + "\n"
