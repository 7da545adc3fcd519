"""Long recordings: sliding windows, voice activity, smoothing and the segments of a timeline.

A recording is cut into windows of `window` samples every `hop` samples, and one more window
ending at the last sample when the hops do not reach it. Each window labels its *core*: the span
from half-way after the previous window's centre to half-way before the next one's, so the cores
tile the recording without overlap while the model hears the whole window around each. A window
is classified only when its core holds enough speech by the voice activity detector, so silence
is never given an emotion. Everything here is numpy and works block by block; the model is run by
``aed_tf.serving.recognizer``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import webrtcvad
from scipy.ndimage import uniform_filter1d

from aed_tf.errors import InputError

# Sample rates and frame lengths the WebRTC detector accepts.
WEBRTC_SAMPLE_RATES = (8000, 16000, 32000, 48000)
VAD_FRAME_MS = 30
# Frames quieter than this (RMS, dBFS) are never speech: the WebRTC detector flags some frames of
# near-silence after speech (its hangover), and with the detector off this alone decides.
ENERGY_FLOOR_DB = -55.0


class VoiceActivity:
    """Speech or not for every 30 ms frame of a recording that arrives block by block.

    A frame is speech when the WebRTC detector (webrtcvad, `aggressiveness` 0-3, 3 the strictest)
    says so and its RMS reaches `ENERGY_FLOOR_DB`. With `use_webrtc` False, or at a sample rate
    the detector does not take, the energy floor alone decides: anything not near silence counts.
    Memory: one byte per frame (120 kB for an hour).
    """

    def __init__(self, sample_rate: int, aggressiveness: int = 2, use_webrtc: bool = True) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise InputError(f"vad aggressiveness = {aggressiveness}: must be 0, 1, 2 or 3")
        self.sample_rate = sample_rate
        self.frame_length = sample_rate * VAD_FRAME_MS // 1000
        self._detector = (
            webrtcvad.Vad(aggressiveness) if use_webrtc and sample_rate in WEBRTC_SAMPLE_RATES else None
        )
        self._floor = 10.0 ** (ENERGY_FLOOR_DB / 20.0)
        self._pending = np.zeros(0, np.float32)  # samples of a frame not yet complete
        self._flags = bytearray()

    @property
    def uses_webrtc(self) -> bool:
        return self._detector is not None

    @property
    def frames(self) -> int:
        """Frames decided so far."""
        return len(self._flags)

    def feed(self, samples: np.ndarray) -> None:
        """Decides every frame completed by `samples` (float32 in [-1, 1])."""
        samples = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = len(samples) // self.frame_length * self.frame_length
        frames = samples[:whole].reshape(-1, self.frame_length)
        self._pending = samples[whole:].copy()
        if not len(frames):
            return
        loud = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1)) >= self._floor
        if self._detector is None:
            self._flags.extend(loud.astype(np.uint8).tobytes())
            return
        pcm = (np.clip(frames, -1.0, 1.0) * 32767.0).astype("<i2")
        for frame, is_loud in zip(pcm, loud):
            # The detector is stateful: every frame goes through it, loud or not.
            speech = self._detector.is_speech(frame.tobytes(), self.sample_rate)
            self._flags.append(1 if speech and is_loud else 0)

    def speech_samples(self, start: int, end: int) -> int:
        """Samples of speech among the decided frames that start in [start, end)."""
        first = -(-start // self.frame_length)
        last = min(-(-end // self.frame_length), len(self._flags))
        if last <= first:
            return 0
        return sum(self._flags[first:last]) * self.frame_length

    def speech_seconds(self) -> float:
        return sum(self._flags) * self.frame_length / self.sample_rate

    def flags(self) -> np.ndarray:
        """[frames] bool, one per decided frame."""
        return np.frombuffer(bytes(self._flags), dtype=np.uint8).astype(bool)


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Where the windows of a recording lie, in samples."""

    window: int
    hop: int

    def __post_init__(self) -> None:
        if self.window < 1:
            raise InputError(f"window of {self.window} samples: must be >= 1")
        if not 0 < self.hop <= self.window:
            raise InputError(
                f"hop of {self.hop} samples: must be > 0 and <= the window "
                f"({self.window} samples), or audio between windows would be skipped"
            )


class WindowCutter:
    """Cuts a stream of blocks into the windows of a `WindowPlan` and holds only what the next
    windows need: at most one window plus one block.

    `feed(block)` returns the (start, samples) of every window completed by the block,
    `finish()` those left at the end: a window ending at the last sample when the hops did not
    reach it, or, for a recording shorter than one window, the whole recording (shorter than
    `plan.window`; the caller pads it).
    """

    def __init__(self, plan: WindowPlan) -> None:
        self.plan = plan
        self.total = 0  # samples received
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # sample index of _buffer[0]
        self._next_start = 0
        self._last_end = 0  # end of the last window given out

    def feed(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self._buffer = np.concatenate([self._buffer, block]) if self._buffer.size else np.asarray(block)
        self.total += len(block)
        window, windows = self.plan.window, []
        while self._next_start + window <= self.total:
            offset = self._next_start - self._buffer_start
            windows.append((self._next_start, self._buffer[offset : offset + window]))
            self._last_end = self._next_start + window
            self._next_start += self.plan.hop
        # Keep what the next window needs, and the last `window` samples for finish().
        keep_from = min(self._next_start, max(self.total - window, 0))
        drop = max(keep_from - self._buffer_start, 0)
        if drop:
            self._buffer = self._buffer[drop:].copy()
            self._buffer_start += drop
        return windows

    def finish(self) -> list[tuple[int, np.ndarray]]:
        if self.total == 0 or self._last_end == self.total:
            return []
        if self.total < self.plan.window:
            return [(0, self._buffer)]
        start = self.total - self.plan.window
        return [(start, self._buffer[start - self._buffer_start :])]


@dataclasses.dataclass(frozen=True)
class Window:
    """One window of a recording and the core it labels, in samples."""

    start: int
    samples: np.ndarray  # plan.window samples, fewer only for a recording shorter than one window
    core_start: int
    core_end: int


def windows(blocks: Iterable[np.ndarray], plan: WindowPlan, vad: VoiceActivity) -> Iterator[Window]:
    """The windows of a recording given block by block, each with its exact core, in order.

    Every block also goes to `vad`, so that when a window is given out the detector has decided
    the frames of its core. A window waits for the next one (or the end) to know where its core
    ends, so at most one window plus what the cutter holds is in memory.
    """
    cutter = WindowCutter(plan)
    pending: tuple[int, np.ndarray] | None = None
    core_start = 0

    def centre(start: int, samples: np.ndarray) -> float:
        return start + len(samples) / 2.0

    for block in blocks:
        vad.feed(block)
        for start, samples in cutter.feed(block):
            if pending is not None:
                core_end = int(round((centre(*pending) + centre(start, samples)) / 2.0))
                yield Window(pending[0], pending[1], core_start, core_end)
                core_start = core_end
            pending = (start, samples)
    for start, samples in cutter.finish():
        if pending is not None:
            core_end = int(round((centre(*pending) + centre(start, samples)) / 2.0))
            yield Window(pending[0], pending[1], core_start, core_end)
            core_start = core_end
        pending = (start, samples)
    if pending is not None:
        yield Window(pending[0], pending[1], core_start, cutter.total)


def smooth(probabilities: np.ndarray, classified: np.ndarray, width: int) -> np.ndarray:
    """A centred moving average of `width` windows over each run of consecutive classified
    windows (never across a stretch without speech); rows of unclassified windows stay NaN."""
    if width < 1:
        raise InputError(f"smoothing = {width}: must be >= 1 window (1: off)")
    smoothed = np.full_like(probabilities, np.nan)
    for first, end in _runs(classified):
        smoothed[first:end] = uniform_filter1d(probabilities[first:end], size=width, axis=0, mode="nearest")
    return smoothed


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of a recording with one label; `label` None means no speech was found there."""

    start: float  # seconds
    end: float
    label: str | None
    probabilities: dict[str, float]  # mean smoothed probability per class; empty without speech

    @property
    def duration(self) -> float:
        return self.end - self.start


def segments(
    spans: np.ndarray, smoothed: np.ndarray, classified: np.ndarray, classes: Sequence[str], sample_rate: int
) -> list[Segment]:
    """Consecutive cores with the same label (argmax of the smoothed probabilities, or None where
    no window was classified) merged into segments."""
    labels = [classes[int(np.argmax(row))] if ok else None for row, ok in zip(smoothed, classified)]
    merged: list[Segment] = []
    first = 0
    for index in range(1, len(labels) + 1):
        if index < len(labels) and labels[index] == labels[first]:
            continue
        label = labels[first]
        probabilities = (
            {c: float(p) for c, p in zip(classes, smoothed[first:index].mean(axis=0))}
            if label is not None
            else {}
        )
        merged.append(
            Segment(
                float(spans[first, 0]) / sample_rate,
                float(spans[index - 1, 1]) / sample_rate,
                label,
                probabilities,
            )
        )
        first = index
    return merged


def shares(parts: Sequence[Segment], classes: Sequence[str]) -> dict[str, float]:
    """Share of the speech time given each class (summing to 1); empty when there is no speech."""
    speech = sum(s.duration for s in parts if s.label is not None)
    if speech <= 0:
        return {}
    return {c: sum(s.duration for s in parts if s.label == c) / speech for c in classes}


def _runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """(first, end) of each run of True in `mask`."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return zip(edges[::2].tolist(), edges[1::2].tolist())
