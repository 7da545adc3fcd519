"""Benchmarks (``aed-tf bench ...``), one module each; results go to reports/benchmarks/.

- `aed_tf.bench.pipeline`: clips/s of the tf.data training pipeline against per-file librosa routes
- `aed_tf.bench.train`: test UAR of every backbone on the held-out speakers of ``shared-si``
- `aed_tf.bench.cv`: cross-validation over speakers, seeds and the baselines (the record)
- `aed_tf.bench.step`: clips/s of a training step for each value of one setting, with ratios
- `aed_tf.bench.predict`: x real time and peak memory of a timeline of long recordings

Here, what they share: the block of where and when a result was measured, which every result
records (`benchmark_environment`), reading and writing result files, and the names of the runs
that the train and cv benchmarks train (`bench_run_id`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from aed_tf.config import Config
from aed_tf.files import write_json, write_text
from aed_tf.runs import environment

# The libraries whose versions the flat block names (of `aed_tf.runs.environment`'s).
_VERSIONED = ("tensorflow", "keras", "numpy", "librosa")
ENVIRONMENT_KEYS = (
    "cpu_count",
    "platform",
    "python_version",
    "aed_tf_version",
    *(f"{name}_version" for name in _VERSIONED),
    "timestamp",
)


def benchmark_environment() -> dict[str, Any]:
    """What every benchmark result records about where and when it was measured: the CPUs this
    process may use, the platform, the versions of Python, aed_tf and the libraries that do the
    work, and the time (UTC): `aed_tf.runs.environment`, the block every record carries, as flat
    keys (`ENVIRONMENT_KEYS`)."""
    written = environment()
    versions = written["versions"]
    return {
        "cpu_count": written["cpus"],
        "platform": written["platform"],
        "python_version": versions["python"],
        "aed_tf_version": versions["aed_tf"],
        **{f"{name}_version": versions[name] for name in _VERSIONED},
        "timestamp": written["written"],
    }


def format_environment(result: dict[str, Any]) -> str:
    """The line that result tables end with, from a result's `benchmark_environment` block."""
    return (
        f"Measured with {result['cpu_count']} CPUs ({result['platform']}), Python "
        f"{result['python_version']}, TensorFlow {result['tensorflow_version']}, aed_tf "
        f"{result['aed_tf_version']}; written {result['timestamp']}."
    )


def table_head(*columns: str) -> list[str]:
    """The first two lines of a Markdown table with these column names."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def read_result(path: Path) -> dict[str, Any] | None:
    """An earlier result file, whose rows for other settings a benchmark keeps; None if none."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_result(path: Path, result: dict[str, Any], table: str | None = None) -> None:
    """`result` as JSON at `path`, and `table` beside it as the same name .md."""
    write_json(path, result)
    if table is not None:
        write_text(path.with_suffix(".md"), table)


@dataclasses.dataclass(frozen=True)
class LabelledClips:
    """Clips of the prepared corpora as the pipeline benchmarks read them."""

    manifest: Any  # pandas.DataFrame: their manifest rows, the calm policy applied
    waveforms: list[np.ndarray]
    labels: list[int]  # class indices
    speakers: list[str]  # `aed_tf.prepare.speaker_keys`


def labelled_clips(config: Config, count: int | None = None) -> LabelledClips:
    """The prepared corpora's clips (prepared first if need be), with the calm policy of
    `config`: every clip, or `count` spread evenly over them."""
    from aed_tf.labels import apply_calm_policy, class_names  # here: the result helpers stay light
    from aed_tf.prepare import prepare, speaker_keys

    prepared = prepare(config)
    manifest = apply_calm_policy(prepared.manifest, config.data.calm)
    if count is not None:
        rows = np.linspace(0, len(manifest) - 1, min(count, len(manifest))).round().astype(int)
        manifest = manifest.iloc[np.unique(rows)]
    names = class_names(config.data.calm)
    return LabelledClips(
        manifest=manifest,
        waveforms=[prepared.waveforms[clip] for clip in manifest["clip_id"]],
        labels=[names.index(emotion) for emotion in manifest["emotion"]],
        speakers=list(speaker_keys(manifest)),
    )


# Settings of what is fitted once the network has trained.
FITTED_AFTER_THE_NETWORK = ("fusion", "fusion_weight")


def bench_run_id(config: Config) -> str:
    """`bench-<backbone>-<digest of every setting that differs from the defaults>`: the same
    settings name the same run, so a benchmark run that finished is reused and one that was
    killed resumes; a field added later, at its default, leaves every name as it was. The
    fusion is left out: it is fitted after the network, which is the same without it, and the
    benchmark fuses the runs' predictions itself (`cv.fusion`)."""
    defaults = Config().to_flat()
    settings = {
        name: value
        for name, value in config.replace(run_id="", resume=False).to_flat().items()
        if value != defaults[name] and name not in FITTED_AFTER_THE_NETWORK
    }
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()[:8]
    return f"bench-{config.train.backbone}-{digest}"
