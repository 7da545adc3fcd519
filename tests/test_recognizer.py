"""EmotionRecognizer, the block reader and the timeline: real clips through the session's tiny run
(0.5 s window), every kind of bad input, and long recordings read in blocks."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from aed_tf import EmotionRecognizer
from aed_tf.audio import AudioError, AudioStream, decode
from aed_tf.cli import main
from aed_tf.errors import InputError
from aed_tf.serving import recognizer as rec
from aed_tf.serving import timeline as tl
from tests.conftest import RAVDESS_DIR, TESS_DIR

RAVDESS_CLIP = RAVDESS_DIR / "Actor_01" / "03-01-05-01-01-01-01.flac"  # angry, 3.9 s, speech ~1-2.7 s
TESS_CLIP = TESS_DIR / "OAF_angry" / "OAF_bar_angry.flac"
HOP = 0.25


@pytest.fixture(scope="module")
def recognizer(tiny_run) -> EmotionRecognizer:
    return EmotionRecognizer.load(tiny_run, hop_seconds=HOP)


@pytest.fixture(scope="module")
def speech(shared_datasets) -> np.ndarray:
    """The RAVDESS clip at 16 kHz."""
    return decode(RAVDESS_CLIP).samples


def speech_core(samples: np.ndarray, seconds: float) -> np.ndarray:
    """`seconds` from the loudest part of the clip: speech for sure."""
    centre = int(np.argmax(np.convolve(samples**2, np.ones(1600), mode="same")))
    half = int(seconds * 16000) // 2
    return samples[centre - half : centre + half]


def probabilities(prediction: rec.Prediction) -> np.ndarray:
    return np.array(list(prediction.probabilities.values()))


# -- the model's answer ------------------------------------------------------------------------------


def test_predict_is_the_serving_model_on_the_same_waveform(recognizer, speech, tmp_path):
    clip = speech_core(speech, 0.5)  # one window
    expected = recognizer.model(clip[None]).numpy()[0]
    from_array = recognizer.predict(clip, sample_rate=16000)
    assert from_array.label == recognizer.classes[int(np.argmax(expected))]
    assert list(from_array.probabilities) == list(recognizer.classes)
    np.testing.assert_allclose(probabilities(from_array), expected, atol=1e-5)
    assert from_array.windows == 1 and from_array.speech_found and not from_array.warnings

    path = tmp_path / "clip.wav"
    sf.write(path, clip, 16000, subtype="FLOAT")
    from_file = recognizer.predict(path)
    np.testing.assert_allclose(probabilities(from_file), expected, atol=1e-5)
    assert from_file.source == str(path) and from_file.duration == pytest.approx(0.5)


def test_a_longer_clip_is_the_mean_of_its_speech_windows(recognizer, speech):
    prediction = recognizer.predict(speech, sample_rate=16000)
    timeline = recognizer.timeline(speech, sample_rate=16000)
    assert prediction.windows == timeline.prediction.windows > 1
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < prediction.speech_seconds < prediction.duration == pytest.approx(len(speech) / 16000)


def test_predict_many_equals_predict_one_by_one_and_goes_on_past_bad_files(
    recognizer, shared_datasets, tmp_path
):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    paths = [RAVDESS_CLIP, bad, TESS_CLIP, RAVDESS_DIR / "Actor_02" / "03-01-03-01-01-01-02.flac"]
    results = recognizer.predict_many(paths, progress=False)
    assert isinstance(results[1], AudioError) and results[1].path == bad
    assert "not a readable audio file" in str(results[1])
    for path, result in zip(paths, results):
        if path != bad:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rec.InputWarning)
                alone = recognizer.predict(path)
            assert result.label == alone.label and result.windows == alone.windows
            np.testing.assert_allclose(probabilities(result), probabilities(alone), atol=1e-5)


# -- bad input ---------------------------------------------------------------------------------------


def _truncated_wav(path: Path) -> None:
    sf.write(path, np.full(16000, 0.1, np.float32), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:20000])


def _nonfinite_wav(value: float):
    def write(path: Path) -> None:
        samples = np.full(16000, 0.1, np.float32)
        samples[4000] = value
        sf.write(path, samples, 16000, subtype="FLOAT")

    return write


def _truncated_flac(path: Path) -> None:
    sf.write(
        path, np.random.default_rng(0).uniform(-0.5, 0.5, 64000).astype(np.float32), 16000, format="FLAC"
    )
    path.write_bytes(path.read_bytes()[:30000])


BAD_FILES = {
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "not audio": (lambda p: p.write_text("this is not audio\n" * 50), "not a readable audio file"),
    "truncated WAV": (_truncated_wav, "truncated"),
    "truncated FLAC": (_truncated_flac, "truncated"),
    "zero samples": (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "no audio samples"),
    "NaN samples": (_nonfinite_wav(np.nan), "1 NaN"),
    "infinite samples": (_nonfinite_wav(np.inf), "1 infinite"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_is_refused_with_its_name_and_reason(recognizer, tmp_path, case):
    make, reason = BAD_FILES[case]
    path = tmp_path / ("bad.flac" if "FLAC" in case else "bad.wav")
    make(path)
    with pytest.raises(AudioError) as raised:
        recognizer.predict(path)
    assert raised.value.path == path and str(raised.value).startswith(f"{path}: ")
    assert reason in raised.value.reason
    with pytest.raises(AudioError, match=reason):
        recognizer.timeline(path)


def test_a_missing_file_and_bad_arrays_are_refused(recognizer, tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        recognizer.predict(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="shape"):
        recognizer.predict(np.zeros(0, np.float32), sample_rate=16000)
    with pytest.raises(InputError, match="NaN"):
        recognizer.predict(np.array([0.1, np.nan, 0.2] * 1000, np.float32), sample_rate=16000)
    with pytest.raises(InputError, match="needs its sample_rate"):
        recognizer.predict(np.zeros(16000, np.float32))
    with pytest.raises(InputError, match="arrays only"):
        recognizer.predict(RAVDESS_CLIP, sample_rate=16000)


def test_silence_gets_no_emotion(recognizer, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(3 * 16000, np.float32), 16000)
    prediction = recognizer.predict(path)
    assert prediction.label is None and prediction.probabilities == {} and not prediction.speech_found
    assert prediction.windows == 0 and prediction.speech_seconds == 0
    assert str(prediction).endswith("no speech found")
    timeline = recognizer.timeline(path)
    assert timeline.shares == {} and [s.label for s in timeline.segments] == [None]
    assert (timeline.segments[0].start, timeline.segments[0].end) == (0.0, pytest.approx(3.0))
    # A faint hum is not speech either.
    hum = 0.0005 * np.sin(2 * np.pi * 50 * np.arange(16000) / 16000)
    assert recognizer.predict(hum.astype(np.float32), sample_rate=16000).label is None


def test_a_clip_shorter_than_the_window_is_padded_with_a_warning(recognizer, speech):
    short = speech_core(speech, 0.3)
    with pytest.warns(rec.InputWarning, match="padded"):
        prediction = recognizer.predict(short, sample_rate=16000)
    assert prediction.speech_found and any("shorter than the 0.5 s window" in w for w in prediction.warnings)
    expected = recognizer.model(short[None]).numpy()[0]  # the serving model pads it the same way
    np.testing.assert_allclose(probabilities(prediction), expected, atol=1e-5)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_any_rate_from_8_to_96_khz(recognizer, speech, tmp_path, rate):
    clip = speech_core(speech, 0.5)
    path = tmp_path / f"clip-{rate}.wav"
    sf.write(path, soxr.resample(clip, 16000, rate, quality="VHQ"), rate, subtype="FLOAT")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prediction = recognizer.predict(path)
    assert prediction.sample_rate == rate and prediction.speech_found
    low_rate = [w for w in prediction.warnings if "recorded at" in w]
    assert bool(low_rate) == (rate < 16000)
    assert len([w for w in caught if issubclass(w.category, rec.InputWarning)]) == len(prediction.warnings)
    if rate >= 16000:  # the same audio, resampled there and back: the same answer
        reference = recognizer.predict(clip, sample_rate=16000)
        np.testing.assert_allclose(probabilities(prediction), probabilities(reference), atol=2e-3)


def test_stereo_is_mixed_down_and_clipping_is_reported(recognizer, speech, tmp_path):
    clip = speech_core(speech, 0.5)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([clip, clip], axis=1), 16000, subtype="FLOAT")
    prediction = recognizer.predict(stereo)
    assert prediction.channels == 2
    np.testing.assert_allclose(
        probabilities(prediction), probabilities(recognizer.predict(clip, sample_rate=16000)), atol=1e-5
    )

    clipped = tmp_path / "clipped.wav"
    sf.write(clipped, np.clip(clip * 50, -1, 1), 16000, subtype="PCM_16")
    with pytest.warns(rec.InputWarning, match="clipping"):
        prediction = recognizer.predict(clipped)
    assert prediction.speech_found and any(w.startswith("clipping: ") for w in prediction.warnings)
    # Integer arrays are scaled as files are.
    pcm = (np.clip(clip * 50, -1, 1) * 32767).astype(np.int16)
    with pytest.warns(rec.InputWarning, match="<array>: clipping") as caught:
        assert any("clipping" in w for w in recognizer.predict(pcm, sample_rate=16000).warnings)
    assert caught[0].filename == __file__  # the warning points at the caller


# -- timelines ---------------------------------------------------------------------------------------


def test_timeline_covers_the_speech_and_leaves_silence_unlabelled(recognizer, speech, tmp_path):
    tess = decode(TESS_CLIP).samples
    gap = np.zeros(2 * 16000, np.float32)
    recording = np.concatenate([gap, speech, gap, tess, gap])
    path = tmp_path / "recording.flac"
    sf.write(path, np.stack([recording, recording], axis=1), 16000, format="FLAC")  # stereo FLAC
    timeline = recognizer.timeline(path)

    segments = timeline.segments
    assert segments[0].start == 0 and segments[-1].end == pytest.approx(len(recording) / 16000)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(segments, segments[1:]))
    assert all(a.label != b.label for a, b in zip(segments, segments[1:]))  # merged
    assert sum(timeline.shares.values()) == pytest.approx(1.0) and set(timeline.shares) == set(
        timeline.classes
    )

    def label_at(seconds: float) -> str | None:
        return next(s.label for s in segments if s.start <= seconds < s.end)

    # Every loud 30 ms frame of the clips lies in a labelled segment; mid-gap is unlabelled.
    frames = recording[: len(recording) // 480 * 480].reshape(-1, 480)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 0.02)
    assert loud.size > 20
    assert all(label_at((i + 0.5) * 480 / 16000) is not None for i in loud)
    for start in (0.0, 2.0 + len(speech) / 16000, 4.0 + (len(speech) + len(tess)) / 16000):
        assert label_at(start + 1.0) is None
    speech_time = sum(s.duration for s in segments if s.label is not None)
    assert 1.0 < speech_time < len(recording) / 16000 - 4.0

    # Segment probabilities are the smoothed windows', and the per-window table lines up.
    assert timeline.window_probabilities.shape == (len(timeline.window_centres), len(timeline.classes))
    classified = ~np.isnan(timeline.window_probabilities[:, 0])
    assert classified.sum() == timeline.prediction.windows
    np.testing.assert_allclose(timeline.window_probabilities[classified].sum(axis=1), 1.0, atol=1e-5)

    data = json.loads(json.dumps(timeline.to_dict()))
    assert data["segments"][0]["label"] is None and data["prediction"]["channels"] == 2
    png = timeline.plot(tmp_path / "timeline.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = rec.timelines_csv([timeline], timeline.classes).splitlines()
    assert rows[0].startswith("source,start,end,label,angry") and len(rows) == len(segments) + 1


def test_a_long_recording_is_read_block_by_block(recognizer, tiny_run, tmp_path, monkeypatch):
    """Memory stays flat: the file is never read more than a block at a time, the window cutter
    never holds more than a window and a block, and the model never gets more than a batch."""
    seconds, rate = 240, 22050
    t = np.arange(seconds * rate) / rate
    # Speech-like bursts: a harmonic tone on for 2 s, off for 1 s.
    recording = (0.2 * np.sin(2 * np.pi * 180 * t) * (t % 3 < 2)).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, recording, rate, subtype="PCM_16")
    del recording, t

    monkeypatch.setattr(rec, "BLOCK_SECONDS", 1.0)
    reads, held, batches = [], [], []
    real_read, real_feed = sf.SoundFile.read, tl.WindowCutter.feed

    def read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)

    def feed(self, block):
        windows = real_feed(self, block)
        held.append(len(self._buffer))
        return windows

    monkeypatch.setattr(sf.SoundFile, "read", read)
    monkeypatch.setattr(tl.WindowCutter, "feed", feed)
    long_recognizer = EmotionRecognizer.load(tiny_run, hop_seconds=HOP, batch_size=16)
    real_infer = long_recognizer._infer
    long_recognizer._infer = lambda waves, statistics: (
        batches.append(waves.shape) or real_infer(waves, statistics)
    )

    timeline = long_recognizer.timeline(path)
    assert reads and max(reads) == rate  # one block of 1 s at the file's rate, never the whole file
    assert len(reads) >= seconds
    window, block = long_recognizer.plan.window, 16000
    assert max(held) <= window + block + 1
    assert max(shape[0] for shape in batches) == 16 and {shape[1] for shape in batches} == {window}
    assert timeline.duration == pytest.approx(seconds)
    assert len(timeline.window_centres) == pytest.approx((seconds - 0.5) / HOP + 1, abs=1)
    assert 0.5 < timeline.prediction.speech_seconds / (seconds * 2 / 3) < 1.2


def test_audio_stream_gives_what_decode_gives(tmp_path):
    from tests.synth import write_audio

    path = write_audio(tmp_path / "stereo.flac", seconds=7.3, sample_rate=44100, channels=2)
    stream = AudioStream(path, 16000, block_seconds=2.0)
    blocks = list(stream)
    assert stream.source_sample_rate == 44100 and stream.channels == 2
    assert stream.frames_read == stream.header_frames and len(blocks) >= 4
    assert max(len(b) for b in blocks) <= 2 * 16000 + 1
    np.testing.assert_allclose(np.concatenate(blocks), decode(path).samples, atol=1e-6)


def test_window_cutter_gives_every_window_whatever_the_blocks():
    plan = tl.WindowPlan(window=100, hop=30)
    signal = np.arange(437, dtype=np.float32)
    cutter, windows = tl.WindowCutter(plan), []
    rng = np.random.default_rng(0)
    position = 0
    while position < len(signal):
        size = int(rng.integers(1, 80))
        windows += cutter.feed(signal[position : position + size])
        position += size
    windows += cutter.finish()
    starts = [start for start, _ in windows]
    assert starts == list(range(0, 338, 30)) + [337]  # the last one ends at the last sample
    for start, samples in windows:
        np.testing.assert_array_equal(samples, signal[start : start + 100])

    short = tl.WindowCutter(plan)
    assert short.feed(signal[:40]) == [] and [(s, len(w)) for s, w in short.finish()] == [(0, 40)]
    with pytest.raises(InputError, match="hop"):
        tl.WindowPlan(window=100, hop=101)


def test_cores_tile_the_recording_and_smoothing_stops_at_silence():
    vad = tl.VoiceActivity(16000, use_webrtc=False)
    blocks = [np.full(7000, 0.1, np.float32) for _ in range(5)]
    windows = list(tl.windows(blocks, tl.WindowPlan(8000, 4000), vad))
    assert windows[0].core_start == 0 and windows[-1].core_end == 35000
    assert all(a.core_end == b.core_start for a, b in zip(windows, windows[1:]))
    assert vad.speech_seconds() == pytest.approx(35000 // 480 * 480 / 16000)

    table = np.array([[1, 0], [0, 1], [1, 0], [0.5, 0.5], [0, 1]], np.float32)
    classified = np.array([True, True, True, False, True])
    smoothed = tl.smooth(table, classified, 3)
    np.testing.assert_allclose(smoothed[1], [2 / 3, 1 / 3])
    assert np.isnan(smoothed[3]).all()
    np.testing.assert_allclose(smoothed[4], [0, 1])  # alone after the gap: nothing to average with


# -- the command line --------------------------------------------------------------------------------


def test_cli_predicts_a_file_and_a_timeline(tiny_run, shared_datasets, tmp_path, capsys):
    assert main(["predict", str(RAVDESS_CLIP), "--run-dir", str(tiny_run)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source"] == str(RAVDESS_CLIP) and result["label"] in result["probabilities"]

    out, plot = tmp_path / "timeline.csv", tmp_path / "timeline.png"
    assert (
        main(
            [
                "predict",
                str(RAVDESS_CLIP),
                "--run-dir",
                str(tiny_run),
                "--timeline",
                "--format",
                "csv",
                "--out",
                str(out),
                "--plot",
                str(plot),
                "--hop",
                "0.25",
            ]
        )
        == 0
    )
    assert out.read_text().startswith("source,start,end,label,") and plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_goes_on_past_bad_files_in_a_folder(tiny_run, speech, tmp_path, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "good.wav", speech, 16000)
    sf.write(folder / "sub" / "silence.flac", np.zeros(16000, np.float32), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    (folder / "notes.txt").write_text("not looked at")
    code = main(["predict", str(folder), "--run-dir", str(tiny_run), "--format", "json"])
    captured = capsys.readouterr()
    assert code == 1
    result = json.loads(captured.out)
    assert [r["source"] for r in result["results"]] == [
        str(folder / "good.wav"),
        str(folder / "sub" / "silence.flac"),
    ]
    assert result["results"][1]["label"] is None
    assert result["errors"] == [
        {"source": str(folder / "broken.wav"), "reason": result["errors"][0]["reason"]}
    ]
    assert "1 of 3 files could not be used" in captured.err and f"{folder / 'broken.wav'}: " in captured.err
    assert "silence.flac: no speech found" in captured.err


def test_cli_a_single_bad_file_exits_non_zero_naming_it(tiny_run, tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert main(["predict", str(empty), "--run-dir", str(tiny_run)]) == 2
    assert capsys.readouterr().err.strip() == f"aed-tf predict: error: {empty}: empty file (0 bytes)"
    assert main(["predict", str(tmp_path / "nope.wav"), "--run-dir", str(tiny_run)]) == 2
    assert "nope.wav: file not found" in capsys.readouterr().err
    assert main(["predict", str(empty), "--run-dir", str(tmp_path)]) == 2
    assert "not a finished run" in capsys.readouterr().err


def test_bench_predict_measures_a_recording_in_a_child_process(tiny_run, shared_datasets, tmp_path):
    from aed_tf.bench import ENVIRONMENT_KEYS
    from aed_tf.bench.predict import bench_predict, make_long_recording

    clips = [RAVDESS_CLIP, TESS_CLIP]
    path = tmp_path / "made.flac"
    duration = make_long_recording(clips, path, seconds=20.0, sample_rate=48000)
    assert 20.0 <= duration < 30.0 and sf.info(path).duration == pytest.approx(duration)

    result = bench_predict(tiny_run, clips, hours=[0.005], workdir=tmp_path, cold_repeats=1)
    routes = result["routes"]
    assert set(routes) == {"keras", "onnx", "tflite"}
    for route in routes.values():
        (measured,) = route["results"]
        assert route["times_real_time"] == pytest.approx(
            measured["duration_seconds"] / measured["timeline_seconds"]
        )
        assert measured["windows_classified"] > 0 and sum(measured["shares"].values()) == pytest.approx(1.0)
        assert 100 < route["peak_rss_megabytes"] and measured["rss_after_recording_megabytes"] > 0
        cold = route["cold_predict"]
        assert cold["wall_seconds"] > 0 and 50 < cold["peak_rss_megabytes"] < route["peak_rss_megabytes"] * 2
    keras_route = routes["keras"]
    for format in ("onnx", "tflite"):
        # An export hears the same recording as the Keras model: the same windows and speech.
        for key in ("windows", "windows_classified", "speech_seconds"):
            assert routes[format]["results"][0][key] == keras_route["results"][0][key]
        # Without TensorFlow, an exported route's cold predict is lighter than the Keras route's.
        cold, keras_cold = routes[format]["cold_predict"], keras_route["cold_predict"]
        assert cold["peak_rss_megabytes"] < keras_cold["peak_rss_megabytes"]
        assert result["ratios"][format]["cold_rss_keras_over_export"] == pytest.approx(
            keras_cold["peak_rss_megabytes"] / cold["peak_rss_megabytes"]
        )
    assert not list(tmp_path.glob("tmp*/*.flac"))  # the recording is removed
    assert set(ENVIRONMENT_KEYS) <= set(result)  # the block every benchmark result records


# -- per-speaker normalisation -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def speaker_recognizer(speaker_run) -> EmotionRecognizer:
    return EmotionRecognizer.load(speaker_run)


def _per_speaker_output(
    recognizer: EmotionRecognizer, clip: np.ndarray, statistics: np.ndarray
) -> np.ndarray:
    return recognizer.model({"waveform": clip[None], "speaker_statistics": statistics[None]}).numpy()[0]


def test_a_per_speaker_run_falls_back_to_the_statistics_of_its_training_clips(
    speaker_run, speaker_recognizer, speech
):
    from aed_tf.config import Config
    from aed_tf.features import log_mel
    from aed_tf.partitions import load_training_data
    from aed_tf.runs import TRAINING_STATISTICS_FILE

    saved = json.loads((speaker_run / TRAINING_STATISTICS_FILE).read_text())
    config = Config.from_dict(json.loads((speaker_run / "config.json").read_text())["config"])
    train_part = load_training_data(config, progress=False).partitions["train"]
    assert saved["clips"] == len(train_part.labels) and saved["speakers"] == len(set(train_part.speakers))
    # The band means and deviations over every frame of every training clip.
    frames = np.concatenate(
        [log_mel(w[None], speaker_recognizer.frontend)[0].numpy() for w in train_part.waveforms]
    )
    np.testing.assert_allclose(saved["mean"], frames.mean(axis=0), atol=1e-3)
    np.testing.assert_allclose(saved["deviation"], frames.std(axis=0), atol=1e-3)
    np.testing.assert_allclose(
        speaker_recognizer.speaker_statistics, [saved["mean"], saved["deviation"]], atol=1e-6
    )

    clip = speech_core(speech, 0.5)
    prediction = speaker_recognizer.predict(clip, sample_rate=16000)
    np.testing.assert_allclose(
        probabilities(prediction),
        _per_speaker_output(speaker_recognizer, clip, speaker_recognizer.speaker_statistics),
        atol=1e-5,
    )


def test_for_speaker_normalises_with_the_references_so_their_level_no_longer_matters(
    speaker_recognizer, speech, tmp_path
):
    clip = speech_core(speech, 0.5)
    quiet, loud = clip * 0.5, clip * 2.0  # 12 dB apart (RAVDESS is quiet: far above the log's floor)
    assert np.abs(loud).max() < 1
    paths = []
    for name, samples in (("quiet.wav", quiet), ("loud.wav", loud)):
        paths.append(tmp_path / name)
        sf.write(paths[-1], samples, 16000, subtype="FLOAT")
    by_quiet, by_loud = speaker_recognizer.for_speaker([paths[0]]), speaker_recognizer.for_speaker([loud])
    assert not np.allclose(by_quiet.speaker_statistics, speaker_recognizer.speaker_statistics, atol=0.1)
    for recognizer, samples in ((by_quiet, quiet), (by_loud, loud)):
        expected = _per_speaker_output(recognizer, samples, recognizer.speaker_statistics)
        np.testing.assert_allclose(
            probabilities(recognizer.predict(samples, sample_rate=16000)), expected, atol=1e-5
        )
    # Each take normalised by itself: the 12 dB between them is gone, but for the frames of the
    # pauses near the log's floor, which the gain does not shift alike; how much those move the
    # output depends on the model (0.020 and 0.028 with two trainings of this tiny one).
    np.testing.assert_allclose(
        probabilities(by_quiet.predict(paths[0])), probabilities(by_loud.predict(paths[1])), atol=0.05
    )
    # The training statistics keep the level, so the two takes look different to the model.
    default = [
        _per_speaker_output(speaker_recognizer, s, speaker_recognizer.speaker_statistics)
        for s in (quiet, loud)
    ]
    assert (
        np.abs(default[0] - default[1]).max()
        > 10
        * np.abs(probabilities(by_quiet.predict(paths[0])) - probabilities(by_loud.predict(paths[1]))).max()
    )


def test_speaker_statistics_gathered_a_block_at_a_time_are_those_of_the_whole_recording(
    speaker_recognizer, speech, tmp_path
):
    from aed_tf.features import log_mel, log_mel_statistics
    from aed_tf.serving.keras_route import speaker_statistics

    frontend = speaker_recognizer.frontend
    # 25 s: longer than a read block (10 s) and than the pieces the log-mel is taken in (10 s).
    long = np.tile(speech, int(np.ceil(25 * 16000 / len(speech))))
    frames = log_mel(long[np.newaxis], frontend)[0]
    whole = log_mel_statistics(frames, np.zeros(len(frames), np.int64), 1)[0]
    # Blocks of odd sizes, one shorter than a frame, so frames span blocks as they do in a file.
    blocks = np.split(long, [1234, 1500, 20000, 170001])
    np.testing.assert_allclose(
        speaker_statistics([("speech", blocks)], frontend), whole, rtol=1e-5, atol=1e-5
    )
    # A file gives what the same samples give as one array.
    path = tmp_path / "long.wav"
    sf.write(path, long, 16000, subtype="FLOAT")
    np.testing.assert_allclose(
        speaker_recognizer.for_speaker([path]).speaker_statistics,
        speaker_recognizer.for_speaker([long]).speaker_statistics,
        rtol=1e-5,
        atol=1e-5,
    )


def test_speaker_references_that_cannot_be_used_are_refused(speaker_recognizer, recognizer, tmp_path):
    with pytest.raises(InputError, match="at least one reference"):
        speaker_recognizer.for_speaker([])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav"):
        speaker_recognizer.for_speaker([empty])
    with pytest.raises(InputError, match="too short"):
        speaker_recognizer.for_speaker([np.zeros(100, np.float32)])
    with pytest.raises(InputError, match="normalises each clip on its own"):
        recognizer.for_speaker([np.zeros(16000, np.float32)])
    with pytest.raises(InputError, match="needs speaker_statistics"):
        EmotionRecognizer(speaker_recognizer.model, speaker_recognizer.classes, speaker_recognizer.frontend)


def test_cli_predict_takes_speaker_references(speaker_run, shared_datasets, tmp_path, capsys):
    assert main(["predict", str(RAVDESS_CLIP), "--run-dir", str(speaker_run)]) == 0
    default = json.loads(capsys.readouterr().out)
    folder = tmp_path / "speaker"
    folder.mkdir()
    sf.write(folder / "take.wav", decode(RAVDESS_CLIP).samples * 0.05, 16000, subtype="FLOAT")
    assert (
        main(
            ["predict", str(RAVDESS_CLIP), "--run-dir", str(speaker_run), "--speaker-reference", str(folder)]
        )
        == 0
    )
    referenced = json.loads(capsys.readouterr().out)
    expected = EmotionRecognizer.load(speaker_run).for_speaker([folder / "take.wav"]).predict(RAVDESS_CLIP)
    assert referenced["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert referenced["probabilities"] != pytest.approx(default["probabilities"], abs=1e-4)
    assert (
        main(
            [
                "predict",
                str(RAVDESS_CLIP),
                "--run-dir",
                str(speaker_run),
                "--speaker-reference",
                str(tmp_path / "nowhere"),
            ]
        )
        == 2
    )
    assert "nowhere: speaker reference not found" in capsys.readouterr().err


# -- the fusion with the eGeMAPS head ---------------------------------------------------------------


def test_a_fused_run_records_its_head_weighed_as_its_setting_says_on_the_networks_probabilities(
    speaker_run,
):
    from aed_tf.runs import FUSION_FILE, Run

    run = Run.load(speaker_run)
    fusion = json.loads((speaker_run / FUSION_FILE).read_text())
    assert fusion["weight"] == run.config.train.fusion_weight == 1.5 and fusion["fitted_by"] == "training"
    # Serving fuses the temperature-scaled probabilities: the same predictions as fusing the
    # network's own at the setting's weight.
    assert fusion["temperature"] == run.metrics()["temperature"]
    head = run.fusion_head()
    assert head.weight == pytest.approx(1.5 / fusion["temperature"]) and head.coef.shape == (4, 88)
    assert head.num_classes == len(run.classes) == 7  # the 4 emotions of the synthetic tree, of 7
    assert [h.weight for h in EmotionRecognizer.load(speaker_run).fusion] == [head.weight]


def test_evaluation_and_the_recognizer_fuse_a_speakers_clips_alike(fused_run, monkeypatch):
    """What evaluation scores is what a user gets from for_speaker with the speaker's clips; a
    lone clip gets the model alone."""
    from aed_tf import functionals
    from aed_tf.calibration import apply_temperature
    from aed_tf.evaluate import evaluate
    from aed_tf.partitions import load_training_data
    from aed_tf.runs import Run

    monkeypatch.setattr(functionals, "MIN_REFERENCE_WINDOWS", 2)  # the synthetic speakers have 8 clips
    run = Run.load(fused_run)
    fused, alone = evaluate(fused_run, "test"), evaluate(fused_run, "test", fusion=False)
    assert fused.fused and fused.fusion_weight == 2.0 and not alone.fused
    np.testing.assert_array_equal(fused.network_probabilities, alone.probabilities)  # calibration's
    served_alone = apply_temperature(alone.probabilities, run.metrics()["temperature"])
    assert np.abs(fused.probabilities - served_alone).max() > 0.01  # the margins count
    # A clip of an unknown speaker: the training clips' statistics, and no fusion.
    trained = evaluate(fused_run, "test", speaker_statistics="training")
    assert not trained.fused
    lone_clips = apply_temperature(trained.probabilities, run.metrics()["temperature"])
    part = load_training_data(run.config, progress=False).partitions["test"]
    recognizer = EmotionRecognizer.load(fused_run, vad=False)  # synthetic tones: speech by energy
    for speaker in sorted(set(part.speakers)):
        rows = np.flatnonzero(part.speakers == speaker)
        clips = [part.waveforms[i] for i in rows]
        by_speaker = recognizer.for_speaker(clips)
        assert by_speaker.functional_moments is not None
        got = np.array([probabilities(by_speaker.predict(clip, sample_rate=16000)) for clip in clips])
        np.testing.assert_allclose(got, fused.probabilities[rows], rtol=0, atol=1e-4)
        lone = np.array([probabilities(recognizer.predict(clip, sample_rate=16000)) for clip in clips])
        np.testing.assert_allclose(lone, lone_clips[rows], rtol=0, atol=1e-4)


def test_too_few_reference_windows_for_the_fusion_leave_the_model_alone_and_say_so(fused_run, speech):
    recognizer = EmotionRecognizer.load(fused_run)
    clips = [speech_core(speech, 0.5), speech_core(speech, 0.5) * 0.5]
    with pytest.warns(rec.InputWarning, match="2 speech windows in the speaker references, under the 10"):
        few = recognizer.for_speaker(clips)
    assert few.functional_moments is None and few.speaker_statistics is not None
    expected = _per_speaker_output(few, clips[0], few.speaker_statistics)
    np.testing.assert_allclose(probabilities(few.predict(clips[0], sample_rate=16000)), expected, atol=1e-5)


def test_an_ensemble_is_fused_with_every_members_head_or_none(fused_run, speaker_run, tiny_run):
    from aed_tf.runs import Run

    heads = rec.ensemble_fusion([Run.load(fused_run), Run.load(speaker_run)])
    assert [head.weight for head in heads] == [2.0, Run.load(speaker_run).fusion_head().weight]
    assert rec.ensemble_fusion([Run.load(fused_run), Run.load(tiny_run)]) == ()
    ensemble = EmotionRecognizer.load([fused_run, speaker_run])
    assert [head.weight for head in ensemble.fusion] == [head.weight for head in heads]


def test_a_run_folder_whose_config_does_not_match_its_model_is_refused(tiny_run, tmp_path):
    import shutil

    from aed_tf.errors import UserError

    for name, edit in (
        ("classes", lambda c: {**c, "classes": c["classes"][:-1]}),
        ("front end", lambda c: {**c, "frontend": {**c["frontend"], "fmax": 7000.0}}),
    ):
        run = tmp_path / name
        shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(edit(config)))
        with pytest.raises(
            UserError,
            match="classes, the model in serving.keras has"
            if name == "classes"
            else r"not the one serving.keras was saved with .*'fmax': \(7000.0, 8000.0\)",
        ):
            EmotionRecognizer.load(run)


def test_a_clip_too_short_to_classify_is_no_speech_without_a_padding_warning(recognizer, speech):
    prediction = recognizer.predict(speech_core(speech, 0.05), sample_rate=16000)
    assert prediction.label is None and prediction.warnings == ()


TF_STARTUP_MARKERS = ("oneDNN", "cuda", "cuInit", "cpu_feature_guard", "absl::InitializeLog")


def test_cli_commands_keep_tensorflows_start_up_lines_off_the_console_unless_verbose(
    tiny_run, shared_datasets
):
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "aed_tf", "predict", str(RAVDESS_CLIP), "--run-dir", str(tiny_run)]
    environment = {k: v for k, v in os.environ.items() if k not in ("AED_TF_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    quiet = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert quiet.returncode == 0 and json.loads(quiet.stdout)["source"] == str(RAVDESS_CLIP)
    assert not [line for line in quiet.stderr.splitlines() if any(m in line for m in TF_STARTUP_MARKERS)], (
        quiet.stderr
    )
    loud = subprocess.run(
        command, capture_output=True, text=True, env={**environment, "AED_TF_VERBOSE": "1"}, timeout=300
    )
    assert loud.returncode == 0 and any(m in loud.stderr for m in TF_STARTUP_MARKERS), loud.stderr
    # An error still reaches the console, in one line.
    missing = subprocess.run(
        command[:4] + ["missing.wav"] + command[5:],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == "aed-tf predict: error: missing.wav: file not found"
    )


def test_a_truncated_or_missing_model_file_is_a_one_line_error(tiny_run, tmp_path, capsys):
    import shutil

    from aed_tf.errors import UserError

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    serving = run / "serving.keras"
    serving.write_bytes(serving.read_bytes()[: serving.stat().st_size // 2])
    with pytest.raises(
        UserError, match=r"serving.keras: not a readable .keras archive \(truncated or corrupt\)"
    ):
        EmotionRecognizer.load(run)
    assert main(["predict", str(RAVDESS_CLIP), "--run-dir", str(run)]) == 2
    assert capsys.readouterr().err.strip().endswith("not a readable .keras archive (truncated or corrupt)")
    # A zip that is not a Keras model: Keras's reason, in one line.
    import zipfile

    with zipfile.ZipFile(serving, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(UserError, match="serving.keras: Keras could not load the model: "):
        EmotionRecognizer.load(run)


def test_an_unreadable_fusion_head_is_refused_naming_its_file(fused_run, tmp_path):
    import shutil

    from aed_tf.errors import UserError
    from aed_tf.runs import FUSION_FILE

    run = tmp_path / "run"
    shutil.copytree(fused_run, run)
    for text, reason in (
        ("{", "unreadable fusion head"),
        ('{"head": {"weight": 1}}', "not a readable fusion head"),
    ):
        (run / FUSION_FILE).write_text(text)
        with pytest.raises(UserError, match=f"^{run / FUSION_FILE}: {reason}"):
            EmotionRecognizer.load(run)
