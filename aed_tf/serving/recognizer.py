"""Using a trained model: the emotion of a file, an array or a long recording.

    from aed_tf import EmotionRecognizer

    recognizer = EmotionRecognizer.load("saved_models/<run_id>")
    prediction = recognizer.predict("clip.wav")          # .label, .probabilities
    prediction = recognizer.predict(samples, sample_rate=44100)
    predictions = recognizer.predict_many(paths)         # an AudioError in place of a bad file
    timeline = recognizer.timeline("interview.flac")     # .segments, .shares, .plot("t.png")
    speaker = recognizer.for_speaker(["call-1.wav", "call-2.wav"])  # see below
    ensemble = EmotionRecognizer.load(["saved_models/<run seed 0>", "saved_models/<run seed 1>"])

A run trained with per-speaker normalisation standardises every input's log-mel features with
the band means and deviations of its speaker. `for_speaker(references)` gives a recognizer that
takes them from the speaker's recordings (labels unneeded: several clips, a whole call, or the
recording itself); without references, the statistics of the run's training clips stand in.
A run trained with ``--fusion egemaps`` is fused with its eGeMAPS head (`aed_tf.functionals`)
once `for_speaker` has at least `MIN_REFERENCE_WINDOWS` speech windows of the speaker: each
window's probabilities become softmax(log p + weight * margins), the margins those of the
window's eGeMAPS functionals standardised with the references'. Without them (a lone clip) the
model is served alone: fused with the training clips' statistics instead, it was worse.

The run's serving model holds the front end, so a file gets the features the model was trained
on. Several runs of the same classes and front end load as one recognizer, their ensemble:
each window's probabilities are the mean of the runs' serving models (`aed-tf bench cv` measures
the ensemble of a setting's seeds beside each seed alone). An export of a run or of an ensemble
(`aed-tf export`: ONNX, TFLite or a SavedModel) loads the same way,
`EmotionRecognizer.load("model.onnx")`, and runs on ONNX Runtime or LiteRT without TensorFlow,
with the same windows, voice activity and outputs (within the export's tolerance); only
`for_speaker` imports TensorFlow, for the front end's statistics of the references.

Every input goes the same way: read in blocks of `BLOCK_SECONDS` (files) and resampled to the
model's rate, cut into windows (`aed_tf.serving.timeline`), and each window whose core holds
speech by the voice activity detector is classified, windows of many inputs batched together. A prediction is
the mean of its windows' probabilities; for an input no longer than one window it is exactly the
serving model's output on it. Input with no speech gets no label (``label is None``) rather than
an invented emotion. Input that is used but not as given (padded, clipped, recorded below the
model's rate) gets warnings, in ``.warnings`` and as `InputWarning`.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from tqdm.auto import tqdm

from aed_tf import functionals
from aed_tf.audio import AUDIO_EXTENSIONS, AudioStream, clipped_frames, scale_to_unit, to_mono_float32
from aed_tf.config import FrontEndConfig
from aed_tf.errors import InputError, UserError
from aed_tf.functionals import FusionHead
from aed_tf.runs import CONFIG_FILE, SERVING_FILE, Run, latest_run  # noqa: F401  (latest_run: re-exported)
from aed_tf.serving import timeline as tl
from aed_tf.serving.exported import ExportedModel, names_an_export
from aed_tf.serving.timeline import Segment
from aed_tf.signature import centred_offset

# Seconds of a file's own audio read at a time: memory does not grow with the file's length.
BLOCK_SECONDS = 10.0
DEFAULT_HOP_SECONDS = 1.0
DEFAULT_SMOOTHING = 3
# A window is classified when its core holds at least this much speech.
DEFAULT_MIN_SPEECH_SECONDS = 0.1
# Clipping is reported above this share of samples at full scale.
CLIPPING_WARNING_SHARE = 0.001

Source = Union[str, Path, np.ndarray]


class InputWarning(UserWarning):
    """Input that was used, but not as given: padded, clipped, or recorded below the model's rate."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The emotion of one input.

    `label` is None when no speech was found, and `probabilities` (every class, summing to 1) is
    then empty: silence is not given an emotion.
    """

    source: str  # the path, or "<array>"
    label: str | None
    probabilities: dict[str, float]
    duration: float  # seconds of input
    speech_seconds: float  # by the voice activity detector
    windows: int  # windows classified; their mean probabilities are `probabilities`
    sample_rate: int  # of the input, before resampling to the model's
    channels: int  # of the input, mixed down to mono
    warnings: tuple[str, ...] = ()

    @property
    def speech_found(self) -> bool:
        return self.label is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "label": self.label,
            "speech_found": self.speech_found,
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in ("source", "label")
            },
            "warnings": list(self.warnings),
        }

    def __str__(self) -> str:
        if self.label is None:
            return f"{self.source}: no speech found"
        return f"{self.source}: {self.label} ({self.probabilities[self.label]:.2f})"


@dataclasses.dataclass(frozen=True, eq=False)
class Timeline:
    """A recording's emotions over time.

    `segments` tile the recording from 0 to its end: stretches with one label, or `label` None
    where no speech was found. `shares` is each class's share of the speech time (summing to 1;
    empty without speech). The per-window arrays are what the segments were made from.
    """

    prediction: Prediction  # the whole recording
    classes: tuple[str, ...]
    segments: tuple[Segment, ...]
    shares: dict[str, float]
    window_seconds: float
    hop_seconds: float
    window_centres: np.ndarray  # [windows] seconds
    window_probabilities: np.ndarray  # [windows, classes] smoothed; NaN rows where not classified

    @property
    def source(self) -> str:
        return self.prediction.source

    @property
    def duration(self) -> float:
        return self.prediction.duration

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "duration": self.duration,
            "speech_seconds": self.prediction.speech_seconds,
            "shares": self.shares,
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
            "prediction": self.prediction.to_dict(),
            "segments": [dataclasses.asdict(s) for s in self.segments],
        }

    def plot(self, path: str | Path) -> Path:
        """Writes a PNG: the smoothed probabilities over time above a band of the segments."""
        return plot_timeline(self, path)


class EmotionRecognizer:
    """A trained model ready for files, arrays and long recordings.

    `window_seconds` (default: the model's clip length) and `hop_seconds` (default: 1 s, at most
    the window) place the sliding windows; `smoothing` averages each window's probabilities with
    its neighbours' in timelines (that many windows, centred, never across silence; 1 turns it
    off). A window is classified when its core holds `min_speech_seconds` of speech by the WebRTC
    voice activity detector (`vad_aggressiveness` 0-3, 3 the strictest); `vad` False leaves an
    energy floor alone to decide (for audio that is not speech). `batch_size` windows go through
    the model at once. The model, `classes` and `sample_rate` are attributes, for callers that
    build on the recognizer. `model` is a run's Keras serving model or an `ExportedModel`.
    """

    def __init__(
        self,
        model: Any,
        classes: Sequence[str],
        frontend: FrontEndConfig,
        *,
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        smoothing: int = DEFAULT_SMOOTHING,
        vad: bool = True,
        vad_aggressiveness: int = 2,
        min_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS,
        batch_size: int = 32,
        speaker_statistics: np.ndarray | None = None,
        fusion: Sequence[FusionHead] = (),
    ) -> None:
        self.model = model
        self.classes = tuple(classes)
        self.frontend = frontend
        self.sample_rate = frontend.sample_rate
        self.window_seconds = float(window_seconds or frontend.clip_seconds)
        self.hop_seconds = float(hop_seconds or min(DEFAULT_HOP_SECONDS, self.window_seconds))
        self.plan = tl.WindowPlan(
            int(round(self.window_seconds * self.sample_rate)),
            int(round(self.hop_seconds * self.sample_rate)),
        )
        if smoothing < 1:
            raise InputError(f"smoothing = {smoothing}: must be >= 1 window (1: off)")
        if batch_size < 1:
            raise InputError(f"batch_size = {batch_size}: must be >= 1")
        if min_speech_seconds < 0:
            raise InputError(f"min_speech_seconds = {min_speech_seconds}: must be >= 0")
        tl.VoiceActivity(self.sample_rate, vad_aggressiveness)  # checks the aggressiveness now
        self.smoothing = int(smoothing)
        self.vad = bool(vad)
        self.vad_aggressiveness = int(vad_aggressiveness)
        self.min_speech_samples = int(round(min_speech_seconds * self.sample_rate))
        self.batch_size = int(batch_size)
        self.per_speaker = frontend.normalization == "speaker"
        if self.per_speaker:
            if speaker_statistics is None:
                raise InputError(
                    "this model normalises per speaker: it needs speaker_statistics "
                    "(EmotionRecognizer.load gives the training clips')"
                )
            speaker_statistics = np.asarray(speaker_statistics, np.float32)
            if speaker_statistics.shape != (2, frontend.n_mels) or not np.isfinite(speaker_statistics).all():
                raise InputError(
                    f"speaker_statistics: expected finite [2, {frontend.n_mels}] band means "
                    f"and deviations, got shape {speaker_statistics.shape}"
                )
        elif speaker_statistics is not None:
            raise InputError("this model normalises each clip on its own: it takes no speaker_statistics")
        self.speaker_statistics = speaker_statistics
        self.fusion = tuple(fusion)
        if self.fusion and not self.per_speaker:
            raise InputError("the fusion with eGeMAPS needs a model that normalises per speaker")
        if any(head.num_classes != len(self.classes) for head in self.fusion):
            raise InputError(
                f"a fusion head for another number of classes than the model's {len(self.classes)}"
            )
        # The speaker's eGeMAPS statistics [2, 88], from `for_speaker`: None serves the model alone.
        self.functional_moments: np.ndarray | None = None
        if isinstance(model, ExportedModel):
            self._infer = _exported_runner(model, frontend.n_mels)
        else:
            from aed_tf.serving.keras_route import batch_runner

            self._infer = batch_runner(model, self.plan.window, frontend)

    @classmethod
    def load(cls, path: str | Path | Sequence[str | Path], **options: Any) -> EmotionRecognizer:
        """The recognizer of a finished run (`aed-tf train`'s folder), or of an export of one
        (`aed-tf export`: a .onnx or .tflite file or a SavedModel folder, its metadata JSON beside
        it), which runs without TensorFlow; or, given several run folders, of their ensemble:
        every window's probabilities the mean of the runs' (a seed ensemble is one setting trained
        with several seeds; the runs must share the classes and the front end). Options as in
        __init__."""
        paths = run_folders(path)
        if len(paths) != 1:
            return cls._load_ensemble(paths, **options)
        path = paths[0]
        if names_an_export(path):
            exported = ExportedModel.load(path)  # a UserError for a missing export or a non-export
            if exported.frontend.normalization == "speaker" and "speaker_statistics" not in options:
                options["speaker_statistics"] = exported.training_statistics
            options.setdefault("fusion", exported.fusion)
            return cls(exported, exported.classes, exported.frontend, **options)
        run = _finished_run(path)
        from aed_tf.serving.keras_route import load_serving_model

        if run.frontend.normalization == "speaker" and "speaker_statistics" not in options:
            options["speaker_statistics"] = run.training_statistics()
        options.setdefault("fusion", ensemble_fusion([run]))
        return cls(load_serving_model(run), run.classes, run.frontend, **options)

    @classmethod
    def _load_ensemble(cls, paths: list[Path], **options: Any) -> EmotionRecognizer:
        runs = ensemble_runs(paths)
        first = runs[0]
        if first.frontend.normalization == "speaker" and "speaker_statistics" not in options:
            options["speaker_statistics"] = pooled_statistics([run.training_statistics() for run in runs])
        options.setdefault("fusion", ensemble_fusion(runs))
        from aed_tf.serving.keras_route import load_ensemble

        return cls(load_ensemble(runs), first.classes, first.frontend, **options)

    def for_speaker(self, references: Iterable[Source]) -> EmotionRecognizer:
        """This recognizer, its per-speaker normalisation taken from `references`: recordings of
        the speaker to be recognised (files, or arrays at the model's rate; emotions unneeded).
        Every frame of every reference counts, as in training over a speaker's clips; a recording
        can be its own reference. A fused model also takes the eGeMAPS statistics of the
        references' speech windows (fewer than `MIN_REFERENCE_WINDOWS`: the model alone, with an
        `InputWarning`)."""
        if not self.per_speaker:
            raise InputError("this model normalises each clip on its own: speaker references do not apply")
        references = list(references)
        recordings: list[tuple[str, Iterable[np.ndarray]]] = []
        for source in references:
            if isinstance(source, np.ndarray):
                recordings.append(("<array>", [to_mono_float32(source, self.sample_rate, self.sample_rate)]))
            else:  # read a block at a time, as predict reads: an hour of a speaker takes no more memory
                recordings.append((str(source), AudioStream(source, self.sample_rate, BLOCK_SECONDS)))
        if not recordings:
            raise InputError("for_speaker needs at least one reference recording")
        from aed_tf.serving.keras_route import speaker_statistics  # the one log-mel: TensorFlow's

        # AudioError names a file that cannot be used, InputError one too short.
        statistics = speaker_statistics(recordings, self.frontend)
        # The statistics are an argument of the traced model call: the copy shares its trace.
        speaker = copy.copy(self)
        speaker.speaker_statistics = statistics
        speaker.functional_moments = self._functional_moments(references) if self.fusion else None
        return speaker

    def _functional_moments(self, references: list[Source]) -> np.ndarray | None:
        """The eGeMAPS statistics of the references' speech windows (each window as the model
        hears it, so a reference no longer than one is one clip, as in training); None, with an
        InputWarning, for fewer than MIN_REFERENCE_WINDOWS."""
        parts, windows = [], []
        for source in references:
            analysis = self._start(source, self.sample_rate if isinstance(source, np.ndarray) else None)
            for _, _, samples in self._jobs(analysis):
                windows.append(samples)
                if len(windows) == self.batch_size:  # a long reference's windows are not all in memory
                    parts.append(functionals.egemaps_feature_matrix(windows, self.sample_rate, workers=1))
                    windows = []
        parts.append(functionals.egemaps_feature_matrix(windows, self.sample_rate, workers=1))
        features = np.concatenate(parts)
        features = features[np.isfinite(features).all(axis=1)]
        if len(features) < functionals.MIN_REFERENCE_WINDOWS:
            warnings.warn(
                f"{len(features)} speech windows in the speaker references, under the "
                f"{functionals.MIN_REFERENCE_WINDOWS} that the fusion with eGeMAPS needs: the model alone",
                InputWarning,
                stacklevel=3,
            )
            return None
        return functionals.moments(features)

    # -- public API ------------------------------------------------------------------------------

    def predict(self, source: Source, sample_rate: int | None = None) -> Prediction:
        """The label and every class's probability for a file (any length; read in blocks) or an
        array shaped (frames,) or (frames, channels) at `sample_rate`. A file that cannot be used
        raises AudioError ('<path>: <reason>'), a bad array InputError."""
        analysis = self._analyse_one(source, sample_rate)
        return analysis.prediction(self.classes)

    def predict_many(self, sources: Iterable[Source], progress: bool = True) -> list[Prediction | UserError]:
        """`predict` for many files (or arrays at the model's rate), windows of several inputs
        batched together, in the order given. An input that cannot be used gives its error
        (AudioError for a file: '<path>: <reason>') in its place and the others go on."""
        sources = list(sources)
        results: list[_Analysis | UserError | None] = [None] * len(sources)

        def jobs() -> Iterator[_Job]:
            for position, source in enumerate(sources):
                rate = self.sample_rate if isinstance(source, np.ndarray) else None
                try:
                    results[position] = self._start(source, rate)
                    yield from self._jobs(results[position])
                except UserError as error:
                    results[position] = error  # its windows already batched are ignored
                bar.update()

        with tqdm(total=len(sources), desc="predicting", unit="file", disable=not progress) as bar:
            self._classify(jobs())
        predictions: list[Prediction | UserError] = []
        for item in results:
            if isinstance(item, _Analysis):
                item.emit_warnings(stacklevel=2)
                item = item.prediction(self.classes)
            predictions.append(item)
        return predictions

    def timeline(self, source: Source, sample_rate: int | None = None, progress: bool = False) -> Timeline:
        """Segments, smoothed probabilities and each emotion's share of the speech time of a
        recording of any length (a file is read in blocks, so memory stays flat)."""
        analysis = self._analyse_one(source, sample_rate, progress)
        probabilities = analysis.probability_table(len(self.classes))
        classified = ~np.isnan(probabilities[:, 0]) if len(probabilities) else np.zeros(0, bool)
        smoothed = tl.smooth(probabilities, classified, self.smoothing)
        spans = np.asarray(analysis.cores, dtype=np.float64).reshape(-1, 2)
        parts = tl.segments(spans, smoothed, classified, self.classes, self.sample_rate)
        starts = np.asarray(analysis.starts, dtype=np.float64)
        lengths = np.minimum(self.plan.window, analysis.total)
        return Timeline(
            prediction=analysis.prediction(self.classes),
            classes=self.classes,
            segments=tuple(parts),
            shares=tl.shares(parts, self.classes),
            window_seconds=self.window_seconds,
            hop_seconds=self.hop_seconds,
            window_centres=(starts + lengths / 2.0) / self.sample_rate,
            window_probabilities=smoothed,
        )

    # -- the engine ------------------------------------------------------------------------------

    def _analyse_one(self, source: Source, sample_rate: int | None, progress: bool = False) -> _Analysis:
        analysis = self._start(source, sample_rate)
        with tqdm(
            total=round(analysis.duration),
            desc="predicting",
            unit="s",
            disable=not progress,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]",
        ) as bar:
            analysis.on_block = bar.update
            self._classify(self._jobs(analysis))
        analysis.emit_warnings(stacklevel=3)  # points at the caller of predict or timeline
        return analysis

    def _start(self, source: Source, sample_rate: int | None) -> _Analysis:
        """The analysis of one input, its blocks not read yet (a file's header is checked)."""
        vad = tl.VoiceActivity(self.sample_rate, self.vad_aggressiveness, use_webrtc=self.vad)
        if isinstance(source, np.ndarray):
            if sample_rate is None:
                raise InputError("an array needs its sample_rate")
            mono = to_mono_float32(source, sample_rate, self.sample_rate)  # InputError if bad
            analysis = _Analysis(
                "<array>",
                len(source) / sample_rate,
                sample_rate,
                1 if source.ndim == 1 else source.shape[1],
                vad,
                [mono],
            )
            analysis.source_frames = len(source)
            analysis.clipped_frames = clipped_frames(scale_to_unit(source))
            return analysis
        if sample_rate is not None:
            raise InputError("sample_rate is for arrays only: a file's rate is read from its header")
        if not isinstance(source, (str, Path)):
            raise InputError(f"expected a path or a numpy array, got {type(source).__name__}")
        stream = AudioStream(source, self.sample_rate, BLOCK_SECONDS)
        return _Analysis(
            str(source), stream.duration, stream.source_sample_rate, stream.channels, vad, stream
        )

    def _jobs(self, analysis: _Analysis) -> Iterator[_Job]:
        """The windows of `analysis` that hold speech, as read (`_run` pads them); every
        window's core and whether it is classified are recorded on `analysis` as they pass."""

        def blocks() -> Iterator[np.ndarray]:
            for block in analysis.blocks:
                analysis.total += len(block)
                if analysis.on_block is not None:
                    analysis.on_block(len(block) / self.sample_rate)
                yield block

        for window in tl.windows(blocks(), self.plan, analysis.vad):
            index = len(analysis.starts)
            analysis.starts.append(window.start)
            analysis.cores.append((window.core_start, window.core_end))
            speech = analysis.vad.speech_samples(window.core_start, window.core_end)
            if speech >= max(self.min_speech_samples, 1):
                analysis.queued += 1
                yield analysis, index, window.samples
        analysis.finish(self)

    def _classify(self, jobs: Iterable[_Job]) -> None:
        """Runs the model over the windows of `jobs`, `batch_size` at a time, and stores each
        window's probabilities on its analysis."""
        batch: list[_Job] = []
        for job in jobs:
            batch.append(job)
            if len(batch) == self.batch_size:
                self._run(batch)
                batch = []
        if batch:
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        rows = min(1 << (len(batch) - 1).bit_length(), self.batch_size)
        waves = np.zeros((rows, self.plan.window), np.float32)
        for row, (_, _, samples) in enumerate(batch):
            waves[row] = _pad_to(samples, self.plan.window)
        probabilities = self._infer(waves, self.speaker_statistics)[: len(batch)]
        if self.functional_moments is not None:
            probabilities = self._fused(probabilities, [samples for _, _, samples in batch])
        for (analysis, index, _), row in zip(batch, probabilities):
            analysis.probabilities[index] = row

    def _fused(self, probabilities: np.ndarray, windows: list[np.ndarray]) -> np.ndarray:
        """Each window's probabilities fused with the heads over its eGeMAPS functionals (of
        the window as read, not padded); a window openSMILE finds no finite functionals in keeps
        the model's."""
        features = functionals.egemaps_feature_matrix(windows, self.sample_rate, workers=1)
        standardized = functionals.standardize(features, self.functional_moments)
        return functionals.fuse_heads(probabilities, self.fusion, standardized).astype(np.float32)


_Job = tuple["_Analysis", int, np.ndarray]  # the window's samples as read: padded when batched


class _Analysis:
    """What is learnt about one input while its windows pass: cores, speech, probabilities."""

    def __init__(
        self,
        source: str,
        duration: float,
        sample_rate: int,
        channels: int,
        vad: tl.VoiceActivity,
        blocks: Iterable[np.ndarray],
    ) -> None:
        self.source = source
        self.duration = duration  # from the header until the file has been read
        self.source_rate = sample_rate
        self.channels = channels
        self.vad = vad
        self.blocks = blocks  # an AudioStream, or the one block of an array
        self.on_block: Callable[[float], Any] | None = None  # told the seconds of each block
        self.source_frames = 0  # of the input, at its own rate
        self.clipped_frames = 0
        self.total = 0  # samples at the model's rate
        self.starts: list[int] = []
        self.cores: list[tuple[int, int]] = []
        self.probabilities: dict[int, np.ndarray] = {}
        self.queued = 0  # windows given to the model
        self.warnings: list[str] = []

    def finish(self, recognizer: EmotionRecognizer) -> None:
        """Once every block has been read: the exact duration and the warnings."""
        if isinstance(self.blocks, AudioStream):
            self.source_frames, self.clipped_frames = self.blocks.frames_read, self.blocks.clipped_frames
            self.duration = self.source_frames / self.source_rate
        if self.total < recognizer.plan.window and self.queued:  # padded, and classified
            self.warnings.append(
                f"shorter than the {recognizer.window_seconds:g} s window ({self.duration:.2f} s): "
                "padded with silence"
            )
        if self.source_frames and self.clipped_frames / self.source_frames > CLIPPING_WARNING_SHARE:
            self.warnings.append(
                f"clipping: {self.clipped_frames / self.source_frames:.1%} of samples at full scale"
            )
        if self.source_rate < recognizer.sample_rate:
            self.warnings.append(
                f"recorded at {self.source_rate} Hz: nothing above {self.source_rate // 2} Hz, while "
                f"the model was trained on {recognizer.sample_rate} Hz audio"
            )

    def emit_warnings(self, stacklevel: int) -> None:
        for message in self.warnings:
            warnings.warn(f"{self.source}: {message}", InputWarning, stacklevel=stacklevel + 1)

    def probability_table(self, num_classes: int) -> np.ndarray:
        """[windows, classes]: each window's probabilities, NaN rows where not classified."""
        table = np.full((len(self.starts), num_classes), np.nan, np.float32)
        for index, row in self.probabilities.items():
            table[index] = row
        return table

    def prediction(self, classes: tuple[str, ...]) -> Prediction:
        if self.probabilities:
            mean = np.mean(np.stack(list(self.probabilities.values())), axis=0)
            label, probabilities = classes[int(np.argmax(mean))], dict(zip(classes, map(float, mean)))
        else:
            label, probabilities = None, {}
        return Prediction(
            self.source,
            label,
            probabilities,
            self.duration,
            self.vad.speech_seconds(),
            len(self.probabilities),
            self.source_rate,
            self.channels,
            tuple(self.warnings),
        )


def _exported_runner(exported: ExportedModel, n_mels: int) -> Callable[..., np.ndarray]:
    """An export as the recognizer runs its model: the statistics [2, n_mels] given to every row."""

    def run(waves: np.ndarray, statistics: np.ndarray | None) -> np.ndarray:
        if statistics is None:
            return np.asarray(exported.run(waves))
        return np.asarray(exported.run(waves, np.broadcast_to(statistics, (len(waves), 2, n_mels)).copy()))

    return run


def _pad_to(samples: np.ndarray, length: int) -> np.ndarray:
    """A window shorter than `length` (a whole input shorter than one) centred in zeros, by the
    serving model's own rule, so that batching does not change what the model hears."""
    if len(samples) >= length:
        return samples
    before = centred_offset(len(samples), length)
    return np.pad(samples, (before, length - len(samples) - before))


# -- finding runs and files ---------------------------------------------------------------------


def run_folders(run_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path, or several (an ensemble's runs), as a list."""
    return [Path(run_dir)] if isinstance(run_dir, (str, Path)) else [Path(p) for p in run_dir]


def _finished_run(path: Path) -> Run:
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder")
    if not (path / SERVING_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise UserError(f"{path}: not a finished run (no {SERVING_FILE} or {CONFIG_FILE})")
    return Run.load(path)


def ensemble_runs(paths: Sequence[str | Path]) -> list[Run]:
    """The finished runs at `paths`, checked to make one ensemble: two or more, each once, of the
    same classes in the same order and the same front end (the features every member hears)."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise UserError(f"an ensemble needs two or more run folders, got {len(paths)}")
    seen: dict[Path, Path] = {}
    for path in paths:
        if names_an_export(path):
            raise UserError(
                f"{path}: an export; an ensemble is made of run folders (export the ensemble "
                "itself: aed-tf export RUN_DIR RUN_DIR ... --out ...)"
            )
        if path.resolve() in seen:
            raise UserError(f"{path}: given twice (as {seen[path.resolve()]}); each run counts once")
        seen[path.resolve()] = path
    runs = [_finished_run(path) for path in paths]
    first = runs[0]
    for run in runs[1:]:
        if run.classes != first.classes:
            raise UserError(
                f"{run.path}: classes {', '.join(run.classes)}; {first.path}: {', '.join(first.classes)}: "
                "an ensemble's runs need the same classes in the same order"
            )
        if run.frontend != first.frontend:
            differ = ", ".join(
                f"{name} {value} ({getattr(first.frontend, name)} in {first.path})"
                for name, value in dataclasses.asdict(run.frontend).items()
                if getattr(first.frontend, name) != value
            )
            raise UserError(f"{run.path}: another front end: {differ}; an ensemble's runs need the same one")
    return runs


def ensemble_fusion(runs: Sequence[Run]) -> tuple[FusionHead, ...]:
    """The heads the runs are fused with: every run's, or none when one of them has none."""
    heads = [run.fusion_head() for run in runs]
    return tuple(heads) if all(head is not None for head in heads) else ()


def pooled_statistics(statistics: Sequence[np.ndarray]) -> np.ndarray:
    """[2, n_mels]: the band means and deviations of the runs' training clips taken together,
    each run's [2, n_mels] weighing the same: the statistics an ensemble's members fall back to
    for a speaker with no references (the same as each member's when they share a training set)."""
    stacked = np.stack([np.asarray(s, np.float64) for s in statistics])  # [runs, 2, n_mels]
    mean = stacked[:, 0].mean(axis=0)
    variance = (stacked[:, 1] ** 2 + stacked[:, 0] ** 2).mean(axis=0) - mean**2
    return np.stack([mean, np.sqrt(np.maximum(variance, 0.0))]).astype(np.float32)


# What a folder given to `aed-tf predict` is searched for; any other file is left alone.


def audio_files(folder: str | Path) -> list[Path]:
    """The files with an audio suffix under `folder`, at any depth, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


# -- output ----------------------------------------------------------------------------------------


def predictions_csv(predictions: Sequence[Prediction], classes: Sequence[str]) -> str:
    """One row per prediction: source, label ('' without speech), each class's probability, ..."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["source", "label", *classes, "duration", "speech_seconds", "warnings"])
    for p in predictions:
        writer.writerow(
            [
                p.source,
                p.label or "",
                *(_cell(p.probabilities.get(c)) for c in classes),
                f"{p.duration:.3f}",
                f"{p.speech_seconds:.3f}",
                "; ".join(p.warnings),
            ]
        )
    return out.getvalue()


def timelines_csv(timelines: Sequence[Timeline], classes: Sequence[str]) -> str:
    """One row per segment: source, start, end, label ('' where no speech), each class's probability."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["source", "start", "end", "label", *classes])
    for timeline in timelines:
        for s in timeline.segments:
            writer.writerow(
                [
                    timeline.source,
                    f"{s.start:.3f}",
                    f"{s.end:.3f}",
                    s.label or "",
                    *(_cell(s.probabilities.get(c)) for c in classes),
                ]
            )
    return out.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def plot_timeline(timeline: Timeline, path: str | Path) -> Path:
    """The timeline as a PNG: smoothed probabilities per class over time, and the segments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colours = dict(zip(timeline.classes, plt.get_cmap("tab10").colors))
    figure, (curves, band) = plt.subplots(
        2, 1, figsize=(12, 4.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]}
    )
    for index, name in enumerate(timeline.classes):
        curves.plot(
            timeline.window_centres,
            timeline.window_probabilities[:, index],
            color=colours[name],
            label=name,
            linewidth=1.2,
            marker=".",
            markersize=3,
        )
    curves.set_ylim(0, 1)
    curves.set_ylabel("probability")
    curves.legend(loc="upper right", ncol=len(timeline.classes), fontsize=8)
    shares = ", ".join(f"{c} {s:.0%}" for c, s in sorted(timeline.shares.items(), key=lambda x: -x[1]) if s)
    curves.set_title(f"{Path(timeline.source).name}: {shares or 'no speech found'}", fontsize=10)
    for segment in timeline.segments:
        band.axvspan(segment.start, segment.end, color=colours.get(segment.label, "0.85"), linewidth=0)
    band.set_yticks([])
    band.set_xlim(0, max(timeline.duration, 1e-3))
    band.set_xlabel("time (s); grey: no speech")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
