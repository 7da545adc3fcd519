"""Reading an exported model back: its metadata JSON and a function that runs it with the format's
own runtime. TensorFlow is imported for a SavedModel only: an ONNX or TFLite export runs on ONNX
Runtime or the LiteRT interpreter, so `EmotionRecognizer.load("model.onnx")` needs no TensorFlow.

    from aed_tf.serving.exported import load_export

    probabilities = load_export("saved_models/<run_id>/export/model.onnx")(waveforms)

The interface of every format is `aed_tf.signature`'s; `aed_tf.serving.export` writes them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aed_tf.config import FrontEndConfig
from aed_tf.errors import UserError
from aed_tf.functionals import FusionHead
from aed_tf.signature import PROBABILITIES, STATISTICS_INPUT, WAVEFORM_INPUT

FORMATS = ("savedmodel", "tflite", "onnx")
SIGNATURE = "serving_default"  # of a SavedModel and a TFLite model

Runner = Callable[..., np.ndarray]  # (waveforms[, speaker_statistics]) -> probabilities


def metadata_file(path: str | Path) -> Path:
    """Where the metadata of the export at `path` is: `<name>.json` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


EXPORT_SUFFIXES = (".tflite", ".onnx")


def names_an_export(path: str | Path) -> bool:
    """Whether `path` is meant as an export rather than a run folder: a file, a name ending in
    an export's suffix (existing or not) or a SavedModel folder."""
    path = Path(path)
    return path.suffix in EXPORT_SUFFIXES or path.is_file() or (path / "saved_model.pb").is_file()


def format_of(path: str | Path) -> str:
    """The export format of `path`: a SavedModel folder, a .tflite or an .onnx file."""
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return "savedmodel"
    if path.suffix in EXPORT_SUFFIXES and path.is_file():
        return path.suffix[1:]
    raise UserError(f"{path}: not an exported model (a SavedModel folder, a .tflite or an .onnx file)")


def load_export(path: str | Path, format: str | None = None) -> Runner:
    """The exported model at `path` as a function: float32 waveforms [batch, samples] (and, for a
    per-speaker model, speaker statistics [batch, 2, n_mels]) -> probabilities [batch, classes],
    run by the format's own runtime (TensorFlow, the LiteRT interpreter, ONNX Runtime)."""
    path = Path(path)
    format = format or format_of(path)

    def feeds(waves: np.ndarray, statistics: np.ndarray | None) -> dict[str, np.ndarray]:
        given = {WAVEFORM_INPUT: np.asarray(waves, np.float32)}
        if statistics is not None:
            given[STATISTICS_INPUT] = np.asarray(statistics, np.float32)
        return given

    if format == "savedmodel":
        from aed_tf import quiet

        quiet.import_quietly()
        import tensorflow as tf

        signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
        return lambda waves, statistics=None: signature(
            **{k: tf.constant(v) for k, v in feeds(waves, statistics).items()}
        )[PROBABILITIES].numpy()
    if format == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        from aed_tf import quiet

        runner = Interpreter(model_path=str(path)).get_signature_runner(SIGNATURE)

        def run_tflite(waves: np.ndarray, statistics: np.ndarray | None = None) -> np.ndarray:
            with quiet.silenced():  # LiteRT prints its XNNPACK delegate's creation on first use
                return runner(**feeds(waves, statistics))[PROBABILITIES]

        return run_tflite
    if format == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its graph-optimiser notes are not the user's
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda waves, statistics=None: session.run([PROBABILITIES], feeds(waves, statistics))[0]
    raise UserError(f"format {format!r}: choose one of {', '.join(FORMATS)}")


@dataclasses.dataclass(frozen=True, eq=False)
class ExportedModel:
    """An export with what its metadata says: what `EmotionRecognizer` needs to run it."""

    path: Path
    format: str
    metadata: dict[str, Any]
    run: Runner

    @classmethod
    def load(cls, path: str | Path) -> ExportedModel:
        """The export at `path` and its metadata JSON (written beside it by `aed-tf export`)."""
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: exported model not found")
        format = format_of(path)
        described = metadata_file(path)
        try:
            metadata = json.loads(described.read_text())
        except FileNotFoundError:
            raise UserError(
                f"{path}: no metadata beside it ({described.name}, written by aed-tf export)"
            ) from None
        except (OSError, ValueError) as error:
            raise UserError(f"{described}: unreadable export metadata ({error})") from None
        if not isinstance(metadata, dict) or not {"classes", "frontend"} <= set(metadata):
            raise UserError(f"{described}: not the metadata of an aed-tf export (no classes or frontend)")
        try:
            run = load_export(path, format)
        except UserError:
            raise
        except Exception as error:  # the runtimes' own errors for a corrupt file
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UserError(f"{path}: the {format} runtime could not load it: {first}") from None
        return cls(path, format, metadata, run)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metadata["classes"])

    @property
    def frontend(self) -> FrontEndConfig:
        return FrontEndConfig(**self.metadata["frontend"])

    @property
    def training_statistics(self) -> np.ndarray | None:
        """[2, n_mels] of a per-speaker model's training clips; None for a per-clip model."""
        statistics = self.metadata.get("training_statistics")
        return None if statistics is None else np.asarray(statistics, np.float32)

    @property
    def fusion(self) -> tuple[FusionHead, ...]:
        """The heads of the runs it exports, fused by the recognizer as for the runs themselves
        (`aed_tf.functionals`); empty for runs without (or an export written before them)."""
        heads = self.metadata.get("fusion")
        source = metadata_file(self.path)
        if heads is None:
            return ()
        if not isinstance(heads, list):
            raise UserError(f"{source}: fusion is not a list of heads")
        return tuple(FusionHead.from_dict(head, source=source) for head in heads)
