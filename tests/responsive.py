"""A run whose model gives each clip its own answer, for tests that compare answers.

The session's tiny run (MobileNetV3 at 32 px, two epochs) gives every input the same
probabilities to 1e-8, so a comparison of two routes to its answer would pass even if one of them
ignored the audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras

from aed_tf.config import FrontEndConfig
from aed_tf.features import SpectrogramImage
from aed_tf.model import build_serving_model
from aed_tf.runs import CONFIG_FILE, SERVING_FILE


def make_responsive_run(run_dir: Path, dest: Path, seed: int = 0) -> Path:
    """A copy of `run_dir` at `dest` whose serving model has the run's front end and a small
    convolutional classifier of random weights drawn with `seed` in place of the trained one."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("export"))
    config = json.loads((dest / CONFIG_FILE).read_text())
    frontend = FrontEndConfig(**config["frontend"])
    keras.utils.set_random_seed(seed)
    features = keras.Input((None, frontend.n_mels))
    x = SpectrogramImage(32)(features)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, activation="hard_swish")(x)
    # Flatten, not pooling, and large weights: random weights average out to nearly uniform
    # probabilities otherwise.
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(
        len(config["classes"]),
        activation="softmax",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.1),
    )
    classifier = keras.Model(features, dense(x))
    build_serving_model(classifier, frontend).save(dest / SERVING_FILE)
    return dest
