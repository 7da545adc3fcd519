"""tf.data input pipelines from decoded waveforms in memory to batches of log-mel features.

Training computes each clip's mel power once, when the dataset is made (`clip_mel_powers`), and
works in the power domain from then on, a batch at a time: shuffle -> a random frame-aligned crop,
placement and time shift of each clip (`crop_frames`) -> random gain -> white noise -> log ->
normalisation per clip or per speaker -> optional frequency warp -> SpecAugment -> optional
mixup. Evaluation is the serving path:
centred crop or symmetric pad of the waveform -> batch -> `waveform_to_features`. The model's
first layer (`SpectrogramImage`) draws the backbone's image from the features. Every step is a
TensorFlow op, so no Python runs per batch. Random ops are stateless and fed seeds from
`tf.data.Dataset.random`, so a seed fixes every epoch of a run and epochs differ.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from aed_tf.config import AugmentConfig, Config, FrontEndConfig
from aed_tf.features import (
    fit_to_length,
    hertz_to_mel,
    log_mel_statistics,
    log_power,
    mel_band_hertz,
    mel_power,
    normalize,
    waveform_to_features,
    white_noise_mel_power,
)
from aed_tf.signature import centred_offset

AUTOTUNE = tf.data.AUTOTUNE
# A training set's mel power is computed in pieces of this many frames, this many at a time.
PRECOMPUTE_PIECE_FRAMES = 256
PRECOMPUTE_PIECES = 32
# The white-noise bank: its length beyond one clip window in frames (the number of distinct
# crops), and the fixed seed it is drawn from.
NOISE_BANK_OFFSETS = 4096
NOISE_BANK_SEED = 0


def waveform_dataset(waveforms: Sequence[np.ndarray], labels: Sequence[int]) -> tf.data.Dataset:
    """Variable-length mono clips held as one ragged tensor -> (waveform [None], label) elements."""
    arrays = _mono_arrays(waveforms, labels)
    ragged = tf.RaggedTensor.from_row_lengths(
        np.concatenate(arrays), [wave.size for wave in arrays], validate=False
    )
    return tf.data.Dataset.from_tensor_slices((ragged, tf.constant(labels, tf.int32)))


def _mono_arrays(waveforms: Sequence[np.ndarray], labels: Sequence[int]) -> list[np.ndarray]:
    """The clips as float32 arrays, checked to be mono, non-empty and one per label."""
    if len(waveforms) != len(labels):
        raise ValueError(f"{len(waveforms)} waveforms but {len(labels)} labels")
    if len(waveforms) == 0:
        raise ValueError("no waveforms: the dataset would be empty")
    arrays = [np.asarray(wave, dtype=np.float32) for wave in waveforms]
    for index, wave in enumerate(arrays):
        if wave.ndim != 1:
            raise ValueError(f"waveform {index} has shape {wave.shape}: expected mono, shaped (samples,)")
        if wave.size == 0:
            raise ValueError(f"waveform {index} is empty")
    return arrays


def train_dataset(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    num_classes: int,
    config: Config,
    seed: int | None = None,
    speakers: Sequence[str] | None = None,
    epoch: tf.Variable | None = None,
    speaker_targets: bool = False,
    clip_weights: Sequence[float] | None = None,
) -> tf.data.Dataset:
    """One shuffled, augmented epoch per iteration: (features [B, frames, n_mels], one-hot labels
    [B, C]); with `speaker_targets`, the labels are ``{"emotion": [B, C], "speaker": [B, S]}``,
    S the number of distinct `speakers` (for a speaker-adversarial model; mixup mixes both alike).
    With `clip_weights` (one per clip), each example's weight [B] follows as a third element, the
    sample weight of its loss; mixup mixes a pair's weights as it mixes their labels.

    An epoch's clip order and augmentation are a function of the seed and the epoch's number
    alone, never of what this process iterated before, so a resumed run sees the epochs an
    uninterrupted one sees. The number is read from `epoch` (an int64 variable) when an
    iteration starts, and the variable is then advanced by one; a trainer sets it at each epoch's
    start (`aed_tf.train`), and without one the epochs count from 0.

    With per-speaker normalisation, `speakers` names each clip's speaker; a speaker's statistics
    are over their clips at each playback speed apart (a faster voice is another voice).

    Each clip's mel power is computed here, once (a few seconds for thousands of clips); epochs
    crop and augment it. With `config.augment.augment` off, clips are still shuffled and randomly
    cropped, on whole hops. The last partial batch is dropped. The same seed gives the same
    sequence of epochs.
    """
    _check_labels(labels, num_classes)
    batch_size = config.train.batch_size
    if len(waveforms) < batch_size:
        raise ValueError(f"{len(waveforms)} training clips make no full batch of {batch_size} (batch_size)")
    frontend, augment = config.frontend, config.augment
    arrays = _mono_arrays(waveforms, labels)
    clips_per_version = len(arrays)
    speeds = speed_factors(augment)
    # Every speed's version of every clip, laid out version after version: clip i at speed v is
    # row v * clips_per_version + i, so its mel power is fixed once, from the resampled audio.
    versions = [wave if speed == 1.0 else change_speed(wave, speed) for speed in speeds for wave in arrays]
    powers = clip_mel_powers(versions, frontend)
    statistics = clip_statistics = None
    if frontend.normalization == "speaker" or speaker_targets:
        if speakers is None or len(speakers) != clips_per_version:
            raise ValueError(
                "per-speaker normalisation and speaker targets need the speaker of every training clip"
            )
        codes = pd.factorize(np.asarray(speakers, dtype=str))[0]
        speaker_count = int(codes.max()) + 1
        # A clip's speaker at every speed: the speaker head names the person, not the version.
        clip_speakers = tf.constant(np.tile(codes, len(speeds)), tf.int32)
    if frontend.normalization == "speaker":
        groups = np.concatenate([codes + v * speaker_count for v in range(len(speeds))])
        frames, clip_of_frame = whole_log_mel_frames(powers, [wave.size for wave in versions], frontend)
        statistics = tf.constant(
            log_mel_statistics(frames, groups[clip_of_frame], speaker_count * len(speeds))
        )
        clip_statistics = tf.constant(groups, tf.int64)
    clip_lengths = tf.constant([wave.size for wave in versions], tf.int64)
    clip_labels = tf.constant(np.tile(np.asarray(labels), len(speeds)), tf.int32)
    if clip_weights is not None:
        if len(clip_weights) != clips_per_version:
            raise ValueError(f"{len(clip_weights)} clip weights for {clips_per_version} training clips")
        weight_of_clip = tf.constant(np.tile(np.asarray(clip_weights, np.float32), len(speeds)))
    noise_bank = tf.constant(white_noise_bank(frontend))
    band_hertz = tf.constant(mel_band_hertz(frontend), tf.float32)
    max_shift = round(augment.time_shift_ms / frontend.hop_ms) if augment.augment else 0  # hops
    # Independent seed streams for the clip order and the batches, both fixed by `seed` (drawn
    # here when none is given).
    order_seed, batch_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    counter = tf.Variable(0, dtype=tf.int64, trainable=False) if epoch is None else epoch
    clip_count, steps = len(arrays), len(arrays) // batch_size

    def featurize(clips: tf.Tensor, op_seed: tf.Tensor) -> tuple:
        crop_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(op_seed, 2))
        if len(speeds) > 1:  # a speed per clip, drawn from a stream of its own
            speed_seed = tf.random.experimental.stateless_fold_in(op_seed, len(speeds))
            version = tf.random.stateless_uniform(tf.shape(clips), speed_seed, 0, len(speeds), tf.int64)
            clips = clips + version * clips_per_version
        starts = random_start_frames(tf.gather(clip_lengths, clips), frontend, max_shift, crop_seed)
        power = crop_frames(powers, clips, starts, frontend)
        one_hot = tf.one_hot(tf.gather(clip_labels, clips), num_classes)
        if speaker_targets:  # mixed (by mixup) together with the emotion, then split
            one_hot = tf.concat([one_hot, tf.one_hot(tf.gather(clip_speakers, clips), speaker_count)], -1)
        if clip_weights is not None:  # the last column, mixed (by mixup) as the labels are
            one_hot = tf.concat([one_hot, tf.gather(weight_of_clip, clips)[:, None]], -1)
        speaker = None if statistics is None else tf.gather(statistics, tf.gather(clip_statistics, clips))
        if not augment.augment:
            features = normalize(log_power(power), speaker)
        else:
            features, one_hot = augmented_features(
                power, one_hot, noise_bank, band_hertz, augment, augment_seed, speaker
            )
        weights = ()
        if clip_weights is not None:
            one_hot, weights = one_hot[:, :-1], (one_hot[:, -1],)
        if speaker_targets:
            return (
                features,
                {"emotion": one_hot[:, :num_classes], "speaker": one_hot[:, num_classes:]},
                *weights,
            )
        return features, one_hot, *weights

    def one_epoch(_: tf.Tensor) -> tf.data.Dataset:
        number = counter.assign_add(1) - 1
        order = tf.random.experimental.stateless_shuffle(
            tf.range(clip_count, dtype=tf.int64), seed=tf.stack([tf.constant(order_seed, tf.int64), number])
        )
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(batch_seed, tf.int64), number]), num=steps
        )
        return tf.data.Dataset.zip(
            tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True),
            tf.data.Dataset.from_tensor_slices(seeds),
        )

    # flat_map hides the epoch's length, which Keras needs for its progress and its epochs' ends.
    batches = (
        tf.data.Dataset.range(1).flat_map(one_epoch).apply(tf.data.experimental.assert_cardinality(steps))
    )
    # Under op determinism (CPU training) tf.data makes this map sequential anyway, the epoch's
    # variable upstream being state, and its rewrite of the parallel op logs a spurious error
    # ("NodeDef mentions attribute use_unbounded_threadpool"): asked for sequential there.
    if _op_determinism_enabled():
        batches = batches.map(featurize)
    else:
        batches = batches.map(featurize, num_parallel_calls=AUTOTUNE, deterministic=True)
    return batches.prefetch(AUTOTUNE)


def _op_determinism_enabled() -> bool:
    """Whether tf.config.experimental.enable_op_determinism() was called (TensorFlow has no
    public getter for it)."""
    from tensorflow.python.framework import config as framework_config

    return framework_config.is_op_determinism_enabled()


def speed_factors(augment: AugmentConfig) -> tuple[float, ...]:
    """The playback speeds training draws from: 1 alone, or 1 - p, 1 and 1 + p for
    `speed_perturbation` p (Ko et al. 2015: 0.9, 1.0 and 1.1)."""
    p = augment.speed_perturbation if augment.augment else 0.0
    return (1.0 - p, 1.0, 1.0 + p) if p > 0 else (1.0,)


def change_speed(wave: np.ndarray, speed: float) -> np.ndarray:
    """The clip played `speed` times as fast (tempo and pitch together, as sox's `speed`):
    resampled as if it had been recorded at `speed` times its rate (soxr, high quality)."""
    import soxr

    return soxr.resample(wave, speed, 1.0).astype(np.float32)


def augmented_views(waveform: np.ndarray, config: Config, count: int = 4, seed: int = 0) -> np.ndarray:
    """[count, frames, n_mels]: what training makes of one clip in `count` draws of the
    training pipeline (speed, crop, shift, gain, noise, frequency warp, masks; mixup only mixes
    the clip with itself).
    Normalising per speaker, the clip is its speaker's only clip."""
    dataset = train_dataset(
        [waveform] * count,
        [0] * count,
        1,
        config.replace(batch_size=count),
        seed=seed,
        speakers=["the clip"] * count,
    )
    features, _ = next(iter(dataset))
    return features.numpy()


def eval_dataset(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    num_classes: int,
    config: Config,
    statistics: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Clips in order, centre-cropped or symmetrically zero-padded, not augmented; the last
    partial batch is kept. Per-speaker normalisation takes each clip's [2, n_mels] speaker
    `statistics` (`speaker_statistics`)."""
    _check_labels(labels, num_classes)
    frontend = config.frontend
    if (statistics is None) != (frontend.normalization == "clip"):
        raise ValueError(
            f"normalization {frontend.normalization!r}: statistics "
            + ("are needed" if statistics is None else "are not used")
        )

    def fit_clip(wave: tf.Tensor, label: tf.Tensor, *speaker: tf.Tensor) -> tuple[tf.Tensor, ...]:
        offset = centred_offset(tf.shape(wave)[0], frontend.clip_samples)
        return fit_to_length(wave, frontend.clip_samples, offset), label, *speaker

    def featurize(waves: tf.Tensor, classes: tf.Tensor, *speaker: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return waveform_to_features(waves, frontend, *speaker), tf.one_hot(classes, num_classes)

    clips = waveform_dataset(waveforms, labels)
    if statistics is not None:
        clips = tf.data.Dataset.zip(
            clips, tf.data.Dataset.from_tensor_slices(np.asarray(statistics, np.float32))
        ).map(lambda pair, speaker: (*pair, speaker))
    clips = clips.map(fit_clip, num_parallel_calls=AUTOTUNE, deterministic=True)
    batches = clips.batch(config.train.batch_size)
    batches = batches.map(featurize, num_parallel_calls=AUTOTUNE, deterministic=True)
    return batches.prefetch(AUTOTUNE)


def speaker_statistics(
    waveforms: Sequence[np.ndarray], speakers: Sequence[str], frontend: FrontEndConfig
) -> np.ndarray:
    """[clips, 2, n_mels]: each clip's speaker's band means and deviations, over every frame of
    that speaker's clips among `waveforms` (labels unused)."""
    if len(speakers) != len(waveforms):
        raise ValueError(f"{len(speakers)} speakers for {len(waveforms)} clips")
    codes, names = pd.factorize(np.asarray(speakers, dtype=str))
    waves = [np.asarray(w, np.float32) for w in waveforms]
    frames, clip_of_frame = whole_log_mel_frames(
        clip_mel_powers(waves, frontend), [w.size for w in waves], frontend
    )
    return log_mel_statistics(frames, codes[clip_of_frame], len(names))[codes]


def whole_log_mel_frames(
    powers: tf.RaggedTensor, lengths: Sequence[int], frontend: FrontEndConfig
) -> tuple[tf.Tensor, np.ndarray]:
    """[frames, n_mels]: the log-mel frames of `clip_mel_powers` whose window lies within its clip
    (those `log_mel` gives of the clip alone, as serving computes a speaker's statistics), and the
    clip of each frame."""
    whole = np.maximum(1 + (np.asarray(lengths) - frontend.window_length) // frontend.hop_length, 0)
    first = powers.row_starts().numpy() + _lead_frames(frontend)
    rows = np.repeat(first - np.cumsum(whole) + whole, whole) + np.arange(int(whole.sum()))
    return log_power(tf.gather(powers.flat_values, rows)), np.repeat(np.arange(len(whole)), whole)


def clip_mel_powers(waveforms: Sequence[np.ndarray], frontend: FrontEndConfig) -> tf.RaggedTensor:
    """[clips, None, n_mels]: the mel power of every STFT frame that overlaps each clip, on a frame
    grid of whole hops from the clip's first sample (see `crop_frames`).

    The clips are laid end to end as one recording, each after the silence of its leading frames
    and zero-padded to whole hops, so the recording's frames are, in order, every clip's frames (a
    clip's last frame ends in the silence before the next clip). The recording runs through
    `mel_power` in equal batches of equal pieces: XLA compiles one shape, nothing is computed twice.
    """
    hop, lead = frontend.hop_length, _lead_frames(frontend)
    lengths = np.array([wave.size for wave in waveforms])
    frames = lead + -(-lengths // hop)  # the frames that start before each clip's end
    starts = (np.cumsum(frames) - frames + lead) * hop
    total_frames = int(frames.sum())
    batches = -(-total_frames // (PRECOMPUTE_PIECE_FRAMES * PRECOMPUTE_PIECES))
    pieces = batches * PRECOMPUTE_PIECES
    step = PRECOMPUTE_PIECE_FRAMES * hop
    piece_samples = (PRECOMPUTE_PIECE_FRAMES - 1) * hop + frontend.window_length
    recording = np.zeros(pieces * step + piece_samples, np.float32)  # room for clips and pieces
    for start, wave in zip(starts, waveforms):
        recording[start : start + wave.size] = wave
    # Views, not copies: piece p is recording[p * step : p * step + piece_samples].
    piece_views = np.lib.stride_tricks.sliding_window_view(recording, piece_samples)[::step]
    powers = [
        mel_power(piece_views[first : first + PRECOMPUTE_PIECES], frontend)
        for first in range(0, pieces, PRECOMPUTE_PIECES)
    ]
    values = tf.reshape(tf.concat(powers, axis=0), [-1, frontend.n_mels])[:total_frames]
    return tf.RaggedTensor.from_row_lengths(values, frames, validate=False)


def _lead_frames(frontend: FrontEndConfig) -> int:
    """Frames of a clip's grid that start before its first sample and still overlap it."""
    return math.ceil(frontend.window_length / frontend.hop_length) - 1


def crop_frames(
    powers: tf.RaggedTensor, clips: tf.Tensor, starts: tf.Tensor, frontend: FrontEndConfig
) -> tf.Tensor:
    """[B, num_frames, n_mels]: the mel power of each clip's window of `clip_seconds`.

    The window of row b begins `starts[b]` hops after the first sample of clip `clips[b]` of
    `powers` (from `clip_mel_powers`); negative starts begin before it. Frames that do not overlap
    the clip are zero power, as zero-filled audio gives: this is `mel_power` of the zero-padded
    clip's samples [starts[b] * hop, starts[b] * hop + clip_samples).
    """
    row_starts = tf.gather(powers.row_starts(), clips)[:, tf.newaxis]
    row_lengths = tf.gather(powers.row_lengths(), clips)[:, tf.newaxis]
    first = tf.cast(starts, tf.int64)[:, tf.newaxis] + _lead_frames(frontend)
    frames = first + tf.range(frontend.num_frames, dtype=tf.int64)  # into the clip's rows
    stored = (frames >= 0) & (frames < row_lengths)
    rows = row_starts + tf.clip_by_value(frames, 0, row_lengths - 1)
    return tf.where(stored[..., tf.newaxis], tf.gather(powers.flat_values, rows), 0.0)


def random_start_frames(
    lengths: tf.Tensor, frontend: FrontEndConfig, max_shift: int, seed: tf.Tensor
) -> tf.Tensor:
    """[B] int64 window starts for `crop_frames`, for clips of `lengths` samples.

    A longer clip is cropped and a shorter one placed at random, on whole hops, so that the window
    lies inside the clip or the clip inside the window; then the clip moves by a shift drawn from
    U{-max_shift..max_shift} hops (positive: later).
    """
    place_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    lengths = tf.cast(lengths, tf.int64)
    excess = tf.abs(lengths - frontend.clip_samples) // frontend.hop_length
    draw = tf.random.stateless_uniform(tf.shape(lengths), place_seed)
    offsets = tf.minimum(tf.cast(draw * tf.cast(excess + 1, tf.float32), tf.int64), excess)
    placements = tf.where(lengths >= frontend.clip_samples, offsets, -offsets)
    shifts = tf.random.stateless_uniform(
        tf.shape(lengths), shift_seed, -max_shift, max_shift + 1, dtype=tf.int64
    )
    return placements - shifts


def augmented_features(
    power: tf.Tensor,
    one_hot: tf.Tensor,
    noise_bank: tf.Tensor,
    band_hertz: tf.Tensor,
    augment: AugmentConfig,
    seed: tf.Tensor,
    statistics: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The augmented training features of a batch of cropped [B, frames, n_mels] mel powers, and
    their (mixed) labels; `band_hertz` [n_mels] are the bands' centres (`mel_band_hertz`) and
    `statistics` [B, 2, n_mels] normalise per speaker."""
    features_seed, mixup_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    features = _augmented_features(power, noise_bank, band_hertz, augment, features_seed, statistics)
    if augment.mixup_alpha > 0:
        features, one_hot = mixup(features, one_hot, augment.mixup_alpha, mixup_seed)
    return features, one_hot


# XLA fuses these steps' passes over the batch: ~8% more clips/s through the whole pipeline.
@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def _augmented_features(
    power: tf.Tensor,
    noise_bank: tf.Tensor,
    band_hertz: tf.Tensor,
    augment: AugmentConfig,
    seed: tf.Tensor,
    statistics: tf.Tensor | None,
) -> tf.Tensor:
    """Random gain, white noise, log, normalisation, frequency warp and SpecAugment."""
    gain_seed, noise_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    power = random_gain(power, augment.gain_db, gain_seed)
    power = add_white_noise(
        power,
        noise_bank,
        augment.noise_probability,
        augment.snr_db_min,
        augment.snr_db_max,
        noise_seed,
    )
    features = normalize(log_power(power), statistics)
    if augment.frequency_warp > 0:  # a stream of its own: the other draws stay as they were
        warp_seed = tf.random.experimental.stateless_fold_in(seed, tf.constant(3, tf.int64))
        features = warp_frequencies(features, band_hertz, augment.frequency_warp, warp_seed)
    return spec_augment(
        features,
        augment.freq_masks,
        augment.freq_mask_width,
        augment.time_masks,
        augment.time_mask_width,
        mask_seed,
    )


def warp_frequencies(
    features: tf.Tensor, band_hertz: tf.Tensor, max_warp: float, seed: tf.Tensor
) -> tf.Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton 2013) of normalised [B, frames, n_mels]
    features: each clip's frequencies warped by a factor drawn from U[1 - max_warp, 1 + max_warp]
    (`scale_frequencies`)."""
    factors = tf.random.stateless_uniform([tf.shape(features)[0]], seed, 1.0 - max_warp, 1.0 + max_warp)
    return scale_frequencies(features, band_hertz, factors)


# Jaitly & Hinton's warp is linear up to this share of the band (4.8 of 8 kHz), then bends so
# that the band's top maps onto itself.
WARP_LINEAR_SHARE = 0.6


def warp_source_hertz(band_hertz: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """[B, n_mels]: the frequency whose content Jaitly & Hinton's warp by factors[b] moves to each
    band's centre. The warp takes f to factor * f up to a boundary f0 = 0.6 * top * min(a, 1) / a
    (top: the highest band's centre), then linearly to top at top, so no band asks for content
    from beyond the highest; this is its inverse."""
    top = band_hertz[-1]
    factors = factors[:, tf.newaxis]
    boundary = WARP_LINEAR_SHARE * top * tf.minimum(factors, 1.0) / factors
    hertz = band_hertz[tf.newaxis, :]
    bent = top - (top - hertz) * (top - boundary) / (top - factors * boundary)
    return tf.where(hertz <= factors * boundary, hertz / factors, bent)


def scale_frequencies(features: tf.Tensor, band_hertz: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """[B, frames, n_mels] features as the same voice would give with its spectrum warped by
    factors[b] (above 1: a shorter vocal tract, formants up, and the harmonics with them): band m
    takes the value at `warp_source_hertz`, interpolated linearly between the two bands beside it
    on the mel scale (below the lowest band, the lowest band's value). Interpolating averages
    neighbouring bands, which would leave a warped clip with 15-20% less variance than any real
    one: each clip's RMS is restored.

    It warps the normalised features, not the power: a voice whose spectrum is S(f / a) has the
    mean spectrum M(f / a) over its clips, so normalised by its own statistics (per speaker, or
    per clip over time) it gives the warped normalised features, whereas normalising warped power
    by the unwarped speaker's statistics would leave a tilt no real speaker shows."""
    mels = hertz_to_mel(band_hertz)
    bands = tf.shape(band_hertz)[0]
    source = hertz_to_mel(warp_source_hertz(band_hertz, factors))
    # The bands are equally spaced in mel: the source's fractional band index.
    position = tf.clip_by_value((source - mels[0]) / (mels[1] - mels[0]), 0.0, tf.cast(bands - 1, tf.float32))
    lower = tf.minimum(tf.cast(tf.floor(position), tf.int32), bands - 2)
    upper_weight = (position - tf.cast(lower, tf.float32))[:, tf.newaxis, :]
    below = tf.gather(features, lower, axis=2, batch_dims=1)
    above = tf.gather(features, lower + 1, axis=2, batch_dims=1)
    warped = below + upper_weight * (above - below)
    return warped * tf.math.divide_no_nan(_clip_rms(features), _clip_rms(warped))


def _clip_rms(features: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(tf.reduce_mean(tf.square(features), axis=[1, 2], keepdims=True))


def random_gain(power: tf.Tensor, max_db: float, seed: tf.Tensor) -> tf.Tensor:
    """Scales each clip's [frames, n_mels] power by a gain drawn uniformly from
    [-max_db, +max_db] dB."""
    gain_db = tf.random.stateless_uniform([tf.shape(power)[0], 1, 1], seed, -max_db, max_db)
    return power * tf.pow(10.0, gain_db / 10.0)


@functools.lru_cache(maxsize=None)
def white_noise_bank(frontend: FrontEndConfig) -> np.ndarray:
    """[NOISE_BANK_OFFSETS + num_frames, n_mels]: `mel_power` of Gaussian white noise, scaled to
    an expected mel power of 1 per frame (summed over bands). `add_white_noise` adds crops of it.

    Real noise through the front end has the right spread in every band and the right correlation
    between bands and overlapping frames; drawing that spread afresh (a Gamma draw per frame and
    band) would cost more than the rest of the pipeline. The bank is drawn once, from a fixed seed.
    """
    frames = NOISE_BANK_OFFSETS + frontend.num_frames
    samples = (frames - 1) * frontend.hop_length + frontend.window_length
    noise = np.random.default_rng(NOISE_BANK_SEED).standard_normal((1, samples), np.float32)
    bank = mel_power(noise, frontend).numpy()[0] / white_noise_mel_power(frontend).sum()
    bank.setflags(write=False)  # shared by every caller through the cache
    return bank


def add_white_noise(
    power: tf.Tensor,
    noise_bank: tf.Tensor,
    probability: float,
    snr_db_min: float,
    snr_db_max: float,
    seed: tf.Tensor,
) -> tf.Tensor:
    """Adds white noise to each clip's [frames, n_mels] mel power with `probability`, at an SNR
    drawn uniformly from [snr_db_min, snr_db_max] dB; silent clips stay silent.

    The SNR is that of mel power, the band the features see: the noise's expected power per frame
    is the clip's mean power per frame times 10^(-SNR / 10), and its shape over frames and bands is
    a random crop of `noise_bank` (from `white_noise_bank`). That is the mel power of the clip plus
    white noise but for the cross term 2 Re(S N*) of each bin, which averages to zero.
    """
    pick_seed, snr_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    batch, frames = tf.shape(power)[0], tf.shape(power)[1]
    noisy = tf.random.stateless_uniform([batch], pick_seed) < probability
    snr_db = tf.random.stateless_uniform([batch], snr_seed, snr_db_min, snr_db_max)
    signal_power = tf.reduce_mean(tf.reduce_sum(power, axis=2), axis=1)
    noise_power = tf.where(noisy, signal_power * tf.pow(10.0, -snr_db / 10.0), 0.0)
    room = tf.cast(tf.shape(noise_bank)[0] - frames + 1, tf.float32)
    starts = tf.cast(tf.random.stateless_uniform([batch, 1], crop_seed) * room, tf.int32)
    noise = tf.gather(noise_bank, starts + tf.range(frames))
    return power + noise_power[:, tf.newaxis, tf.newaxis] * noise


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
    widths = tf.random.stateless_uniform([batch, count, 1], width_seed, 0, max_width + 1, dtype=tf.int32)
    # A start in [0, size - width], so the whole span lies inside.
    room = tf.cast(size - widths + 1, tf.float32)
    starts = tf.cast(tf.random.stateless_uniform([batch, count, 1], start_seed) * room, tf.int32)
    positions = tf.range(size)
    inside = (positions >= starts) & (positions < starts + widths)
    return tf.reduce_any(inside, axis=1)


def mixup(
    features: tf.Tensor, one_hot: tf.Tensor, alpha: float, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixes each example with one of a shuffled copy of the batch, weights ~ Beta(alpha, alpha)."""
    gamma_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    features, one_hot = tf.convert_to_tensor(features), tf.convert_to_tensor(one_hot)
    batch = tf.shape(features)[0]
    gammas = tf.random.stateless_gamma([2, batch], gamma_seed, alpha=alpha)
    # Beta(a, a) = G1 / (G1 + G2); both gammas can underflow to 0 for small alpha.
    weight = tf.math.divide_no_nan(gammas[0], gammas[0] + gammas[1])
    partner = tf.argsort(tf.random.stateless_uniform([batch], order_seed))
    mixed_features = _mix(features, tf.gather(features, partner), weight)
    mixed_labels = _mix(one_hot, tf.gather(one_hot, partner), weight)
    return mixed_features, mixed_labels


def _mix(a: tf.Tensor, b: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    weight = tf.reshape(weight, [-1] + [1] * (a.shape.rank - 1))
    return weight * a + (1.0 - weight) * b


def _check_labels(labels: Sequence[int], num_classes: int) -> None:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must be class indices in [0, {num_classes}); got {labels.min()}..{labels.max()}"
        )
