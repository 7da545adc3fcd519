"""tf.data input pipelines from decoded waveforms in memory to batches of spectrogram images.

Training: shuffle -> per clip, random crop or zero pad to the clip length -> batch -> per batch
(vectorised): random gain, white noise, time shift -> log-mel -> per-clip normalisation ->
SpecAugment -> image -> optional mixup. Evaluation: centred crop or symmetric pad -> batch ->
image. Every step is a TensorFlow op, so no Python runs per batch. Random ops are stateless and
fed seeds from `tf.data.Dataset.random`, so a seed fixes every epoch of a run and epochs differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from aed_tf.config import AugmentConfig, Config, FrontEndConfig
from aed_tf.features import log_mel, normalize_per_clip, to_image, waveform_to_image

AUTOTUNE = tf.data.AUTOTUNE


def waveform_dataset(waveforms: Sequence[np.ndarray], labels: Sequence[int]) -> tf.data.Dataset:
    """Variable-length mono clips held as one ragged tensor -> (waveform [None], label) elements."""
    return tf.data.Dataset.from_tensor_slices(_clip_tensors(waveforms, labels))


def _clip_tensors(
    waveforms: Sequence[np.ndarray], labels: Sequence[int]
) -> tuple[tf.RaggedTensor, tf.Tensor]:
    """The clips as one ragged [clips, None] float32 tensor, and the labels as int32."""
    if len(waveforms) != len(labels):
        raise ValueError(f"{len(waveforms)} waveforms but {len(labels)} labels")
    if len(waveforms) == 0:
        raise ValueError("no waveforms: the dataset would be empty")
    arrays = [np.asarray(wave, dtype=np.float32) for wave in waveforms]
    for index, wave in enumerate(arrays):
        if wave.ndim != 1:
            raise ValueError(
                f"waveform {index} has shape {wave.shape}: expected mono, shaped (samples,)"
            )
    ragged = tf.RaggedTensor.from_row_lengths(
        np.concatenate(arrays), [wave.size for wave in arrays], validate=False
    )
    return ragged, tf.constant(labels, tf.int32)


def train_dataset(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    num_classes: int,
    config: Config,
    image_size: int,
    seed: int | None = None,
) -> tf.data.Dataset:
    """One shuffled, augmented epoch per iteration: (images [B, S, S, 3], one-hot labels [B, C]).

    With `config.augment.augment` off, clips are still shuffled and randomly cropped. The last
    partial batch is dropped. The same seed gives the same sequence of epochs.
    """
    _check_labels(labels, num_classes)
    batch_size = config.train.batch_size
    if len(waveforms) < batch_size:
        raise ValueError(
            f"{len(waveforms)} training clips make no full batch of {batch_size} (batch_size)"
        )
    frontend, augment = config.frontend, config.augment
    # Shuffling indices rather than waveform_dataset's clips keeps the shuffle buffer from
    # holding a second copy of every waveform and refilling it at each epoch's start.
    clips, clip_labels = _clip_tensors(waveforms, labels)
    # Independent seed streams for the clips and the batches, both fixed by `seed`.
    clip_seed = batch_seed = None
    if seed is not None:
        clip_seed, batch_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))

    def fit_clip(index: tf.Tensor, op_seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        wave, label = clips[index], clip_labels[index]
        excess = tf.abs(tf.shape(wave)[0] - frontend.clip_samples)
        offset = tf.random.stateless_uniform([], op_seed, 0, excess + 1, dtype=tf.int32)
        return fit_to_length(wave, frontend.clip_samples, offset), label

    def featurize(
        batch: tuple[tf.Tensor, tf.Tensor], op_seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        waves, classes = batch
        one_hot = tf.one_hot(classes, num_classes)
        if not augment.augment:
            return waveform_to_image(waves, frontend, image_size), one_hot
        return augmented_images(waves, one_hot, frontend, augment, image_size, op_seed)

    order = tf.data.Dataset.range(len(waveforms)).shuffle(
        len(waveforms), seed=clip_seed, reshuffle_each_iteration=True
    )
    fitted = tf.data.Dataset.zip(order, _seeds(clip_seed))
    fitted = fitted.map(fit_clip, num_parallel_calls=AUTOTUNE, deterministic=True)
    batches = fitted.batch(batch_size, drop_remainder=True)
    batches = tf.data.Dataset.zip(batches, _seeds(batch_seed))
    batches = batches.map(featurize, num_parallel_calls=AUTOTUNE, deterministic=True)
    return batches.prefetch(AUTOTUNE)


def eval_dataset(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    num_classes: int,
    config: Config,
    image_size: int,
) -> tf.data.Dataset:
    """Clips in order, centre-cropped or symmetrically zero-padded, not augmented; the last
    partial batch is kept."""
    _check_labels(labels, num_classes)
    frontend = config.frontend

    def fit_clip(wave: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        excess = tf.abs(tf.shape(wave)[0] - frontend.clip_samples)
        return fit_to_length(wave, frontend.clip_samples, excess // 2), label

    def featurize(waves: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return waveform_to_image(waves, frontend, image_size), tf.one_hot(classes, num_classes)

    clips = waveform_dataset(waveforms, labels)
    clips = clips.map(fit_clip, num_parallel_calls=AUTOTUNE, deterministic=True)
    batches = clips.batch(config.train.batch_size)
    batches = batches.map(featurize, num_parallel_calls=AUTOTUNE, deterministic=True)
    return batches.prefetch(AUTOTUNE)


def fit_to_length(wave: tf.Tensor, length: int, offset: tf.Tensor) -> tf.Tensor:
    """A clip of exactly `length` samples: the window starting at `offset` of a longer clip, or a
    shorter clip placed `offset` samples into zeros. `offset` is in [0, |len(wave) - length|]."""
    shortfall = tf.maximum(length - tf.shape(wave)[0], 0)
    is_short = shortfall > 0
    before = tf.where(is_short, offset, 0)
    start = tf.where(is_short, 0, offset)
    padded = tf.pad(wave, [[before, shortfall - before]])
    return tf.ensure_shape(padded[start : start + length], [length])


def augmented_images(
    waves: tf.Tensor,
    one_hot: tf.Tensor,
    frontend: FrontEndConfig,
    augment: AugmentConfig,
    image_size: int,
    seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The augmented training images of a batch of equal-length clips, and their (mixed) labels."""
    gain_seed, noise_seed, shift_seed, mask_seed, mixup_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 5)
    )
    waves = random_gain(waves, augment.gain_db, gain_seed)
    waves = add_white_noise(
        waves, augment.noise_probability, augment.snr_db_min, augment.snr_db_max, noise_seed
    )
    max_shift = int(round(augment.time_shift_ms * frontend.sample_rate / 1000))
    waves = random_time_shift(waves, max_shift, shift_seed)
    features = normalize_per_clip(log_mel(waves, frontend))
    features = spec_augment(
        features,
        augment.freq_masks,
        augment.freq_mask_width,
        augment.time_masks,
        augment.time_mask_width,
        mask_seed,
    )
    images = to_image(features, image_size)
    if augment.mixup_alpha > 0:
        images, one_hot = mixup(images, one_hot, augment.mixup_alpha, mixup_seed)
    return images, one_hot


def random_gain(waves: tf.Tensor, max_db: float, seed: tf.Tensor) -> tf.Tensor:
    """Scales each clip by a gain drawn uniformly from [-max_db, +max_db] dB."""
    gain_db = tf.random.stateless_uniform([tf.shape(waves)[0], 1], seed, -max_db, max_db)
    return waves * tf.pow(10.0, gain_db / 20.0)


def add_white_noise(
    waves: tf.Tensor, probability: float, snr_db_min: float, snr_db_max: float, seed: tf.Tensor
) -> tf.Tensor:
    """Adds white noise to each clip with `probability`, at an SNR drawn uniformly from
    [snr_db_min, snr_db_max] dB relative to the clip's own power (silent clips stay silent).

    Drawing the noise is the costliest step of the augmentation, so it is drawn only for the
    clips that get it, and uniformly distributed: as white as Gaussian noise (independent
    samples, flat spectrum) at a third of the cost.
    """
    pick_seed, snr_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    batch = tf.shape(waves)[0]
    noisy_rows = tf.where(tf.random.stateless_uniform([batch], pick_seed) < probability)
    noisy_waves = tf.gather_nd(waves, noisy_rows)
    snr_db = tf.random.stateless_uniform(
        [tf.shape(noisy_rows)[0], 1], snr_seed, snr_db_min, snr_db_max
    )
    signal_power = tf.reduce_mean(tf.math.square(noisy_waves), axis=1, keepdims=True)
    noise_power = signal_power * tf.pow(10.0, -snr_db / 10.0)
    # Uniform on [-a, a] has power a**2 / 3.
    noise = tf.math.sqrt(3.0 * noise_power) * tf.random.stateless_uniform(
        tf.shape(noisy_waves), noise_seed, -1.0, 1.0
    )
    return tf.tensor_scatter_nd_add(waves, noisy_rows, noise)


def random_time_shift(waves: tf.Tensor, max_shift: int, seed: tf.Tensor) -> tf.Tensor:
    """Shifts each clip by a whole number of samples drawn from [-max_shift, max_shift] (positive:
    later), filling with zeros; the length is kept."""
    batch, length = tf.shape(waves)[0], tf.shape(waves)[1]
    shift = tf.random.stateless_uniform([batch], seed, -max_shift, max_shift + 1, dtype=tf.int32)
    # A batched window read with zero fill: a [1, length] glimpse whose left edge is at -shift
    # (un-normalised, un-centred offsets are the window's corner, as the op's documented
    # example shows). It copies rows; tf.gather with one index per sample costs ~10x more.
    corners = tf.stack([tf.zeros([batch]), -tf.cast(shift, tf.float32)], axis=1)
    shifted = tf.image.extract_glimpse(
        waves[:, tf.newaxis, :, tf.newaxis],
        size=tf.stack([1, length]),
        offsets=corners,
        centered=False,
        normalized=False,
        noise="zero",
    )
    return tf.reshape(shifted, tf.shape(waves))


def spec_augment(
    features: tf.Tensor,
    freq_masks: int,
    freq_mask_width: int,
    time_masks: int,
    time_mask_width: int,
    seed: tf.Tensor,
) -> tf.Tensor:
    """SpecAugment on normalised [B, frames, n_mels] features: per clip, `freq_masks` bands of
    U{0..freq_mask_width} mel bins and `time_masks` spans of U{0..time_mask_width} frames are set
    to 0, the clip's mean."""
    freq_seed, time_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    batch, frames, bands = tf.unstack(tf.shape(features))
    if freq_masks > 0:
        masked = _random_spans(batch, bands, freq_masks, freq_mask_width, freq_seed)
        features *= tf.cast(~masked, features.dtype)[:, tf.newaxis, :]
    if time_masks > 0:
        masked = _random_spans(batch, frames, time_masks, time_mask_width, time_seed)
        features *= tf.cast(~masked, features.dtype)[:, :, tf.newaxis]
    return features


def _random_spans(
    batch: tf.Tensor, size: tf.Tensor, count: int, max_width: int, seed: tf.Tensor
) -> tf.Tensor:
    """[batch, size] bool: True inside any of `count` random spans of U{0..max_width} positions."""
    width_seed, start_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    max_width = tf.minimum(max_width, size)
    widths = tf.random.stateless_uniform(
        [batch, count, 1], width_seed, 0, max_width + 1, dtype=tf.int32
    )
    # A start in [0, size - width], so the whole span lies inside.
    room = tf.cast(size - widths + 1, tf.float32)
    starts = tf.cast(tf.random.stateless_uniform([batch, count, 1], start_seed) * room, tf.int32)
    positions = tf.range(size)
    inside = (positions >= starts) & (positions < starts + widths)
    return tf.reduce_any(inside, axis=1)


def mixup(
    images: tf.Tensor, one_hot: tf.Tensor, alpha: float, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixes each example with one of a shuffled copy of the batch, weights ~ Beta(alpha, alpha)."""
    gamma_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    images, one_hot = tf.convert_to_tensor(images), tf.convert_to_tensor(one_hot)
    batch = tf.shape(images)[0]
    gammas = tf.random.stateless_gamma([2, batch], gamma_seed, alpha=alpha)
    # Beta(a, a) = G1 / (G1 + G2); both gammas can underflow to 0 for small alpha.
    weight = tf.math.divide_no_nan(gammas[0], gammas[0] + gammas[1])
    partner = tf.argsort(tf.random.stateless_uniform([batch], order_seed))
    mixed_images = _mix(images, tf.gather(images, partner), weight)
    mixed_labels = _mix(one_hot, tf.gather(one_hot, partner), weight)
    return mixed_images, mixed_labels


def _mix(a: tf.Tensor, b: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    weight = tf.reshape(weight, [-1] + [1] * (a.shape.rank - 1))
    return weight * a + (1.0 - weight) * b


def _seeds(seed: int | None) -> tf.data.Dataset:
    """Endless [2] int64 seeds for stateless random ops, a new sequence every epoch."""
    return tf.data.Dataset.random(seed, rerandomize_each_iteration=True).batch(2)


def _check_labels(labels: Sequence[int], num_classes: int) -> None:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be class indices in [0, {num_classes}); "
            f"got {labels.min()}..{labels.max()}"
        )
