"""The run folder: what `aed-tf train` writes, and what evaluation, serving and the reports read.

    saved_models/<run_id>/
        config.json               the run record (`Run`): the config, status, classes, front end,
                                  split, versions, hardware
        classifier.keras          log-mel features -> probabilities (evaluation)
        serving.keras             waveform -> probabilities (recognizer, exports, web demo)
        training_statistics.json  per-speaker normalisation: the training clips' statistics
        fusion.json               --fusion egemaps: the eGeMAPS head and its weight
        metrics.json, history.csv, split.csv, tensorboard/

This module is light (no TensorFlow, no training code), so that serving depends on the folder's
layout and record, never on the code that wrote them.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aed_tf.config import Config, FrontEndConfig
from aed_tf.errors import UserError
from aed_tf.files import write_json
from aed_tf.functionals import FusionHead

CONFIG_FILE = "config.json"
CLASSIFIER_FILE = "classifier.keras"
SERVING_FILE = "serving.keras"
# Per-speaker normalisation: the band means and deviations over every training clip, for a clip
# whose speaker has no other audio.
TRAINING_STATISTICS_FILE = "training_statistics.json"
# The head the model is fused with (`aed_tf.functionals.FusionHead`), its weight and how it was chosen.
FUSION_FILE = "fusion.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
SPLIT_FILE = "split.csv"
TENSORBOARD_DIR = "tensorboard"
FINISHED = "finished"


# The libraries whose versions every written record carries (read without importing them).
RECORDED_DISTRIBUTIONS = ("tensorflow", "keras", "numpy", "librosa", "scikit-learn")


def environment() -> dict[str, Any]:
    """Where and when a record was written, as every record the package writes carries it (run
    folders, benchmark results, export metadata): package versions, the platform, the CPUs this
    process may use, the git commit of a source checkout (empty otherwise), the time (UTC)."""
    from aed_tf import __version__

    return {
        "versions": {
            "aed_tf": __version__,
            **{name: _distribution_version(name) for name in RECORDED_DISTRIBUTIONS},
            "python": platform.python_version(),
        },
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        "git_commit": _git_commit(),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _distribution_version(name: str) -> str:
    # TensorFlow comes in wheels of other names on some platforms.
    for distribution in (name, f"{name}-cpu", f"{name}-macos") if name == "tensorflow" else (name,):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def write_record(
    run_dir: Path,
    config: Config,
    status: str,
    classes: tuple[str, ...],
    image_size: int,
    split: dict[str, Any],
    hardware: dict[str, Any],
) -> Path:
    """config.json, the run record that `Run` reads: the config (resume off), the status, the
    classes, the front end, the split's protocol and clip counts, and `environment()`."""
    written = environment()
    return write_json(
        run_dir / CONFIG_FILE,
        {
            "config": config.replace(resume=False).to_dict(),
            "status": status,
            "classes": list(classes),
            "image_size": image_size,
            "frontend": config.to_dict()["frontend"],
            "seed": config.data.seed,
            "weights": "from scratch (weights=None)" if config.train.from_scratch else config.train.weights,
            "split": split,
            "versions": written["versions"],
            "git_commit": written["git_commit"],
            "hardware": {"platform": written["platform"], "cpus": written["cpus"], **hardware},
            "written": written["written"],
        },
    )


@dataclass(frozen=True)
class Run:
    """A run folder and its record (config.json as written, in `record`)."""

    path: Path
    record: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """The run in `path`; a UserError when there is no such folder or no readable record."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"{path}: no such run folder")
        record_file = path / CONFIG_FILE
        if not record_file.is_file():
            raise UserError(f"{path}: not a run folder (no {CONFIG_FILE})")
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{record_file}: unreadable run record ({error})") from None
        if not isinstance(record, dict):
            raise UserError(f"{record_file}: not a run record (a JSON object)")
        return cls(path, record)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str | None:
        """ "training", "finished" or "failed: <why>"."""
        return self.record.get("status")

    @property
    def finished(self) -> bool:
        return self.status == FINISHED and (self.path / SERVING_FILE).is_file()

    @property
    def config(self) -> Config:
        return Config.from_dict(self.record["config"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.record["classes"])

    @property
    def frontend(self) -> FrontEndConfig:
        """The front end the run was trained with (fields added since take their defaults)."""
        return FrontEndConfig(**self.record["frontend"])

    @property
    def backbone(self) -> str | None:
        return self.record.get("config", {}).get("train", {}).get("backbone")

    @property
    def versions(self) -> dict[str, str]:
        """The package versions the run was trained with."""
        return self.record.get("versions", {})

    @property
    def split(self) -> dict[str, Any]:
        """protocol, speaker_independent, description and clips per partition."""
        return self.record["split"]

    def training_statistics(self) -> np.ndarray | None:
        """[2, n_mels] band means and deviations of the training clips, for a run that normalises
        per speaker; None otherwise."""
        path = self.path / TRAINING_STATISTICS_FILE
        if self.frontend.normalization != "speaker":
            return None
        if not path.is_file():
            raise UserError(f"{self.path}: a per-speaker run without its {TRAINING_STATISTICS_FILE}")
        pooled = json.loads(path.read_text())
        return np.array([pooled["mean"], pooled["deviation"]], np.float32)

    def fusion_head(self) -> FusionHead | None:
        """The head a run trained with ``--fusion egemaps`` is fused with (or one that `aed-tf
        bench cv` fitted to a run that finished before: its fusion.json says who fitted it);
        None for a run without: the model alone."""
        path = self.path / FUSION_FILE
        if not path.is_file():
            return None
        try:
            head = json.loads(path.read_text())["head"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"{path}: unreadable fusion head ({error})") from None
        return FusionHead.from_dict(head, source=path)

    def metrics(self) -> dict[str, Any]:
        """metrics.json ({} before the run has finished)."""
        path = self.path / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}


def latest_run(output_dir: str | Path = "saved_models", backbone: str | None = None) -> Path:
    """The most recently written finished run in `output_dir` (of `backbone` when given)."""
    runs = []
    for record_file in Path(output_dir).glob(f"*/{CONFIG_FILE}"):
        try:
            run = Run.load(record_file.parent)
        except UserError:
            continue
        if run.finished and backbone in (None, run.backbone):
            runs.append(run.path)
    if not runs:
        which = f"{backbone} run" if backbone else "run"
        raise UserError(f"no finished {which} in {output_dir}/: train one (aed-tf train) or pass --run-dir")
    return max(runs, key=lambda run: (run / SERVING_FILE).stat().st_mtime)
