"""The log-mel front end: the one feature implementation of training, evaluation and serving.

Waveforms become mel power spectrograms (`mel_power`), then log-mel features, are normalised per
clip and drawn as square RGB images for ImageNet backbones. Serving (`LogMelFrontEnd`), evaluation
and the training pipeline, which computes each clip's mel power once, all call these functions, so
a model sees the same features in training and on a user's file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aed_tf.config import FrontEndConfig

# Added to the mel power before the log: -13.8 is the floor of silence.
LOG_OFFSET = 1e-6
# Keeps the per-clip normalisation finite on constant (silent) clips.
NORMALIZE_EPSILON = 1e-6
# Frames converted to float64 at a time by `log_mel_statistics`.
STATISTICS_CHUNK_FRAMES = 1 << 16
# Normalised values in [-IMAGE_RANGE, IMAGE_RANGE] span the image's [0, 255].
IMAGE_RANGE = 3.0
# The mel product runs as this many products, one per group of adjacent bands (see _mel_blocks).
MEL_BAND_GROUPS = 4

_tracing = threading.local()  # .plain_ops: True inside `plain_ops()`, in this thread


def _xla(function: Callable[..., tf.Tensor]) -> Callable[..., tf.Tensor]:
    """`function` compiled by XLA, or traced as the plain TensorFlow ops of the same code inside
    `plain_ops()`."""
    compiled = tf.function(function, jit_compile=True, reduce_retracing=True, autograph=False)

    @functools.wraps(function)
    def call(*args: Any) -> tf.Tensor:
        return function(*args) if getattr(_tracing, "plain_ops", False) else compiled(*args)

    return call


@contextlib.contextmanager
def plain_ops() -> Iterator[None]:
    """Within it (in this thread), the front end's XLA-compiled steps trace as ordinary TensorFlow
    ops: for graphs that leave TensorFlow. tf2onnx cannot convert a call of an XLA-compiled
    function, and a SavedModel or TFLite model then needs no XLA where it runs. Same code, so the
    same features up to float rounding (XLA may fuse and reorder)."""
    before = getattr(_tracing, "plain_ops", False)
    _tracing.plain_ops = True
    try:
        yield
    finally:
        _tracing.plain_ops = before


@functools.lru_cache(maxsize=None)
def mel_matrix(frontend: FrontEndConfig) -> np.ndarray:
    """The [n_fft // 2 + 1, n_mels] triangular mel filter bank (HTK mel scale) of a front end."""
    with tf.init_scope():  # eager, also when first asked while a tf.function or tf.data map traces
        matrix = tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=frontend.n_mels,
            num_spectrogram_bins=frontend.n_fft // 2 + 1,
            sample_rate=frontend.sample_rate,
            lower_edge_hertz=frontend.fmin,
            upper_edge_hertz=frontend.fmax,
        ).numpy()
    matrix.setflags(write=False)  # shared by every caller through the cache
    return matrix


def mel_band_hertz(frontend: FrontEndConfig) -> np.ndarray:
    """[n_mels] centre frequency (Hz) of each band of `mel_matrix`: the bands' peaks lie equally
    spaced on the HTK mel scale between `fmin` and `fmax`, one spacing inside each edge."""
    edges = np.linspace(hertz_to_mel(frontend.fmin), hertz_to_mel(frontend.fmax), frontend.n_mels + 2)
    return 700.0 * np.expm1(edges[1:-1] / 1127.0)


def hertz_to_mel(hertz: Any) -> Any:
    """The HTK mel scale of `mel_matrix` (numpy or TensorFlow values)."""
    log1p = tf.math.log1p if tf.is_tensor(hertz) else np.log1p
    return 1127.0 * log1p(hertz / 700.0)


@functools.lru_cache(maxsize=None)
def _mel_blocks(frontend: FrontEndConfig) -> tuple[tuple[int, int, np.ndarray], ...]:
    """The mel matrix cut into (first_bin, end_bin, block) per group of adjacent bands: the rows
    [first_bin, end_bin) are the FFT bins the group's filters cover, all other rows are zeros.
    Each filter spans only a few bins, so the blocks' products give the full product's result at
    about a third of its cost."""
    matrix = mel_matrix(frontend)
    blocks = []
    for bands in np.array_split(np.arange(frontend.n_mels), MEL_BAND_GROUPS):
        bins = np.flatnonzero(matrix[:, bands].any(axis=1))
        first, end = (int(bins[0]), int(bins[-1]) + 1) if bins.size else (0, 1)
        blocks.append((first, end, matrix[first:end, bands]))
    return tuple(blocks)


def mel_power(waveforms: tf.Tensor, frontend: FrontEndConfig) -> tf.Tensor:
    """[B, N] float32 waveforms at `frontend.sample_rate` -> [B, frames, n_mels] mel power: the
    squared STFT magnitude through the mel filters, frames every hop from the first sample."""
    waveforms = tf.convert_to_tensor(waveforms, tf.float32)
    if waveforms.shape.rank != 2:
        raise ValueError(f"mel_power expects waveforms shaped [batch, samples], got {waveforms.shape}")
    samples = waveforms.shape[1]
    if samples is not None and samples < frontend.window_length:
        raise ValueError(
            f"waveforms of {samples} samples are shorter than one STFT window "
            f"({frontend.window_length} samples)"
        )
    stft = tf.signal.stft(
        waveforms,
        frame_length=frontend.window_length,
        frame_step=frontend.hop_length,
        fft_length=frontend.n_fft,
        window_fn=tf.signal.hann_window,
    )
    return _stft_to_mel_power(stft, _mel_blocks(frontend))


# XLA fuses the squared magnitude into the mel products, one pass over the STFT: less than half
# the time of separate ops on a CPU. It compiles once per input shape (~50 ms).
@_xla
def _stft_to_mel_power(stft: tf.Tensor, mel_blocks: tuple[tuple[int, int, np.ndarray], ...]) -> tf.Tensor:
    power = tf.math.square(tf.math.real(stft)) + tf.math.square(tf.math.imag(stft))
    return tf.concat(
        [tf.tensordot(power[..., first:end], block, axes=1) for first, end, block in mel_blocks],
        axis=-1,
    )


def log_power(power: tf.Tensor) -> tf.Tensor:
    """Mel power -> log-mel features; the offset keeps silence finite."""
    return tf.math.log(power + LOG_OFFSET)


def log_mel(waveforms: tf.Tensor, frontend: FrontEndConfig) -> tf.Tensor:
    """[B, N] float32 waveforms at `frontend.sample_rate` -> [B, frames, n_mels] log-mel power."""
    return log_power(mel_power(waveforms, frontend))


@functools.lru_cache(maxsize=None)
def white_noise_mel_power(frontend: FrontEndConfig) -> np.ndarray:
    """[n_mels] expected mel power per frame of white noise of unit variance.

    Every STFT bin of white noise of variance s2 has E|X[k]|^2 = s2 * sum_n w[n]^2 (w the Hann
    window), so band m expects s2 * sum_n w[n]^2 * sum_k M[k, m] (M the mel matrix).
    """
    with tf.init_scope():  # eager, also when first asked while a tf.function traces
        window = tf.signal.hann_window(frontend.window_length).numpy().astype(np.float64)
    expected = np.sum(window**2) * mel_matrix(frontend).sum(axis=0, dtype=np.float64)
    expected = expected.astype(np.float32)
    expected.setflags(write=False)  # shared by every caller through the cache
    return expected


def fit_to_length(waves: tf.Tensor, length: int, offset: tf.Tensor) -> tf.Tensor:
    """Clips [..., N] -> [..., length]: the window starting at `offset` of longer clips, or
    shorter ones placed `offset` samples into zeros; `offset` is in [0, |N - length|]
    (`aed_tf.signature.centred_offset` centres). The one crop-or-pad of training, evaluation and
    the serving model."""
    waves = tf.convert_to_tensor(waves)
    shortfall = tf.maximum(length - tf.shape(waves)[-1], 0)
    is_short = shortfall > 0
    before = tf.where(is_short, offset, 0)
    start = tf.where(is_short, 0, offset)
    unpadded = [[0, 0]] * (waves.shape.rank - 1)
    fitted = tf.pad(waves, [*unpadded, [before, shortfall - before]])[..., start : start + length]
    fitted.set_shape([*waves.shape[:-1], length])  # static only: EnsureShape is no TFLite builtin
    return fitted


def normalize_per_clip(features: tf.Tensor) -> tf.Tensor:
    """Each mel band's mean over the clip's frames removed, then the clip scaled to unit variance
    over its [frames, n_mels]; a constant (silent) clip becomes ~0, not NaN.

    Removing the band means (cepstral mean normalisation) takes out what stays constant over a
    clip, the microphone's and the speaker's spectral tilt, and keeps what changes. On the
    shared-si held-out speakers it raised test UAR from 0.549 to 0.594 over one clip-wide mean
    (mobilenetv3small from scratch, 96 px, 30 epochs; RAVDESS 0.43 -> 0.50, TESS 0.57 -> 0.61).
    """
    centred = features - tf.reduce_mean(features, axis=1, keepdims=True)
    variance = tf.reduce_mean(tf.math.square(centred), axis=[1, 2], keepdims=True)
    return centred * tf.math.rsqrt(variance + NORMALIZE_EPSILON)


def log_mel_statistics(log_mels: tf.Tensor, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """[num_groups, 2, n_mels] float32: the mean and standard deviation of each mel band over the
    frames of each group (a speaker: all their clips), from [frames, n_mels] log-mel frames and
    the group of each frame. Every frame counts once, so longer clips weigh more."""
    return band_statistics(log_mel_sums(log_mels, groups, num_groups))


def log_mel_sums(log_mels: tf.Tensor, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """[3, num_groups, n_mels] float64: the count, sum and sum of squares of each group's log-mel
    frames. Sums add up, so a long recording's can be gathered a piece at a time."""
    groups = np.asarray(groups)
    sums = np.zeros((3, num_groups, log_mels.shape[-1]), np.float64)
    for first in range(0, len(groups), STATISTICS_CHUNK_FRAMES):  # float64 a chunk at a time
        chunk = tf.cast(log_mels[first : first + STATISTICS_CHUNK_FRAMES], tf.float64)
        ids = groups[first : first + STATISTICS_CHUNK_FRAMES]
        for row, values in enumerate((tf.ones_like(chunk), chunk, tf.math.square(chunk))):
            sums[row] += tf.math.unsorted_segment_sum(values, ids, num_groups).numpy()
    return sums


def band_statistics(sums: np.ndarray) -> np.ndarray:
    """[groups, 2, n_mels] float32 band means and deviations from `log_mel_sums`."""
    count, total, squares = sums
    if not np.all(count > 0):
        raise ValueError(f"{int(np.sum(count[:, 0] == 0))} of {count.shape[0]} groups have no whole frame")
    mean = total / count
    deviation = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return np.stack([mean, deviation], axis=1).astype(np.float32)


def normalize_per_speaker(features: tf.Tensor, statistics: tf.Tensor) -> tf.Tensor:
    """[B, frames, n_mels] log-mel less the speaker's band means, scaled to the speaker's unit
    variance over all bands, from [B, 2, n_mels] band means and deviations (`log_mel_statistics`):
    `normalize_per_clip` with the statistics of the speaker's clips in place of the clip's.

    What stays constant over one clip but differs between a speaker's clips (loudness, spectral
    tilt: an angry and a sad take) survives, which `normalize_per_clip` removes; what is constant
    over a speaker (their vocal tract, the microphone) goes (Busso et al. 2011). One variance for
    every band, not one per band: resampling leaves the top band nearly constant (deviation 0.06
    against 3 in speech bands, measured on ASED), and dividing by it blew that band up 50-fold."""
    mean, deviation = statistics[:, :1, :], statistics[:, 1:, :]
    variance = tf.reduce_mean(tf.math.square(deviation), axis=2, keepdims=True)
    return (features - mean) * tf.math.rsqrt(variance + NORMALIZE_EPSILON)


def normalize(features: tf.Tensor, statistics: tf.Tensor | None) -> tf.Tensor:
    """Per-clip normalisation without statistics, per-speaker with them."""
    return normalize_per_clip(features) if statistics is None else normalize_per_speaker(features, statistics)


def to_image(features: tf.Tensor, image_size: int) -> tf.Tensor:
    """[B, frames, n_mels] normalised features -> [B, S, S, 3] float32 images in [0, 255].

    Frequency runs up the image (lowest band in the bottom row), time to the right. Values are
    mapped linearly from [-3, 3] to [0, 255] and clipped before the bilinear resize, on the
    smaller grid; interpolation keeps them in [0, 255]. The grey image is repeated into three
    channels also before the resize, which interleaves channels at almost no cost.
    """
    if image_size < 1:
        raise ValueError(f"image_size = {image_size}: must be >= 1")
    return tf.image.resize(_grey_rgb_grid(features), [image_size, image_size], method="bilinear")


@_xla
def _grey_rgb_grid(features: tf.Tensor) -> tf.Tensor:
    """[B, frames, n_mels] -> [B, n_mels, frames, 3] in [0, 255], the lowest band last.

    One XLA pass; as separate ops, the transpose and the channel repeat cost 3x as much."""
    grid = tf.transpose(tf.reverse(features, axis=[2]), [0, 2, 1])
    grid = tf.clip_by_value(grid * (127.5 / IMAGE_RANGE) + 127.5, 0.0, 255.0)
    # expand_dims, not [..., tf.newaxis]: TFLite has no builtin op for the strided slice that
    # adds an axis to a tensor of unknown frames.
    return tf.tile(tf.expand_dims(grid, -1), [1, 1, 1, 3])


def waveform_to_features(
    waveforms: tf.Tensor, frontend: FrontEndConfig, statistics: tf.Tensor | None = None
) -> tf.Tensor:
    """[B, N] waveforms -> [B, frames, n_mels] normalised log-mel: the model's input. With
    ``frontend.normalization == "speaker"``, `statistics` [B, 2, n_mels] are required."""
    if (statistics is None) != (frontend.normalization == "clip"):
        raise ValueError(
            f"normalization {frontend.normalization!r} "
            + ("needs the speaker's statistics" if statistics is None else "takes no statistics")
        )
    return normalize(log_mel(waveforms, frontend), statistics)


def waveform_to_image(waveforms: tf.Tensor, frontend: FrontEndConfig, image_size: int) -> tf.Tensor:
    """[B, N] waveforms -> [B, S, S, 3]: the image a backbone sees, for display and tests."""
    return to_image(waveform_to_features(waveforms, frontend), image_size)


@keras.saving.register_keras_serializable(package="aed_tf")
class LogMelFrontEnd(keras.layers.Layer):
    """Raw [B, N] waveforms at the front end's sample rate -> [B, frames, n_mels] features.

    The serving model's first layer: it runs `waveform_to_features`, the code of the input
    pipeline, and is saved with the front end's parameters.
    """

    def __init__(self, frontend: FrontEndConfig | dict[str, Any], **kwargs: Any):
        # float32 even under a mixed-precision policy: the STFT has no float16 kernel.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(frontend, FrontEndConfig):
            frontend = FrontEndConfig(**frontend)
        self.frontend = frontend

    def call(self, waveforms: tf.Tensor, statistics: tf.Tensor | None = None) -> tf.Tensor:
        return waveform_to_features(waveforms, self.frontend, statistics)

    def compute_output_shape(
        self, waveforms_shape: tuple[int | None, ...], statistics_shape: tuple[int | None, ...] | None = None
    ) -> tuple[int | None, ...]:
        samples = waveforms_shape[1]
        frames = (
            None
            if samples is None
            else 1 + (samples - self.frontend.window_length) // self.frontend.hop_length
        )
        return (waveforms_shape[0], frames, self.frontend.n_mels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "frontend": dataclasses.asdict(self.frontend)}


@keras.saving.register_keras_serializable(package="aed_tf")
class SpectrogramImage(keras.layers.Layer):
    """[B, frames, n_mels] features -> [B, S, S, 3] images in [0, 255] (`to_image`): the first
    layer of the classifier, so the resize runs where the model runs (on the GPU when there is
    one) rather than in the input pipeline."""

    def __init__(self, image_size: int, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if image_size < 1:
            raise ValueError(f"image_size = {image_size}: must be >= 1")
        self.image_size = int(image_size)

    def call(self, features: tf.Tensor) -> tf.Tensor:
        return to_image(features, self.image_size)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "image_size": self.image_size}
