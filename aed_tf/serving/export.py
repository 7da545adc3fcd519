"""A run's serving model as a SavedModel, a TFLite model or an ONNX model, each checked against
the Keras model and described by a metadata JSON beside it.

    from aed_tf.serving.export import export, load_export

    exported = export("saved_models/<run_id>", "onnx")   # -> saved_models/<run_id>/export/model.onnx
    probabilities = load_export(exported.path)(waveforms)
    recognizer = EmotionRecognizer.load(exported.path)   # windows, voice activity: no TensorFlow
    export(["saved_models/<seed 0>", "saved_models/<seed 1>"], "onnx", "ensemble.onnx")  # one model

Every format takes what the Keras serving model (`serving.keras`) takes and gives what it gives:

    input   "waveform"       float32 [batch, samples]: mono audio at the run's sample rate
                             (16 kHz), in [-1, 1]. Any number of samples: centred crop or zero
                             pad to the clip length, as in training.
    output  "probabilities"  float32 [batch, classes], temperature-scaled, in the order of the
                             metadata's "classes".

A run trained with per-speaker normalisation (`normalization: speaker`) takes a second input:

    input   "speaker_statistics"  float32 [batch, 2, n_mels]: the speaker's log-mel band means
                             (row 0) and deviations (row 1) over their recordings
                             (`EmotionRecognizer.for_speaker(...).speaker_statistics`); the
                             metadata's "training_statistics" stand in for an unknown speaker.

A run trained with ``--fusion egemaps`` is fused after the model, not inside it: the metadata's
"fusion" holds its eGeMAPS head (`aed_tf.functionals.FusionHead`, arrays and the weight), which
`EmotionRecognizer` applies in numpy given a speaker's references, as for the run itself.

Both dimensions are dynamic in all three formats (TFLite: the signature runner resizes the input;
with the plain interpreter, resize_tensor_input first). The front end (STFT, mel filters, log,
normalisation) is inside the exported graph and uses builtin ops only: TFLite's RFFT2D, ONNX's
DFT (opset 17). Sliding windows over long recordings, voice activity and resampling are
`EmotionRecognizer`'s, which runs an export as it runs the Keras model (`EmotionRecognizer.load`
of the export's path); an exported model alone classifies the windows you cut yourself.

The metadata JSON (`<export name>.json` beside it) holds the classes, sample rate, clip length,
the input and output, and the largest difference of a probability from the Keras model's,
measured right after the export on `check_waveforms` (noise, a chirp, a speech-like harmonic tone;
shorter and longer than the clip). Measured on 25 real clips with a trained mobilenetv3small run
(3 s, 128 mel bands, 96 px): 6e-7 (SavedModel), 7e-6 (TFLite), 4e-6 (ONNX). Pure digital silence
is measured apart and differs more (TFLite 0.03 on that run): the per-clip normalisation of a
constant clip scales float rounding up 1000-fold, so its features are rounding noise in any
implementation. `EmotionRecognizer` never gives silence to the model.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from aed_tf import features
from aed_tf.errors import UserError
from aed_tf.files import atomic_write, write_json
from aed_tf.runs import Run, environment
from aed_tf.serving.exported import (  # noqa: F401  (format_of, load_export: read back from here too)
    FORMATS,
    SIGNATURE,
    format_of,
    load_export,
    metadata_file,
)
from aed_tf.signature import PROBABILITIES, STATISTICS_INPUT, WAVEFORM_INPUT

# What `export` writes in the run folder when no path is given.
EXPORT_DIR = "export"
DEFAULT_NAMES = {"savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}
# The first ONNX opset with DFT, which the STFT becomes.
ONNX_OPSET = 17
INPUT_NAME, STATISTICS_NAME, OUTPUT_NAME = WAVEFORM_INPUT, STATISTICS_INPUT, PROBABILITIES


@dataclasses.dataclass(frozen=True)
class Export:
    """An exported model: where it is, its metadata file, and what the metadata says."""

    format: str
    path: Path
    metadata_path: Path
    metadata: dict[str, Any]

    @property
    def max_abs_difference(self) -> float:
        """The largest difference of a probability from the Keras model's, on the check inputs."""
        return self.metadata["check"]["max_abs_difference"]


def export(run_dir: str | Path | Sequence[str | Path], format: str, out: str | Path | None = None) -> Export:
    """Exports the serving model of the finished run in `run_dir` as `format` (savedmodel,
    tflite or onnx) to `out` (default `<run_dir>/export/savedmodel`, `model.tflite` or
    `model.onnx`), replacing what is there, checks it against the Keras model and writes the
    metadata JSON beside it. Several run folders export their ensemble (`EmotionRecognizer.load`
    of them) as one model, to `out`, which it then needs."""
    from aed_tf.serving.recognizer import EmotionRecognizer, ensemble_fusion, run_folders

    if format not in FORMATS:
        raise UserError(f"format {format!r}: choose one of {', '.join(FORMATS)}")
    run_dirs = run_folders(run_dir)
    if len(run_dirs) > 1 and out is None:
        raise UserError(f"an ensemble of {len(run_dirs)} runs needs --out: it has no run folder of its own")
    # UserError for a folder that is not a finished run, or runs that make no ensemble.
    # Without the fusion: the export is the model, which the recognizer's fusion follows.
    recognizer = EmotionRecognizer.load(run_dirs, fusion=())
    model, frontend = recognizer.model, recognizer.frontend
    n_mels = frontend.n_mels if recognizer.per_speaker else None
    path = Path(out) if out is not None else run_dirs[0] / EXPORT_DIR / DEFAULT_NAMES[format]
    if format == "savedmodel":
        _replace_dir(path, lambda tmp: _write_saved_model(model, tmp, n_mels))
    elif format == "tflite":
        atomic_write(path, lambda tmp: tmp.write_bytes(_tflite_bytes(model, n_mels)))
    else:
        atomic_write(
            path, lambda tmp: _write_onnx(model, recognizer.classes, frontend.sample_rate, tmp, n_mels)
        )

    exported = load_export(path, format)

    def difference(waves: np.ndarray) -> float:
        if not recognizer.per_speaker:
            return float(np.max(np.abs(model(waves, training=False).numpy() - exported(waves))))
        # Each check batch normalised with its own statistics, which differ from the training ones.
        statistics = np.broadcast_to(
            recognizer.for_speaker(list(waves)).speaker_statistics, (len(waves), 2, frontend.n_mels)
        ).copy()
        expected = model({INPUT_NAME: waves, STATISTICS_NAME: statistics}, training=False).numpy()
        return float(np.max(np.abs(expected - exported(waves, statistics))))

    checks = check_waveforms(frontend.sample_rate, frontend.clip_samples)
    silence = np.zeros((1, frontend.clip_samples), np.float32)

    runs = [Run.load(run_dir) for run_dir in run_dirs]
    metadata = {
        "format": format,
        "path": path.name,
        # One run, or the runs whose serving models' mean probabilities the export gives.
        "run": runs[0].name if len(runs) == 1 else None,
        "ensemble_of": [run.name for run in runs] if len(runs) > 1 else None,
        "classes": list(recognizer.classes),
        "sample_rate": frontend.sample_rate,
        "clip_samples": frontend.clip_samples,
        "clip_seconds": frontend.clip_seconds,
        "input": {
            "name": INPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", "samples"],
            "description": f"mono waveforms at {frontend.sample_rate} Hz in [-1, 1]; any "
            f"number of samples, centred crop or zero pad to {frontend.clip_samples} "
            "(the clip length of training)",
        },
        **(
            {
                "speaker_statistics": {
                    "name": STATISTICS_NAME,
                    "dtype": "float32",
                    "shape": ["batch", 2, frontend.n_mels],
                    "description": "the speaker's log-mel band means (row 0) and deviations (row 1) over "
                    "their recordings, as EmotionRecognizer.for_speaker computes them",
                },
                "training_statistics": recognizer.speaker_statistics.tolist(),
            }
            if recognizer.per_speaker
            else {}
        ),
        # The eGeMAPS heads the recognizer fuses the output with, given a speaker's references
        # (`aed_tf.functionals`): applied in numpy after the model, not inside the export.
        "fusion": [head.to_dict() for head in ensemble_fusion(runs)] or None,
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(recognizer.classes)],
            "description": "temperature-scaled class probabilities, in the order of classes",
        },
        "signature": SIGNATURE if format != "onnx" else None,
        "onnx_opset": ONNX_OPSET if format == "onnx" else None,
        "frontend": dataclasses.asdict(frontend),
        "backbone": " + ".join(dict.fromkeys(str(run.backbone) for run in runs)),
        "check": {
            "against": "the run's Keras serving model (serving.keras)"
            if len(runs) == 1
            else f"the mean of the {len(runs)} runs' Keras serving models (serving.keras)",
            "inputs": f"{sum(len(w) for w in checks)} synthetic waveforms (check_waveforms: noise, a "
            "chirp, a speech-like harmonic tone; shorter and longer than the clip)",
            "max_abs_difference": max(difference(waves) for waves in checks),
            # Rounding noise scaled up by the normalisation of a constant clip; never classified
            # by EmotionRecognizer, which finds no speech in it.
            "silence_max_abs_difference": difference(silence),
        },
        "versions": _versions(format),
        "exported": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    metadata_path = metadata_file(path)
    write_json(metadata_path, metadata)
    return Export(format, path, metadata_path, metadata)


def check_waveforms(sample_rate: int, clip_samples: int, seed: int = 0) -> list[np.ndarray]:
    """Inputs on which an export is compared with the Keras model: a batch of three clips (white
    noise, a rising chirp, a harmonic tone with vibrato and a syllable rhythm in noise), then one
    shorter (zero padded) and one longer (cropped) clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(clip_samples) / sample_rate
    noise = 0.1 * rng.standard_normal(clip_samples)
    chirp = 0.3 * np.sin(2 * np.pi * (100 + 1500 * t / t[-1]) * t)
    pitch = 150 + 20 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    tone = 0.2 * voiced + 0.01 * rng.standard_normal(clip_samples)
    batch = np.stack([noise, chirp, tone])
    short = tone[None, : clip_samples // 2]
    long = np.tile(tone, 2)[None, : clip_samples * 3 // 2] + 0.02 * rng.standard_normal(
        (1, clip_samples * 3 // 2)
    )
    return [w.astype(np.float32) for w in (batch, short, long)]


# -- the formats --------------------------------------------------------------------------------


def _serving_function(model: Any, n_mels: int | None) -> tf.types.experimental.PolymorphicFunction:
    """waveform (and speaker_statistics when `n_mels` is given) -> {"probabilities": ...}."""
    if n_mels is None:
        return tf.function(lambda waveform: {OUTPUT_NAME: model(waveform, training=False)})
    return tf.function(
        lambda waveform, speaker_statistics: {
            OUTPUT_NAME: model({INPUT_NAME: waveform, STATISTICS_NAME: speaker_statistics}, training=False)
        }
    )


def _input_signature(n_mels: int | None) -> list[tf.TensorSpec]:
    waves = [tf.TensorSpec([None, None], tf.float32, name=INPUT_NAME)]
    return (
        waves
        if n_mels is None
        else waves + [tf.TensorSpec([None, 2, n_mels], tf.float32, name=STATISTICS_NAME)]
    )


def _write_saved_model(model: Any, path: Path, n_mels: int | None) -> None:
    """A SavedModel whose serving_default signature is waveform -> probabilities, as plain ops."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    with features.plain_ops():
        archive.add_endpoint(
            SIGNATURE, _serving_function(model, n_mels), input_signature=_input_signature(n_mels)
        )
        archive.write_out(str(path), verbose=False)


def _tflite_bytes(model: Any, n_mels: int | None) -> bytes:
    """Builtin TFLite ops only; converted from a SavedModel, which freezes the weights (the
    converter's Keras and concrete-function routes leave Keras 3's variables unread)."""
    with tempfile.TemporaryDirectory(prefix="aed-tf-export-") as tmp:
        _write_saved_model(model, Path(tmp) / "savedmodel", n_mels)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "savedmodel"), [SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return converter.convert()
        except Exception as error:  # ConverterError: its message lists the ops it could not convert
            raise UserError(f"TFLite conversion failed: {_last_lines(error)}") from error


def _write_onnx(
    model: Any, classes: tuple[str, ...], sample_rate: int, path: Path, n_mels: int | None
) -> None:
    import onnx
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    with features.plain_ops():
        proto, _ = tf2onnx.convert.from_function(
            _serving_function(model, n_mels),
            input_signature=_input_signature(n_mels),
            opset=ONNX_OPSET,
            custom_op_handlers={
                "RFFT": (_rfft_as_dft, []),
                "Real": (_complex_part(0), []),
                "Imag": (_complex_part(1), []),
            },
        )
    # tf2onnx goes on past ops it cannot convert and leaves them in the graph.
    left = sorted({node.op_type for node in proto.graph.node if node.domain not in ("", "ai.onnx")})
    if left:
        raise UserError(f"ONNX conversion left TensorFlow ops it could not convert: {', '.join(left)}")
    onnx.checker.check_model(proto)
    for key, value in (("classes", json.dumps(list(classes))), ("sample_rate", str(sample_rate))):
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


# tf2onnx turns an RFFT into a product with a DFT matrix only when its one consumer is ComplexAbs,
# and cannot convert Real and Imag (ONNX has no complex tensors). The front end squares the real
# and imaginary parts, so these handlers make the RFFT an ONNX DFT, whose output holds the real
# and imaginary parts in a last axis of 2, and Real and Imag the gathers of one of them.


def _rfft_as_dft(ctx: Any, node: Any, name: str, args: Any) -> None:
    """RFFT [..., n] with fft_length [L] -> DFT, one-sided, over the same axis: [..., L//2+1, 2]."""
    from onnx import TensorProto
    from tf2onnx import utils

    signal, fft_length = node.input
    rank = ctx.get_rank(signal)
    if rank is None:
        raise ValueError(f"{name}: the rank of the RFFT's input is unknown")
    length = int(np.asarray(ctx.get_node_by_output(fft_length).get_tensor_value()).reshape(-1)[0])
    axes = ctx.make_const(utils.make_name(f"{name}_axes"), np.array([-1], np.int64))
    as_real = ctx.make_node("Unsqueeze", [signal, axes.output[0]], op_name_scope=name)
    dft_length = ctx.make_const(utils.make_name(f"{name}_length"), np.array(length, np.int64))
    dft = ctx.make_node(
        "DFT",
        [as_real.output[0], dft_length.output[0]],
        op_name_scope=name,
        attr={"axis": rank - 1, "onesided": 1},
        dtypes=[TensorProto.FLOAT],
    )
    ctx.replace_all_inputs(node.output[0], dft.output[0])
    ctx.remove_node(node.name)


def _complex_part(index: int) -> Callable[..., None]:
    """A handler for Real (index 0) or Imag (1) of a DFT's output."""

    def handler(ctx: Any, node: Any, name: str, args: Any) -> None:
        from onnx import TensorProto
        from tf2onnx import utils

        part = ctx.make_const(utils.make_name(f"{name}_part"), np.array(index, np.int64))
        gather = ctx.make_node(
            "Gather",
            [node.input[0], part.output[0]],
            attr={"axis": -1},
            op_name_scope=name,
            dtypes=[TensorProto.FLOAT],
        )
        ctx.replace_all_inputs(node.output[0], gather.output[0])
        ctx.remove_node(node.name)

    return handler


# -- files ------------------------------------------------------------------------------------------


def _replace_dir(path: Path, write: Callable[[Path], Any]) -> Path:
    """`write(temporary folder)` beside `path`, then the folder put in its place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (path.with_name(f".tmp-{os.getpid()}-{label}-{path.name}") for label in ("new", "old"))
    try:
        write(tmp)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when the write failed
    return path


def _versions(format: str) -> dict[str, str]:
    """What every record carries (`aed_tf.runs.environment`), and the converters and runtime
    of `format`."""
    packages = {"savedmodel": [], "tflite": ["ai-edge-litert"], "onnx": ["tf2onnx", "onnx", "onnxruntime"]}
    return {
        **environment()["versions"],
        **{name: importlib_metadata.version(name) for name in packages[format]},
    }


def _last_lines(error: Exception, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in str(error).strip().splitlines()[-lines:])
