"""Audio-native backbones: log-mel features [B, frames, n_mels] -> a clip embedding, trained from
scratch.

The Keras applications see a spectrogram as a photograph and need ImageNet to shine; on a CPU and
from scratch they are slow (ResNet50 at 75 px: 9 images/s here). A compact CNN over time and
frequency with attentive statistics pooling has far fewer parameters than this data can fit
(about 100k at 128 mels) and trains at hundreds of clips a second on two cores, so many settings
can be tried.

Attentive statistics pooling (Okabe et al., Interspeech 2018): a small attention network weights
each frame, and the clip is summarised by the weighted mean and standard deviation of the frame
features, so that short emotional peaks are not averaged away and variability (prosody) counts.

The convolution blocks see about half a second around each frame; an utterance's intonation
(a rising question, a falling sad phrase) spans seconds. ``audiotcn`` puts residual dilated
1-D convolutions over the frame embeddings (a temporal convolutional network, Bai et al. 2018)
between the blocks and the pooling, so that each frame embedding sees about 2.5 s. They run on
the pooled frames (a sixteenth of the input's), so they cost little; unlike a recurrent layer
they export with built-in ops and take any number of frames.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

# Channels of the four convolution blocks; each block halves time and frequency.
AUDIO_CNN_WIDTHS = (8, 16, 32, 64)
EMBEDDING_UNITS = 128
ATTENTION_UNITS = 64
# Dilations of audiotcn's temporal context blocks: kernel 3 each, so the frame embeddings' view
# grows by 2 * (1 + 2 + 4) = 14 pooled frames of 160 ms.
CONTEXT_DILATIONS = (1, 2, 4)


@keras.saving.register_keras_serializable(package="aed_tf")
class AttentiveStatisticsPooling(keras.layers.Layer):
    """[B, T, C] frames -> [B, 2C]: attention-weighted mean and standard deviation over time."""

    def __init__(self, units: int = ATTENTION_UNITS, **kwargs: Any):
        super().__init__(**kwargs)
        self.units = int(units)
        self.hidden = keras.layers.Dense(self.units, activation="tanh", name="attention_hidden")
        self.score = keras.layers.Dense(1, name="attention_score")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.score.build((*input_shape[:-1], self.units))
        super().build(input_shape)

    def call(self, frames):
        weights = tf.nn.softmax(self.score(self.hidden(frames)), axis=1)  # [B, T, 1]
        mean = tf.reduce_sum(weights * frames, axis=1)
        second_moment = tf.reduce_sum(weights * tf.square(frames), axis=1)
        std = tf.sqrt(tf.maximum(second_moment - tf.square(mean), 1e-6))
        return tf.concat([mean, std], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


def AudioCNN(
    n_mels: int,
    widths: tuple[int, ...] = AUDIO_CNN_WIDTHS,
    context_dilations: tuple[int, ...] = (),
    bn_momentum: float = 0.9,
    name: str = "audiocnn",
) -> keras.Model:
    """[B, frames, n_mels] -> [B, 2 * EMBEDDING_UNITS]: 3x3 convolution blocks (BatchNorm, ReLU,
    2x2 max pooling), the remaining frequency bins and channels of each frame projected to an
    embedding, a residual temporal context block per entry of ``context_dilations`` (none: the
    plain audiocnn), then attentive statistics pooling over time. Any number of frames."""
    features = keras.Input((None, n_mels), name="log_mel")
    x = keras.layers.Reshape((-1, n_mels, 1))(features)
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i + 1}")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPool2D(2, padding="same")(x)
    bins = -(-n_mels // 2 ** len(widths))
    x = keras.layers.Reshape((-1, bins * widths[-1]))(x)
    x = keras.layers.Dense(EMBEDDING_UNITS, activation="relu", name="frame_embedding")(x)
    for i, dilation in enumerate(context_dilations):
        y = keras.layers.Conv1D(
            EMBEDDING_UNITS, 3, dilation_rate=dilation, padding="same", use_bias=False, name=f"context{i + 1}"
        )(x)
        y = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"context_bn{i + 1}")(y)
        x = keras.layers.Add(name=f"context_residual{i + 1}")([x, keras.layers.ReLU()(y)])
    x = AttentiveStatisticsPooling(name="pooling")(x)
    return keras.Model(features, x, name=name)


def AudioTCN(n_mels: int, name: str = "audiotcn") -> keras.Model:
    """AudioCNN with temporal context blocks (dilations ``CONTEXT_DILATIONS``) before the pooling."""
    return AudioCNN(n_mels, context_dilations=CONTEXT_DILATIONS, name=name)
