"""What of serving needs TensorFlow: a run's Keras serving model, run on batches of windows, and
the front end's log-mel statistics of a speaker's reference recordings. `aed_tf.serving.recognizer`
imports this module only when it uses them, so a recognizer over an ONNX or TFLite export runs
without TensorFlow."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from aed_tf import quiet

quiet.import_quietly()  # before TensorFlow's first import: its C++ start-up lines are not ours

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# Imported for its registered Keras layers, which serving.keras is made of (aed_tf.model's come
# with load_model).
import aed_tf.backbones  # noqa: E402, F401
from aed_tf.config import FrontEndConfig  # noqa: E402
from aed_tf.errors import InputError, UserError  # noqa: E402
from aed_tf.features import band_statistics, log_mel, log_mel_sums  # noqa: E402
from aed_tf.model import build_serving_model, load_model, serving_parts  # noqa: E402
from aed_tf.runs import CONFIG_FILE, SERVING_FILE, Run  # noqa: E402
from aed_tf.serving.exported import Runner  # noqa: E402
from aed_tf.signature import STATISTICS_INPUT, WAVEFORM_INPUT  # noqa: E402


def load_serving_model(run: Run) -> keras.Model:
    """The run's serving.keras, checked against its config.json."""
    model = load_model(run.path / SERVING_FILE)
    _check_run_matches_model(run.path, model, run.classes, run.frontend)
    return model


class MeanOfClassifiers(keras.Model):
    """Classifiers of the same classes over the same features as one: each one's
    temperature-scaled probabilities, averaged (a seed ensemble: one setting, several seeds)."""

    def __init__(
        self, classifiers: Sequence[keras.Model], temperatures: Sequence[keras.layers.Layer], **kwargs
    ):
        super().__init__(**kwargs)
        self.classifiers, self.temperatures = list(classifiers), list(temperatures)
        self.built = True  # the members are; an export tracks the ensemble before any call

    def call(self, features, training=False):
        return keras.ops.mean(
            keras.ops.stack(
                [
                    scale(classifier(features, training=training))
                    for classifier, scale in zip(self.classifiers, self.temperatures)
                ]
            ),
            axis=0,
        )


def load_ensemble(runs: Sequence[Run]) -> keras.Model:
    """One serving model for `runs` (each checked as a run's is; `ensemble_runs` checked that
    they share the front end): the front end computed once, then every run's classifier and
    temperature, their probabilities averaged."""
    classifiers, temperatures = zip(*(serving_parts(load_serving_model(run)) for run in runs))
    return build_serving_model(MeanOfClassifiers(classifiers, temperatures), runs[0].frontend)


def batch_runner(model: keras.Model, window: int, frontend: FrontEndConfig) -> Runner:
    """(waves [B, window], statistics [2, n_mels] or None) -> probabilities [B, C], in one trace
    for every batch: the front end's XLA parts compile once per batch size (the recognizer pads
    batches to a power of two, so that there are few sizes)."""
    waves = tf.TensorSpec([None, window], tf.float32)
    if frontend.normalization != "speaker":
        infer = tf.function(
            lambda waves: model(waves, training=False), reduce_retracing=True, input_signature=[waves]
        )
        return lambda waves, statistics=None: infer(waves).numpy()
    n_mels = frontend.n_mels
    infer = tf.function(
        lambda waves, statistics: model(
            {
                WAVEFORM_INPUT: waves,
                STATISTICS_INPUT: tf.broadcast_to(statistics, [tf.shape(waves)[0], 2, n_mels]),
            },
            training=False,
        ),
        reduce_retracing=True,
        input_signature=[waves, tf.TensorSpec([2, n_mels], tf.float32)],
    )
    return lambda waves, statistics: infer(waves, statistics).numpy()


# A long reference's log-mel is taken this many frames at a time (10 s at a 10 ms hop): one input
# shape, so XLA compiles the front end once, not once per block length.
REFERENCE_PIECE_FRAMES = 1000


def speaker_statistics(
    recordings: Iterable[tuple[str, Iterable[np.ndarray]]], frontend: FrontEndConfig
) -> np.ndarray:
    """[2, n_mels]: the band means and deviation over every log-mel frame of `recordings`, as
    training computes them over a speaker's clips. Each recording is (its name, its samples in
    blocks: mono, at the front end's rate; a file's `AudioStream`, or an array as one block).
    Frames run every hop from each recording's first sample across its blocks, the frames of
    the whole recording, but only a block is held at a time: memory stays flat however long the
    references are. A recording without one whole frame raises InputError naming it."""
    window, hop = frontend.window_length, frontend.hop_length
    piece = (REFERENCE_PIECE_FRAMES - 1) * hop + window
    sums = np.zeros((3, 1, frontend.n_mels), np.float64)

    def add(samples: np.ndarray) -> int:
        """Adds the frames of `samples` (at least one window) to `sums`; how many."""
        log_mels = log_mel(samples[np.newaxis], frontend)[0]
        sums[...] += log_mel_sums(log_mels, np.zeros(len(log_mels), np.int64), 1)
        return len(log_mels)

    for name, blocks in recordings:
        pending, frames = np.zeros(0, np.float32), 0
        for block in blocks:
            pending = np.concatenate([pending, block])
            while len(pending) >= piece:
                frames += add(pending[:piece])
                pending = pending[REFERENCE_PIECE_FRAMES * hop :]
        if len(pending) >= window:  # the last frames, fewer than a piece
            frames += add(pending[: (len(pending) - window) // hop * hop + window])
        if not frames:
            raise InputError(f"{name}: too short to be a speaker reference (under one {window}-sample frame)")
    return band_statistics(sums)[0]


def _check_run_matches_model(
    run_dir: Path, model: keras.Model, classes: Sequence[str], frontend: FrontEndConfig
) -> None:
    """config.json describes the model in serving.keras: as many classes as it has outputs, and
    the front end it was saved with. An edited or mixed-up run folder would otherwise drop
    probabilities or change every answer without a word."""
    outputs = model.output_shape[-1]
    if len(classes) != outputs:
        raise UserError(
            f"{run_dir}: {CONFIG_FILE} names {len(classes)} classes, the model in "
            f"{SERVING_FILE} has {outputs} outputs"
        )
    saved = [layer.frontend for layer in model.layers if hasattr(layer, "frontend")]
    if saved and saved[0] != frontend:
        differ = {
            k: (v, getattr(saved[0], k))
            for k, v in dataclasses.asdict(frontend).items()
            if getattr(saved[0], k) != v
        }
        raise UserError(
            f"{run_dir}: the front end in {CONFIG_FILE} is not the one {SERVING_FILE} "
            f"was saved with (config.json, model): {differ}"
        )
