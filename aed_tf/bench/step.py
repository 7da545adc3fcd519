"""The training-step benchmark (``aed-tf bench step``): clips per second that one training step
(the input pipeline and the model's forward and backward pass) takes, for each value of one
`Config` field, measured in one run, and each value's ratio to the first.

This machine's speed drifts (the same 30-epoch training has taken 1,124 s and 1,813 s), so a
speed figure means something only beside another measured alongside: each value's model is
built and warmed up first, then the values take turns, a few steps each, for several rounds.
Each value's rate is the median of its rounds, and its ratio to the first value the median of
the rounds' ratios: within a round the values were measured a few seconds apart.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from aed_tf.bench import benchmark_environment, labelled_clips, write_result
from aed_tf.config import Config
from aed_tf.labels import class_names
from aed_tf.model import build_classifier
from aed_tf.pipeline import train_dataset


def bench_step(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    speakers: Sequence[str],
    config: Config,
    field: str,
    values: Sequence[str],
    rounds: int = 5,
    steps: int = 10,
) -> dict[str, Any]:
    """Training clips per second of `config` with `field` set to each of `values` (as a flag or
    notebook parameter takes them), `rounds` turns of `steps` steps each after one uncounted
    warm-up step, the values taking turns."""
    if len(values) < 1 or rounds < 1 or steps < 1:
        raise ValueError(f"values {list(values)}, rounds {rounds}, steps {steps}: need one or more of each")
    num_classes = len(class_names(config.data.calm))
    trainers = []
    for value in values:
        varied = config.replace(**{field: value})
        batches = iter(
            train_dataset(
                waveforms, labels, num_classes, varied, seed=varied.data.seed, speakers=speakers
            ).repeat()
        )
        model = build_classifier(varied.train, num_classes, varied.frontend.n_mels)
        model.compile(
            optimizer=keras.optimizers.AdamW(varied.train.learning_rate), loss="categorical_crossentropy"
        )
        model.train_on_batch(*next(batches))  # traces the step
        trainers.append((model, batches))
    rates: list[list[float]] = [[] for _ in values]
    for _ in range(rounds):
        for (model, batches), rate in zip(trainers, rates):
            clips, start = 0, time.perf_counter()
            for _ in range(steps):
                batch = next(batches)
                model.train_on_batch(*batch)
                clips += int(batch[0].shape[0])
            rate.append(clips / (time.perf_counter() - start))
    return {
        "field": field,
        "values": [str(v) for v in values],
        "clips_per_second": [statistics.median(rate) for rate in rates],
        "ratio_to_first": [statistics.median(np.divide(rate, rates[0]).tolist()) for rate in rates],
        "rounds": rates,
        "steps_per_round": steps,
        "settings": config.to_flat(),  # the field's value there is the config's, not varied
        **benchmark_environment(),
    }


def run_step_benchmark(
    config: Config, field: str, values: Sequence[str], clips: int, command: str, output: Path
) -> dict[str, Any]:
    """`bench_step` on `clips` clips spread over the prepared corpora (prepared first if need
    be), written to `output` with the `command` that made it."""
    for value in values:  # a bad field or value is refused before the corpora are read
        config.replace(**{field: value})
    chosen = labelled_clips(config, clips)
    result = bench_step(chosen.waveforms, chosen.labels, chosen.speakers, config, field, values)
    result = {**result, "clips_in_memory": len(chosen.labels), "command": command}
    write_result(output, result)
    return result
