"""The log-mel front end: shapes, physics, the librosa cross-check and train/serve equality."""

from __future__ import annotations

from pathlib import Path

import keras
import librosa
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from aed_tf.config import Config, FrontEndConfig
from aed_tf.errors import InputError
from aed_tf.features import (
    LogMelFrontEnd,
    SpectrogramImage,
    log_mel,
    log_mel_statistics,
    mel_matrix,
    mel_power,
    normalize_per_clip,
    normalize_per_speaker,
    to_image,
    waveform_to_features,
    waveform_to_image,
    white_noise_mel_power,
)
from aed_tf.pipeline import eval_dataset
from tests.conftest import RAVDESS_DIR
from tests.synth import tone

FRONTENDS = [
    FrontEndConfig(sample_rate=8000, n_mels=64, fmax=4000.0, clip_seconds=1.0),
    FrontEndConfig(),
    FrontEndConfig(sample_rate=22050, n_mels=80, n_fft=1024, clip_seconds=1.5),
]


def sine(freq: float, frontend: FrontEndConfig) -> np.ndarray:
    t = np.arange(frontend.clip_samples) / frontend.sample_rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speech(actor: int = 1, index: int = 0) -> np.ndarray:
    paths = sorted((RAVDESS_DIR / f"Actor_{actor:02d}").glob("*.flac"))
    audio, sample_rate = sf.read(paths[index], dtype="float32")
    assert sample_rate == 16000 and audio.ndim == 1
    return audio


@pytest.mark.parametrize("frontend", FRONTENDS, ids=lambda f: f"{f.sample_rate}Hz-{f.n_mels}mels")
def test_log_mel_shape(frontend: FrontEndConfig) -> None:
    waves = np.stack([tone(frontend.clip_seconds, frontend.sample_rate, seed=s) for s in range(2)])
    features = log_mel(waves, frontend)
    assert features.shape == (2, frontend.num_frames, frontend.n_mels)
    assert features.dtype == tf.float32
    assert np.isfinite(features.numpy()).all()


@pytest.mark.parametrize("frontend", FRONTENDS, ids=lambda f: f"{f.sample_rate}Hz-{f.n_mels}mels")
@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_pure_tone_lands_in_its_mel_band(frontend: FrontEndConfig, freq: float) -> None:
    band_energy = log_mel(sine(freq, frontend)[None], frontend).numpy()[0].mean(axis=0)
    # The HTK mel bands peak at n_mels points spaced evenly on the mel scale between the edges.
    edges = _hz_to_mel(frontend.fmin), _hz_to_mel(frontend.fmax)
    mel_points = np.linspace(*edges, frontend.n_mels + 2)
    expected_band = np.argmin(np.abs(mel_points[1:-1] - _hz_to_mel(freq)))
    assert abs(int(np.argmax(band_energy)) - expected_band) <= 1
    assert band_energy.max() - np.median(band_energy) > 5  # the tone stands far above the rest


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


# 128 HTK bands over 257 FFT bins leave the lowest bands empty, in librosa as here.
@pytest.mark.filterwarnings("ignore:Empty filters detected")
def test_log_mel_matches_librosa_on_speech(shared_datasets: Path) -> None:
    frontend = FrontEndConfig()
    audio = speech()
    ours = log_mel(audio[None], frontend).numpy()[0]
    reference = librosa.feature.melspectrogram(
        y=audio,
        sr=frontend.sample_rate,
        n_fft=frontend.n_fft,
        hop_length=frontend.hop_length,
        win_length=frontend.window_length,
        n_mels=frontend.n_mels,
        fmin=frontend.fmin,
        fmax=frontend.fmax,
        center=False,
        htk=True,
        norm=None,
    )
    reference = np.log(reference.T + 1e-6)
    frames = min(len(ours), len(reference))
    correlation = np.corrcoef(ours[:frames].ravel(), reference[:frames].ravel())[0, 1]
    assert correlation > 0.95


def test_log_mel_is_the_log_of_the_mel_power_spectrum() -> None:
    frontend = FrontEndConfig(clip_seconds=0.5, n_mels=40)
    waves = np.stack([tone(0.5, freq=110.0 * (s + 1), seed=s) for s in range(3)])
    stft = tf.signal.stft(waves, frontend.window_length, frontend.hop_length, frontend.n_fft).numpy()
    expected = np.abs(stft) ** 2 @ mel_matrix(frontend)
    np.testing.assert_allclose(mel_power(waves, frontend), expected, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(log_mel(waves, frontend), np.log(expected + 1e-6), atol=1e-3)


def test_white_noise_mel_power_is_the_mean_mel_power_of_white_noise() -> None:
    frontend, variance = FrontEndConfig(), 0.09
    noise = np.random.default_rng(0).normal(0, np.sqrt(variance), (8, 20 * 16000))
    measured = mel_power(noise.astype(np.float32), frontend).numpy().mean(axis=(0, 1))
    expected = variance * white_noise_mel_power(frontend)
    assert expected.shape == (frontend.n_mels,)
    filled = mel_matrix(frontend).any(axis=0)  # 128 HTK bands over 257 FFT bins leave some empty
    np.testing.assert_array_equal(expected[~filled], 0)
    np.testing.assert_allclose(measured[filled], expected[filled], rtol=0.05)
    assert white_noise_mel_power(frontend) is white_noise_mel_power(FrontEndConfig())


def test_mel_matrix_is_cached_and_read_only() -> None:
    frontend = FrontEndConfig(n_mels=40)
    matrix = mel_matrix(frontend)
    assert matrix is mel_matrix(FrontEndConfig(n_mels=40))
    assert matrix.shape == (frontend.n_fft // 2 + 1, 40)
    with pytest.raises(ValueError):
        matrix[0, 0] = 1.0


def test_log_mel_rejects_bad_shapes() -> None:
    frontend = FrontEndConfig()
    with pytest.raises(ValueError, match="batch, samples"):
        log_mel(np.zeros(16000, np.float32), frontend)
    with pytest.raises(ValueError, match="shorter than one STFT window"):
        log_mel(np.zeros((1, frontend.window_length - 1), np.float32), frontend)
    with pytest.raises(ValueError, match="mel_power expects waveforms shaped"):
        mel_power(np.zeros((2, 3, 16000), np.float32), frontend)


def test_normalize_per_clip() -> None:
    rng = np.random.default_rng(0)
    features = np.stack([rng.normal(loc, scale, (50, 16)) for loc, scale in [(-5, 0.1), (3, 7)]])
    features += np.linspace(0, 4, 16)  # a spectral tilt, constant over the clip
    normalized = normalize_per_clip(tf.constant(features, tf.float32)).numpy()
    np.testing.assert_allclose(normalized.mean(axis=1), 0, atol=1e-5)  # every band's mean removed
    np.testing.assert_allclose(normalized.std(axis=(1, 2)), 1, atol=1e-3)
    # What varies within the clip is kept, scaled by one factor per clip.
    centred = features - features.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(normalized * centred.std(axis=(1, 2), keepdims=True), centred, atol=1e-3)


def test_normalize_per_speaker_is_the_per_clip_normalisation_with_the_speakers_statistics() -> None:
    rng = np.random.default_rng(0)
    clips = rng.normal(2.0, 3.0, (4, 50, 16)) + np.linspace(0, 4, 16)  # one speaker's four clips
    clips[0] += 1.5  # a louder take
    frames = clips.reshape(-1, 16)
    statistics = log_mel_statistics(tf.constant(frames, tf.float32), np.zeros(len(frames), np.int64), 1)
    np.testing.assert_allclose(statistics[0], [frames.mean(axis=0), frames.std(axis=0)], atol=1e-4)
    normalized = normalize_per_speaker(tf.constant(clips, tf.float32), np.repeat(statistics, 4, 0)).numpy()
    # Over the speaker's clips: every band's mean removed and unit variance ...
    np.testing.assert_allclose(normalized.reshape(-1, 16).mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(normalized.std(), 1, atol=1e-3)
    # ... so the louder take stays louder, which per-clip normalisation removes.
    assert (
        normalized[0].mean() > 0.3 > abs(normalize_per_clip(tf.constant(clips, tf.float32)).numpy()[0].mean())
    )
    # One variance for all bands: a nearly constant band is not blown up.
    clips[..., -1] = -13.8 + 1e-3 * rng.standard_normal((4, 50))
    frames = clips.reshape(-1, 16)
    statistics = log_mel_statistics(tf.constant(frames, tf.float32), np.zeros(len(frames), np.int64), 1)
    normalized = normalize_per_speaker(tf.constant(clips, tf.float32), np.repeat(statistics, 4, 0)).numpy()
    assert np.abs(normalized[..., -1]).max() < 0.01


def test_log_mel_statistics_of_groups_and_of_a_group_without_frames() -> None:
    frames = tf.constant([[1.0, 10.0], [3.0, 10.0], [5.0, -2.0]])
    statistics = log_mel_statistics(frames, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(statistics, [[[2.0, 10.0], [1.0, 0.0]], [[5.0, -2.0], [0.0, 0.0]]])
    with pytest.raises(ValueError, match="1 of 3 groups have no whole frame"):
        log_mel_statistics(frames, np.array([0, 0, 1]), 3)


def test_the_front_end_takes_statistics_exactly_when_it_normalises_per_speaker() -> None:
    clip, speaker = (
        FrontEndConfig(clip_seconds=0.5),
        FrontEndConfig(clip_seconds=0.5, normalization="speaker"),
    )
    waves = np.random.default_rng(0).normal(0, 0.1, (2, clip.clip_samples)).astype(np.float32)
    statistics = np.stack([np.zeros((2, clip.n_mels)), np.ones((2, clip.n_mels))], axis=1).astype(np.float32)
    with pytest.raises(ValueError, match="needs the speaker's statistics"):
        waveform_to_features(waves, speaker)
    with pytest.raises(ValueError, match="takes no statistics"):
        waveform_to_features(waves, clip, statistics)
    # Zero means and unit deviations leave the log-mel as it is.
    np.testing.assert_allclose(
        waveform_to_features(waves, speaker, statistics), log_mel(waves, clip), atol=1e-5
    )
    with pytest.raises(InputError, match="normalization"):
        FrontEndConfig(normalization="corpus")


def test_silent_clip_gives_finite_features() -> None:
    frontend = FrontEndConfig(clip_seconds=0.5)
    silence = np.zeros((1, frontend.clip_samples), np.float32)
    image = waveform_to_image(silence, frontend, 32).numpy()
    normalized = normalize_per_clip(log_mel(silence, frontend))
    # Float rounding leaves the constant a hair off its mean; the epsilon keeps that tiny.
    np.testing.assert_allclose(normalized.numpy(), 0, atol=0.01)
    np.testing.assert_allclose(image, 127.5, atol=1)  # the clip mean is mid-grey


def test_to_image_layout_and_range() -> None:
    frames, bands, size = 40, 16, 24
    features = np.full((2, frames, bands), -1.0, np.float32)
    features[0, :, 0] = 10.0  # the lowest mel band, far beyond +3
    features[1, :5, :] = -10.0  # the first frames, far below -3
    image = to_image(tf.constant(features), size).numpy()
    assert image.shape == (2, size, size, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 255
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    # Low frequencies are at the bottom: the bright band is the last row, the top row is -1.
    np.testing.assert_allclose(image[0, -1, :, 0], 255)
    np.testing.assert_allclose(image[0, 0, :, 0], 127.5 * (1 - 1 / 3))
    # Time runs to the right: the dark frames are the leftmost columns.
    np.testing.assert_allclose(image[1, :, 0, 0], 0)
    np.testing.assert_allclose(image[1, :, -1, 0], 127.5 * (1 - 1 / 3))


def test_front_end_layer_matches_the_input_pipeline(shared_datasets: Path) -> None:
    config = Config().replace(batch_size=3)
    frontend = config.frontend
    # Three real clips longer than the clip length, and a short one that eval pads.
    clips = [speech(1, i) for i in range(3)] + [speech(2, 0)[: frontend.clip_samples // 2]]
    pipeline_features = np.concatenate(
        [features.numpy() for features, _ in eval_dataset(clips, [0, 1, 2, 3], 7, config)]
    )
    layer = LogMelFrontEnd(frontend)
    for clip, expected in zip(clips, pipeline_features):
        excess = abs(len(clip) - frontend.clip_samples)
        if len(clip) >= frontend.clip_samples:
            fitted = clip[excess // 2 : excess // 2 + frontend.clip_samples]
        else:
            fitted = np.pad(clip, (excess // 2, excess - excess // 2))
        np.testing.assert_allclose(layer(fitted[None]).numpy()[0], expected, atol=1e-4)
        np.testing.assert_allclose(
            waveform_to_features(fitted[None], frontend).numpy()[0], expected, atol=1e-4
        )


def test_front_end_and_image_layers_survive_save_and_load(tmp_path: Path, shared_datasets: Path) -> None:
    frontend = FrontEndConfig(n_mels=64)
    waveforms = keras.Input(shape=(None,), name="waveform")
    features = LogMelFrontEnd(frontend, name="front_end")(waveforms)
    images = SpectrogramImage(48, name="image")(features)
    logits = keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(images))
    model = keras.Model(waveforms, [images, logits])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert loaded.get_layer("front_end").frontend == frontend
    assert loaded.get_layer("image").image_size == 48
    # Any length of at least one window works, as it does for a user's file.
    for length in (frontend.clip_samples, 20000):
        audio = speech()[None, :length]
        expected_images, expected_logits = model(audio)
        loaded_images, loaded_logits = loaded(audio)
        assert loaded_images.shape == (1, 48, 48, 3)
        np.testing.assert_allclose(loaded_images, waveform_to_image(audio, frontend, 48), atol=1e-3)
        np.testing.assert_allclose(loaded_images, expected_images, atol=1e-4)
        np.testing.assert_allclose(loaded_logits, expected_logits, atol=1e-4)


def test_layer_configs_round_trip() -> None:
    layer = LogMelFrontEnd(FrontEndConfig(n_mels=40, fmax=7600.0), name="front")
    config = layer.get_config()
    assert config["frontend"]["n_mels"] == 40
    rebuilt = LogMelFrontEnd.from_config(config)
    assert rebuilt.frontend == layer.frontend and rebuilt.name == "front"
    frontend = rebuilt.frontend
    assert rebuilt.compute_output_shape((None, frontend.clip_samples)) == (None, frontend.num_frames, 40)
    image = SpectrogramImage.from_config(SpectrogramImage(96, name="img").get_config())
    assert image.image_size == 96 and image.name == "img"
    assert image.compute_output_shape((None, None, 40)) == (None, 96, 96, 3)
