"""The emotion classifier and the serving model built around it.

classifier: log-mel features [B, frames, n_mels] (what the input pipeline yields) ->
``SpectrogramImage`` [B, S, S, 3] in [0, 255] -> backbone preprocess -> backbone (global average
pooling) -> dropout -> float32 softmax over the classes.

serving model: raw waveform [B, N] at the front end's sample rate -> centred crop or pad to the
clip length -> ``LogMelFrontEnd`` (the input pipeline's code) -> classifier -> temperature-scaled
probabilities. With per-speaker normalisation it takes a second input, the speaker's band means
and deviations [B, 2, n_mels] (`aed_tf.features.log_mel_statistics`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from aed_tf.backbones import BackbonePreprocess, build_backbone, get_backbone, resolve_image_size
from aed_tf.config import FrontEndConfig, TrainConfig
from aed_tf.errors import UserError
from aed_tf.features import LogMelFrontEnd, SpectrogramImage, fit_to_length
from aed_tf.signature import STATISTICS_INPUT, WAVEFORM_INPUT, centred_offset

BACKBONE_LAYER = "backbone"
EMOTION_OUTPUT, SPEAKER_OUTPUT = "emotion", "speaker"  # the layers; a training model's outputs
SPEAKER_HIDDEN_UNITS = 128
# From scratch, BatchNorm's moving statistics must follow fast-changing weights. MobileNetV3 ships
# with momentum 0.999: after the ~700 steps of a CPU run its statistics are half-way to the data's,
# and inference collapsed to one class (val UAR 1/7 at train accuracy 0.85, measured).
FROM_SCRATCH_BN_MOMENTUM = 0.9


def build_classifier(train: TrainConfig, num_classes: int, n_mels: int) -> keras.Model:
    """The trainable classifier of log-mel features (any number of frames)."""
    image_size = resolve_image_size(train.backbone, train.image_size)
    features = keras.Input((None, n_mels), name="log_mel")
    x = features
    if get_backbone(train.backbone).image:
        images = SpectrogramImage(image_size, name="image")(features)
        x = BackbonePreprocess(train.backbone)(images)
    backbone = build_backbone(
        train.backbone, image_size, None if train.from_scratch else train.weights, n_mels=n_mels
    )
    backbone.name = BACKBONE_LAYER
    if train.from_scratch:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = FROM_SCRATCH_BN_MOMENTUM
    # A pretrained backbone keeps BatchNorm in inference mode, also once unfrozen, so that
    # fine-tuning on small batches does not wreck the ImageNet statistics (the Keras transfer
    # learning guide). From scratch, BatchNorm must learn its statistics.
    x = backbone(x) if train.from_scratch else backbone(x, training=False)
    x = keras.layers.Dropout(train.dropout, name="dropout")(x)
    # float32 even under mixed precision: a float16 softmax loses small probabilities.
    probabilities = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name=EMOTION_OUTPUT
    )(x)
    return keras.Model(features, probabilities, name=f"aed_{train.backbone}")


@keras.saving.register_keras_serializable(package="aed_tf")
class GradientReversal(keras.layers.Layer):
    """Identity forward; the gradient flowing back through it is multiplied by ``-weight``.

    A speaker classifier behind it learns to name the speaker from the clip embedding while the
    layers before it learn to make that impossible (Ganin & Lempitsky 2015, domain-adversarial
    training, here with the speakers as the domains)."""

    def __init__(self, weight: float = 1.0, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs):
        weight = self.weight

        @tf.custom_gradient
        def reverse(x):
            return tf.identity(x), lambda upstream: -weight * upstream

        return reverse(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight": self.weight}


def with_speaker_adversary(classifier: keras.Model, num_speakers: int, weight: float) -> keras.Model:
    """The training model of a speaker-adversarial run: the classifier's emotion output and, on
    the same embedding (what the classifier's dropout receives) behind a `GradientReversal`, a
    softmax over the training speakers. It shares the classifier's layers; `emotion_classifier`
    takes the classifier back out, and serving never sees the speaker head."""
    embedding = classifier.get_layer("dropout").input
    x = GradientReversal(weight, name="speaker_gradient_reversal")(embedding)
    x = keras.layers.Dense(SPEAKER_HIDDEN_UNITS, activation="relu", name="speaker_hidden")(x)
    speakers = keras.layers.Dense(num_speakers, activation="softmax", dtype="float32", name=SPEAKER_OUTPUT)(x)
    return keras.Model(
        classifier.inputs,
        {EMOTION_OUTPUT: classifier.output, SPEAKER_OUTPUT: speakers},
        name=f"{classifier.name}_speaker_adversarial",
    )


def emotion_classifier(model: keras.Model) -> keras.Model:
    """The emotion classifier of a training model: ``model`` itself, or without its speaker head."""
    if not isinstance(model.output, dict):
        return model
    return keras.Model(
        model.inputs,
        model.get_layer(EMOTION_OUTPUT).output,
        name=model.name.removesuffix("_speaker_adversarial"),
    )


def set_backbone_trainable(classifier: keras.Model, share: float) -> None:
    """Freezes the backbone (share 0) or unfreezes the top ``share`` of its layers."""
    backbone = classifier.get_layer(BACKBONE_LAYER)
    if share <= 0:
        backbone.trainable = False
        return
    backbone.trainable = True
    layers = backbone.layers
    first_trainable = int(round(len(layers) * (1.0 - share)))
    # Every layer is set, so that an earlier, smaller share leaves nothing frozen behind.
    for index, layer in enumerate(layers):
        layer.trainable = index >= first_trainable


@keras.saving.register_keras_serializable(package="aed_tf")
class CentreCropOrPad(keras.layers.Layer):
    """[B, N] -> [B, length]: the centred window of longer clips, shorter ones centred in zeros,
    as the evaluation pipeline does."""

    def __init__(self, length: int, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.length = int(length)

    def call(self, waves):
        return fit_to_length(waves, self.length, centred_offset(tf.shape(waves)[1], self.length))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.length)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "length": self.length}


@keras.saving.register_keras_serializable(package="aed_tf")
class TemperatureScaling(keras.layers.Layer):
    """softmax(logits / T) computed from probabilities: p^(1/T), renormalised."""

    def __init__(self, temperature: float = 1.0, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature = {temperature}: must be > 0")
        self.temperature = float(temperature)

    def call(self, probabilities):
        log_p = tf.math.log(tf.maximum(tf.cast(probabilities, tf.float32), 1e-12))
        return tf.nn.softmax(log_p / self.temperature, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


def build_serving_model(
    classifier: keras.Model, frontend: FrontEndConfig, temperature: float = 1.0
) -> keras.Model:
    """Waveform [B, N] at ``frontend.sample_rate`` (and, normalising per speaker, the speaker's
    statistics [B, 2, n_mels]) -> class probabilities [B, C]."""
    waves = keras.Input((None,), name=WAVEFORM_INPUT, dtype="float32")
    clips = CentreCropOrPad(frontend.clip_samples, name="clip")(waves)
    if frontend.normalization == "speaker":
        statistics = keras.Input((2, frontend.n_mels), name=STATISTICS_INPUT, dtype="float32")
        inputs = {WAVEFORM_INPUT: waves, STATISTICS_INPUT: statistics}
        features = LogMelFrontEnd(frontend, name="log_mel")(clips, statistics)
    else:
        inputs, features = waves, LogMelFrontEnd(frontend, name="log_mel")(clips)
    probabilities = TemperatureScaling(temperature, name="temperature")(classifier(features))
    return keras.Model(inputs, probabilities, name="aed_serving")


def serving_parts(serving: keras.Model) -> tuple[keras.Model, TemperatureScaling]:
    """The classifier and the temperature layer of a model made by `build_serving_model` (an
    ensemble gives its members' to one shared front end)."""
    [classifier] = [layer for layer in serving.layers if isinstance(layer, keras.Model)]
    return classifier, serving.get_layer("temperature")


def load_model(path: str | Path) -> keras.Model:
    """A saved `.keras` model (Keras safe mode: no code is run from the file); a file that is
    missing, truncated or refused is a UserError naming it and why, not a Keras traceback (a
    truncated archive makes Keras say "File not found")."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable .keras archive (truncated or corrupt)")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: Keras could not load the model: {first}") from None
