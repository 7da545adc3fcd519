"""aed_tf.audio: decoding every supported format and rate, refusing bad files, and the cache."""

from __future__ import annotations

import hashlib
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from aed_tf.audio import (
    CACHE_VERSION,
    AudioCache,
    AudioError,
    AudioStream,
    DecodedAudio,
    cached_clip_features,
    decode,
    decode_many,
    file_hash,
    is_silent,
    to_mono_float32,
)
from tests.conftest import ORIGINALS_DIR, RAVDESS_DIR, TESS_DIR
from tests.synth import tone, write_audio

RATES = (8000, 11025, 22050, 24414, 44100, 48000, 96000)
# (extension, libsndfile format, subtype, lowest correlation with the source tone)
FORMATS = (
    ("wav", "WAV", "PCM_U8", 0.999),
    ("wav", "WAV", "PCM_16", 0.9999),
    ("wav", "WAV", "PCM_24", 0.9999),
    ("wav", "WAV", "PCM_32", 0.9999),
    ("wav", "WAV", "FLOAT", 0.9999),
    ("wav", "WAV", "DOUBLE", 0.9999),
    ("flac", "FLAC", "PCM_16", 0.9999),
    ("flac", "FLAC", "PCM_24", 0.9999),
    ("ogg", "OGG", "VORBIS", 0.999),
    ("mp3", "MP3", "MPEG_LAYER_III", 0.999),
)
MPEG_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}  # what MPEG-1/2/2.5 defines
EDGE = 160  # samples (10 ms) at each end where resampler and codec edge effects are allowed


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a[EDGE:-EDGE], b[EDGE:-EDGE])[0, 1])


def test_the_promised_formats_are_available():
    formats = sf.available_formats()
    assert {"WAV", "FLAC", "OGG", "MP3"} <= formats.keys()
    assert "VORBIS" in sf.available_subtypes("OGG")
    assert "MPEG_LAYER_III" in sf.available_subtypes("MP3")


@pytest.mark.parametrize(
    ("ext", "fmt", "subtype", "min_correlation", "rate"),
    [
        pytest.param(*spec, rate, id=f"{spec[0]}-{spec[2]}-{rate}")
        for spec in FORMATS
        for rate in RATES
        if spec[1] != "MP3" or rate in MPEG_RATES  # MPEG audio cannot hold 24414 or 96000 Hz
    ],
)
def test_every_format_and_rate_decodes_to_the_source_tone_at_16khz(
    tmp_path, ext, fmt, subtype, min_correlation, rate
):
    path = write_audio(tmp_path / f"tone.{ext}", seconds=1.0, sample_rate=rate, subtype=subtype, format=fmt)

    decoded = decode(path)

    assert decoded.sample_rate == 16000
    assert decoded.source_sample_rate == rate
    assert decoded.channels == 1
    assert decoded.duration == pytest.approx(1.0)
    assert decoded.samples.dtype == np.float32 and decoded.samples.flags.c_contiguous
    assert decoded.samples.shape == (16000,)
    assert _correlation(decoded.samples, tone(1.0, 16000)) > min_correlation


@pytest.mark.parametrize(("subtype", "tolerance"), [("PCM_16", 1.5 / 32768), ("FLOAT", 0.0)])
def test_a_file_at_the_output_rate_is_not_resampled(tmp_path, subtype, tolerance):
    path = write_audio(tmp_path / "tone.wav", seconds=0.5, sample_rate=16000, subtype=subtype)

    samples = decode(path).samples

    np.testing.assert_allclose(samples, tone(0.5, 16000), rtol=0, atol=tolerance)


@pytest.mark.parametrize(
    ("name", "rate", "subtype"),
    [
        ("a.wav", 48000, "PCM_16"),
        ("a.flac", 44100, "PCM_24"),
        ("a.ogg", 22050, "VORBIS"),
        ("a.mp3", 44100, "MPEG_LAYER_III"),
    ],
)
def test_stereo_is_mixed_down_by_averaging_the_channels(tmp_path, name, rate, subtype):
    left, right = tone(1.0, rate, freq=220.0), tone(1.0, rate, freq=330.0, seed=1)
    path = tmp_path / name
    sf.write(path, np.stack([left, right], axis=1), rate, subtype=subtype)

    decoded = decode(path)

    assert decoded.channels == 2
    expected = (tone(1.0, 16000, freq=220.0) + tone(1.0, 16000, freq=330.0, seed=1)) / 2
    assert _correlation(decoded.samples, expected) > 0.999
    assert _correlation(decoded.samples, tone(1.0, 16000, freq=220.0)) < 0.9


def test_other_output_rates(tmp_path):
    path = write_audio(tmp_path / "tone.wav", seconds=1.0, sample_rate=44100)

    decoded = decode(path, sample_rate=22050)

    assert decoded.sample_rate == 22050 and decoded.samples.shape == (22050,)
    assert _correlation(decoded.samples, tone(1.0, 22050)) > 0.9999


def test_hashes_are_blake2b_of_the_file_bytes_and_of_the_samples(tmp_path):
    path = write_audio(tmp_path / "tone.flac")

    decoded = decode(path)

    assert decoded.file_hash == hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    assert decoded.file_hash == file_hash(path)
    assert decoded.audio_hash == hashlib.blake2b(decoded.samples.tobytes(), digest_size=16).hexdigest()


def test_the_same_audio_in_different_files_has_one_audio_hash(tmp_path):
    # Integer samples, so that both files hold exactly the same values.
    samples = np.round(tone(1.0, 16000) * 32767).astype(np.int16)
    wav, flac = tmp_path / "tone.wav", tmp_path / "tone.flac"
    sf.write(wav, samples, 16000, subtype="PCM_16")
    sf.write(flac, samples, 16000, subtype="PCM_16")

    a, b = decode(wav), decode(flac)

    assert a.file_hash != b.file_hash
    assert a.audio_hash == b.audio_hash


def test_a_wav_written_as_a_stream_decodes_to_the_end_of_the_file(tmp_path):
    path = write_audio(tmp_path / "stream.wav", seconds=1.0, sample_rate=16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data_size_at = data.index(b"data") + 4
    data[data_size_at : data_size_at + 4] = b"\xff\xff\xff\xff"  # length unknown when written
    path.write_bytes(data)

    assert decode(path).samples.shape == (16000,)


# -- bad files -------------------------------------------------------------------------------------


def _wav_header(frames: int, sample_rate: int = 16000) -> bytes:
    """A 16-bit mono WAV header declaring `frames` frames."""
    data_bytes = frames * 2
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def _missing(d: Path) -> Path:
    return d / "missing.wav"


def _empty(d: Path) -> Path:
    (d / "empty.wav").touch()
    return d / "empty.wav"


def _text(d: Path) -> Path:
    (d / "notes.wav").write_text("these are my notes, not a recording\n" * 20)
    return d / "notes.wav"


def _random_bytes(d: Path) -> Path:
    (d / "noise.flac").write_bytes(np.random.default_rng(0).bytes(8192))
    return d / "noise.flac"


def _truncated_wav(d: Path) -> Path:
    """1 s at 16 kHz, cut after 8000 of its 16000 frames."""
    path = write_audio(d / "cut.wav", seconds=1.0, sample_rate=16000, subtype="PCM_16")
    data = path.read_bytes()
    header = len(data) - 16000 * 2
    path.write_bytes(data[: header + 8000 * 2])
    return path


def _truncated_flac(d: Path) -> Path:
    path = write_audio(d / "cut.flac", seconds=1.0)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _truncated_mp3(d: Path) -> Path:
    path = write_audio(d / "cut.mp3", seconds=1.0, format="MP3", subtype="MPEG_LAYER_III")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    return path


def _zero_samples(d: Path) -> Path:
    sf.write(d / "nothing.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    return d / "nothing.wav"


def _float_wav_with(value: float) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        samples = tone(0.5, 16000)
        samples[[100, 2000, 3000]] = value
        sf.write(d / "bad_values.wav", samples, 16000, subtype="FLOAT")
        return d / "bad_values.wav"

    return make


def _understated_wav(d: Path) -> Path:
    """2 s at 16 kHz whose data chunk declares 500 frames (0.03 s): the rest follows unclaimed."""
    path = write_audio(d / "understated.wav", seconds=2.0, sample_rate=16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    size_at = data.index(b"data") + 4
    data[size_at : size_at + 4] = struct.pack("<I", 500 * 2)
    path.write_bytes(data)
    return path


def _at_rate(rate: int) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        path = d / f"rate-{rate}.wav"
        path.write_bytes(_wav_header(4 * rate, rate) + np.zeros(4 * rate, np.int16).tobytes())
        return path

    return make


def _symlink_loop(d: Path) -> Path:
    (d / "loop.wav").symlink_to(d / "loop.wav")
    return d / "loop.wav"


def _directory(d: Path) -> Path:
    (d / "folder.wav").mkdir()
    return d / "folder.wav"


BAD_FILES = {
    "missing": (_missing, "file not found"),
    "empty": (_empty, "empty file (0 bytes)"),
    "text named .wav": (_text, "not a readable audio file (Format not recognised)"),
    "random bytes named .flac": (_random_bytes, "not a readable audio file"),
    "truncated wav": (_truncated_wav, "truncated: header says 16000 frames, only 8000 could be read"),
    "truncated flac": (_truncated_flac, "corrupt or truncated audio data"),
    "truncated mp3": (_truncated_mp3, "truncated: header says 16000 frames, only"),
    "zero samples": (_zero_samples, "no audio samples (0 frames)"),
    "float with NaN": (_float_wav_with(np.nan), "contains 3 NaN and 0 infinite samples"),
    "float with inf": (_float_wav_with(-np.inf), "contains 0 NaN and 3 infinite samples"),
    "a directory": (_directory, "not a regular file"),
    "data chunk declares too few frames": (
        _understated_wav,
        "corrupt WAV header: its data chunk declares 500 frames, and 63000 bytes",
    ),
    "symbolic link loop": (_symlink_loop, "a symbolic link that leads nowhere (to "),
    "1 Hz": (_at_rate(1), "recorded at 1 Hz: supported rates are 8000-192000 Hz"),
    "384 kHz": (_at_rate(384000), "recorded at 384000 Hz: supported rates are 8000-192000 Hz"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_a_bad_file_raises_an_error_naming_it_and_the_reason(tmp_path, kind):
    make, reason = BAD_FILES[kind]
    path = make(tmp_path)

    with pytest.raises(AudioError) as caught:
        decode(path)

    assert caught.value.path == path
    assert reason in caught.value.reason
    assert str(caught.value) == f"{path}: {caught.value.reason}"


def test_the_block_reader_refuses_an_understated_wav_and_keeps_chunks_after_the_data(tmp_path):
    with pytest.raises(AudioError, match="corrupt WAV header"):
        list(AudioStream(_understated_wav(tmp_path)))
    # A LIST chunk after the audio (as many editors write) is declared: the file is fine.
    path = write_audio(tmp_path / "tagged.wav", seconds=1.0, sample_rate=16000, subtype="PCM_16")
    info = b"INFOISFT" + struct.pack("<I", 6) + b"aed-tf"
    data = bytearray(path.read_bytes() + b"LIST" + struct.pack("<I", len(info)) + info)
    data[4:8] = struct.pack("<I", len(data) - 8)
    path.write_bytes(data)
    assert decode(path).samples.shape == (16000,)
    assert sum(len(block) for block in AudioStream(path)) == 16000


def test_too_long_is_refused_from_the_header_without_decoding(tmp_path, monkeypatch):
    # A sparse file: three hours of 16 kHz audio that take no disk space.
    path = tmp_path / "three_hours.wav"
    frames = 3 * 3600 * 16000
    header = _wav_header(frames)
    with path.open("wb") as f:
        f.write(header)
        f.truncate(len(header) + frames * 2)

    def read_refused(*args, **kwargs):
        raise AssertionError("samples were read")

    monkeypatch.setattr(sf.SoundFile, "read", read_refused)
    with pytest.raises(AudioError, match=r"three_hours\.wav: too long: 10800\.0 s, the limit is 60 s"):
        decode(path, max_seconds=60)
    with pytest.raises(AudioError, match="too long"):
        AudioCache(tmp_path / "cache").load(path, max_seconds=60)


def test_the_limit_allows_files_up_to_max_seconds(tmp_path):
    path = write_audio(tmp_path / "tone.wav", seconds=2.0)

    assert decode(path, max_seconds=2.0).duration == pytest.approx(2.0)
    with pytest.raises(AudioError, match="too long: 2.0 s, the limit is 1.5 s"):
        decode(path, max_seconds=1.5)


def test_silence_is_decoded_and_is_silent_tells_it(tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(8000, np.float32), 16000, subtype="PCM_16")

    samples = decode(tmp_path / "silence.wav").samples

    assert samples.shape == (8000,)
    assert is_silent(samples)


@pytest.mark.parametrize(
    ("peak_db", "threshold_db", "silent"),
    [(-70.0, -60.0, True), (-50.0, -60.0, False), (-50.0, -40.0, True), (-10.0, -60.0, False)],
)
def test_is_silent_compares_the_peak_with_the_threshold(peak_db, threshold_db, silent):
    samples = tone(0.1, 16000)
    samples = samples / np.abs(samples).max() * 10 ** (peak_db / 20)

    assert is_silent(samples, threshold_db=threshold_db) is silent


def test_an_empty_array_is_silent():
    assert is_silent(np.zeros(0, np.float32))


# -- arrays given by users -------------------------------------------------------------------------


def test_an_array_gives_the_same_samples_as_the_file_holding_it(tmp_path):
    stereo = tone(1.0, 44100, channels=2)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")

    from_array = to_mono_float32(stereo, 44100, 16000)

    np.testing.assert_array_equal(from_array, decode(path).samples)


def test_integer_arrays_are_scaled_to_unit_range():
    samples = tone(0.5, 16000)
    as_int16 = np.round(samples * 32767).astype(np.int16)

    mono = to_mono_float32(as_int16, 16000, 16000)

    assert mono.dtype == np.float32
    np.testing.assert_allclose(mono, samples, atol=1.5 / 32768)


def test_array_output_is_contiguous_float32_at_the_target_rate():
    stereo = np.asfortranarray(tone(1.0, 48000, channels=2).astype(np.float64))

    mono = to_mono_float32(stereo, 48000, 16000)

    assert mono.dtype == np.float32 and mono.flags.c_contiguous and mono.shape == (16000,)


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (np.array([0.1, np.nan, 0.2], np.float32), "1 NaN and 0 infinite"),
        (np.array([0.1, np.inf, -np.inf], np.float64), "0 NaN and 2 infinite"),
        (np.zeros(0, np.float32), "expected"),
        (np.zeros((2, 16000), np.float32), "look like \\(channels, frames\\)"),
        (np.zeros((10, 2, 2), np.float32), "expected"),
        (np.zeros(100, np.uint8), "dtype uint8"),
        (np.zeros(100, bool), "dtype bool"),
    ],
    ids=["nan", "inf", "empty", "channels first", "3-d", "unsigned", "bool"],
)
def test_bad_arrays_raise_value_error(samples, message):
    with pytest.raises(ValueError, match=message):
        to_mono_float32(samples, 16000, 16000)


def test_a_non_positive_rate_is_refused():
    with pytest.raises(ValueError, match="sample rates must be positive"):
        to_mono_float32(np.zeros(100, np.float32), 0, 16000)


# -- decode_many -----------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 0])
def test_decode_many_keeps_order_and_goes_past_bad_files(tmp_path, cache_dir, workers):
    good = [write_audio(tmp_path / f"tone{i}.wav", seconds=0.3, freq=200.0 + 50 * i) for i in range(4)]
    missing, text = _missing(tmp_path), _text(tmp_path)
    paths = [good[0], missing, good[1], good[2], text, good[3]]

    results = decode_many(paths, AudioCache(cache_dir), workers=workers, progress=False)

    assert len(results) == len(paths)
    for path, result in zip(paths, results):
        if path in (missing, text):
            assert isinstance(result, AudioError) and result.path == path
        else:
            assert isinstance(result, DecodedAudio)
            assert result.audio_hash == decode(path).audio_hash


def test_decode_many_shows_a_progress_bar_only_when_asked(tmp_path, cache_dir, capsys):
    paths = [write_audio(tmp_path / f"tone{i}.wav", seconds=0.2, freq=300.0 + i) for i in range(3)]

    decode_many(paths, AudioCache(cache_dir), progress=False)
    assert capsys.readouterr().err == ""
    decode_many(paths, AudioCache(cache_dir), progress=True)
    assert "reading audio" in capsys.readouterr().err


def test_decode_many_passes_the_length_limit_on(tmp_path, cache_dir):
    short = write_audio(tmp_path / "short.wav", seconds=0.5)
    long = write_audio(tmp_path / "long.wav", seconds=2.0)

    results = decode_many([short, long], AudioCache(cache_dir), max_seconds=1.0, progress=False)

    assert isinstance(results[0], DecodedAudio)
    assert isinstance(results[1], AudioError) and "too long" in results[1].reason


# -- the cache -------------------------------------------------------------------------------------


def _entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.npz"))


def _same(a: DecodedAudio, b: DecodedAudio) -> bool:
    return (
        np.array_equal(a.samples, b.samples)
        and a.samples.dtype == b.samples.dtype
        and (a.sample_rate, a.source_sample_rate, a.channels, a.duration, a.file_hash, a.audio_hash)
        == (b.sample_rate, b.source_sample_rate, b.channels, b.duration, b.file_hash, b.audio_hash)
    )


def test_a_second_load_decodes_nothing_and_gives_the_same_clip(tmp_path, cache_dir):
    path = write_audio(tmp_path / "stereo.wav", sample_rate=44100, channels=2)
    first = AudioCache(cache_dir)
    decoded = first.load(path)
    assert first.decodes == 1

    again = first.load(path)
    warm = AudioCache(cache_dir)
    from_disk = warm.load(path)

    assert first.decodes == 1 and warm.decodes == 0
    assert _same(again, decoded) and _same(from_disk, decoded)
    assert _same(from_disk, decode(path))


def test_a_warm_decode_many_decodes_nothing(tmp_path, cache_dir):
    paths = [write_audio(tmp_path / f"tone{i}.flac", seconds=0.3, freq=200.0 + 10 * i) for i in range(6)]
    cold = AudioCache(cache_dir)
    decode_many(paths, cold, workers=2, progress=False)
    warm = AudioCache(cache_dir)

    results = decode_many(paths, warm, workers=2, progress=False)

    assert cold.decodes == 6 and warm.decodes == 0
    assert [r.audio_hash for r in results] == [decode(p).audio_hash for p in paths]


def test_entries_are_stored_under_version_rate_and_file_hash(tmp_path, cache_dir):
    path = write_audio(tmp_path / "tone.wav")
    cache = AudioCache(cache_dir, sample_rate=16000)
    assert not cache.contains(path)

    cache.load(path)

    key = file_hash(path)
    everything = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert everything == [cache_dir / CACHE_VERSION / "16000hz" / key[:2] / f"{key}.npz"]
    assert cache.contains(path)


def test_identical_content_at_two_paths_shares_one_entry(tmp_path, cache_dir):
    original = write_audio(tmp_path / "a" / "tone.wav")
    copy = tmp_path / "b" / "copy.wav"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    cache = AudioCache(cache_dir)

    a, b = cache.load(original), cache.load(copy)

    assert cache.decodes == 1 and len(_entries(cache_dir)) == 1
    assert a.audio_hash == b.audio_hash


def test_a_changed_file_is_a_miss(tmp_path, cache_dir):
    path = write_audio(tmp_path / "tone.wav", freq=220.0)
    cache = AudioCache(cache_dir)
    before = cache.load(path)

    write_audio(path, freq=440.0)
    after = cache.load(path)

    assert cache.decodes == 2
    assert after.file_hash != before.file_hash and after.audio_hash != before.audio_hash
    assert _same(after, decode(path))


def test_each_output_rate_has_its_own_entry(tmp_path, cache_dir):
    path = write_audio(tmp_path / "tone.wav", sample_rate=44100)
    at_16k, at_22k = AudioCache(cache_dir, 16000), AudioCache(cache_dir, 22050)

    a, b = at_16k.load(path), at_22k.load(path)

    assert at_16k.decodes == 1 and at_22k.decodes == 1 and len(_entries(cache_dir)) == 2
    assert (a.sample_rate, a.samples.size) == (16000, 16000)
    assert (b.sample_rate, b.samples.size) == (22050, 22050)
    assert AudioCache(cache_dir, 22050).load(path).samples.size == 22050


def _truncate_half(entry: Path) -> None:
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])


def _truncate_to_nothing(entry: Path) -> None:
    entry.write_bytes(b"")


def _overwrite_with_garbage(entry: Path) -> None:
    entry.write_bytes(np.random.default_rng(1).bytes(entry.stat().st_size))


def _flip_the_samples(entry: Path) -> None:
    """A well-formed entry whose samples no longer match its audio hash."""
    with np.load(entry) as npz:
        fields = dict(npz)
    fields["samples"] = -fields["samples"]
    with entry.open("wb") as f:
        np.savez(f, **fields)


@pytest.mark.parametrize(
    "damage", [_truncate_half, _truncate_to_nothing, _overwrite_with_garbage, _flip_the_samples]
)
def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path, cache_dir, damage):
    path = write_audio(tmp_path / "tone.wav", sample_rate=22050)
    expected = AudioCache(cache_dir).load(path)
    (entry,) = _entries(cache_dir)
    damage(entry)

    repairing = AudioCache(cache_dir)
    repaired = repairing.load(path)
    warm = AudioCache(cache_dir)
    reloaded = warm.load(path)

    assert repairing.decodes == 1 and warm.decodes == 0
    assert _same(repaired, expected) and _same(reloaded, expected)


def test_an_entry_of_another_file_or_rate_in_its_place_is_a_miss(tmp_path, cache_dir):
    path = write_audio(tmp_path / "tone.wav", sample_rate=44100, freq=220.0)
    other = write_audio(tmp_path / "other.wav", sample_rate=44100, freq=440.0)
    expected = AudioCache(cache_dir).load(path)
    entry = cache_dir / CACHE_VERSION / "16000hz" / expected.file_hash[:2] / f"{expected.file_hash}.npz"
    AudioCache(cache_dir).load(other)
    AudioCache(cache_dir, 22050).load(path)
    other_files_entry = entry.parents[1] / file_hash(other)[:2] / f"{file_hash(other)}.npz"
    other_rates_entry = cache_dir / CACHE_VERSION / "22050hz" / entry.parent.name / entry.name

    for source in (other_files_entry, other_rates_entry):
        shutil.copy(source, entry)
        cache = AudioCache(cache_dir)
        assert _same(cache.load(path), expected) and cache.decodes == 1


def test_a_temp_file_left_by_a_killed_write_is_ignored(tmp_path, cache_dir):
    path = write_audio(tmp_path / "tone.wav")
    AudioCache(cache_dir).load(path)
    (entry,) = _entries(cache_dir)
    half_written = entry.with_name(f".{entry.stem}.k1ll3d.tmp")
    half_written.write_bytes(entry.read_bytes()[:1000])
    entry.unlink()

    cache = AudioCache(cache_dir)
    assert not cache.contains(path)
    loaded = cache.load(path)

    assert cache.decodes == 1
    assert _same(loaded, decode(path))
    assert _entries(cache_dir) == [entry]


def test_an_interrupted_write_leaves_neither_an_entry_nor_a_temp_file(tmp_path, cache_dir, monkeypatch):
    path = write_audio(tmp_path / "tone.wav")

    def interrupted_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an entry")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        AudioCache(cache_dir).load(path)

    assert [p for p in cache_dir.rglob("*") if p.is_file()] == []


def test_errors_are_not_cached(tmp_path, cache_dir):
    path = _float_wav_with(np.nan)(tmp_path)
    cache = AudioCache(cache_dir)

    for _ in range(2):
        with pytest.raises(AudioError, match="NaN"):
            cache.load(path)

    assert _entries(cache_dir) == [] and not cache.contains(path)


def test_the_length_limit_holds_for_cached_clips(tmp_path, cache_dir):
    path = write_audio(tmp_path / "tone.wav", seconds=2.0)
    cache = AudioCache(cache_dir)
    cache.load(path)

    with pytest.raises(AudioError, match="too long"):
        cache.load(path, max_seconds=1.0)


def test_cache_root_comes_from_the_argument_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AED_TF_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert AudioCache().root == tmp_path / "home" / ".cache" / "aed_tf"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert AudioCache("").root == tmp_path / "xdg" / "aed_tf"

    monkeypatch.setenv("AED_TF_CACHE", str(tmp_path / "env"))
    assert AudioCache(None).root == tmp_path / "env"

    assert AudioCache(tmp_path / "given").root == tmp_path / "given"
    assert AudioCache("~/mine").root == tmp_path / "home" / "mine"


# -- the real recordings ---------------------------------------------------------------------------

RAVDESS_ACTOR_01 = "Actor_01/03-01-02-01-01-02-01"  # its original WAV is the stereo one


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("flac", "original", "channels", "rate"),
    [
        (
            RAVDESS_DIR / f"{RAVDESS_ACTOR_01}.flac",
            ORIGINALS_DIR / "RAVDESS/audio_speech_actors_01-24" / f"{RAVDESS_ACTOR_01}.wav",
            2,
            48000,
        ),
        (
            RAVDESS_DIR / "Actor_01/03-01-01-01-01-01-01.flac",
            ORIGINALS_DIR / "RAVDESS/audio_speech_actors_01-24/Actor_01/03-01-01-01-01-01-01.wav",
            1,
            48000,
        ),
        (
            TESS_DIR / "OAF_fear/OAF_back_fear.flac",
            ORIGINALS_DIR / "TESS/TESS_Toronto_emotional_speech_set_data/OAF_fear/OAF_back_fear.wav",
            1,
            24414,
        ),
    ],
    ids=["ravdess stereo 48k", "ravdess mono 48k", "tess 24414"],
)
def test_a_real_flac_and_its_original_wav_decode_to_the_same_audio(
    shared_datasets, flac, original, channels, rate
):
    from_flac, from_wav = decode(flac), decode(original)

    assert (from_flac.source_sample_rate, from_flac.channels) == (16000, 1)
    assert (from_wav.source_sample_rate, from_wav.channels) == (rate, channels)
    assert from_wav.samples.shape == from_flac.samples.shape
    # The FLAC copies were made by the same mixdown and resampling, then stored as 16-bit.
    np.testing.assert_allclose(from_wav.samples, from_flac.samples, rtol=0, atol=1.5 / 32768)
    assert not is_silent(from_flac.samples)


@pytest.mark.shared_data
def test_the_actor_07_duplicates_share_audio_hash_and_cache_entry(shared_datasets, cache_dir):
    pair = [RAVDESS_DIR / "Actor_07" / f"03-01-03-01-02-0{repetition}-07.flac" for repetition in (1, 2)]
    cache = AudioCache(cache_dir)

    a, b = decode_many(pair, cache, workers=1, progress=False)

    assert a.audio_hash == b.audio_hash == decode(pair[1]).audio_hash
    assert cache.decodes == 1


def test_wavs_with_chunks_after_the_audio_or_an_omitted_pad_byte_are_not_refused(tmp_path):
    """Odd-sized 8-bit audio with its pad byte omitted by the writer, then a large LIST chunk;
    and a metadata chunk cut short by the end of the file: the audio itself is whole."""
    frames = 16001
    audio = (np.arange(frames) % 200 + 28).astype(np.uint8).tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 16000, 1, 8)
    listing = b"LIST" + struct.pack("<I", 3000) + b"INFO" + b"x" * 2996
    chunks = b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", frames) + audio + listing
    path = tmp_path / "no-pad.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    assert decode(path).samples.shape == (frames,)
    cut = tmp_path / "cut-metadata.wav"
    whole = write_audio(tmp_path / "whole.wav", seconds=1.0, sample_rate=16000, subtype="PCM_16").read_bytes()
    cut.write_bytes(whole + b"id3 " + struct.pack("<I", 100000) + b"\0" * 2000)
    assert decode(cut).samples.shape == (16000,)


def test_a_file_that_cannot_be_opened_says_why_not_system_error(tmp_path, monkeypatch):
    """(Root, which runs the tests, reads any file: opening fails by a patch instead, as it does
    for a file without read permission, where libsndfile says only "System error".)"""
    import errno

    path = tmp_path / "locked.wav"
    write_audio(path, 0.5)
    real_open, real_info = Path.open, sf.info

    def locked_open(self, *args, **kwargs):
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    def locked_info(file, *args, **kwargs):
        if Path(file) == path:
            raise sf.LibsndfileError(2, f"Error opening {file!r}: ")  # what libsndfile says
        return real_info(file, *args, **kwargs)

    monkeypatch.setattr(Path, "open", locked_open)
    monkeypatch.setattr(sf, "info", locked_info)
    with pytest.raises(AudioError) as refused:
        decode(path)
    assert str(refused.value) == f"{path}: cannot read the file (Permission denied)"
    with pytest.raises(AudioError) as refused:
        AudioStream(path, 16000)
    assert str(refused.value) == f"{path}: cannot read the file (Permission denied)"


def test_clip_features_are_computed_once_per_clip_content(tmp_path, monkeypatch):
    from aed_tf import audio

    computed = []

    def features(batch):  # [clips, 2]: each clip's mean and length
        computed.append(len(batch))
        return np.array([[w.mean(), len(w)] for w in batch])

    clips = [tone(0.2, 16000, freq=f) for f in (200, 300, 400)]
    first = cached_clip_features(clips, features, 2, "test-v1/16000hz", tmp_path)
    np.testing.assert_allclose(first, features(clips))
    computed.clear()
    entries = sorted((tmp_path / "test-v1" / "16000hz").rglob("*.npy"))
    assert len(entries) == 3 and not list(tmp_path.rglob(".tmp*"))
    same_content = [clips[2].copy(), clips[0]]  # a clip is found by its samples, not its object
    np.testing.assert_array_equal(
        cached_clip_features(same_content, features, 2, "test-v1/16000hz", tmp_path), first[[2, 0]]
    )
    assert computed == []
    entries[0].write_bytes(b"damaged")
    np.testing.assert_array_equal(
        cached_clip_features(clips, features, 2, "test-v1/16000hz", tmp_path), first
    )
    assert computed == [1]  # the damaged entry alone, computed again
    assert cached_clip_features(clips, features, 2, "test-v2/16000hz", tmp_path).shape == (3, 2)
    assert computed == [1, 3]  # another name, another cache

    monkeypatch.setattr(audio, "_FEATURE_CACHE_BATCH", 2)
    batches = []

    def fails_on_the_second_batch(batch):
        batches.append(len(batch))
        if len(batches) == 2:
            raise RuntimeError("killed")
        return features(batch)

    with pytest.raises(RuntimeError, match="killed"):
        cached_clip_features(clips, fails_on_the_second_batch, 2, "test-v3", tmp_path)
    assert batches == [2, 1]
    assert len(list((tmp_path / "test-v3").rglob("*.npy"))) == 2  # the first batch was kept
