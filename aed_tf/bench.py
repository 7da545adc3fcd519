"""Benchmarks: the tf.data training pipeline against the per-file librosa routes."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pandas as pd
import tensorflow as tf

from aed_tf.config import Config, FrontEndConfig
from aed_tf.evaluate import Evaluation, evaluate, grouped_metrics
from aed_tf.labels import class_names
from aed_tf.metrics import classification_metrics
from aed_tf.model import build_classifier
from aed_tf.pipeline import train_dataset
from aed_tf.splits import PROTOCOLS, SHARED_SI
from aed_tf.train import CONFIG_FILE, HISTORY_FILE, METRICS_FILE, load_training_data, run_directory, train

ROUTES = {
    "pipeline": "train_dataset on waveforms in memory: each clip's mel power once (not counted, "
    "see precompute_seconds), then per epoch crop, shift, gain, noise, log, normalisation, "
    "SpecAugment and mixup as configured, yielding log-mel features (the model draws the image)",
    "reference": "per file, as the reference projects: librosa.load(path) (resampled to 22050 Hz) "
    "-> librosa.feature.melspectrogram with its defaults -> librosa.power_to_db",
    "same_settings": "per file: librosa.load(path, sr=sample_rate) -> "
    "librosa.feature.melspectrogram at this front end's n_fft, hop, window, n_mels, fmin, fmax "
    "-> librosa.power_to_db",
}


def bench_pipeline(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    paths: Sequence[Path],
    config: Config,
    librosa_clips: int = 200,
    min_seconds: float = 10.0,
    speakers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Clips per second through `train_dataset` and through the per-file librosa routes of
    `ROUTES`, measured in one run, and the ratios of the pipeline's rate to theirs.

    The pipeline's one-off mel-power precompute is timed on its own (`precompute_seconds`); then
    whole epochs run until `min_seconds` have passed, after one warm-up batch that is not counted.
    Each librosa route featurises the same `librosa_clips` files spread evenly over `paths`, after
    one warm-up file. `speakers` (each clip's) are needed to normalise per speaker.
    """
    if not paths:
        raise ValueError("no paths for the librosa routes")
    if librosa_clips < 1:
        raise ValueError(f"librosa_clips = {librosa_clips}: must be >= 1")
    if min_seconds <= 0:
        raise ValueError(f"min_seconds = {min_seconds}: must be > 0")
    precompute_seconds, pipeline_clips, pipeline_seconds = _time_pipeline(
        waveforms, labels, config, min_seconds, speakers
    )
    spread = np.linspace(0, len(paths) - 1, min(librosa_clips, len(paths))).round().astype(int)
    chosen = [Path(paths[i]) for i in np.unique(spread)]
    reference_seconds = _time_files(chosen, _reference_features)
    same_settings_seconds = _time_files(chosen, lambda path: _same_settings_features(path, config.frontend))
    pipeline_rate = pipeline_clips / pipeline_seconds
    reference_rate = len(chosen) / reference_seconds
    same_settings_rate = len(chosen) / same_settings_seconds
    return {
        "pipeline_clips_per_second": pipeline_rate,
        "reference_clips_per_second": reference_rate,
        "ratio": pipeline_rate / reference_rate,
        "same_settings_clips_per_second": same_settings_rate,
        "same_settings_ratio": pipeline_rate / same_settings_rate,
        "precompute_seconds": precompute_seconds,
        "routes": ROUTES,
        "pipeline": {"clips": pipeline_clips, "seconds": pipeline_seconds},
        "reference": {"clips": len(chosen), "seconds": reference_seconds},
        "same_settings": {"clips": len(chosen), "seconds": same_settings_seconds},
        "clips_in_memory": len(waveforms),
        "settings": {
            "output": "log-mel features [batch, frames, n_mels]; the model draws the image",
            "batch_size": config.train.batch_size,
            "clip_seconds": config.frontend.clip_seconds,
            "n_mels": config.frontend.n_mels,
            "augment": config.augment.augment,
        },
        "librosa_version": librosa.__version__,
        **benchmark_environment(),
    }


def _time_pipeline(
    waveforms: Sequence[np.ndarray],
    labels: Sequence[int],
    config: Config,
    min_seconds: float,
    speakers: Sequence[str] | None = None,
) -> tuple[float, int, float]:
    """(precompute seconds, clips, seconds): making the dataset, then whole training epochs after
    one uncounted warm-up batch."""
    num_classes = len(class_names(config.data.calm))
    start = time.perf_counter()
    dataset = train_dataset(waveforms, labels, num_classes, config, seed=config.data.seed, speakers=speakers)
    precompute_seconds = time.perf_counter() - start
    batches = iter(dataset)
    next(batches)  # traces the functions and fills the buffers
    clips, start = 0, time.perf_counter()
    while True:
        for features, _ in batches:
            clips += int(features.shape[0])
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return precompute_seconds, clips, elapsed
        batches = iter(dataset)


def _reference_features(path: Path) -> np.ndarray:
    audio, sample_rate = librosa.load(path)
    return librosa.power_to_db(librosa.feature.melspectrogram(y=audio, sr=sample_rate))


def _same_settings_features(path: Path, frontend: FrontEndConfig) -> np.ndarray:
    audio, sample_rate = librosa.load(path, sr=frontend.sample_rate)
    mel = librosa.feature.melspectrogram(
        y=audio,
        sr=sample_rate,
        n_fft=frontend.n_fft,
        hop_length=frontend.hop_length,
        win_length=frontend.window_length,
        n_mels=frontend.n_mels,
        fmin=frontend.fmin,
        fmax=frontend.fmax,
    )
    return librosa.power_to_db(mel)


def _time_files(paths: Sequence[Path], featurize: Callable[[Path], np.ndarray]) -> float:
    """Seconds to featurise each file, after one uncounted warm-up file."""

    def featurize_or_explain(path: Path) -> None:
        try:
            featurize(path)
        except Exception as error:  # librosa raises a different type per backend and failure
            raise RuntimeError(f"librosa could not load {path}: {error!r}") from error

    featurize_or_explain(paths[0])  # librosa loads its modules and caches the filters on first use
    start = time.perf_counter()
    for path in paths:
        featurize_or_explain(path)
    return time.perf_counter() - start


def benchmark_environment() -> dict[str, Any]:
    """What every benchmark result records about where and when it was measured."""
    return {
        "cpu_count": _usable_cpus(),
        "tensorflow_version": tf.__version__,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _usable_cpus() -> int:
    """The CPUs this process may run on: fewer than the machine has under taskset or cgroups."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# -- accuracy on held-out speakers -----------------------------------------------------------

# UAR of two baselines measured on the shared-si protocol: the reference projects' method
# (librosa MFCC/chroma/mel statistics + an MLP; 0.88 on a random split) and eGeMAPS + an SVM.
SHARED_SI_BASELINES_UAR = {
    "librosa statistics + MLP (reference projects)": {"overall": 0.33, "ravdess": 0.43, "tess": 0.31},
    "eGeMAPS + SVM": {"overall": 0.31, "ravdess": 0.47, "tess": 0.28},
}


def bench_run_id(config: Config) -> str:
    """`bench-<backbone>-<digest of every setting that differs from the defaults>`: the same
    settings name the same run, so a benchmark run that finished is reused and one that was
    killed resumes; a field added later, at its default, leaves every name as it was."""
    defaults = Config().to_flat()
    settings = {
        name: value
        for name, value in config.replace(run_id="", resume=False).to_flat().items()
        if value != defaults[name]
    }
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()[:8]
    return f"bench-{config.train.backbone}-{digest}"


def bench_train(
    config: Config,
    backbones: Sequence[str],
    command: str,
    previous: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains each backbone from scratch on the shared-si protocol (or reuses its finished run
    with the same settings, or resumes a killed one), tests it on the held-out speakers overall,
    per corpus and per class, and measures what the input pipeline costs a step.

    Rows of `previous` (an earlier result) for other backbones are kept, each with the command
    that made it, so the slow backbones can be run apart with settings of their own; the
    ensemble averages every row's test probabilities."""
    rows = {row["backbone"]: row for row in (previous or {}).get("results", [])}
    for name in backbones:
        run_config = config.replace(backbone=name, weights="none", protocol=SHARED_SI)
        run_config = run_config.replace(run_id=bench_run_id(run_config))
        run_dir = run_directory(run_config)
        status = (
            json.loads((run_dir / CONFIG_FILE).read_text())["status"]
            if (run_dir / CONFIG_FILE).is_file()
            else None
        )
        if status != "finished":
            train(run_config.replace(resume=status is not None), progress=progress)
        rows[name] = {"backbone": name, **_bench_row(run_dir), "command": command}
    results = list(rows.values())
    evaluations = _test_evaluations([Path(row["run_dir"]) for row in results])
    for row, test in zip(results, evaluations):
        row.update(
            test=test.overall,
            test_per_corpus=test.per_corpus.set_index("corpus").to_dict(orient="index"),
            test_recall_per_class=recall_per_class(test.predictions, test.classes),
        )
    ensemble = None
    if len(evaluations) > 1:
        ensemble = {"backbones": [row["backbone"] for row in results], **ensemble_metrics(evaluations)}
    return {
        "protocol": SHARED_SI,
        "protocol_description": PROTOCOLS[SHARED_SI].description,
        "weights": "none: from scratch (ImageNet weights cannot be downloaded on this machine)",
        "baselines_uar": SHARED_SI_BASELINES_UAR,
        "results": results,
        "ensemble": ensemble,
        "pipeline_cost": pipeline_cost(config.replace(backbone=backbones[0], protocol=SHARED_SI)),
        **benchmark_environment(),
    }


def _test_evaluations(run_dirs: Sequence[Path]) -> list[Evaluation]:
    """Each run on its test partition, the clips loaded once per data setting rather than once
    per run."""
    data_by_setting: dict[Any, Any] = {}
    evaluations = []
    for run_dir in run_dirs:
        config = Config.load(run_dir / CONFIG_FILE)
        if config.data not in data_by_setting:
            data_by_setting[config.data] = load_training_data(config, progress=False)
        evaluations.append(evaluate(run_dir, "test", data=data_by_setting[config.data]))
    return evaluations


def _bench_row(run_dir: Path) -> dict[str, Any]:
    """What a finished run says of itself: settings, speed and validation metrics."""
    saved = json.loads((run_dir / CONFIG_FILE).read_text())
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    return {
        "run_dir": str(run_dir),
        "image_size": saved["image_size"],
        "epochs": len(pd.read_csv(run_dir / HISTORY_FILE)),
        "train_seconds": metrics["epoch_seconds"],
        "train_images_per_second": metrics["train_images_per_second"],
        "val": metrics["val"],
        "git_commit": saved.get("git_commit", ""),
    }


def recall_per_class(predictions: pd.DataFrame, classes: Sequence[str]) -> dict[str, float]:
    """Where the errors are: the share of each class's clips that are recognised."""
    hits = predictions["label"] == predictions["predicted"]
    return {
        classes[label]: float(hits[predictions["label"] == label].mean())
        for label in sorted(predictions["label"].unique())
    }


def ensemble_metrics(evaluations: Sequence[Evaluation]) -> dict[str, Any]:
    """Metrics of the mean of several models' probabilities on the same clips (one of the
    issue's levers): overall, per corpus and recall per class."""
    first = evaluations[0]
    if any(not e.predictions["clip_id"].equals(first.predictions["clip_id"]) for e in evaluations):
        raise ValueError("an ensemble needs every model's predictions on the same clips, in order")
    mean = np.mean([e.probabilities for e in evaluations], axis=0)
    predictions = first.predictions.assign(predicted=mean.argmax(axis=1))
    return {
        "test": classification_metrics(predictions["label"], mean),
        "test_per_corpus": grouped_metrics(predictions, mean, ["corpus"])
        .set_index("corpus")
        .to_dict(orient="index"),
        "test_recall_per_class": recall_per_class(predictions, first.classes),
    }


def pipeline_cost(config: Config, steps: int = 30, rounds: int = 2) -> dict[str, float]:
    """Training images/s of one model fed by the real pipeline and fed one batch already in
    memory, alternated `rounds` times; the cost is the share of speed the pipeline takes."""
    data = load_training_data(config, progress=False)
    part = data.partitions["train"]
    dataset = train_dataset(
        part.waveforms, part.labels, len(data.classes), config, seed=config.data.seed, speakers=part.speakers
    ).repeat()
    in_memory = tf.data.Dataset.from_tensors(next(iter(dataset))).repeat()
    model = build_classifier(config.replace(weights="none").train, len(data.classes), config.frontend.n_mels)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rates: dict[str, list[float]] = {"pipeline": [], "in_memory": []}
    for source in (dataset, in_memory):  # traces the step for both inputs before timing
        model.fit(source, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
    for _ in range(rounds):
        for name, source in (("pipeline", dataset), ("in_memory", in_memory)):
            start = time.perf_counter()
            model.fit(source, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
            rates[name].append(steps * config.train.batch_size / (time.perf_counter() - start))
    pipeline, memory = float(np.mean(rates["pipeline"])), float(np.mean(rates["in_memory"]))
    return {
        "pipeline_images_per_second": pipeline,
        "in_memory_images_per_second": memory,
        "cost": 1.0 - pipeline / memory,
    }


def format_train_table(result: dict[str, Any]) -> str:
    """The markdown table kept beside train.json: per corpus first, since the pooled figure is
    mostly one TESS speaker's (1,399 of 1,639 test clips)."""
    lines = [
        f"# Accuracy on held-out speakers: protocol `{result['protocol']}`",
        "",
        result["protocol_description"],
        "",
        f"Weights: {result['weights']}.",
        "",
        "Per corpus first: 1,399 of the 1,639 test clips are one TESS speaker, so the pooled "
        "figure is mostly hers. The cross-validation benchmark (`cv.md`) measures many more "
        "speakers.",
        "",
        "| model | UAR RAVDESS 17-20 | UAR TESS YAF | mean of the corpora | pooled test UAR | test acc | test macro-F1 | val UAR | images/s (train) | training s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def corpus_cells(per_corpus: dict[str, Any]) -> str:
        uars = [per_corpus.get(c, {}).get("uar", float("nan")) for c in ("ravdess", "tess")]
        return f"{uars[0]:.3f} | {uars[1]:.3f} | {np.mean(uars):.3f}"

    for r in result["results"]:
        lines.append(
            f"| {r['backbone']} ({r['image_size']} px, {r['epochs']} epochs) | {corpus_cells(r['test_per_corpus'])} "
            f"| {r['test']['uar']:.3f} | {r['test']['accuracy']:.3f} | {r['test']['macro_f1']:.3f} "
            f"| {r['val']['uar']:.3f} | {r['train_images_per_second']:.0f} | {r['train_seconds']:.0f} |"
        )
    ensemble = result.get("ensemble")
    if ensemble:
        lines.append(
            f"| ensemble: mean probabilities of {', '.join(ensemble['backbones'])} "
            f"| {corpus_cells(ensemble['test_per_corpus'])} | {ensemble['test']['uar']:.3f} "
            f"| {ensemble['test']['accuracy']:.3f} | {ensemble['test']['macro_f1']:.3f} | | | |"
        )
    for name, uar in result["baselines_uar"].items():
        lines.append(
            f"| {name} | {uar['ravdess']:.2f} | {uar['tess']:.2f} "
            f"| {(uar['ravdess'] + uar['tess']) / 2:.2f} | {uar['overall']:.2f} | | | | | |"
        )
    classes = list(result["results"][0]["test_recall_per_class"])
    lines += [
        "",
        "Test recall per class (where the errors are):",
        "",
        "| model | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for name, row in [(r["backbone"], r["test_recall_per_class"]) for r in result["results"]] + (
        [("ensemble", ensemble["test_recall_per_class"])] if ensemble else []
    ):
        lines.append(f"| {name} | " + " | ".join(f"{row.get(c, float('nan')):.2f}" for c in classes) + " |")
    lines += ["", "Commands:", ""]
    for command in dict.fromkeys(r["command"] for r in result["results"]):
        made = ", ".join(r["backbone"] for r in result["results"] if r["command"] == command)
        lines.append(f"- {made}: `{command}`")
    cost = result["pipeline_cost"]
    lines += [
        "",
        f"Input pipeline cost: {cost['cost']:.1%} of training speed "
        f"({cost['pipeline_images_per_second']:.0f} images/s from the pipeline, "
        f"{cost['in_memory_images_per_second']:.0f} from a batch in memory).",
    ]
    return "\n".join(lines) + "\n"


# -- predicting on long recordings -----------------------------------------------------------

PREDICT_BENCH_RUN_ID = "bench-predict-mobilenetv3small"


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


def bench_predict(
    run_dir: Path,
    clips: Sequence[Path],
    hours: Sequence[float] = (0.1, 1.0),
    sample_rate: int = 48000,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """× real time and peak memory of `EmotionRecognizer.timeline` on recordings of `hours`
    made of real `clips` (FLAC at `sample_rate`).

    Each recording is processed in a fresh child process, so that its peak RSS (the child's own
    ru_maxrss) counts the model, TensorFlow and the processing, and nothing of this process.
    The child loads the model and warms it up on a short clip first; both are timed apart from
    the recording. Peak memory that does not grow from the shortest recording to the longest
    shows that the file is read in blocks.
    """
    import subprocess
    import sys
    import tempfile

    results = []
    with tempfile.TemporaryDirectory(dir=workdir) as temp:
        for length in hours:
            recording = Path(temp) / f"recording-{length:g}h.flac"
            started = time.perf_counter()
            duration = make_long_recording(clips, recording, length * 3600.0, sample_rate)
            generated = time.perf_counter() - started
            child = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from aed_tf.bench import _predict_child; "
                    "_predict_child(sys.argv[1], sys.argv[2], sys.argv[3])",
                    str(run_dir),
                    str(recording),
                    str(clips[0]),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
            if child.returncode != 0:
                raise RuntimeError(f"the benchmark's child process failed:\n{child.stderr[-4000:]}")
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            results.append(
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
    longest = max(results, key=lambda r: r["duration_seconds"])
    return {
        "times_real_time": longest["times_real_time"],
        "peak_rss_megabytes": longest["peak_rss_megabytes"],
        "duration_seconds": longest["duration_seconds"],
        "targets": {"times_real_time": ">= 60 (one hour in under a minute)", "peak_rss_megabytes": "< 2000"},
        "run_dir": str(run_dir),
        "results": results,
        "what_is_timed": "EmotionRecognizer.timeline on the file: block reading (libsndfile), "
        "resampling (soxr HQ), voice activity detection (webrtcvad), windows through the serving "
        "model (front end included), smoothing and segments; model loading and a warm-up on one "
        "short clip are timed apart",
        **benchmark_environment(),
    }


def _predict_child(run_dir: str, recording: str, warm_up_clip: str) -> None:
    """In the benchmark's child process: prints one JSON line of timings and peak RSS."""
    import resource

    from aed_tf.recognizer import EmotionRecognizer

    started = time.perf_counter()
    recognizer = EmotionRecognizer.load(run_dir)
    loaded = time.perf_counter()
    recognizer.predict(warm_up_clip)
    warmed = time.perf_counter()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    rss_before = _rss_megabytes()
    result = recognizer.timeline(recording)
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "load_seconds": loaded - started,
                "warm_up_seconds": warmed - loaded,
                "timeline_seconds": finished - warmed,
                "peak_rss_megabytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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


def _rss_megabytes() -> float | None:
    """This process's resident memory now (Linux), or None where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
