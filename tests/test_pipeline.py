"""The tf.data pipelines, each augmentation on its own, determinism and the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from aed_tf.bench import bench_pipeline
from aed_tf.config import Config
from aed_tf.features import waveform_to_image
from aed_tf.pipeline import (
    add_white_noise,
    eval_dataset,
    fit_to_length,
    mixup,
    random_gain,
    random_time_shift,
    spec_augment,
    train_dataset,
    waveform_dataset,
)
from tests.conftest import RAVDESS_DIR, TESS_DIR
from tests.synth import tone

# Small clips and images keep the tests fast; the code paths are those of the defaults.
CONFIG = Config().replace(sample_rate=8000, clip_seconds=0.25, fmax=4000.0, n_mels=32, batch_size=4)
FRONTEND = CONFIG.frontend
SIZE = 32
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
    with pytest.raises(ValueError, match=r"class indices in \[0, 7\)"):
        train_dataset(clips([2000] * 4), [0, 1, 2, 7], NUM_CLASSES, CONFIG, SIZE)
    with pytest.raises(ValueError, match="no full batch of 4"):
        train_dataset(clips([2000] * 3), [0, 1, 2], NUM_CLASSES, CONFIG, SIZE)


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


def test_train_crops_a_window_of_each_clip() -> None:
    """Without augmentation a training image is the image of one window (or padding) of its clip."""
    config = CONFIG.replace(augment=False, batch_size=1)
    n = FRONTEND.clip_samples
    waves = clips([n - 7, n, n + 7])
    for _ in range(2):  # two epochs
        for images, one_hot in train_dataset(waves, [0, 1, 2], NUM_CLASSES, config, SIZE, seed=1):
            wave = waves[int(np.argmax(one_hot[0]))]
            candidates = [
                fit_to_length(tf.constant(wave), n, tf.constant(offset))
                for offset in range(abs(len(wave) - n) + 1)
            ]
            expected = waveform_to_image(tf.stack(candidates), FRONTEND, SIZE).numpy()
            distances = np.abs(expected - images.numpy()).max(axis=(1, 2, 3))
            assert distances.min() < 1e-3


# -- the datasets -----------------------------------------------------------------------------


def test_train_dataset_shapes_and_values() -> None:
    waves = clips([1000, 2000, 3000, 4000, 5000, 2000, 2000, 2000, 2000, 100])
    labels = [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    batches = list(train_dataset(waves, labels, NUM_CLASSES, CONFIG, SIZE, seed=0))
    assert len(batches) == 2  # 10 clips: two full batches of 4, the remainder dropped
    for images, one_hot in batches:
        assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == tf.float32
        assert one_hot.shape == (4, NUM_CLASSES) and one_hot.dtype == tf.float32
        assert 0 <= images.numpy().min() and images.numpy().max() <= 255
        np.testing.assert_array_equal(one_hot.numpy().sum(axis=1), 1)
        assert set(np.unique(one_hot.numpy())) == {0, 1}


def test_train_dataset_with_mixup_gives_soft_labels() -> None:
    waves = clips([2000] * 8)
    config = CONFIG.replace(mixup_alpha=0.4)
    labels = list(range(7)) + [0]
    soft = 0
    for images, one_hot in train_dataset(waves, labels, NUM_CLASSES, config, SIZE, seed=0):
        np.testing.assert_allclose(one_hot.numpy().sum(axis=1), 1, atol=1e-6)
        assert 0 <= images.numpy().min() and images.numpy().max() <= 255
        soft += int(np.sum((one_hot.numpy() > 1e-3) & (one_hot.numpy() < 1 - 1e-3)))
    assert soft > 0


def test_augment_false_disables_every_augmentation() -> None:
    n = FRONTEND.clip_samples  # full-length clips leave nothing to crop
    waves = clips([n] * 8)
    labels = list(range(8))  # a class per clip tells which clip each image shows
    plain = waveform_to_image(np.stack(waves), FRONTEND, SIZE).numpy()
    for augment in (False, True):
        config = CONFIG.replace(augment=augment)
        for images, one_hot in train_dataset(waves, labels, 8, config, SIZE, seed=0):
            for image, label in zip(images.numpy(), np.argmax(one_hot.numpy(), axis=1)):
                assert np.allclose(image, plain[label], atol=1e-3) == (not augment)


def test_eval_dataset_is_ordered_centred_and_deterministic() -> None:
    n = FRONTEND.clip_samples
    waves = clips([n + 101, n - 51, n, 500, n + 2, n, n * 2])
    labels = [6, 5, 4, 3, 2, 1, 0]
    dataset = eval_dataset(waves, labels, NUM_CLASSES, CONFIG, SIZE)
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
        expected = waveform_to_image(centred[None], FRONTEND, SIZE)[0]
        np.testing.assert_allclose(image, expected, atol=1e-3)
    again = np.concatenate([b[0].numpy() for b in dataset])
    np.testing.assert_array_equal(images, again)


def test_train_augmentation_is_deterministic_for_a_seed() -> None:
    # Identical clips: whatever differs between batches comes from the random augmentation.
    waves = clips([2100]) * 8
    config = CONFIG.replace(mixup_alpha=0.3)

    def epochs(seed: int) -> list[np.ndarray]:
        dataset = train_dataset(waves, [0] * 8, NUM_CLASSES, config, SIZE, seed=seed)
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
        dataset = train_dataset(waves, list(range(7)), NUM_CLASSES, config, SIZE, seed=seed)
        return [[int(np.argmax(one_hot)) for _, one_hot in dataset] for _ in range(2)]

    first, again, other = orders(1), orders(1), orders(2)
    assert first == again and first != other
    assert first[0] != first[1] and sorted(first[0]) == list(range(7))


# -- each augmentation ------------------------------------------------------------------------


def test_random_gain_stays_within_bounds() -> None:
    waves = tf.constant(np.random.default_rng(0).uniform(0.1, 1.0, (16, 400)), tf.float32)
    gained = random_gain(waves, 6.0, SEED).numpy()
    ratio_db = 20 * np.log10(gained / waves.numpy())
    np.testing.assert_allclose(ratio_db - ratio_db[:, :1], 0, atol=1e-3)  # one gain per clip
    assert np.all(np.abs(ratio_db) <= 6.0 + 1e-4)
    assert ratio_db[:, 0].max() - ratio_db[:, 0].min() > 3  # gains differ between clips
    np.testing.assert_array_equal(random_gain(waves, 0.0, SEED), waves)


def test_white_noise_snr_is_within_range() -> None:
    waves = tf.constant(np.stack(clips([16000] * 8) + [np.zeros(16000, np.float32)]))
    noisy = add_white_noise(waves, 1.0, 10.0, 20.0, SEED).numpy()
    noise = noisy - waves.numpy()
    signal_power = np.mean(waves.numpy()[:8] ** 2, axis=1)
    snr_db = 10 * np.log10(signal_power / np.mean(noise[:8] ** 2, axis=1))
    assert np.all((snr_db > 10 - 0.2) & (snr_db < 20 + 0.2))
    assert snr_db.max() - snr_db.min() > 1  # SNRs differ between clips
    np.testing.assert_array_equal(noisy[8], 0)  # silence has no power to set an SNR against
    spectrum = np.abs(np.fft.rfft(noise[:8], axis=1)) ** 2
    halves = spectrum[:, 1:4000].mean(), spectrum[:, 4000:8000].mean()
    assert 0.9 < halves[0] / halves[1] < 1.1  # white: flat spectrum
    np.testing.assert_array_equal(add_white_noise(waves, 0.0, 10.0, 20.0, SEED), waves)


def test_white_noise_probability_picks_some_clips() -> None:
    waves = tf.constant(np.stack(clips([200] * 64)))
    noisy = add_white_noise(waves, 0.5, 10.0, 20.0, SEED).numpy()
    changed = np.any(noisy != waves.numpy(), axis=1)
    assert 16 < changed.sum() < 48


def test_time_shift_moves_each_clip_with_zero_fill() -> None:
    rng = np.random.default_rng(0)
    waves = rng.uniform(0.5, 1.0, (16, 101)).astype(np.float32)  # no zeros of its own
    shifted = random_time_shift(tf.constant(waves), 30, SEED).numpy()
    shifts = []
    for wave, out in zip(waves, shifted):
        leading, trailing = np.argmax(out != 0), np.argmax(out[::-1] != 0)
        shift = int(leading - trailing)
        expected = np.zeros_like(wave)
        if shift >= 0:
            expected[shift:] = wave[: len(wave) - shift]
        else:
            expected[:shift] = wave[-shift:]
        np.testing.assert_array_equal(out, expected)
        assert abs(shift) <= 30
        shifts.append(shift)
    assert min(shifts) < 0 < max(shifts)
    np.testing.assert_array_equal(random_time_shift(tf.constant(waves), 0, SEED), waves)


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
    result = bench_pipeline(
        waveforms, labels, paths, config, image_size=64, librosa_clips=10, min_seconds=1.0
    )
    assert result["pipeline_clips_per_second"] > 0 and result["librosa_clips_per_second"] > 0
    assert result["speedup"] == pytest.approx(
        result["pipeline_clips_per_second"] / result["librosa_clips_per_second"]
    )
    assert result["pipeline"]["seconds"] >= 1.0 and result["pipeline"]["clips"] % 8 == 0
    assert result["librosa"]["clips"] == 10 and result["clips_in_memory"] == len(paths)
    assert result["settings"] == {
        "image_size": 64, "batch_size": 8, "clip_seconds": 3.0, "n_mels": 128, "augment": True,
    }
    assert result["cpu_count"] >= 1 and result["tensorflow_version"] == tf.__version__
    json.dumps(result)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:audioread.rawread")
def test_bench_pipeline_names_an_unreadable_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all")
    waveforms = clips([2000] * 4)
    with pytest.raises(RuntimeError, match="librosa could not load .*broken.flac"):
        bench_pipeline(waveforms, [0, 1, 2, 3], [broken], CONFIG, SIZE, min_seconds=0.1)
    with pytest.raises(ValueError, match="no paths"):
        bench_pipeline(waveforms, [0, 1, 2, 3], [], CONFIG, SIZE)
