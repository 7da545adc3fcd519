"""The tf.data pipelines, each augmentation on its own, determinism and the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from aed_tf.bench import ENVIRONMENT_KEYS
from aed_tf.bench.pipeline import bench_pipeline
from aed_tf.bench.step import bench_step
from aed_tf.config import Config
from aed_tf.features import (
    fit_to_length,
    log_mel,
    mel_band_hertz,
    mel_matrix,
    mel_power,
    waveform_to_features,
    white_noise_mel_power,
)
from aed_tf.pipeline import (
    add_white_noise,
    augmented_views,
    change_speed,
    clip_mel_powers,
    crop_frames,
    eval_dataset,
    mixup,
    random_gain,
    random_start_frames,
    scale_frequencies,
    speaker_statistics,
    spec_augment,
    speed_factors,
    train_dataset,
    warp_frequencies,
    warp_source_hertz,
    waveform_dataset,
    white_noise_bank,
)
from tests.conftest import RAVDESS_DIR, TESS_DIR
from tests.synth import tone

# Small clips and images keep the tests fast; the code paths are those of the defaults.
CONFIG = Config().replace(sample_rate=8000, clip_seconds=0.25, fmax=4000.0, n_mels=32, batch_size=4)
FRONTEND = CONFIG.frontend
NUM_CLASSES = 7
SEED = tf.constant([3, 4], tf.int64)


def clips(lengths: list[int]) -> list[np.ndarray]:
    """Distinct tones of the given lengths in samples."""
    return [
        tone(n / FRONTEND.sample_rate, FRONTEND.sample_rate, freq=200 + 50 * i, seed=i)
        for i, n in enumerate(lengths)
    ]


# -- waveform_dataset -------------------------------------------------------------------------


def test_waveform_dataset_keeps_every_clip() -> None:
    waves = [np.arange(n, dtype=np.float32) for n in (100, 3000, 1)]
    elements = list(waveform_dataset(waves, [2, 0, 6]))
    for (wave, label), expected, expected_label in zip(elements, waves, [2, 0, 6]):
        np.testing.assert_array_equal(wave.numpy(), expected)
        assert label.numpy() == expected_label
    assert len(elements) == 3


def test_waveform_dataset_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 waveforms but 1 labels"):
        waveform_dataset(clips([10, 10]), [0])
    with pytest.raises(ValueError, match=r"waveform 1 has shape \(10, 2\)"):
        waveform_dataset([np.zeros(10), np.zeros((10, 2))], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        waveform_dataset([], [])
    with pytest.raises(ValueError, match="waveform 1 is empty"):
        train_dataset([np.ones(2000), np.zeros(0)] * 2, [0, 1, 2, 3], NUM_CLASSES, CONFIG)
    with pytest.raises(ValueError, match=r"class indices in \[0, 7\)"):
        train_dataset(clips([2000] * 4), [0, 1, 2, 7], NUM_CLASSES, CONFIG)
    with pytest.raises(ValueError, match="no full batch of 4"):
        train_dataset(clips([2000] * 3), [0, 1, 2], NUM_CLASSES, CONFIG)


# -- cropping and padding ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [5, 8, 13])
def test_fit_to_length_crops_or_pads_at_every_offset(length: int) -> None:
    wave = np.arange(1, length + 1, dtype=np.float32)
    for offset in range(abs(length - 8) + 1):
        fitted = fit_to_length(tf.constant(wave), 8, tf.constant(offset)).numpy()
        if length >= 8:
            expected = wave[offset : offset + 8]
        else:
            expected = np.pad(wave, (offset, 8 - length - offset))
        np.testing.assert_array_equal(fitted, expected)


def window_of(wave: np.ndarray, start: int, length: int) -> np.ndarray:
    """wave[start : start + length] of the clip extended with zeros on both sides."""
    window = np.zeros(length, np.float32)
    first, end = max(start, 0), min(start + length, wave.size)
    if first < end:
        window[first - start : end - start] = wave[first:end]
    return window


def test_clip_mel_powers_are_the_mel_power_of_each_zero_padded_clip() -> None:
    # Enough audio for several pieces and more than one mel_power call.
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12000, 150)
    waves = [rng.uniform(-1, 1) * rng.standard_normal(n).astype(np.float32) for n in lengths]
    powers = clip_mel_powers(waves, FRONTEND)
    hop, window = FRONTEND.hop_length, FRONTEND.window_length
    lead = -(-window // hop) - 1  # frames that start before the clip and reach into it
    np.testing.assert_array_equal(powers.row_lengths(), lead + -(-lengths // hop))
    padded = np.stack([window_of(wave, -lead * hop, lengths.max() + 2 * window) for wave in waves])
    expected = mel_power(padded, FRONTEND).numpy()
    for clip, got in enumerate(powers.numpy()):
        np.testing.assert_allclose(got, expected[clip, : len(got)], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("length", [1, 150, 1000, 2000, 2345])
def test_crop_frames_is_the_mel_power_of_the_window_with_zeros_outside_the_clip(
    length: int,
) -> None:
    n, hop, window = FRONTEND.clip_samples, FRONTEND.hop_length, FRONTEND.window_length
    wave = np.random.default_rng(length).uniform(0.1, 1.0, length).astype(np.float32)
    loud = 10 * clips([3000])[0]
    powers = clip_mel_powers([loud, wave, loud], FRONTEND)  # neighbours must not leak in
    starts = np.arange(-(n // hop) - 3, length // hop + 4)
    cropped = crop_frames(powers, tf.ones(len(starts), tf.int64), starts, FRONTEND).numpy()
    windows = np.stack([window_of(wave, start * hop, n) for start in starts])
    expected = mel_power(windows, FRONTEND).numpy()
    np.testing.assert_allclose(cropped, expected, rtol=1e-4, atol=1e-7)
    frame_starts = (starts[:, None] + np.arange(FRONTEND.num_frames)) * hop
    overlaps_clip = (frame_starts < length) & (frame_starts + window > 0)
    assert np.all(cropped[~overlaps_clip] == 0)  # silence outside the clip, exactly
    # The periodic Hann window's first coefficient is 0: a frame hears the clip from its second.
    hears_clip = (frame_starts < length - 1) & (frame_starts + window > 0)
    assert np.all(cropped[hears_clip].max(axis=-1) > 0)


def test_random_start_frames_crop_or_place_each_clip_on_whole_hops() -> None:
    n, hop = FRONTEND.clip_samples, FRONTEND.hop_length
    lengths = np.repeat([n + 5 * hop + 17, n - 3 * hop - 5, n, 10], 300)
    starts = random_start_frames(lengths, FRONTEND, 0, SEED).numpy().reshape(4, 300)
    # The window lies inside a longer clip, a shorter clip inside the window: every such start.
    assert set(starts[0]) == set(range(0, 6))
    assert set(starts[1]) == set(range(-3, 1))
    assert set(starts[2]) == {0}
    assert set(starts[3]) == set(range(-((n - 10) // hop), 1))
    shifted = random_start_frames(lengths, FRONTEND, 4, SEED).numpy().reshape(4, 300)
    assert set(shifted[2]) == set(range(-4, 5))  # a shift of up to 4 hops either way
    assert (shifted[0].min(), shifted[0].max()) == (-4, 5 + 4)
    assert (shifted[1].min(), shifted[1].max()) == (-3 - 4, 4)


def test_train_without_augmentation_is_the_front_end_on_a_window_of_each_clip() -> None:
    """With augment off, a training example is `waveform_to_features` of its clip cropped or padded
    at some whole number of hops: the precomputed mel power is the serving front end."""
    config = CONFIG.replace(augment=False, batch_size=1)
    n, hop = FRONTEND.clip_samples, FRONTEND.hop_length
    waves = clips([n - 5 * hop // 2, n, n + 7 * hop // 2])
    dataset = train_dataset(waves, [0, 1, 2], NUM_CLASSES, config, seed=1)
    seen = set()
    for _ in range(4):  # epochs
        for images, one_hot in dataset:
            clip = int(np.argmax(one_hot[0]))
            wave = waves[clip]
            offsets = range(0, abs(len(wave) - n) + 1, hop)
            candidates = [fit_to_length(tf.constant(wave), n, offset) for offset in offsets]
            expected = waveform_to_features(tf.stack(candidates), FRONTEND).numpy()
            distances = np.abs(expected - images.numpy()).max(axis=(1, 2))
            assert distances.min() < 1e-3
            seen.add((clip, int(np.argmin(distances))))
    assert len(seen) > 3  # more than one crop of the clips that have a choice


def test_speed_perturbation_trains_on_each_speed_of_each_clip_exactly() -> None:
    """Without other augmentation, each example is the front end on a window of the clip at
    0.8x, 1x or 1.2x, resampled before its mel power is computed; every speed occurs."""
    assert speed_factors(CONFIG.augment) == (1.0,)
    assert speed_factors(CONFIG.replace(speed_perturbation=0.2, augment=False).augment) == (1.0,)
    config = CONFIG.replace(
        speed_perturbation=0.2,
        batch_size=1,
        gain_db=0.0,
        noise_probability=0.0,
        freq_masks=0,
        time_masks=0,
        time_shift_ms=0.0,
    )
    assert speed_factors(config.augment) == (0.8, 1.0, 1.2)
    n, hop = FRONTEND.clip_samples, FRONTEND.hop_length
    wave = clips([3 * n])[0]
    dataset = train_dataset([wave], [0], NUM_CLASSES, config, seed=1)
    seen = set()
    for _ in range(24):  # epochs of one clip
        (features,), _ = next(iter(dataset))
        distances = {}
        for speed in speed_factors(config.augment):
            fast = wave if speed == 1.0 else change_speed(wave, speed)
            windows = [
                fit_to_length(tf.constant(fast), n, offset) for offset in range(0, len(fast) - n + 1, hop)
            ]
            expected = waveform_to_features(tf.stack(windows), FRONTEND).numpy()
            distances[speed] = np.abs(expected - features.numpy()).max(axis=(1, 2)).min()
        speed = min(distances, key=distances.get)
        assert distances[speed] < 1e-3
        seen.add(speed)
    assert seen == {0.8, 1.0, 1.2}
    # 1.25x faster: 4/5 of the samples, and the pitch of every partial 1.25 times higher.
    faster = change_speed(tone(1.0, 8000, freq=200.0), 1.25)
    assert len(faster) == 6400
    assert np.argmax(np.abs(np.fft.rfft(faster))) * 8000 / len(faster) == pytest.approx(250, abs=2)


def test_band_centres_are_the_peaks_of_the_mel_filters() -> None:
    frontend = Config().frontend
    hertz = mel_band_hertz(frontend)
    bin_hertz = frontend.sample_rate / frontend.n_fft
    peaks = np.argmax(mel_matrix(frontend), axis=0) * bin_hertz
    filled = mel_matrix(frontend).any(axis=0)  # the lowest bands fall between FFT bins
    assert hertz.shape == (frontend.n_mels,) and np.all(np.diff(hertz) > 0)
    np.testing.assert_allclose(peaks[filled], hertz[filled], atol=bin_hertz / 2)


def test_the_warp_scales_frequencies_up_to_its_boundary_then_bends_to_the_top_band() -> None:
    hertz = mel_band_hertz(Config().frontend)
    top = hertz[-1]
    sources = warp_source_hertz(tf.constant(hertz, tf.float32), tf.constant([1.0, 1.15, 0.85])).numpy()
    np.testing.assert_allclose(sources[0], hertz, rtol=1e-6)
    for source, factor in zip(sources[1:], [1.15, 0.85]):
        linear = hertz <= 0.6 * top * min(factor, 1.0)  # the boundary's image
        np.testing.assert_allclose(source[linear], hertz[linear] / factor, rtol=1e-5)
        assert source[-1] == pytest.approx(top, rel=1e-6) and source.max() <= top * (1 + 1e-6)
        assert np.all(np.diff(source) > 0)
        # Continuous: no step between neighbouring bands larger than the bands' own spacing allows.
        assert np.max(np.diff(source) / np.diff(hertz)) < 1.5


def test_scaling_frequencies_moves_a_tone_by_the_factor() -> None:
    """A 1 kHz tone's band moves to 1.15 kHz's at 1.15, to 850 Hz's at 0.85; a factor of 1 gives
    the features back (to rounding); each clip keeps its RMS; the highest bands are not copies of
    one band."""
    frontend = Config().frontend
    hertz = mel_band_hertz(frontend)
    features = log_mel(tf.constant(tone(0.5, frontend.sample_rate, freq=1000.0)[None]), frontend)
    features = tf.tile(features, [3, 1, 1])
    scaled = scale_frequencies(
        features, tf.constant(hertz, tf.float32), tf.constant([1.0, 1.15, 0.85])
    ).numpy()
    np.testing.assert_allclose(scaled[0], features[0].numpy(), atol=1e-3)
    peak = hertz[np.argmax(scaled.mean(axis=1), axis=1)]
    assert peak[0] == pytest.approx(1000, rel=0.04)
    assert peak[1] == pytest.approx(1150, rel=0.04) and peak[2] == pytest.approx(850, rel=0.04)
    rms = np.sqrt(np.mean(np.square(scaled), axis=(1, 2)))
    np.testing.assert_allclose(rms, np.sqrt(np.mean(np.square(features.numpy()), axis=(1, 2))), rtol=1e-4)
    assert np.all(np.abs(np.diff(scaled[2][:, -8:], axis=1)).max(axis=0) > 1e-3)


def fitted_factor(
    unwarped: tf.Tensor, warped: np.ndarray, hertz: tf.Tensor, low: float, high: float
) -> tuple:
    """The factor in [low, high] whose `scale_frequencies` of `unwarped` [frames, n_mels] is
    closest to `warped`, and the largest difference left: three grids of 201 factors, each over
    the two steps around the last one's best point (down to steps of 2.5e-7). The difference is
    the largest over every band and frame, sharp-cornered in the factor: a bounded Brent search in
    the first grid's step stopped at 1.5e-3 where this finds 2e-5 (one clip, on a 2-core EPYC)."""

    def error(factors: np.ndarray) -> np.ndarray:
        candidates = scale_frequencies(
            tf.repeat(unwarped[None], len(factors), 0), hertz, tf.constant(factors, tf.float32)
        )
        return np.abs(candidates.numpy() - warped).max(axis=(1, 2))

    for _ in range(3):
        grid = np.linspace(low, high, 201)
        errors = error(grid)
        best, step = np.argmin(errors), grid[1] - grid[0]
        low, high = grid[best] - step, grid[best] + step
    return grid[best], errors[best]


def test_frequency_warp_draws_a_factor_per_clip_within_its_range() -> None:
    """Each clip's features are `scale_frequencies` of them at one factor in [0.9, 1.1], found by
    search; clips get different factors, and the same seed the same ones."""
    frontend = Config().frontend
    hertz = tf.constant(mel_band_hertz(frontend), tf.float32)
    waves = np.stack([tone(0.5, frontend.sample_rate, freq=300.0 + 400 * i, seed=i) for i in range(8)])
    features = log_mel(tf.constant(waves), frontend)
    warped = warp_frequencies(features, hertz, 0.1, SEED).numpy()
    np.testing.assert_array_equal(warped, warp_frequencies(features, hertz, 0.1, SEED).numpy())
    found = []
    for clip in range(len(waves)):
        factor, error = fitted_factor(features[clip], warped[clip], hertz, 0.85, 1.15)
        assert error < 1e-3
        found.append(factor)
    assert 0.9 - 1e-3 <= min(found) and max(found) <= 1.1 + 1e-3
    assert len(set(np.round(found, 3))) > 4


@pytest.mark.parametrize("normalization", ["clip", "speaker"])
def test_frequency_warp_in_training_changes_only_the_frequency_axis(normalization) -> None:
    """A warped training example is the unwarped one scaled along frequency, normalised per clip
    or by the unwarped speaker's statistics, at a factor in range: the same crops, gains and noise
    (the other random streams are untouched). Masks are off: they come after the warp."""
    plain = CONFIG.replace(noise_probability=1.0, freq_masks=0, time_masks=0, normalization=normalization)
    speakers = ["ann", "bob"] * 4
    waves, labels = clips([3000] * 8), list(range(7)) + [0]
    hertz = tf.constant(mel_band_hertz(FRONTEND), tf.float32)
    for (unwarped, _), (warped, _) in zip(
        train_dataset(waves, labels, NUM_CLASSES, plain, seed=5, speakers=speakers),
        train_dataset(
            waves, labels, NUM_CLASSES, plain.replace(frequency_warp=0.2), seed=5, speakers=speakers
        ),
    ):
        assert not np.allclose(unwarped.numpy(), warped.numpy())
        for clip in range(unwarped.shape[0]):
            factor, error = fitted_factor(unwarped[clip], warped[clip].numpy(), hertz, 0.75, 1.25)
            assert error < 1e-3 and 0.8 - 1e-3 <= factor <= 1.2 + 1e-3


# -- the datasets -----------------------------------------------------------------------------


def test_train_dataset_shapes_and_values() -> None:
    waves = clips([1000, 2000, 3000, 4000, 5000, 2000, 2000, 2000, 2000, 100])
    labels = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    batches = list(train_dataset(waves, labels, NUM_CLASSES, CONFIG, seed=0))
    assert len(batches) == 2  # 10 clips: two full batches of 4, the remainder dropped
    for images, one_hot in batches:
        assert images.shape == (4, FRONTEND.num_frames, FRONTEND.n_mels)
        assert images.dtype == tf.float32 and one_hot.dtype == tf.float32
        assert one_hot.shape == (4, NUM_CLASSES)
        # Normalised per clip; SpecAugment's masks (set to the mean) keep the mean near 0.
        assert np.isfinite(images.numpy()).all()
        assert np.abs(images.numpy().mean(axis=(1, 2))).max() < 0.5
        np.testing.assert_array_equal(one_hot.numpy().sum(axis=1), 1)
        assert set(np.unique(one_hot.numpy())) == {0, 1}


def test_train_dataset_with_mixup_gives_soft_labels() -> None:
    waves = clips([2000] * 8)
    config = CONFIG.replace(mixup_alpha=0.4)
    labels = list(range(7)) + [0]
    soft = 0
    for images, one_hot in train_dataset(waves, labels, NUM_CLASSES, config, seed=0):
        np.testing.assert_allclose(one_hot.numpy().sum(axis=1), 1, atol=1e-6)
        assert np.isfinite(images.numpy()).all()
        soft += int(np.sum((one_hot.numpy() > 1e-3) & (one_hot.numpy() < 1 - 1e-3)))
    assert soft > 0


@pytest.mark.parametrize("changes", [{}, {"mixup_alpha": 0.4, "speed_perturbation": 0.1}])
def test_speaker_targets_name_each_examples_speaker_mixed_as_its_emotion(changes) -> None:
    """Each speaker here speaks one emotion of their own, so an example's speaker target must be
    its emotion target, column for column, also where mixup blends two examples (at any speed)."""
    speakers = ["ann", "bob", "cy"] * 4
    labels = [{"ann": 0, "bob": 1, "cy": 2}[s] for s in speakers]
    config = CONFIG.replace(**changes)
    soft = 0
    for images, targets in train_dataset(
        clips([2000] * 12), labels, 3, config, seed=0, speakers=speakers, speaker_targets=True
    ):
        assert set(targets) == {"emotion", "speaker"} and images.shape[0] == 4
        emotion, speaker = targets["emotion"].numpy(), targets["speaker"].numpy()
        assert speaker.shape == (4, 3)
        np.testing.assert_allclose(speaker, emotion, atol=1e-6)
        np.testing.assert_allclose(speaker.sum(axis=1), 1, atol=1e-6)
        soft += int(np.sum((speaker > 1e-3) & (speaker < 1 - 1e-3)))
    assert (soft > 0) == bool(changes)


@pytest.mark.parametrize("changes", [{}, {"mixup_alpha": 0.4, "speed_perturbation": 0.1}, {"augment": False}])
@pytest.mark.parametrize("speaker_targets", [False, True])
def test_clip_weights_follow_each_example_mixed_as_its_labels(changes, speaker_targets) -> None:
    """Each clip weighs 1 + its label here, so an example's weight must be its (mixed) emotion
    target's expected 1 + label, at any speed and with speaker targets beside it."""
    speakers = ["ann", "bob", "cy"] * 4
    labels = [0, 1, 2, 2] * 3
    config = CONFIG.replace(**changes)
    weighed = 0
    for images, targets, weights in train_dataset(
        clips([2000] * 12),
        labels,
        3,
        config,
        seed=0,
        speakers=speakers,
        speaker_targets=speaker_targets,
        clip_weights=[1.0 + label for label in labels],
    ):
        emotion = (targets["emotion"] if speaker_targets else targets).numpy()
        assert images.shape[0] == 4 and emotion.shape == (4, 3) and weights.shape == (4,)
        np.testing.assert_allclose(weights.numpy(), emotion @ np.array([1.0, 2.0, 3.0]), atol=1e-5)
        weighed += len(set(np.round(weights.numpy(), 4)))
    assert weighed > 3  # not one weight for every example


def test_clip_weights_need_one_weight_per_clip() -> None:
    with pytest.raises(ValueError, match="7 clip weights for 8 training clips"):
        train_dataset(clips([2000] * 8), [0] * 8, NUM_CLASSES, CONFIG, seed=0, clip_weights=[1.0] * 7)


def test_speaker_targets_need_the_speakers() -> None:
    with pytest.raises(ValueError, match="the speaker of every training clip"):
        train_dataset(clips([2000] * 8), [0] * 8, NUM_CLASSES, CONFIG, seed=0, speaker_targets=True)


def test_augment_false_disables_every_augmentation() -> None:
    n = FRONTEND.clip_samples  # full-length clips leave nothing to crop
    waves = clips([n] * 8)
    labels = list(range(8))  # a class per clip tells which clip each image shows
    plain = waveform_to_features(np.stack(waves), FRONTEND).numpy()
    for augment in (False, True):
        config = CONFIG.replace(augment=augment)
        for images, one_hot in train_dataset(waves, labels, 8, config, seed=0):
            for image, label in zip(images.numpy(), np.argmax(one_hot.numpy(), axis=1)):
                assert np.allclose(image, plain[label], atol=1e-3) == (not augment)


def test_eval_dataset_is_ordered_centred_and_deterministic() -> None:
    n = FRONTEND.clip_samples
    waves = clips([n + 101, n - 51, n, 500, n + 2, n, n * 2])
    labels = [6, 5, 4, 3, 2, 1, 0]
    dataset = eval_dataset(waves, labels, NUM_CLASSES, CONFIG)
    batches = list(dataset)
    assert [len(images) for images, _ in batches] == [4, 3]  # the partial batch is kept
    images = np.concatenate([b[0].numpy() for b in batches])
    one_hot = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(np.argmax(one_hot, axis=1), labels)
    for wave, image in zip(waves, images):
        excess = abs(len(wave) - n)
        if len(wave) >= n:
            centred = wave[excess // 2 : excess // 2 + n]
        else:
            centred = np.pad(wave, (excess // 2, excess - excess // 2))
        expected = waveform_to_features(centred[None], FRONTEND)[0]
        np.testing.assert_allclose(image, expected, atol=1e-3)
    again = np.concatenate([b[0].numpy() for b in dataset])
    np.testing.assert_array_equal(images, again)


def test_train_augmentation_is_deterministic_for_a_seed() -> None:
    # Identical clips: whatever differs between batches comes from the random augmentation.
    waves = clips([2100]) * 8
    config = CONFIG.replace(mixup_alpha=0.3)

    def epochs(seed: int) -> list[np.ndarray]:
        dataset = train_dataset(waves, [0] * 8, NUM_CLASSES, config, seed=seed)
        return [next(iter(dataset))[0].numpy() for _ in range(2)]

    first, again, other = epochs(7), epochs(7), epochs(8)
    for epoch in range(2):
        np.testing.assert_array_equal(first[epoch], again[epoch])
        assert not np.allclose(first[epoch], other[epoch])
    assert not np.allclose(first[0], first[1])


def test_train_order_is_seeded_and_reshuffled_every_epoch() -> None:
    config = CONFIG.replace(augment=False, batch_size=1)
    waves = clips([2000] * 7)

    def orders(seed: int) -> list[list[int]]:
        dataset = train_dataset(waves, list(range(7)), NUM_CLASSES, config, seed=seed)
        return [[int(np.argmax(one_hot)) for _, one_hot in dataset] for _ in range(2)]

    first, again, other = orders(1), orders(1), orders(2)
    assert first == again and first != other
    assert first[0] != first[1] and sorted(first[0]) == list(range(7))


def test_an_epoch_is_a_function_of_the_seed_and_its_number_alone() -> None:
    """What resume relies on: the epoch a trainer names (the `epoch` variable, read when an
    iteration starts) is the one an uninterrupted iteration from 0 gives at that number, whatever
    was iterated before."""
    config = CONFIG.replace(mixup_alpha=0.3, batch_size=2)
    waves, labels = clips([2100, 2300, 2500, 2700, 2900, 3100]), [0, 1, 2, 3, 4, 5]
    counted = train_dataset(waves, labels, NUM_CLASSES, config, seed=5)
    assert int(counted.cardinality()) == 3
    from_zero = [[batch[0].numpy() for batch in counted] for _ in range(3)]
    epoch = tf.Variable(2, dtype=tf.int64)
    named = train_dataset(waves, labels, NUM_CLASSES, config, seed=5, epoch=epoch)
    for got, expected in zip([b[0].numpy() for b in named], from_zero[2], strict=True):
        np.testing.assert_array_equal(got, expected)
    assert int(epoch.numpy()) == 3  # advanced: the next iteration is the next epoch
    epoch.assign(1)
    for got, expected in zip([b[0].numpy() for b in named], from_zero[1], strict=True):
        np.testing.assert_array_equal(got, expected)
    assert not np.allclose(from_zero[0][0], from_zero[1][0])


# -- each augmentation ------------------------------------------------------------------------


def test_random_gain_scales_the_power_of_each_clip() -> None:
    waves = np.stack(clips([FRONTEND.clip_samples] * 16))
    power = mel_power(waves, FRONTEND)
    gained = random_gain(power, 6.0, SEED).numpy()
    ratio_db = 10 * np.log10(gained / power.numpy())
    np.testing.assert_allclose(ratio_db - ratio_db[:, :1, :1], 0, atol=1e-3)  # one gain per clip
    assert np.all(np.abs(ratio_db) <= 6.0 + 1e-4)
    assert ratio_db[:, 0, 0].max() - ratio_db[:, 0, 0].min() > 3  # gains differ between clips
    # The same as scaling the waveforms by the gain.
    scaled = waves * 10 ** (ratio_db[:, :1, 0] / 20)
    np.testing.assert_allclose(gained, mel_power(scaled, FRONTEND), rtol=1e-3, atol=1e-7)
    np.testing.assert_array_equal(random_gain(power, 0.0, SEED), power)


def test_white_noise_bank_is_white_noise_of_unit_power_per_frame() -> None:
    bank = white_noise_bank(FRONTEND)
    assert bank is white_noise_bank(CONFIG.replace(seed=5).frontend)  # one per front end
    assert bank.shape == (4096 + FRONTEND.num_frames, FRONTEND.n_mels)
    with pytest.raises(ValueError):
        bank[0, 0] = 1.0
    expected = white_noise_mel_power(FRONTEND) / white_noise_mel_power(FRONTEND).sum()
    np.testing.assert_allclose(bank.sum(axis=1).mean(), 1.0, rtol=0.02)
    np.testing.assert_allclose(bank.mean(axis=0), expected, rtol=0.1, atol=1e-4)


def test_white_noise_snr_is_within_range() -> None:
    waves = np.stack(clips([FRONTEND.clip_samples] * 64) + [np.zeros(FRONTEND.clip_samples)])
    power = mel_power(waves, FRONTEND)
    bank = tf.constant(white_noise_bank(FRONTEND))
    noisy = add_white_noise(power, bank, 1.0, 10.0, 20.0, SEED).numpy()
    noise = noisy - power.numpy()
    assert np.all(noise[:64] >= 0)
    snr_db = 10 * np.log10(power.numpy()[:64].sum(axis=(1, 2)) / noise[:64].sum(axis=(1, 2)))
    assert np.all((snr_db > 10 - 1) & (snr_db < 20 + 1))  # the realised noise power fluctuates
    assert abs(np.mean(snr_db) - 15) < 0.5 and np.std(snr_db) > 2  # uniform over [10, 20]
    np.testing.assert_array_equal(noisy[64], 0)  # silence has no power to set an SNR against
    np.testing.assert_array_equal(add_white_noise(power, bank, 0.0, 10.0, 20.0, SEED), power)


def test_white_noise_matches_adding_white_noise_to_the_waveform() -> None:
    """Band by band, the power-domain noise looks like `mel_power` of the clip plus white noise
    at the same SNR: the same mean log power and the same spread over frames."""
    snr_db, rng = 10.0, np.random.default_rng(1)
    waves = np.stack(clips([FRONTEND.clip_samples] * 64))
    power = mel_power(waves, FRONTEND).numpy()
    bank = tf.constant(white_noise_bank(FRONTEND))
    ours = np.log(add_white_noise(power, bank, 1.0, snr_db, snr_db, SEED).numpy() + 1e-6)
    # White noise of variance s2 has s2 * white_noise_mel_power(frontend) per frame and band.
    frame_power = power.sum(axis=2).mean(axis=1, keepdims=True)
    variance = frame_power / white_noise_mel_power(FRONTEND).sum() * 10 ** (-snr_db / 10)
    noisy_waves = waves + np.sqrt(variance) * rng.standard_normal(waves.shape)
    real = np.log(mel_power(noisy_waves.astype(np.float32), FRONTEND).numpy() + 1e-6)
    bands = white_noise_mel_power(FRONTEND) > 0  # a band that holds no FFT bin stays empty
    for statistic in (lambda x: x.mean(axis=(0, 1)), lambda x: x.std(axis=1).mean(axis=0)):
        np.testing.assert_allclose(statistic(ours)[bands], statistic(real)[bands], atol=0.1)


def test_white_noise_probability_picks_some_clips() -> None:
    power = mel_power(np.stack(clips([FRONTEND.clip_samples] * 64)), FRONTEND)
    bank = tf.constant(white_noise_bank(FRONTEND))
    noisy = add_white_noise(power, bank, 0.5, 10.0, 20.0, SEED).numpy()
    changed = np.any(noisy != power.numpy(), axis=(1, 2))
    assert 16 < changed.sum() < 48


def test_spec_augment_masks_whole_bands_and_frames() -> None:
    rng = np.random.default_rng(0)
    features = rng.uniform(0.5, 1.0, (16, 60, 20)).astype(np.float32)  # no zeros of its own
    masked = spec_augment(tf.constant(features), 2, 5, 3, 7, SEED).numpy()
    for before, after in zip(features, masked):
        zero = after == 0
        bands, frames = zero.all(axis=0), zero.all(axis=1)
        # Every zero lies in a wholly masked band or frame; everything else is untouched.
        np.testing.assert_array_equal(zero, bands[None, :] | frames[:, None])
        np.testing.assert_array_equal(after[~zero], before[~zero])
        assert bands.sum() <= 2 * 5 and frames.sum() <= 3 * 7
    assert (masked == 0).any(axis=(1, 2)).sum() > 8
    np.testing.assert_array_equal(spec_augment(tf.constant(features), 0, 5, 0, 7, SEED), features)


def test_mixup_mixes_images_and_labels_alike() -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (NUM_CLASSES, 4, 4, 3)).astype(np.float32)
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)  # example i is the only one of class i
    mixed_images, mixed_labels = (t.numpy() for t in mixup(images, one_hot, 0.4, SEED))
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1, atol=1e-6)
    for i in range(NUM_CLASSES):
        weights = mixed_labels[i]
        expected = np.tensordot(weights, images, axes=1)  # the same weights mix the images
        np.testing.assert_allclose(mixed_images[i], expected, rtol=1e-4, atol=1e-3)
        assert np.count_nonzero(weights > 1e-6) <= 2
    assert np.any((mixed_labels > 0.05) & (mixed_labels < 0.95))


# -- the benchmark ----------------------------------------------------------------------------


# librosa.load imports audioread, which imports modules Python 3.13 removes.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:audioread.rawread")
def test_bench_pipeline_on_real_clips(shared_datasets: Path) -> None:
    paths = sorted(RAVDESS_DIR.glob("Actor_0[12]/*.flac"))[::6]
    paths += sorted(TESS_DIR.glob("*/*.flac"))[::140]
    waveforms = [sf.read(path, dtype="float32")[0] for path in paths]
    labels = [i % NUM_CLASSES for i in range(len(paths))]
    config = Config().replace(batch_size=8)
    result = bench_pipeline(waveforms, labels, paths, config, librosa_clips=10, min_seconds=1.0)
    pipeline = result["pipeline_clips_per_second"]
    assert result["ratio"] == pytest.approx(pipeline / result["reference_clips_per_second"])
    assert result["same_settings_ratio"] == pytest.approx(pipeline / result["same_settings_clips_per_second"])
    assert result["pipeline"]["seconds"] >= 1.0 and result["pipeline"]["clips"] % 8 == 0
    assert pipeline == result["pipeline"]["clips"] / result["pipeline"]["seconds"]
    for route in ("reference", "same_settings"):
        assert result[route]["clips"] == 10
        assert result[f"{route}_clips_per_second"] == 10 / result[route]["seconds"]
    assert 0 < result["precompute_seconds"] < 60
    assert set(result["routes"]) == {"pipeline", "reference", "same_settings"}
    assert all(isinstance(line, str) and "\n" not in line for line in result["routes"].values())
    assert result["clips_in_memory"] == len(paths)
    assert result["settings"] == {
        "output": "log-mel features [batch, frames, n_mels]; the model draws the image",
        "batch_size": 8,
        "clip_seconds": 3.0,
        "n_mels": 128,
        "augment": True,
    }
    assert result["cpu_count"] >= 1 and result["tensorflow_version"] == tf.__version__
    json.dumps(result)


def test_bench_step_times_each_value_of_a_field_in_turns(shared_datasets: Path) -> None:
    paths = sorted(RAVDESS_DIR.glob("Actor_0[12]/*.flac"))[::12]
    waveforms = [sf.read(path, dtype="float32")[0] for path in paths]
    config = Config().replace(
        backbone="audiocnn", weights="none", batch_size=4, clip_seconds=0.5, n_mels=32, time_mask_width=5
    )
    labels = [i % NUM_CLASSES for i in range(len(paths))]
    speakers = [path.parent.name for path in paths]
    result = bench_step(waveforms, labels, speakers, config, "hop_ms", ["10", "20"], rounds=3, steps=2)
    assert result["field"] == "hop_ms" and result["values"] == ["10", "20"]
    assert [len(rates) for rates in result["rounds"]] == [3, 3]
    assert all(rate > 0 for rates in result["rounds"] for rate in rates)
    assert result["clips_per_second"] == [float(np.median(rates)) for rates in result["rounds"]]
    first, second = result["rounds"]
    assert result["ratio_to_first"] == [1.0, float(np.median(np.divide(second, first)))]
    assert result["steps_per_round"] == 2 and result["settings"] == config.to_flat()
    json.dumps(result)


def test_bench_step_refuses_a_field_or_value_before_reading_any_audio(tmp_path: Path, capsys) -> None:
    from aed_tf.bench.step import run_step_benchmark
    from aed_tf.cli import main
    from aed_tf.errors import InputError

    nowhere = Config().replace(data_roots=[str(tmp_path / "no such folder")])
    for field, values in (("no_such_field", ["1", "2"]), ("hop_ms", ["10", "fast"])):
        with pytest.raises(InputError, match=field):
            run_step_benchmark(nowhere, field, values, 8, "aed-tf bench step", tmp_path / "step.json")
    assert main(["bench", "step", "--vary", "hop_ms", "10"]) != 0
    assert "give a field and two or more values" in capsys.readouterr().err
    assert not (tmp_path / "step.json").exists()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:audioread.rawread")
def test_bench_pipeline_names_an_unreadable_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all")
    waveforms = clips([2000] * 4)
    with pytest.raises(RuntimeError, match="librosa could not load .*broken.flac"):
        bench_pipeline(waveforms, [0, 1, 2, 3], [broken], CONFIG, min_seconds=0.1)
    with pytest.raises(ValueError, match="no paths"):
        bench_pipeline(waveforms, [0, 1, 2, 3], [], CONFIG)
    with pytest.raises(ValueError, match="librosa_clips = 0"):
        bench_pipeline(waveforms, [0, 1, 2, 3], [broken], CONFIG, librosa_clips=0)


# -- per-speaker normalisation ----------------------------------------------------------------


SPEAKER_CONFIG = CONFIG.replace(normalization="speaker")


def _speaker_clips() -> tuple[list[np.ndarray], list[str]]:
    """Two speakers saying the same three tones: "quiet" at 0.05 of full scale, "loud" at 0.5."""
    n = FRONTEND.clip_samples
    waves = clips([n, n + 300, n - 200])
    return [w * 0.05 for w in waves] + [w * 0.5 for w in waves], ["quiet"] * 3 + ["loud"] * 3


def test_speaker_statistics_are_each_speakers_band_means_and_deviations_over_their_clips() -> None:
    waves, speakers = _speaker_clips()
    statistics = speaker_statistics(waves, speakers, FRONTEND)
    assert statistics.shape == (6, 2, FRONTEND.n_mels)
    for rows in ([0, 1, 2], [3, 4, 5]):
        # Every frame of the speaker's clips, as the serving front end computes them.
        frames = np.concatenate([log_mel(waves[i][None], FRONTEND)[0].numpy() for i in rows])
        for i in rows:
            np.testing.assert_allclose(statistics[i, 0], frames.mean(axis=0), atol=1e-4)
            np.testing.assert_allclose(statistics[i, 1], frames.std(axis=0), atol=1e-3)
    # 20 dB louder is log(100) higher in every band well above the floor of silence; the
    # deviations there do not change.
    heard = statistics[0, 0] > -7
    assert heard.sum() > 5
    np.testing.assert_allclose((statistics[3, 0] - statistics[0, 0])[heard], np.log(100.0), atol=0.15)
    np.testing.assert_allclose(statistics[3, 1][heard], statistics[0, 1][heard], rtol=0.05)
    with pytest.raises(ValueError, match="2 speakers for 6 clips"):
        speaker_statistics(waves, speakers[:2], FRONTEND)


def test_per_speaker_training_examples_are_the_front_end_with_their_speakers_statistics() -> None:
    """Augment off: each example is `waveform_to_features` of a window of its clip with its
    speaker's statistics, so a loud speaker's clips are not brought to the quiet one's level."""
    waves, speakers = _speaker_clips()
    statistics = speaker_statistics(waves, speakers, FRONTEND)
    config = SPEAKER_CONFIG.replace(augment=False, batch_size=1)
    n, hop = FRONTEND.clip_samples, FRONTEND.hop_length
    dataset = train_dataset(waves, list(range(6)), NUM_CLASSES, config, seed=0, speakers=speakers)
    for features, one_hot in dataset:
        clip = int(np.argmax(one_hot[0]))
        windows = [
            fit_to_length(tf.constant(waves[clip]), n, offset)
            for offset in range(0, abs(len(waves[clip]) - n) + 1, hop)
        ]
        expected = waveform_to_features(
            tf.stack(windows), SPEAKER_CONFIG.frontend, np.repeat(statistics[clip][None], len(windows), 0)
        ).numpy()
        assert np.abs(expected - features.numpy()).max(axis=(1, 2)).min() < 1e-3
    with pytest.raises(ValueError, match="the speaker of every training clip"):
        train_dataset(waves, list(range(6)), NUM_CLASSES, config, seed=0)
    # Augmented, the same statistics normalise: finite features of the two speakers' scale.
    for features, _ in train_dataset(
        waves,
        list(range(6)),
        NUM_CLASSES,
        SPEAKER_CONFIG.replace(speed_perturbation=0.1),
        seed=0,
        speakers=speakers,
    ):
        assert np.isfinite(features.numpy()).all() and np.abs(features.numpy()).max() < 50


def test_per_speaker_eval_dataset_uses_each_clips_statistics() -> None:
    waves, speakers = _speaker_clips()
    statistics = speaker_statistics(waves, speakers, FRONTEND)
    features = np.concatenate(
        [f.numpy() for f, _ in eval_dataset(waves, [0] * 6, NUM_CLASSES, SPEAKER_CONFIG, statistics)]
    )
    n = FRONTEND.clip_samples
    for wave, stats, feature in zip(waves, statistics, features):
        centred = fit_to_length(tf.constant(wave), n, abs(len(wave) - n) // 2)
        np.testing.assert_allclose(
            feature, waveform_to_features(centred[None], SPEAKER_CONFIG.frontend, stats[None])[0], atol=1e-4
        )
    # Each speaker standardised by their own statistics: 20 dB apart before, alike after.
    # (Bands near the floor of silence keep some of the difference.)
    assert np.abs(features[:3] - features[3:]).mean() < 0.25
    with pytest.raises(ValueError, match="statistics are needed"):
        eval_dataset(waves, [0] * 6, NUM_CLASSES, SPEAKER_CONFIG)
    with pytest.raises(ValueError, match="statistics are not used"):
        eval_dataset(waves, [0] * 6, NUM_CLASSES, CONFIG, statistics)


def test_augmented_views_of_a_clip_normalised_per_speaker_use_the_clips_own_statistics() -> None:
    n = FRONTEND.clip_samples
    wave = clips([n])[0] * 0.3
    [plain] = augmented_views(wave, SPEAKER_CONFIG.replace(augment=False), count=1)
    own = speaker_statistics([wave], ["the speaker"], FRONTEND)
    np.testing.assert_allclose(
        plain, waveform_to_features(wave[None], SPEAKER_CONFIG.frontend, own)[0], atol=1e-3
    )
    views = augmented_views(wave, SPEAKER_CONFIG, count=3)
    assert views.shape == (3, FRONTEND.num_frames, FRONTEND.n_mels) and np.isfinite(views).all()


def test_the_pipeline_benchmark_runs_a_per_speaker_config_given_the_speakers(tmp_path) -> None:
    waves = clips([2000] * 8)
    path = tmp_path / "clip.wav"
    sf.write(path, waves[0], FRONTEND.sample_rate)
    speakers = ["a"] * 4 + ["b"] * 4
    result = bench_pipeline(
        waves,
        [i % NUM_CLASSES for i in range(8)],
        [path],
        SPEAKER_CONFIG,
        librosa_clips=1,
        min_seconds=0.2,
        speakers=speakers,
    )
    assert (
        result["pipeline"]["clips"] % SPEAKER_CONFIG.train.batch_size == 0 and result["pipeline"]["clips"] > 0
    )
    assert set(ENVIRONMENT_KEYS) <= set(result)  # the block every benchmark result records
