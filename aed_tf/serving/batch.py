"""`aed-tf predict`: a file or a folder in, every file's prediction (or timeline) out as JSON or
CSV, the files that could not be used listed with their reasons while the others go on."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

from aed_tf.errors import UserError
from aed_tf.serving.recognizer import (
    AUDIO_EXTENSIONS,
    EmotionRecognizer,
    InputWarning,
    Prediction,
    Timeline,
    audio_files,
    predictions_csv,
    timelines_csv,
)


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """What a file or a folder gave: its results in order, and the files that could not be used."""

    source: Path
    files: list[Path]
    results: list[Prediction | Timeline]
    errors: list[UserError]
    classes: tuple[str, ...]

    @property
    def predictions(self) -> list[Prediction]:
        return [r.prediction if isinstance(r, Timeline) else r for r in self.results]

    def text(self, format: str) -> str:
        """The results as `format`: "json" (one object for a file; results and errors for a
        folder) or "csv" (a row per file, or per segment of a timeline)."""
        timelines = [r for r in self.results if isinstance(r, Timeline)]
        if format == "csv":
            if timelines:
                return timelines_csv(timelines, self.classes)
            return predictions_csv(self.predictions, self.classes)
        dicts = [r.to_dict() for r in self.results]
        if not self.source.is_dir():
            return json.dumps(dicts[0], indent=2) + "\n"
        errors = [
            {"source": str(getattr(e, "path", "")), "reason": getattr(e, "reason", str(e))}
            for e in self.errors
        ]
        return json.dumps({"results": dicts, "errors": errors}, indent=2) + "\n"

    def plot(self, plot: Path) -> None:
        """Each timeline as a PNG: at `plot` for a file; in the folder `plot` for a folder, named
        by the file's path under the source (`a/b.wav` -> `a__b.png`)."""
        for result in self.results:
            if not isinstance(result, Timeline):
                continue
            if self.source.is_dir():
                name = Path(result.source).relative_to(self.source).with_suffix(".png")
                result.plot(plot / str(name).replace("/", "__"))
            else:
                result.plot(plot)


def audio_inputs(path: Path, what: str = "file") -> list[Path]:
    """`path` itself, or the audio files of a folder at any depth; a UserError when there are none."""
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    if not path.is_dir():
        return [path]
    files = audio_files(path)
    if not files:
        raise UserError(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
    return files


def speaker_references(paths: Sequence[str | Path]) -> list[Path]:
    """The recordings of `--speaker-reference`: files, and the audio files of folders."""
    return [file for path in map(Path, paths) for file in audio_inputs(path, "speaker reference")]


def predict_path(recognizer: EmotionRecognizer, source: Path, timeline: bool = False) -> BatchResult:
    """Every audio file of `source` (a file, or a folder at any depth) through `recognizer`.
    A single file that cannot be used raises its error; in a folder it is listed in `errors`.
    The input warnings stay on each prediction (`warnings`), not raised."""
    files = audio_inputs(source)
    results: list[Prediction | Timeline] = []
    errors: list[UserError] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        if not source.is_dir():
            results = [recognizer.timeline(source, progress=True) if timeline else recognizer.predict(source)]
        elif timeline:
            for path in files:
                try:
                    results.append(recognizer.timeline(path))
                except UserError as error:
                    errors.append(error)
        else:
            for item in recognizer.predict_many(files):
                (errors if isinstance(item, UserError) else results).append(item)
    return BatchResult(source, files, results, errors, recognizer.classes)
