"""The predict benchmark (``aed-tf bench predict``): a run's Keras serving model against its ONNX
export, each measured in fresh child processes: a cold `aed-tf predict` of one clip (wall time and
peak RSS), and x real time and peak memory of a timeline of long recordings made of real clips."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aed_tf.bench import benchmark_environment, write_result
from aed_tf.config import Config
from aed_tf.errors import UserError


def run_predict_benchmark(
    config: Config,
    run_dir: str | Path | None,
    hours: Sequence[float],
    recording_rate: int,
    command: str,
    output: Path,
) -> dict[str, Any]:
    """`bench_predict` of `benchmark_run(config, run_dir)` on recordings made of the clips of
    the prepared corpora (prepared first if need be), written to `output` with the `command`
    that made it."""
    from aed_tf.prepare import prepare

    measured = benchmark_run(config, run_dir)
    clips = [Path(p) for p in prepare(config).manifest["path"]]
    result = {**bench_predict(measured, clips, hours, recording_rate), "command": command}
    write_result(output, result)
    return result


def benchmark_run(config: Config, run_dir: str | Path | None = None) -> Path:
    """The run to measure: `run_dir` if given, else the newest finished run of the configured
    backbone (the recommended CPU setting's unless given) in the configured output folder, else
    that setting trained here for one epoch, as `bench-predict-<backbone>`: speed does not depend
    on accuracy."""
    if run_dir:
        return Path(run_dir)
    from aed_tf.runs import latest_run

    backbone = config.train.backbone
    try:
        return latest_run(config.train.output_dir, backbone=backbone)
    except UserError:
        from aed_tf.train import train

        return train(config.replace(epochs=1, run_id=f"bench-predict-{backbone}")).run_dir


def make_long_recording(
    clips: Sequence[Path], path: Path, seconds: float, sample_rate: int = 48000, seed: int = 0
) -> float:
    """Writes a FLAC recording of about `seconds` to `path`: real clips in a seeded random order
    (repeated as needed) with 0.3-2 s of silence between them, resampled to `sample_rate`. It is
    written clip by clip, so the recording never sits in memory. Returns its duration."""
    import soundfile as sf
    import soxr

    rng = np.random.default_rng(seed)
    written = 0
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, format="FLAC", subtype="PCM_16") as out:
        while written < seconds * sample_rate:
            clip = clips[int(rng.integers(len(clips)))]
            samples, rate = sf.read(clip, dtype="float32", always_2d=True)
            samples = samples.mean(axis=1)
            if rate != sample_rate:
                samples = soxr.resample(samples, rate, sample_rate)
            gap = np.zeros(int(rng.uniform(0.3, 2.0) * sample_rate), np.float32)
            out.write(np.concatenate([samples, gap]))
            written += len(samples) + len(gap)
    return written / sample_rate


# What the exported route is to reach on this machine (the targets), beside the Keras
# route's own (one hour in under a minute, under 2 GB).
TARGETS = {
    "keras": {"times_real_time": ">= 60", "peak_rss_megabytes": "< 2000"},
    "onnx": {"times_real_time": ">= 300", "peak_rss_megabytes": "< 2000"},
    "tflite": {"times_real_time": ">= 300", "peak_rss_megabytes": "< 2000"},
    "cold_predict": {"exported_wall_seconds": "<= 1.5", "exported_peak_rss_megabytes": "<= 300"},
}
EXPORTS = ("onnx", "tflite")  # the routes without TensorFlow, beside the Keras model
# A cold `aed-tf predict` in a child that reports its own peak resident memory as it exits. The
# mm's high-water mark (VmHWM), not ru_maxrss: a forked child's ru_maxrss starts at its parent's
# resident size, which a benchmark that has loaded the corpora makes gigabytes.
_COLD_CHILD = """import atexit, sys
def _peak():
    with open('/proc/self/status') as status:
        sys.stderr.write(''.join('\\n' + line for line in status if line.startswith('VmHWM')))
atexit.register(_peak)
from aed_tf.cli import main
sys.exit(main(sys.argv[1:]))
"""


def bench_predict(
    run_dir: Path,
    clips: Sequence[Path],
    hours: Sequence[float] = (0.1, 1.0),
    sample_rate: int = 48000,
    workdir: Path | None = None,
    cold_repeats: int = 3,
) -> dict[str, Any]:
    """The run's Keras serving model against its ONNX and TFLite exports (made here), each in
    fresh child processes:

    - cold: `aed-tf predict` on one clip (`python -m aed_tf predict CLIP --run-dir | --model`),
      the whole command's wall time and peak RSS, the median of `cold_repeats`;
    - long: × real time and peak memory of `EmotionRecognizer.timeline` on recordings of `hours`
      made of real `clips` (FLAC at `sample_rate`). The child loads the model and warms it up on
      a short clip first, both timed apart from the recording. Peak memory that does not grow
      from the shortest recording to the longest shows that the file is read in blocks.

    Peak RSS is each child's own high-water mark (VmHWM), so nothing of this process counts.
    """
    import tempfile

    from aed_tf.serving.export import export

    with tempfile.TemporaryDirectory(dir=workdir) as temp:
        routes = {"keras": Path(run_dir)}
        for format in EXPORTS:
            routes[format] = export(run_dir, format, Path(temp) / f"model.{format}").path
        cold = {name: _cold_predict(name, path, clips[0], cold_repeats) for name, path in routes.items()}
        long: dict[str, list[dict[str, Any]]] = {name: [] for name in routes}
        for length in hours:
            recording = Path(temp) / f"recording-{length:g}h.flac"
            started = time.perf_counter()
            duration = make_long_recording(clips, recording, length * 3600.0, sample_rate)
            generated = time.perf_counter() - started
            for name, path in routes.items():
                measured = _child_json(
                    "from aed_tf.bench.predict import _predict_child; "
                    "_predict_child(sys.argv[1], sys.argv[2], sys.argv[3])",
                    [str(path), str(recording), str(clips[0])],
                )
                long[name].append(
                    {
                        "hours": length,
                        "duration_seconds": duration,
                        "file": {
                            "format": "FLAC PCM_16, mono",
                            "sample_rate": sample_rate,
                            "megabytes": recording.stat().st_size / 1e6,
                        },
                        "generate_seconds": generated,
                        **measured,
                        "times_real_time": duration / measured["timeline_seconds"],
                    }
                )
            recording.unlink()
    summary = {}
    for name, results in long.items():
        longest = max(results, key=lambda r: r["duration_seconds"])
        summary[name] = {
            "times_real_time": longest["times_real_time"],
            "peak_rss_megabytes": longest["peak_rss_megabytes"],
            "duration_seconds": longest["duration_seconds"],
            "cold_predict": cold[name],
            "results": results,
        }
    return {
        "routes": summary,
        "ratios": {
            format: {
                "cold_wall_keras_over_export": cold["keras"]["wall_seconds"] / cold[format]["wall_seconds"],
                "cold_rss_keras_over_export": cold["keras"]["peak_rss_megabytes"]
                / cold[format]["peak_rss_megabytes"],
                "real_time_export_over_keras": summary[format]["times_real_time"]
                / summary["keras"]["times_real_time"],
            }
            for format in EXPORTS
        },
        "targets": TARGETS,
        "run_dir": str(run_dir),
        "what_is_timed": "cold: the whole aed-tf predict command on one clip, interpreter start-up "
        "and imports included. long: EmotionRecognizer.timeline on the file: block reading "
        "(libsndfile), resampling (soxr HQ), voice activity detection (webrtcvad), windows through "
        "the serving model or an export of it (front end included), smoothing and segments; "
        "model loading and a warm-up on one short clip are timed apart",
        **benchmark_environment(),
    }


def _cold_predict(route: str, path: Path, clip: Path, repeats: int) -> dict[str, Any]:
    """`aed-tf predict CLIP` in fresh processes: the median wall time and peak RSS of `repeats`."""
    import statistics
    import subprocess
    import sys

    flag = "--run-dir" if route == "keras" else "--model"
    walls, peaks = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, "-c", _COLD_CHILD, "predict", str(clip), flag, str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        walls.append(time.perf_counter() - started)
        if child.returncode != 0:
            raise RuntimeError(f"aed-tf predict {flag} {path} failed:\n{child.stderr[-4000:]}")
        peaks.append(int(child.stderr.rsplit("VmHWM:", 1)[1].split()[0]) / 1024)  # kB
    return {
        "command": f"python -m aed_tf predict CLIP {flag} {path.name}",
        "wall_seconds": statistics.median(walls),
        "peak_rss_megabytes": statistics.median(peaks),
        "repeats": repeats,
        "all_wall_seconds": walls,
    }


def _child_json(code: str, arguments: Sequence[str]) -> dict[str, Any]:
    """Runs `code` in a fresh interpreter (sys imported, `arguments` in sys.argv[1:]) and reads
    the JSON line it prints last."""
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if child.returncode != 0:
        raise RuntimeError(f"the benchmark's child process failed:\n{child.stderr[-4000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _predict_child(model: str, recording: str, warm_up_clip: str) -> None:
    """In the benchmark's child process: the timeline of `recording` by the run or export at
    `model`; prints one JSON line of timings and peak RSS."""

    from aed_tf import EmotionRecognizer

    started = time.perf_counter()
    recognizer = EmotionRecognizer.load(model)
    loaded = time.perf_counter()
    recognizer.predict(warm_up_clip)
    warmed = time.perf_counter()
    peak_before = _peak_rss_megabytes()
    rss_before = _rss_megabytes()
    result = recognizer.timeline(recording)
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "load_seconds": loaded - started,
                "warm_up_seconds": warmed - loaded,
                "timeline_seconds": finished - warmed,
                "peak_rss_megabytes": _peak_rss_megabytes(),
                "peak_rss_before_recording_megabytes": peak_before,
                "rss_before_recording_megabytes": rss_before,
                "rss_after_recording_megabytes": _rss_megabytes(),
                "window_seconds": recognizer.window_seconds,
                "hop_seconds": recognizer.hop_seconds,
                "windows": len(result.window_centres),
                "windows_classified": result.prediction.windows,
                "speech_seconds": result.prediction.speech_seconds,
                "segments": len(result.segments),
                "shares": result.shares,
            }
        )
    )


def _peak_rss_megabytes() -> float:
    """This process's peak resident memory since it started its program: VmHWM on Linux (see
    _COLD_CHILD), ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_megabytes() -> float | None:
    """This process's resident memory now (Linux), or None where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
