"""What tests make for themselves: tones in any format, rate and channel count, corpus trees of
them, and configs for runs small enough for a 2-core CI machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from aed_tf.config import Config


def tone(
    seconds: float = 1.0,
    sample_rate: int = 16000,
    freq: float = 220.0,
    channels: int = 1,
    amplitude: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """A harmonic tone with a little noise, shaped (frames,) or (frames, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3))
    wave = amplitude * wave / np.max(np.abs(wave)) + 0.001 * rng.standard_normal(t.size)
    wave = wave.astype(np.float32)
    if channels == 1:
        return wave
    return np.stack([wave * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)


def write_audio(
    path: Path,
    seconds: float = 1.0,
    sample_rate: int = 16000,
    channels: int = 1,
    subtype: str | None = None,
    format: str | None = None,
    freq: float = 220.0,
    seed: int = 0,
) -> Path:
    """Writes a tone to `path` (format from the extension unless given) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        path,
        tone(seconds, sample_rate, freq, channels, seed=seed),
        sample_rate,
        subtype=subtype,
        format=format,
    )
    return path


RAVDESS_EMOTION_CODES = ("01", "03", "04", "05")  # neutral, happy, sad, angry


def make_ravdess_tree(
    root: Path, actors=range(1, 7), codes=RAVDESS_EMOTION_CODES, takes: int = 2, seconds: float = 0.5
) -> Path:
    """RAVDESS-named clips whose pitch depends on the emotion, so that a model can learn them."""
    for actor in actors:
        for i, code in enumerate(codes):
            for take in range(1, takes + 1):
                name = f"03-01-{code}-01-01-{take:02d}-{actor:02d}.wav"
                write_audio(
                    root / f"Actor_{actor:02d}" / name,
                    seconds=seconds,
                    freq=120 * (i + 1) + 5 * actor + 3 * take,
                    seed=actor * 100 + i * 10 + take,
                )
    return root


def tiny_config(tmp_path: Path, data_root: Path, **changes) -> Config:
    """A from-scratch run small enough for a 2-core CI machine."""
    return Config().replace(
        **{
            "data_roots": [str(data_root)],
            "prepared_dir": str(tmp_path / "prepared"),
            "cache_dir": str(tmp_path / "cache"),
            "output_dir": str(tmp_path / "runs"),
            "backbone": "mobilenetv3small",
            "weights": "none",
            "image_size": 32,
            "batch_size": 8,
            "epochs": 2,
            "clip_seconds": 0.5,
            "n_mels": 32,
            "time_mask_width": 5,
            "freq_mask_width": 4,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
            "run_id": "run",
            **changes,
        }
    )


ASED_FOLDERS = {"n": "01Neutral", "f": "02Fearful", "h": "03Happy", "s": "04Sad", "a": "05Angry"}


def make_ased_tree(root: Path, speakers=range(1, 6), letters="nhsa", seconds: float = 0.5) -> Path:
    """ASED-named clips (``s4-01-01-01-29``), pitch by emotion as in `make_ravdess_tree`."""
    for speaker in speakers:
        for i, letter in enumerate(letters):
            number = "nfhsa".index(letter) + 1
            name = f"{letter}{number}-01-01-{1 + speaker % 2:02d}-{speaker:02d}.wav"
            write_audio(
                root / ASED_FOLDERS[letter] / name,
                seconds=seconds,
                freq=120 * (i + 1) + 4 * speaker,
                seed=5000 + speaker * 10 + i,
            )
    return root
