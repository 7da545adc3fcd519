"""Exports (SavedModel, TFLite, ONNX) give the Keras serving model's probabilities on real clips,
each through its own runtime: TensorFlow, the LiteRT (TensorFlow Lite) interpreter, ONNX Runtime."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from aed_tf.audio import decode
from aed_tf.backbones import BACKBONES
from aed_tf.cli import build_parser, main
from aed_tf.config import FrontEndConfig
from aed_tf.features import plain_ops, waveform_to_image
from aed_tf.serving.export import FORMATS, check_waveforms, export, format_of, load_export, metadata_file
from aed_tf.serving.recognizer import EmotionRecognizer
from tests.conftest import RAVDESS_DIR, TESS_DIR
from tests.responsive import make_responsive_run

# The largest difference of a probability from the Keras model's that each format may show on real
# clips: float32 rounding, XLA's fused mel product against plain ops, TFLite's RFFT2D and ONNX
# Runtime's DFT against TensorFlow's FFT. Measured with this model: 4e-8 (SavedModel), 9e-8
# (TFLite), 9e-8 (ONNX); with a trained mobilenetv3small run (3 s, 128 mels, 96 px): 6e-7, 7e-6,
# 4e-6.
TOLERANCE = {"savedmodel": 1e-5, "tflite": 1e-5, "onnx": 1e-5}

CLIPS = [
    RAVDESS_DIR / "Actor_01" / "03-01-05-01-01-01-01.flac",  # angry
    RAVDESS_DIR / "Actor_02" / "03-01-03-01-01-01-02.flac",  # happy
    RAVDESS_DIR / "Actor_05" / "03-01-04-02-02-02-05.flac",  # sad
    TESS_DIR / "OAF_angry" / "OAF_bar_angry.flac",
    TESS_DIR / "YAF_fear" / "YAF_bath_fear.flac",
    TESS_DIR / "OAF_neutral" / "OAF_back_neutral.flac",
]


@pytest.fixture(scope="module")
def clips(shared_datasets) -> list[np.ndarray]:
    """The real clips at 16 kHz mono, whole (1.5-4 s: the models crop them to their 0.5 s)."""
    return [decode(path).samples for path in CLIPS]


@pytest.fixture(scope="module")
def responsive_run(tiny_run, tmp_path_factory) -> Path:
    """A run whose model gives each clip its own answer (the tiny run's gives all the same), so a
    front end (STFT, mel, log, normalisation, image) that exported wrongly shows."""
    return make_responsive_run(tiny_run, tmp_path_factory.mktemp("responsive") / "run")


def windows(clips: list[np.ndarray], length: int) -> np.ndarray:
    """[clips, length]: the middle `length` samples of each clip, a batch."""
    return np.stack([clip[(len(clip) - length) // 2 :][:length] for clip in clips])


@pytest.mark.parametrize("format", FORMATS)
def test_an_export_gives_the_keras_models_probabilities_on_real_clips(
    responsive_run, clips, format, tmp_path
):
    model = EmotionRecognizer.load(responsive_run).model
    clip_samples = FrontEndConfig(
        **json.loads((responsive_run / "config.json").read_text())["frontend"]
    ).clip_samples
    batch = windows(clips, clip_samples)
    expected_batch = model(batch).numpy()
    # The comparison means something: the clips get answers far apart compared with the tolerance.
    assert expected_batch.std(axis=0).max() > 1000 * TOLERANCE[format], expected_batch
    assert len(set(np.argmax(expected_batch, axis=1))) >= 2, expected_batch

    out = tmp_path / {"savedmodel": "sm", "tflite": "model.tflite", "onnx": "model.onnx"}[format]
    exported = export(responsive_run, format, out)
    assert exported.path == out and format_of(out) == format
    run = load_export(out)
    np.testing.assert_allclose(run(batch), expected_batch, rtol=0, atol=TOLERANCE[format])
    # Whole clips of any length, one at a time: the centred crop is in the export too.
    for clip in clips:
        np.testing.assert_allclose(run(clip[None]), model(clip[None]).numpy(), rtol=0, atol=TOLERANCE[format])
    # And shorter than the clip: zero padded as the Keras model pads.
    short = batch[:, : clip_samples // 3]
    np.testing.assert_allclose(run(short), model(short).numpy(), rtol=0, atol=TOLERANCE[format])

    metadata = json.loads(metadata_file(out).read_text())
    assert metadata == exported.metadata
    assert metadata["classes"] == list(EmotionRecognizer.load(responsive_run).classes)
    assert (metadata["sample_rate"], metadata["clip_samples"]) == (16000, clip_samples)
    assert metadata["input"]["name"] == "waveform" and metadata["output"]["name"] == "probabilities"
    assert 0 <= metadata["check"]["max_abs_difference"] <= TOLERANCE[format]
    assert 0 <= metadata["check"]["silence_max_abs_difference"] <= 1  # recorded apart: rounding noise


@pytest.mark.parametrize("format", ["tflite", "onnx"])
def test_cli_exports_the_trained_run(tiny_run, clips, format, capsys):
    """The tiny run's own model (MobileNetV3: hard-swish, depthwise convolutions, squeeze and
    excite) converts with builtin ops, through the command line, to the default place. (The
    TFLite model is converted from the SavedModel export.)"""
    assert main(["export", str(tiny_run), "--format", format]) == 0
    out = capsys.readouterr().out
    path = (
        tiny_run
        / "export"
        / {"savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}[format]
    )
    assert str(path) in out and metadata_file(path).is_file()
    model = EmotionRecognizer.load(tiny_run).model
    batch = windows(clips, 8000)
    np.testing.assert_allclose(load_export(path)(batch), model(batch).numpy(), rtol=0, atol=TOLERANCE[format])


def test_cli_export_errors_are_one_line(tiny_run, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert (
        capsys.readouterr().err.strip() == f"aed-tf export: error: {tmp_path}: not a finished run "
        "(no serving.keras or config.json)"
    )
    with pytest.raises(SystemExit):
        main(["export", str(tiny_run), "--format", "pytorch"])
    assert "invalid choice" in capsys.readouterr().err
    # The command line lists the formats without importing TensorFlow: every one must be there.
    for format in FORMATS:
        assert build_parser().parse_args(["export", str(tiny_run), "--format", format]).format == format


def test_plain_ops_trace_the_front_end_without_xla_and_give_the_same_image():
    frontend = FrontEndConfig(clip_seconds=0.5, n_mels=32)
    waves = check_waveforms(frontend.sample_rate, frontend.clip_samples)[0]
    spec = tf.TensorSpec([None, None], tf.float32)

    def calls(function) -> set[str]:
        return {
            node.op
            for node in function.get_concrete_function(spec).graph.as_graph_def().node
            if "PartitionedCall" in node.op
        }

    compiled = tf.function(lambda w: waveform_to_image(w, frontend, 32))
    assert calls(compiled)  # the XLA-compiled steps are function calls
    with plain_ops():
        plain = tf.function(lambda w: waveform_to_image(w, frontend, 32))
        assert not calls(plain)
        plain_image = plain(waves).numpy()
    # Images in [0, 255]: XLA's fused products and the plain ops differ in rounding only.
    np.testing.assert_allclose(plain_image, compiled(waves).numpy(), rtol=0, atol=1e-3)


@pytest.fixture(scope="module", params=[name for name, b in BACKBONES.items() if not b.image])
def audio_native_run(request, tmp_path_factory) -> Path:
    """A tiny run of each audio-native backbone (attentive statistics pooling, no image)."""
    from aed_tf.train import train
    from tests.synth import make_ravdess_tree, tiny_config

    root = tmp_path_factory.mktemp(f"{request.param}-run")
    config = tiny_config(root, make_ravdess_tree(root / "data"), backbone=request.param, epochs=1)
    return train(config, progress=False).run_dir


@pytest.mark.parametrize("format", FORMATS)
def test_the_audio_native_backbones_export_with_builtin_ops(audio_native_run, clips, format, tmp_path):
    out = tmp_path / {"savedmodel": "sm", "tflite": "model.tflite", "onnx": "model.onnx"}[format]
    export(audio_native_run, format, out)
    model = EmotionRecognizer.load(audio_native_run).model
    batch = windows(clips, 8000)
    expected = model(batch).numpy()
    assert np.abs(expected - expected.mean(axis=0)).max() > 1e-4  # the clips get answers of their own
    np.testing.assert_allclose(load_export(out)(batch), expected, rtol=0, atol=TOLERANCE[format])
    for clip in clips[:2]:  # whole clips of other lengths: the pooling takes any number of frames
        np.testing.assert_allclose(
            load_export(out)(clip[None]), model(clip[None]).numpy(), rtol=0, atol=TOLERANCE[format]
        )


@pytest.mark.parametrize("format", FORMATS)
def test_a_per_speaker_run_exports_with_a_speaker_statistics_input(speaker_run, clips, format, tmp_path):
    out = tmp_path / {"savedmodel": "sm", "tflite": "model.tflite", "onnx": "model.onnx"}[format]
    exported = export(speaker_run, format, out)
    recognizer = EmotionRecognizer.load(speaker_run)
    batch = windows(clips, 8000)
    for statistics in (recognizer.speaker_statistics, recognizer.for_speaker(clips[:3]).speaker_statistics):
        tiled = np.repeat(statistics[None], len(batch), axis=0)
        expected = recognizer.model({"waveform": batch, "speaker_statistics": tiled}).numpy()
        assert np.abs(expected - expected.mean(axis=0)).max() > 1e-4
        np.testing.assert_allclose(load_export(out)(batch, tiled), expected, rtol=0, atol=TOLERANCE[format])
    metadata = exported.metadata
    assert metadata["speaker_statistics"]["shape"] == ["batch", 2, recognizer.frontend.n_mels]
    np.testing.assert_allclose(metadata["training_statistics"], recognizer.speaker_statistics, atol=1e-6)
    # The synthetic check inputs (noise, a chirp), normalised by their own statistics, lie further
    # from speech than real clips: 2e-5 measured for ONNX.
    assert 0 <= metadata["check"]["max_abs_difference"] <= 10 * TOLERANCE[format]


def test_a_full_disk_during_export_is_one_line_naming_the_file(tiny_run, tmp_path, monkeypatch, capsys):
    import errno

    import aed_tf.serving.export as export_module

    out = tmp_path / "model.tflite"

    def disk_full(model, n_mels):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(export_module, "_tflite_bytes", disk_full)
    assert main(["export", str(tiny_run), "--format", "tflite", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"aed-tf export: error: {out}: No space left on device"
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


# -- the recognizer over an export -----------------------------------------------------------------


def _probabilities(predictions) -> np.ndarray:
    return np.array([list(p.probabilities.values()) for p in predictions])


@pytest.mark.parametrize("format", FORMATS)
def test_the_recognizer_over_an_export_answers_as_over_the_keras_model(
    responsive_run, clips, format, tmp_path, shared_datasets
):
    out = tmp_path / {"savedmodel": "sm", "tflite": "model.tflite", "onnx": "model.onnx"}[format]
    export(responsive_run, format, out)
    keras_route, exported = EmotionRecognizer.load(responsive_run), EmotionRecognizer.load(out)
    assert exported.classes == keras_route.classes and exported.frontend == keras_route.frontend
    expected, got = (
        keras_route.predict_many(CLIPS, progress=False),
        exported.predict_many(CLIPS, progress=False),
    )
    assert [p.label for p in got] == [p.label for p in expected]
    assert [(p.windows, p.speech_seconds) for p in got] == [(p.windows, p.speech_seconds) for p in expected]
    np.testing.assert_allclose(_probabilities(got), _probabilities(expected), rtol=0, atol=TOLERANCE[format])
    # A recording of several clips with silence between: the same windows, voice activity, segments.
    gap = np.zeros(8000, np.float32)
    recording = np.concatenate([part for clip in clips for part in (clip, gap)])
    expected_timeline = keras_route.timeline(recording, sample_rate=16000)
    timeline = exported.timeline(recording, sample_rate=16000)
    assert [(s.start, s.end, s.label) for s in timeline.segments] == [
        (s.start, s.end, s.label) for s in expected_timeline.segments
    ]
    np.testing.assert_allclose(
        timeline.window_probabilities, expected_timeline.window_probabilities, rtol=0, atol=TOLERANCE[format]
    )


def test_a_per_speaker_export_recognizes_with_the_training_or_the_references_statistics(
    speaker_run, clips, tmp_path, shared_datasets
):
    out = export(speaker_run, "onnx", tmp_path / "model.onnx").path
    keras_route, exported = EmotionRecognizer.load(speaker_run), EmotionRecognizer.load(out)
    np.testing.assert_allclose(exported.speaker_statistics, keras_route.speaker_statistics, atol=1e-6)
    for expected_route, route in (
        (keras_route, exported),
        (keras_route.for_speaker(CLIPS[:3]), exported.for_speaker(CLIPS[:3])),
    ):
        expected, got = (
            expected_route.predict_many(CLIPS, progress=False),
            route.predict_many(CLIPS, progress=False),
        )
        assert np.abs(_probabilities(expected) - _probabilities(expected).mean(axis=0)).max() > 1e-4
        np.testing.assert_allclose(
            _probabilities(got), _probabilities(expected), rtol=0, atol=TOLERANCE["onnx"]
        )


def test_cli_predict_runs_an_export_and_refuses_what_is_not_one(tiny_run, tmp_path, capsys, shared_datasets):
    out = export(tiny_run, "onnx", tmp_path / "model.onnx").path
    clip = str(CLIPS[0])
    assert main(["predict", clip, "--run-dir", str(tiny_run)]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["predict", clip, "--model", str(out)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["label"] == expected["label"] and got["windows"] == expected["windows"]
    np.testing.assert_allclose(
        list(got["probabilities"].values()), list(expected["probabilities"].values()), atol=TOLERANCE["onnx"]
    )
    assert main(["predict", clip, "--model", str(out), "--run-dir", str(tiny_run)]) == 2
    assert "give one" in capsys.readouterr().err
    missing = tmp_path / "missing.onnx"
    assert main(["predict", clip, "--model", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"aed-tf predict: error: {missing}: exported model not found"
    not_an_export = tmp_path / "model.pt"
    not_an_export.write_bytes(b"\0" * 64)
    assert main(["predict", clip, "--model", str(not_an_export)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"aed-tf predict: error: {not_an_export}: not an exported model (a SavedModel folder, a .tflite or an .onnx file)"
    )
    metadata_file(out).unlink()
    assert main(["predict", clip, "--model", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"aed-tf predict: error: {out}: no metadata beside it (model.onnx.json, written by aed-tf export)"
    )
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    metadata_file(corrupt).write_text(json.dumps({"classes": ["a"], "frontend": {}}))
    assert main(["predict", clip, "--model", str(corrupt)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"aed-tf predict: error: {corrupt}: the onnx runtime could not load it: ")
        and "\n" not in err
    )


def test_a_fused_runs_export_carries_its_head_and_fuses_as_the_keras_route(fused_run, tmp_path, monkeypatch):
    from aed_tf import functionals
    from aed_tf.partitions import load_training_data
    from aed_tf.runs import Run

    monkeypatch.setattr(functionals, "MIN_REFERENCE_WINDOWS", 2)  # the synthetic speakers have 8 clips
    exported_run = export(fused_run, "onnx", tmp_path / "model.onnx")
    assert [head["weight"] for head in exported_run.metadata["fusion"]] == [2.0]
    part = load_training_data(Run.load(fused_run).config, progress=False).partitions["test"]
    speaker = part.speakers[0]
    clips = [clip for clip, of in zip(part.waveforms, part.speakers) if of == speaker]
    keras_route = EmotionRecognizer.load(fused_run, vad=False).for_speaker(clips)
    exported = EmotionRecognizer.load(exported_run.path, vad=False).for_speaker(clips)
    assert [head.weight for head in exported.fusion] == [2.0]
    np.testing.assert_allclose(exported.functional_moments, keras_route.functional_moments)
    expected, got = (
        keras_route.predict_many(clips, progress=False),
        exported.predict_many(clips, progress=False),
    )
    alone = EmotionRecognizer.load(exported_run.path, vad=False).predict_many(clips, progress=False)
    assert np.abs(_probabilities(alone) - _probabilities(got)).max() > 0.01  # fused, not alone
    np.testing.assert_allclose(_probabilities(got), _probabilities(expected), rtol=0, atol=TOLERANCE["onnx"])


def test_export_metadata_with_a_broken_fusion_head_is_refused_naming_the_file(tmp_path):
    from aed_tf.errors import UserError
    from aed_tf.serving.exported import ExportedModel

    path = tmp_path / "model.onnx"
    for fusion, reason in (
        ({"weight": 1}, "fusion is not a list of heads"),
        ([{"weight": 1}], "not a readable fusion head"),
    ):
        exported = ExportedModel(path, "onnx", {"fusion": fusion}, run=None)
        with pytest.raises(UserError, match=f"^{tmp_path / 'model.onnx.json'}: {reason}"):
            _ = exported.fusion
    assert ExportedModel(path, "onnx", {"fusion": None}, run=None).fusion == ()  # a run without a head
